"""Firmware updates offered to meters (docs/protocol.md, "Firmware updates").

The operator stages an image with `gridveil fleet update`, which puts it in
<home>/firmware/ beside rollout.json; the daemon reads them again when they
change, so a rollout widens without a restart. A meter inside the rollout
that reports another version is offered [version, size, SHA-256] in its
2.04, and fetches the image with GET /fw and Block2 (RFC 7959) inside
OSCORE. Which meters are inside is fixed per version by a hash of the
meter id, so widening a rollout keeps the meters that already have it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from common.files import ConfigError

log = logging.getLogger("gridveil.gateway")

ROLLOUT = "rollout.json"
MAX_IMAGE = 4 << 20  # the ESP32's largest app partition in a 8 MiB table
VERSION = re.compile(r"^[0-9A-Za-z.+-]{1,32}$")  # what the firmware accepts (ota.py)


@dataclass(frozen=True)
class Rollout:
    version: str
    image: bytes
    digest: bytes
    fraction: float

    def includes(self, meter_id: str) -> bool:
        h = hashlib.sha256(f"{self.version}\0{meter_id}".encode()).digest()
        return int.from_bytes(h[:8], "big") < self.fraction * 2**64

    def offer(self, meter_id: str, reported: str | None) -> list | None:
        """What key 4 of this meter's 2.04 carries, if anything."""
        if reported == self.version or not self.includes(meter_id):
            return None
        return [self.version, len(self.image), self.digest]

    def block(self, num: int, szx: int) -> tuple[bytes, bool] | None:
        """Block `num` of 16 << szx bytes and whether more follow; None past the end."""
        size = 16 << szx
        start = num * size
        if start >= len(self.image):
            return None
        return self.image[start:start + size], start + size < len(self.image)


class Rollouts:
    """The staged rollout of one gateway home, reread when it changes."""

    def __init__(self, folder: Path, check_every_s: float = 2.0):
        self.folder = Path(folder)
        self.check_every_s = check_every_s
        self._seen: tuple | None = None
        self._checked = 0.0
        self._current: Rollout | None = None

    def current(self) -> Rollout | None:
        now = time.monotonic()
        if now - self._checked < self.check_every_s:
            return self._current
        self._checked = now
        try:
            st = (self.folder / ROLLOUT).stat()
            seen = (st.st_mtime_ns, st.st_size)
        except OSError:
            seen = None
        if seen != self._seen:
            self._seen = seen
            self._current = None
            if seen is not None:
                try:
                    self._current = load(self.folder)
                    log.info("firmware %s offered to %.0f %% of meters (%d bytes)",
                             self._current.version, self._current.fraction * 100,
                             len(self._current.image))
                except ConfigError as e:
                    log.warning("no firmware offered: %s", e)
        return self._current


def load(folder: Path) -> Rollout:
    folder = Path(folder)
    try:
        r = json.loads((folder / ROLLOUT).read_text())
        version, fraction, name = r["version"], float(r["fraction"]), r["image"]
        image = (folder / Path(name).name).read_bytes()
        digest = bytes.fromhex(r["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{folder / ROLLOUT} cannot be read: {e}") from None
    if not isinstance(version, str) or not VERSION.match(version) or not 0 <= fraction <= 1:
        raise ConfigError(f"{folder / ROLLOUT}: bad version or fraction")
    if hashlib.sha256(image).digest() != digest:
        raise ConfigError(f"{folder / name} does not match the SHA-256 in {ROLLOUT}")
    return Rollout(version, image, digest, fraction)


def stage(folder: Path, image: bytes, version: str, fraction: float) -> Rollout:
    """Put an image up for the given fraction of meters (written so that a
    running gateway sees either the old rollout or the whole new one)."""
    if not VERSION.match(version):
        raise ConfigError(f"version {version!r}: use up to 32 letters, digits and . + -")
    if not 0 <= fraction <= 1:
        raise ConfigError("--fraction must be between 0 and 1")
    if not 0 < len(image) <= MAX_IMAGE:
        raise ConfigError(f"an image must have 1 to {MAX_IMAGE} bytes, not {len(image)}")
    folder = Path(folder)
    digest = hashlib.sha256(image).digest()
    try:
        before = json.loads((folder / ROLLOUT).read_text())
    except (OSError, ValueError):
        before = {}
    if before.get("version") == version and before.get("sha256") != digest.hex():
        # A meter that fetched the old bytes would refuse the version for
        # good (firmware/ota.py), and two images would share one name.
        raise ConfigError(f"version {version} was staged with another image; give the new"
                          " image a new version")
    folder.mkdir(parents=True, exist_ok=True)
    name = f"firmware-{version}.img"
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(image)
    os.replace(tmp, folder / name)
    tmp = folder / f".{ROLLOUT}.tmp"
    tmp.write_text(json.dumps({"version": version, "image": name, "sha256": digest.hex(),
                               "fraction": fraction}, indent=2))
    os.replace(tmp, folder / ROLLOUT)
    return Rollout(version, image, digest, fraction)

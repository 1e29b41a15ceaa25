"""`gridveil build`: compile the firmware and a board layer to .mpy with
mpy-cross. main.py stays source, so MicroPython runs it at boot; everything
else goes to lib/. A manifest lists each file's SHA-256 for deploy to
verify what arrived on the board. A production build (ESP32 only) takes
boot.py and main.py from firmware/production/, which close the REPL."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
BOARDS = REPO / "boards"
# mpy-cross -march per board: matters for native code only; plain bytecode
# runs on any architecture with the same .mpy version.
TARGETS = {"esp32": "xtensawin", "esp32c3": "rv32imc", "esp32s3": "xtensawin", "unix": "x64"}


class BuildError(Exception):
    pass


def mpy_cross() -> str:
    local = Path(sys.executable).with_name("mpy-cross")
    found = str(local) if local.exists() else shutil.which("mpy-cross")
    if not found:
        raise BuildError("mpy-cross is missing; run `make install`")
    return found


def board_dir(target: str) -> Path:
    return BOARDS / ("unix" if target == "unix" else "esp32")


VERSION_LINE = re.compile(r'^FW_VERSION = "[^"]*"$', re.M)


def build(target: str, out: Path, production: bool = False,
          version: str | None = None) -> dict[str, str]:
    """Compile into `out`. `version` stamps FW_VERSION (firmware/sender.py),
    which the meter reports and an update is offered against."""
    if target not in TARGETS:
        raise BuildError(f"unknown target {target!r}; choose from {sorted(TARGETS)}")
    if production and target == "unix":
        raise BuildError("--production is for ESP32 boards; the emulator keeps its REPL")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "lib").mkdir(parents=True)
    from gateway.updates import VERSION  # the versions a gateway can offer

    if version is not None and not VERSION.match(version):
        raise BuildError(f"version {version!r}: use up to 32 letters, digits and . + -")
    sources = [p for p in sorted(FIRMWARE.glob("*.py")) if p.name != "main.py"]
    sources += sorted(board_dir(target).glob("*.py"))
    for src in sources:
        if version is not None and src.name == "sender.py":
            stamped = out / "sender.py"
            text, n = VERSION_LINE.subn(f'FW_VERSION = "{version}"', src.read_text())
            if n != 1:
                raise BuildError("firmware/sender.py has no FW_VERSION line to stamp")
            stamped.write_text(text)
            src = stamped
        dst = out / "lib" / (src.stem + ".mpy")
        # -s: the file's own name in tracebacks, not this checkout's path
        # (shorter on the device's heap, and the same wherever it is built).
        r = subprocess.run([mpy_cross(), f"-march={TARGETS[target]}", "-s", src.name,
                            "-o", str(dst), str(src)],
                           capture_output=True, text=True)
        if r.returncode:
            raise BuildError(f"mpy-cross failed on {src.name}: {r.stderr.strip()}")
    if version is not None:
        (out / "sender.py").unlink()
    if production:
        for name in ("boot.py", "main.py"):
            shutil.copyfile(FIRMWARE / "production" / name, out / name)
    else:
        shutil.copyfile(FIRMWARE / "main.py", out / "main.py")
    manifest = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*")) if p.is_file()}
    (out / "manifest.json").write_text(json.dumps(
        {"target": target, "production": production, "files": manifest}, indent=2))
    return manifest


IMAGE_MAGIC = b"GVI1"


def image(build_dir: Path, out: Path) -> bytes:
    """An emulator firmware image: the build's files in one bundle, which
    the Unix board's emulated bootloader unpacks (boards/unix/otaboot.py). An
    ESP32's image is MicroPython's own .bin with the firmware frozen in."""
    parts = [IMAGE_MAGIC]
    for p in sorted(Path(build_dir).rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            name = str(p.relative_to(build_dir)).encode()
            data = p.read_bytes()
            parts += [len(name).to_bytes(2, "big"), name, len(data).to_bytes(4, "big"), data]
    parts.append(b"\0\0")
    blob = b"".join(parts)
    Path(out).write_bytes(blob)
    return blob

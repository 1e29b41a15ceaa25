"""File helpers: atomic writes, owner-only secrets, clear errors."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path


class ConfigError(Exception):
    """A missing, unreadable or malformed file; the message says which and why."""


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name, what: str) -> str:
    """Names of parties and requesters: safe as file names and in logs."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{what} must be 1..64 letters, digits, '.', '_' or '-', not {name!r}")
    return name


def write_atomic(path: Path, data: bytes, secret: bool = False) -> None:
    """Write via a temporary file and rename, so a crash or a full disk
    leaves either the old file or the new one. Secrets are created 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj, secret: bool = False) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), secret)


def read_json(path: Path, what: str, secret: bool = False):
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    if secret:
        check_owner_only(path, what)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} {path} is not valid JSON: {e}") from None


def check_owner_only(path: Path, what: str) -> None:
    mode = stat.S_IMODE(Path(path).stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{what} {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`"
        )


def settings_from(cls, d, where: str):
    """A validated settings dataclass from a JSON object, with a clear error
    naming `where` for unknown keys, wrong shapes and bad values."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    if not isinstance(d, dict) or set(d) - known:
        extra = sorted(set(d) - known) if isinstance(d, dict) else "not a JSON object"
        raise ConfigError(f"{where}: unknown settings {extra}")
    try:
        obj = cls(**d)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    obj.validate()
    return obj

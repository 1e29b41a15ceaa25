"""`gridveil deploy`: copy a build plus a meter's settings and secrets to a
board over serial with mpremote, verify every file by SHA-256 on the
board, then reset it so it boots the new firmware."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from common.files import ConfigError


class DeployError(Exception):
    pass


def mpremote() -> str:
    local = Path(sys.executable).with_name("mpremote")
    return str(local) if local.exists() else "mpremote"


def _run(port: str, *args: str, timeout: float = 120) -> str:
    cmd = [mpremote(), "connect", port, *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise DeployError("mpremote is missing; run `make install`") from None
    except subprocess.TimeoutExpired:
        raise DeployError(f"the board on {port} did not answer within {timeout:.0f} s") from None
    if r.returncode:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise DeployError(f"mpremote failed on {port}: {msg[-1] if msg else 'no output'}")
    return r.stdout


VERIFY = """
import hashlib, binascii
for p in {paths!r}:
    h = hashlib.sha256()
    try:
        with open(p, 'rb') as f:
            while True:
                b = f.read(512)
                if not b:
                    break
                h.update(b)
        print(p, binascii.hexlify(h.digest()).decode())
    except OSError:
        print(p, 'missing')
"""


def deploy(port: str, build_dir: Path, meter_dir: Path, reset: bool = True, out=print) -> None:
    build_dir, meter_dir = Path(build_dir), Path(meter_dir)
    manifest_file = build_dir / "manifest.json"
    if not manifest_file.exists():
        raise ConfigError(f"{build_dir} is not a build; run `gridveil build` first")
    manifest = json.loads(manifest_file.read_text())
    files = dict(manifest["files"])
    for name in ("settings.json", "secrets.json"):
        p = meter_dir / name
        if not p.exists():
            raise ConfigError(f"{p} is missing; run `gridveil provision` first")
        files[name] = hashlib.sha256(p.read_bytes()).hexdigest()
    local = {name: (build_dir / name if (build_dir / name).exists() else meter_dir / name)
             for name in files}
    out(f"deploying {len(files)} files to {port}")
    if manifest.get("production"):
        out("production build: after its reset the board's REPL is closed, and a later deploy"
            " needs erase_flash first (docs/hardware.md, securing a meter)")
    _run(port, "exec", "import os\ntry:\n os.mkdir('lib')\nexcept OSError:\n pass")
    libs = sorted(n for n in files if n.startswith("lib/"))
    args: list[str] = ["fs", "cp", *[str(local[n]) for n in libs], ":lib/"]
    for name in sorted(n for n in files if not n.startswith("lib/")):
        args += ["+", "fs", "cp", str(local[name]), f":{name}"]
    _run(port, *args, timeout=600)
    out("verifying")
    seen = dict(line.split(" ", 1) for line in _run(
        port, "exec", VERIFY.format(paths=sorted(files))).splitlines() if " " in line)
    bad = [n for n, digest in files.items() if seen.get(n) != digest]
    if bad:
        raise DeployError(f"{len(bad)} files did not arrive intact, first {bad[0]}; deploy again")
    out(f"all {len(files)} files verified")
    if reset:
        _run(port, "reset")
        out("board reset; it now boots the new firmware")

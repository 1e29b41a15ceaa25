"""`gridveil build`: compile the firmware and a board layer to .mpy with
mpy-cross. main.py stays source, so MicroPython runs it at boot; everything
else goes to lib/. A manifest lists each file's SHA-256 for deploy to
verify what arrived on the board. A production build (ESP32 only) takes
boot.py and main.py from firmware/production/, which close the REPL."""

from __future__ import annotations

import hashlib
import json
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


def build(target: str, out: Path, production: bool = False) -> dict[str, str]:
    if target not in TARGETS:
        raise BuildError(f"unknown target {target!r}; choose from {sorted(TARGETS)}")
    if production and target == "unix":
        raise BuildError("--production is for ESP32 boards; the emulator keeps its REPL")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "lib").mkdir(parents=True)
    sources = [p for p in sorted(FIRMWARE.glob("*.py")) if p.name != "main.py"]
    sources += sorted(board_dir(target).glob("*.py"))
    for src in sources:
        dst = out / "lib" / (src.stem + ".mpy")
        r = subprocess.run([mpy_cross(), f"-march={TARGETS[target]}", "-o", str(dst), str(src)],
                           capture_output=True, text=True)
        if r.returncode:
            raise BuildError(f"mpy-cross failed on {src.name}: {r.stderr.strip()}")
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

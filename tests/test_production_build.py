"""`gridveil build --production`: the REPL closed from boot.py's first
statement, and a production board that cannot start resets instead of
stopping at a prompt (run in the Unix port on the ESP32 board layer with
fake hardware)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from host_tools import fleet

REPO = Path(__file__).resolve().parents[1]


def gridveil(*args):
    return subprocess.run([sys.executable, "-m", "host_tools.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def test_production_build_closes_the_repl(tmp_path):
    r = gridveil("build", "--target", "esp32", "--production", "--out", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert "REPL is closed" in r.stdout
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["production"] is True and {"boot.py", "main.py"} <= set(manifest["files"])
    for name in ("boot.py", "main.py"):
        code = [ln for ln in (tmp_path / "p" / name).read_text().splitlines()
                if ln and not ln.startswith("#")]
        assert code[:2] == ["import micropython", "micropython.kbd_intr(-1)"], name
    # A development build keeps the REPL, and the emulator cannot be locked.
    r = gridveil("build", "--target", "esp32", "--out", str(tmp_path / "d"))
    assert r.returncode == 0 and not (tmp_path / "d" / "boot.py").exists()
    assert "kbd_intr" not in (tmp_path / "d" / "main.py").read_text()
    r = gridveil("build", "--target", "unix", "--production", "--out", str(tmp_path / "u"))
    assert r.returncode != 0 and "for ESP32 boards" in r.stderr and "Traceback" not in r.stderr


def test_a_production_board_that_cannot_start_resets_instead_of_stopping(tmp_path):
    (tmp_path / "settings.json").write_text("{ not json")
    env = fleet.mp_env([REPO / "boards" / "esp32", REPO / "tests" / "firmware" / "fakes"])
    env["MICROPYPATH"] = env["MICROPYPATH"].replace(str(fleet.UNIX_BOARD) + ":", "")
    r = subprocess.run([fleet.micropython(), str(REPO / "firmware" / "production" / "main.py")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert "[halt] SystemExit: board: settings.json is not valid JSON" in out, out
    assert out.rstrip().endswith("[fake machine] reset") and "Traceback" not in out

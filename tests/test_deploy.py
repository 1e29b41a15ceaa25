"""`gridveil build` + `gridveil deploy` through the real mpremote to an
emulated board (a pseudo-terminal speaking MicroPython's raw REPL and raw
paste, executing in the Unix port in its own folder). After the reset the
board boots the deployed .mpy firmware, which delivers its readings to a
running gateway; `gridveil monitor` follows its console across a reset."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.system import System

from host_tools.boardsim import BoardEmulator

REPO = Path(__file__).resolve().parents[1]


def gridveil(home, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "host_tools.cli", "--home", str(home), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def site(tmp_path_factory, sample_files):
    """One gateway and one firmware build for the module: setting them up
    is most of each test's time, and each test gets its own board."""
    tmp = tmp_path_factory.mktemp("deploy")
    s = System(tmp / "gv", sample_files[:5])
    s.start_gateway()
    r = gridveil(s.gw_home, "build", "--target", "unix", "--out", str(tmp / "build"))
    assert r.returncode == 0, r.stderr
    yield s, tmp / "build"
    s.close()


@pytest.fixture
def deployed(site, tmp_path):
    s, build = site
    shutil.copytree(build, tmp_path / "build")  # a test may corrupt its copy
    link = tmp_path / "ttyGV0"
    emu = BoardEmulator(tmp_path / "board", link=link).start()
    yield s, emu, link, tmp_path
    emu.close()


def test_deploy_to_emulated_board_then_it_delivers(deployed):
    s, emu, link, tmp_path = deployed
    r = gridveil(s.gw_home, "deploy", "--port", str(link), "--meter-dir", str(s.meters_dir / "m01"),
                 "--build", str(tmp_path / "build"))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "files verified" in r.stdout
    lib = sorted(p.name for p in (emu.fs / "lib").iterdir())
    assert "meter.mpy" in lib and "board.mpy" in lib and not any(n.endswith(".py") for n in lib)
    assert (emu.fs / "secrets.json").read_bytes() == \
        (s.meters_dir / "m01" / "secrets.json").read_bytes()
    deadline = time.monotonic() + 90
    while s.accepted("m01") < 96 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert s.accepted("m01") == 96
    assert emu.boots == 2  # power-on, then the reset after the deploy


def test_deploy_refuses_a_corrupted_transfer_and_missing_files(deployed, tmp_path):
    s, emu, link, tmp_path = deployed
    r = gridveil(s.gw_home, "deploy", "--port", str(link), "--meter-dir", str(tmp_path),
                 "--build", str(tmp_path / "build"))
    assert r.returncode == 2 and "settings.json" in r.stderr and "Traceback" not in r.stderr
    r = gridveil(s.gw_home, "deploy", "--port", str(tmp_path / "nope"), "--meter-dir",
                 str(s.meters_dir / "m01"), "--build", str(tmp_path / "build"), timeout=60)
    assert r.returncode == 2 and "mpremote failed" in r.stderr
    # A manifest that does not match what is sent: verification must catch it.
    manifest = tmp_path / "build" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"main.py": "', '"main.py": "00'))
    r = gridveil(s.gw_home, "deploy", "--port", str(link), "--meter-dir",
                 str(s.meters_dir / "m01"), "--build", str(tmp_path / "build"), "--no-reset")
    assert r.returncode == 2 and "did not arrive intact" in r.stderr


def test_monitor_follows_the_console_across_a_board_swap(deployed):
    s, emu, link, tmp_path = deployed
    r = gridveil(s.gw_home, "deploy", "--port", str(link), "--meter-dir", str(s.meters_dir / "m01"),
                 "--build", str(tmp_path / "build"))
    assert r.returncode == 0, r.stderr
    p = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "monitor", "--port", str(link),
                          "--duration", "12"], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    time.sleep(2)
    emu.close()  # the cable is pulled...
    time.sleep(2)
    emu2 = BoardEmulator(emu.fs, link=link)  # ...and a board is back on the same port name
    threading.Timer(1.0, emu2.start).start()
    out, err = p.communicate(timeout=60)
    emu2.close()
    assert p.returncode == 0, err
    assert b"retrying" in err and b"reconnected to" in err, err
    assert b"[m01] meter m01 fw" in out  # the firmware's boot line after the swap

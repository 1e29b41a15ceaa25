"""Firmware over the air, end to end: the real gateway offers an image that
`gridveil fleet update` staged, emulated meters fetch it block by block
inside OSCORE, write it to their emulated OTA partition, reset into it and
keep metering; an image that crashes is rolled back by the emulated
bootloader and refused. Every reading of the day still arrives exactly
once, checked against the replay files (ground truth computed apart)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers.relay import UdpRelay
from helpers.system import System

from common.files import ConfigError
from gateway import updates
from host_tools import build, fleet

# Two ways a release can be bad: its metering loop fails at once, or it
# runs but never gets a reading through to the gateway.
BUGS = {"crashes": ("meter.py", "def run(board):\n", "def run(board):\n    raise RuntimeError('bug')\n"),
        "goes silent": ("sender.py", "        self._waiting = False\n",
                        "        return False\n")}


def make_image(tmp: Path, version: str, bug: str | None = None) -> Path:
    out = tmp / f"build-{version}"
    build.build("unix", out, version=version)
    if bug:
        name, old, new = BUGS[bug]
        src = tmp / name
        text = (build.FIRMWARE / name).read_text()
        assert old in text
        src.write_text(text.replace(old, new, 1).replace('"0.1.0"', f'"{version}"'))
        subprocess.run([build.mpy_cross(), "-o", str(out / "lib" / (src.stem + ".mpy")),
                        str(src)], check=True)
    img = tmp / f"fw-{version}.img"
    build.image(out, img)
    return img


def fraction_choosing(meter_ids: list[str], version: str, n: int) -> float:
    """The rollout fraction that takes exactly the first n meters by hash."""
    h = sorted(int.from_bytes(hashlib.sha256(f"{version}\0{m}".encode()).digest()[:8], "big")
               for m in meter_ids)
    return (h[n - 1] + h[n]) / 2 / 2**64


def console(s: System, meter_id: str) -> str:
    return (s.meters_dir / meter_id / "console.log").read_text()


def run_keeping_consoles(s: System) -> list[fleet.MeterRun]:
    runs = s.run_meters()
    for r in runs:  # the whole console, across resets
        with open(r.meter_dir / "console.log", "a") as f:
            f.write(r.output)
    return runs


def test_staged_rollout_updates_the_chosen_meters_and_loses_no_reading(tmp_path, sample_files):
    s = System(tmp_path / "gv", sample_files[:5])
    try:
        ids = sorted(s.assignment)
        img = make_image(tmp_path, "0.2.0")
        frac = fraction_choosing(ids, "0.2.0", 2)
        out = s.cli(s.gw, "fleet", "update", "--image", str(img), "--version", "0.2.0",
                    "--fraction", str(frac)).stdout
        assert "offered to" in out and "2 of 5" in out, out
        chosen = {m for m in ids if updates.load(s.gw_home / "firmware").includes(m)}
        s.start_gateway()
        runs = run_keeping_consoles(s)
        s.stop_gateway()
        for r in runs:
            assert r.returncode == 0, r.output[-3000:]
        for m in s.meter_rows():
            assert (m["accepted"], m["last_seq"], m["duplicates"]) == (96, 95, 0), m
            want = "0.2.0" if m["meter_id"] in chosen else "0.1.0"
            assert m["fw_version"] == want, m
        for m in ids:
            log = console(s, m)
            if m in chosen:
                assert "firmware 0.2.0 written and verified" in log
                assert "[reboot]" in log and "firmware 0.2.0 confirmed" in log, log[-3000:]
                assert "fw 0.2.0" in log  # the new image's own start-up line
                ota = json.loads((s.meters_dir / m / "otadata.json").read_text())
                assert ota == {"boot": "ota_1", "running": "ota_1", "state": "valid"}, ota
            else:
                assert "fetching firmware" not in log and "[reboot]" not in log
        status = s.cli(s.gw, "fleet", "update", "--status").stdout
        assert "2 of 5; 2 of them run it" in status, status
        for args, said in [(["--image", str(tmp_path / "none.img"), "--version", "0.5.0"],
                            "cannot read"),
                           (["--image", str(img), "--version", "0.5 beta"], "version"),
                           (["--image", str(img), "--version", "0.5.0", "--fraction", "2"],
                            "between 0 and 1"),
                           (["--image", str(make_image(tmp_path, "0.2.1")), "--version",
                             "0.2.0"], "new version"),
                           (["--version", "0.5.0"], "give --image")]:
            r = s.cli(s.gw, "fleet", "update", *args, check=False)
            assert r.returncode != 0 and said in r.stderr and "Traceback" not in r.stderr, r
        assert "2 of 5; 2 of them run it" in s.cli(s.gw, "fleet", "update", "--status").stdout
        s.seal_all()
        released = s.release()
        ok, line = s.cross_check(released)
        assert ok, line
    finally:
        s.close()


def test_the_network_cannot_alter_an_update(tmp_path, sample_files):
    """The utility controls the network between meter and gateway. It flips
    one bit in the 1st, 11th and 21st image block it carries. The meter
    rejects each altered block (OSCORE), goes on from where it stopped at
    the next offer, and boots exactly the staged image; no reading is lost."""
    s = System(tmp_path / "gv", sample_files[:1])
    blocks, tampered = [], []

    def to_meter(d: bytes) -> bytes:
        if len(d) > 150:  # an image block (128 bytes and OSCORE's), not a reading's 2.04
            blocks.append(len(d))
            if len(blocks) in (1, 11, 21):
                tampered.append(len(blocks))
                return d[:-5] + bytes([d[-5] ^ 1]) + d[-4:]
        return d

    relay = UdpRelay(s.port, to_meter=to_meter)
    try:
        (d,) = s.meter_dirs()
        cfg = d / "settings.json"
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "gateway_port": relay.port}))
        img = make_image(tmp_path, "0.2.0").read_bytes()
        s.cli(s.gw, "fleet", "update", "--image", str(tmp_path / "fw-0.2.0.img"), "--version",
              "0.2.0", "--fraction", "1")
        s.start_gateway()
        (r,) = run_keeping_consoles(s)
        s.stop_gateway()
    finally:
        relay.close()
    assert r.returncode == 0, r.output[-3000:]
    assert tampered == [1, 11, 21]
    assert r.output.count("transfer interrupted (bad response") == 3, r.output[-3000:]
    # Block 0 again, then on from block 9 (the 11th carried) and block 18.
    # On a loaded machine the 80 KiB heap can also fail a block's
    # allocation (fragmentation; the heap budget is the firmware issue's):
    # the meter then goes on from where it stopped too, one resume more.
    hiccups = r.output.count("memory allocation failed")
    assert 2 <= r.output.count("from byte") <= 2 + hiccups, r.output[-3000:]
    assert "from byte 1152" in r.output and "from byte 2304" in r.output  # 128-byte blocks
    assert "firmware 0.2.0 confirmed" in r.output
    assert (d / "ota_1.bin").read_bytes()[:len(img)] == img  # exactly what was staged
    (m,) = s.meter_rows()
    assert (m["accepted"], m["duplicates"], m["fw_version"]) == (96, 0, "0.2.0"), m
    s.close()


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_an_image_that_fails_is_rolled_back_and_refused(tmp_path, sample_files, bug):
    s = System(tmp_path / "gv", sample_files[:2], settings={"ota_trial_s": 3600})
    try:
        img = make_image(tmp_path, "0.3.0", bug)
        s.cli(s.gw, "fleet", "update", "--image", str(img), "--version", "0.3.0",
              "--fraction", "1")
        s.start_gateway()
        second = run_keeping_consoles(s)  # fetch, reset into 0.3.0, which fails
        if bug == "crashes":
            assert all(r.returncode == 4 for r in second), [r.output[-2000:] for r in second]
            second = run_keeping_consoles(s)  # the next start: the bootloader rolls back
        else:  # the trial ends after an hour of the data's time: reset, roll back
            for r in second:
                assert "firmware 0.3.0 never reached the gateway: resetting" in r.output
        s.stop_gateway()
        for r in second:
            assert r.returncode == 0, r.output[-3000:]
            assert "[bootloader] ota_1 was reset before it confirmed itself" in r.output
            assert "firmware 0.3.0 did not reach the gateway and was rolled back" in r.output
            # Refused from then on, though the gateway still offers it (a
            # transfer that a heap hiccup interrupted goes on: one fetch more).
            hiccups = r.output.count("transfer interrupted (memory allocation failed")
            assert r.output.count("fetching firmware") - hiccups == (bug != "crashes"), \
                r.output[-3000:]
        for m in s.meter_rows():
            assert (m["accepted"], m["last_seq"], m["duplicates"], m["fw_version"]) == \
                (96, 95, 0, "0.1.0"), m
    finally:
        s.close()


def test_a_damaged_image_on_the_gateway_is_not_offered(tmp_path):
    img = b"GVI1" + bytes(5000)
    folder = tmp_path / "firmware"
    updates.stage(folder, img, "0.4.0", 1.0)
    r = updates.Rollouts(folder, check_every_s=0)
    assert r.current().offer("m01", "0.1.0") == ["0.4.0", len(img), hashlib.sha256(img).digest()]
    assert r.current().offer("m01", "0.4.0") is None  # it runs it already
    data = bytearray((folder / "firmware-0.4.0.img").read_bytes())
    data[100] ^= 1  # a flipped bit on the gateway's disk
    (folder / "firmware-0.4.0.img").write_bytes(data)
    st = (folder / "rollout.json").stat()  # "changed": as a new rollout would be
    os.utime(folder / "rollout.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert r.current() is None
    # The same version cannot come back with other bytes: meters that
    # fetched the first would refuse the version for good.
    with pytest.raises(ConfigError, match="new version"):
        updates.stage(folder, img + b"x", "0.4.0", 1.0)
    updates.stage(folder, img, "0.4.0", 0.5)  # the same image: a new fraction is fine

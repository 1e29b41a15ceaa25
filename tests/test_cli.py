"""The `gridveil` command as a user meets it: --help everywhere, and bad
input answered with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

COMMANDS = [[], ["authority"], ["authority", "init"], ["authority", "rotate"],
            ["authority", "trust-gateway"], ["authority", "token"], ["authority", "serve"],
            ["authority", "log"], ["authority", "verify"], ["gateway"], ["gateway", "init"],
            ["gateway", "run"], ["gateway", "seal"], ["gateway", "status"], ["gateway", "rekey"],
            ["tariff"], ["tariff", "add"], ["customer"], ["customer", "create"],
            ["customer", "export"], ["provision"], ["fleet"], ["report"], ["sample-data"],
            ["demo"], ["bench"], ["build"], ["deploy"], ["monitor"], ["board-emulator"],
            ["web"], ["web-user"], ["web-user", "add"]]


def gridveil(*args, home=None):
    cmd = [sys.executable, "-m", "host_tools.cli"]
    if home is not None:
        cmd += ["--home", str(home)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "gridveil")
def test_help_everywhere(cmd):
    r = gridveil(*cmd, "--help")
    assert r.returncode == 0
    assert "usage: gridveil" in r.stdout and len(r.stdout) > 100


def clean_failure(r, *needles):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    for n in needles:
        assert n in r.stderr, r.stderr


def test_bad_arguments(tmp_path):
    clean_failure(gridveil("authority", "init", "--bits", "many", home=tmp_path), "invalid int")
    clean_failure(gridveil("nonsense"), "invalid choice")
    clean_failure(gridveil("authority", "init", "--bits", "100", home=tmp_path), "at least 512")
    clean_failure(gridveil("authority", "init", "--bits", "512", "--k", "1", home=tmp_path), "k must")


def test_missing_and_broken_files(tmp_path):
    clean_failure(gridveil("gateway", "status", home=tmp_path), "gateway database not found")
    clean_failure(gridveil("gateway", "init", home=tmp_path), "authority layout not found")
    assert gridveil("authority", "init", "--bits", "512", home=tmp_path).returncode == 0
    clean_failure(gridveil("authority", "init", "--bits", "512", home=tmp_path), "already exists")
    assert gridveil("gateway", "init", "--port", "5999", home=tmp_path).returncode == 0
    clean_failure(gridveil("provision", "m1", "--neighbourhood", "n", "--replay", "/nope.csv",
                           home=tmp_path), "replay file not found")
    gw = tmp_path / "gateway" / "gateway.json"
    gw.write_text('{"port": "fifty"}')
    clean_failure(gridveil("gateway", "seal", home=tmp_path), "port must be a int")
    gw.write_text("{not json")
    clean_failure(gridveil("gateway", "run", home=tmp_path), "not valid JSON")
    clean_failure(gridveil("gateway", "rekey", "--from-day", "yesterday", home=tmp_path),
                  "must be a date")
    clean_failure(gridveil("tariff", "add", str(gw), home=tmp_path), "not valid JSON")
    (tmp_path / "t.json").write_text('{"id": "x", "bands": {"0": "a"}, "default_band": 3}')
    clean_failure(gridveil("tariff", "add", str(tmp_path / "t.json"), home=tmp_path),
                  "undefined bands")
    clean_failure(gridveil("customer", "create", "c1", "--password-file", "/nope",
                           home=tmp_path), "cannot read the password file")
    (tmp_path / "pw").write_text("short")
    clean_failure(gridveil("customer", "create", "c1", "--password-file", str(tmp_path / "pw"),
                           home=tmp_path), "at least 10 characters")
    clean_failure(gridveil("authority", "verify", "--holder", "mallory", home=tmp_path),
                  "no key holder 'mallory'")
    share = next((tmp_path / "authority" / "utility" / "keys").glob("*.share.json"))
    share.chmod(0o644)
    gw.write_text('{"port": 5999}')
    gridveil("authority", "trust-gateway", home=tmp_path)
    clean_failure(gridveil("report", home=tmp_path), "readable by others")


def test_provision_never_prints_secrets(tmp_path):
    gridveil("authority", "init", "--bits", "512", home=tmp_path)
    gridveil("gateway", "init", "--port", "5999", home=tmp_path)
    (tmp_path / "pw").write_text("a customer password")
    r = gridveil("customer", "create", "c1", "--password-file", str(tmp_path / "pw"),
                 home=tmp_path)
    assert r.returncode == 0, r.stderr
    r = gridveil("provision", "m1", "--neighbourhood", "north", "--customer", "c1", home=tmp_path)
    assert r.returncode == 0, r.stderr
    secrets = json.loads((tmp_path / "meters" / "m1" / "secrets.json").read_text())
    assert (tmp_path / "meters" / "m1" / "secrets.json").stat().st_mode & 0o077 == 0
    assert (tmp_path / "gateway" / "keystore.json").stat().st_mode & 0o077 == 0
    for v in (secrets["master_secret"], secrets["master_salt"]):
        assert v not in r.stdout + r.stderr
    clean_failure(gridveil("provision", "m1", "--neighbourhood", "north", home=tmp_path),
                  "already")
    # An ESP32 meter: board settings merged, Wi-Fi password read from a file.
    (tmp_path / "wifi").write_text("wifi-secret-42\n")
    (tmp_path / "board.json").write_text(json.dumps(
        {"board": {"chip": "esp32c3"}, "sensor": {"type": "pulse", "pin": 4, "imp_per_kwh": 800}}))
    r = gridveil("provision", "m2", "--neighbourhood", "north", "--board-settings",
                 str(tmp_path / "board.json"), "--wifi-ssid", "home", "--wifi-password-file",
                 str(tmp_path / "wifi"), home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wifi-secret-42" not in r.stdout + r.stderr
    s2 = json.loads((tmp_path / "meters" / "m2" / "secrets.json").read_text())
    assert s2["wifi_password"] == "wifi-secret-42"
    settings = json.loads((tmp_path / "meters" / "m2" / "settings.json").read_text())
    assert settings["sensor"]["imp_per_kwh"] == 800 and "wifi_password" not in settings


def test_authority_verify_detects_an_edited_log(tmp_path):
    import sqlite3

    from authority.ledger import Ledger

    assert gridveil("authority", "init", "--bits", "512", home=tmp_path).returncode == 0
    db = tmp_path / "authority" / "guardian" / "authority.db"
    led = Ledger(db)
    for i in range(3):
        led.record("mdms", "aggregate", f"agg:n:{i}", False, "too_few: test")
    led.close()
    r = gridveil("authority", "verify", "--holder", "guardian", home=tmp_path)
    assert r.returncode == 0 and "OK: 3 entries" in r.stdout
    con = sqlite3.connect(db)
    con.execute("UPDATE log SET granted=1 WHERE n=2")
    con.commit()
    con.close()
    r = gridveil("authority", "verify", "--holder", "guardian", home=tmp_path)
    assert r.returncode == 1 and "BROKEN: entry 2" in r.stdout

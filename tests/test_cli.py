"""The `gridveil` command as a user meets it: --help everywhere, and bad
input answered with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

COMMANDS = [[], ["keygen"], ["holder"], ["holder", "init"], ["holder", "import-key"],
            ["holder", "tariff-approve"], ["holder", "trust-gateway"], ["holder", "allow"],
            ["holder", "serve"], ["holder", "head"], ["holder", "log"], ["holder", "verify"],
            ["holder", "trust-guardian"], ["holder", "requests"], ["holder", "decide"],
            ["holder", "standing"], ["holder", "revoke"], ["holder", "decisions"],
            ["holder", "desk-password"],
            ["gateway"], ["gateway", "init"],
            ["gateway", "run"], ["gateway", "seal"], ["gateway", "push"], ["gateway", "status"],
            ["gateway", "rekey"], ["gateway", "customer-add"], ["tariff"], ["tariff", "add"],
            ["customer"], ["customer", "activate"], ["customer", "export"], ["provision"],
            ["fleet"], ["fleet", "update"], ["sample-data"], ["demo"], ["bench"], ["build"],
            ["deploy"], ["monitor"],
            ["board-emulator"], ["mdms"], ["mdms", "init"], ["mdms", "holder-add"],
            ["mdms", "trust-gateway"], ["mdms", "bindings"], ["mdms", "serve"],
            ["mdms", "release"], ["mdms", "status"], ["mdms", "user-add"]]
PASS = {"GRIDVEIL_HOLDER_PASSPHRASE": "a holder passphrase"}
GW = {"GRIDVEIL_GATEWAY_PASSPHRASE": "a gateway passphrase"}


def gridveil(*args, home=None, env=None):
    cmd = [sys.executable, "-m", "host_tools.cli"]
    if home is not None:
        cmd += ["--home", str(home)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, **(env or {})})


def holder_and_key(tmp_path):
    """Holders in tmp/hu and tmp/hg, a 512-bit key dealt to both; the
    guardian imported its share and signed the epoch for the gateways."""
    for role in ("guardian", "utility"):  # the utility's takes the guardian's key
        key = ["--guardian-key", str(tmp_path / "hg" / "signing.pub")] if role == "utility" \
            else []
        assert gridveil("holder", "init", "--role", role, "--min-key-bits", "512", "--export",
                        str(tmp_path / f"{role}.t.json"), *key, home=tmp_path / f"h{role[0]}",
                        env=PASS).returncode == 0
    r = gridveil("keygen", "--bits", "512", "--out", str(tmp_path / "keys"), "--utility",
                 str(tmp_path / "utility.t.json"), "--guardian", str(tmp_path / "guardian.t.json"))
    assert r.returncode == 0, r.stderr
    kid = r.stdout.split()[-1]
    pub = tmp_path / "keys" / f"{kid}.pub.json"
    assert gridveil("holder", "import-key", str(tmp_path / "keys" / f"{kid}.guardian.sealed.json"),
                    "--pub", str(pub), home=tmp_path / "hg", env=PASS).returncode == 0
    assert gridveil("holder", "sign-epoch", "--key-id", kid, "--out", str(tmp_path / "epoch.json"),
                    home=tmp_path / "hg", env=PASS).returncode == 0
    return kid, pub


def epoch_args(tmp_path) -> list[str]:
    return ["--epoch-signature", str(tmp_path / "epoch.json"), "--guardian-key",
            str(tmp_path / "hg" / "signing.pub")]


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
    clean_failure(gridveil("keygen", "--bits", "many", "--out", str(tmp_path)), "invalid int")
    clean_failure(gridveil("nonsense"), "invalid choice")
    clean_failure(gridveil("fleet", "update", "--status", home=tmp_path / "nogw"),
                  "no gateway in")
    holder_and_key(tmp_path)
    clean_failure(gridveil("keygen", "--bits", "100", "--out", str(tmp_path), "--single",
                           str(tmp_path / "utility.t.json")), "at least 512")
    clean_failure(gridveil("keygen", "--bits", "512", "--out", str(tmp_path), "--utility",
                           str(tmp_path / "utility.t.json")), "the utility and the guardian")
    clean_failure(gridveil("holder", "init", "--role", "guardian", "--k", "1", "--export",
                           str(tmp_path / "x"), home=tmp_path / "h1", env=PASS), "k must")
    clean_failure(gridveil("holder", "init", "--role", "utility", "--export", str(tmp_path / "x"),
                           home=tmp_path / "h3", env=PASS), "give the guardian holder's")
    clean_failure(gridveil("holder", "decide", "1", "--approve", home=tmp_path / "hu", env=PASS),
                  "run this at the guardian's holder")
    clean_failure(gridveil("holder", "standing", "bills", "--from", "soon", "--to", "2027-01-01",
                           home=tmp_path / "hg", env=PASS), "must be a date")
    clean_failure(gridveil("holder", "decide", "99", "--approve", home=tmp_path / "hg", env=PASS),
                  "there is no request 99")
    clean_failure(gridveil("holder", "desk-password", home=tmp_path / "hg",
                           env={"GRIDVEIL_DESK_PASSWORD": "password1234"}), "hard to guess")
    clean_failure(gridveil("holder", "init", "--role", "guardian", "--export", str(tmp_path / "x"),
                           home=tmp_path / "h2"), "encrypted at rest")
    clean_failure(gridveil("mdms", "init", "--db", "mysql://x", home=tmp_path / "m"),
                  "sqlite:///PATH or postgresql://")
    clean_failure(gridveil("mdms", "init", "--db", "postgresql://u:secret@h/db",
                           home=tmp_path / "m2"), "keep the database password out")


def test_missing_and_broken_files(tmp_path):
    gw = tmp_path / "gw"
    clean_failure(gridveil("gateway", "status", home=gw), "gateway database not found")
    clean_failure(gridveil("gateway", "init", "--paillier-pub", "/nope.json", "--epoch-signature",
                           "/nope", "--guardian-key", "/nope", home=gw), "not found")
    kid, pub = holder_and_key(tmp_path)
    clean_failure(gridveil("holder", "init", "--role", "guardian", "--export", str(tmp_path / "x"),
                           home=tmp_path / "hg", env=PASS), "already exists")
    clean_failure(gridveil("gateway", "init", "--port", "5999", "--paillier-pub", str(pub),
                           *epoch_args(tmp_path), home=gw), "the signing key is encrypted at rest")
    assert gridveil("gateway", "init", "--port", "5999", "--paillier-pub", str(pub),
                    *epoch_args(tmp_path), home=gw, env=GW).returncode == 0
    clean_failure(gridveil("provision", "m1", "--neighbourhood", "n", "--replay", "/nope.csv",
                           home=gw, env=GW), "replay file not found")
    clean_failure(gridveil("provision", "m1", "--neighbourhood", "n", home=gw),
                  "the meters' keys are encrypted at rest")
    clean_failure(gridveil("gateway", "push", home=gw), "is encrypted: give its passphrase")
    clean_failure(gridveil("gateway", "push", home=gw, env={"GRIDVEIL_GATEWAY_PASSPHRASE":
                                                            "not the passphrase"}),
                  "wrong passphrase for the signing key")
    clean_failure(gridveil("gateway", "push", home=gw, env=GW), "no MDMS to push to")
    cfg = gw / "gateway.json"
    cfg.write_text('{"port": "fifty"}')
    clean_failure(gridveil("gateway", "seal", home=gw), "port must be a int")
    cfg.write_text('{"empty_ack_delay_s": 3}')  # the meters would retransmit first
    clean_failure(gridveil("gateway", "seal", home=gw), "below 2")
    cfg.write_text("{not json")
    clean_failure(gridveil("gateway", "run", home=gw), "not valid JSON")
    clean_failure(gridveil("gateway", "rekey", "--from-day", "yesterday", "--paillier-pub",
                           str(pub), "--epoch-signature", "x", home=gw), "must be a date")
    clean_failure(gridveil("tariff", "add", str(cfg), home=gw), "not valid JSON")
    tou = REPO / "data" / "tariffs" / "tou-3band.json"
    assert gridveil("tariff", "add", str(tou), home=gw).returncode == 0
    # The same tariff id again, changed or not, between readings: only as a new version.
    clean_failure(gridveil("tariff", "add", str(tou), home=gw), "needs a higher \"version\"")
    (tmp_path / "t.json").write_text('{"id": "x", "bands": {"0": "a"}, "default_band": 3}')
    clean_failure(gridveil("tariff", "add", str(tmp_path / "t.json"), home=gw),
                  "undefined bands")
    (tmp_path / "code").write_text("ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ\n")
    activate = ["customer", "activate", "c1", "--mdms", "https://127.0.0.1:9", "--ca",
                str(tmp_path / "code"), "--code-file", str(tmp_path / "code")]
    clean_failure(gridveil(*activate, "--password-file", "/nope"),
                  "cannot read the password file")
    (tmp_path / "pw").write_text("short")
    clean_failure(gridveil(*activate, "--password-file", str(tmp_path / "pw")),
                  "at least 10 characters")
    # The utility keeps the wrapped key and can guess offline: a common password
    # fell to 15 guesses. zxcvbn's verdict, with its advice, before anything is sent.
    (tmp_path / "pw").write_text("password12")
    clean_failure(gridveil(*activate, "--password-file", str(tmp_path / "pw")),
                  "too weak: This is a very common password")
    (tmp_path / "pw").write_text("c1c1c1c1c1c1")
    clean_failure(gridveil(*activate, "--password-file", str(tmp_path / "pw")), "too weak")
    clean_failure(gridveil("holder", "import-key", str(tmp_path / "keys" / f"{kid}.utility"
                                                        ".sealed.json"), "--pub", str(pub),
                           home=tmp_path / "hu", env={"GRIDVEIL_HOLDER_PASSPHRASE": "nope nope"
                                                                                    " nope"}),
                  "wrong passphrase")
    assert gridveil("holder", "import-key", str(tmp_path / "keys" / f"{kid}.utility.sealed.json"),
                    "--pub", str(pub), home=tmp_path / "hu", env=PASS).returncode == 0
    share = next((tmp_path / "hu" / "keys").glob("*.share.json"))
    share.chmod(0o644)
    clean_failure(gridveil("holder", "serve", home=tmp_path / "hu", env=PASS),
                  "readable by others")
    clean_failure(gridveil("mdms", "release", home=tmp_path / "nomdms"), "MDMS settings not found")


def test_provision_never_prints_secrets(tmp_path):
    _, pub = holder_and_key(tmp_path)
    gw = tmp_path / "gw"
    gridveil("gateway", "init", "--port", "5999", "--paillier-pub", str(pub), *epoch_args(tmp_path),
             home=gw, env=GW)
    r = gridveil("provision", "m1", "--neighbourhood", "north", "--customer", "c1", home=gw,
                 env=GW)
    assert r.returncode == 0, r.stderr
    secrets = json.loads((gw / "provisioned" / "m1" / "secrets.json").read_text())
    assert (gw / "provisioned" / "m1" / "secrets.json").stat().st_mode & 0o077 == 0
    assert not (gw / "keystore.json").exists()  # sealed in the database instead
    db = b"".join(f.read_bytes() for f in gw.glob("gateway.db*"))
    for v in (secrets["master_secret"], secrets["master_salt"]):
        assert v not in r.stdout + r.stderr
        assert v.encode() not in db and bytes.fromhex(v) not in db
    clean_failure(gridveil("provision", "m1", "--neighbourhood", "north", home=gw, env=GW),
                  "already")
    # An ESP32 meter: board settings merged, Wi-Fi password read from a file.
    (tmp_path / "wifi").write_text("wifi-secret-42\n")
    (tmp_path / "board.json").write_text(json.dumps(
        {"board": {"chip": "esp32c3"}, "sensor": {"type": "pulse", "pin": 4, "imp_per_kwh": 800}}))
    r = gridveil("provision", "m2", "--neighbourhood", "north", "--board-settings",
                 str(tmp_path / "board.json"), "--wifi-ssid", "home", "--wifi-password-file",
                 str(tmp_path / "wifi"), home=gw, env=GW)
    assert r.returncode == 0, r.stderr
    assert "wifi-secret-42" not in r.stdout + r.stderr
    s2 = json.loads((gw / "provisioned" / "m2" / "secrets.json").read_text())
    assert s2["wifi_password"] == "wifi-secret-42"
    settings = json.loads((gw / "provisioned" / "m2" / "settings.json").read_text())
    assert settings["sensor"]["imp_per_kwh"] == 800 and "wifi_password" not in settings


def test_holder_verify_detects_an_edited_log(tmp_path):
    import sqlite3

    from authority.ledger import Ledger

    holder_and_key(tmp_path)
    db = tmp_path / "hg" / "authority.db"
    led = Ledger(db)
    for i in range(3):
        led.record("mdms", "aggregate", f"agg:n:{i}", False, "too_few: test")
    led.close()
    r = gridveil("holder", "verify", home=tmp_path / "hg")
    assert r.returncode == 0 and "OK: 3 entries" in r.stdout
    con = sqlite3.connect(db)
    con.execute("UPDATE log SET granted=1 WHERE n=2")
    con.commit()
    con.close()
    r = gridveil("holder", "verify", home=tmp_path / "hg")
    assert r.returncode == 1 and "BROKEN: entry 2" in r.stdout


def test_gateway_refuses_to_start_without_its_meter_keys(tmp_path):
    """A gateway whose meters' keys are gone, or do not open, cannot serve
    them: one clear line, never a gateway "for 0 meters". A keystore.json
    left by an older gateway is sealed into the database and removed."""
    import sqlite3

    _, pub = holder_and_key(tmp_path)
    gw = tmp_path / "gw"
    assert gridveil("gateway", "init", "--port", "5999", "--paillier-pub", str(pub),
                    *epoch_args(tmp_path), home=gw, env=GW).returncode == 0
    assert gridveil("provision", "m1", "--neighbourhood", "north", home=gw,
                    env=GW).returncode == 0
    clean_failure(gridveil("gateway", "run", home=gw,
                           env={"GRIDVEIL_GATEWAY_PASSPHRASE": "another passphrase"}),
                  "wrong passphrase")
    con = sqlite3.connect(gw / "gateway.db")
    sealed = con.execute("SELECT sealed FROM meter_keys").fetchone()[0]
    con.execute("UPDATE meter_keys SET sealed=?", (sealed[:-1] + bytes([sealed[-1] ^ 1]),))
    con.commit()
    clean_failure(gridveil("gateway", "run", home=gw, env=GW), "m1's key does not open")
    con.execute("DELETE FROM meter_keys")
    con.commit()
    con.close()
    clean_failure(gridveil("gateway", "run", home=gw, env=GW),
                  "the keys of 1 registered meter(s) are missing", "restore this gateway's home")
    # An older gateway's clear keystore.json: imported, sealed, gone.
    old = gw / "keystore.json"
    old.write_text(json.dumps({"gateway_id": "", "meters": {"m1": {
        "kid": "01", "master_secret": "aa" * 16, "master_salt": "bb" * 8}}}))
    old.chmod(0o600)
    from gateway.config import GatewayHome
    from gateway.keystore import KeyStore
    from gateway.server import open_keystore
    from gateway.store import Store

    store = Store(gw / "gateway.db")
    ks = open_keystore(GatewayHome(gw), store, GW["GRIDVEIL_GATEWAY_PASSPHRASE"])
    assert ks.meters["m1"].master_secret == bytes.fromhex("aa" * 16)
    assert not ks.meters["m1"].ratchet and not old.exists()
    assert KeyStore(store, GW["GRIDVEIL_GATEWAY_PASSPHRASE"]).load().meters.keys() == {"m1"}
    store.close()

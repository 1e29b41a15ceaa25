"""Time-of-use bills on ciphertexts, exact to the micro-cent, and customers'
sealed copies, through the whole system on the sample data."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
from helpers.system import System

from common import customer, tariff
from common.files import ConfigError
from host_tools import customer_export

REPO = Path(__file__).resolve().parents[1]
TOU = tariff.parse(json.loads((REPO / "data" / "tariffs" / "tou-3band.json").read_text()))
PASSWORD = "demo-password-not-secret"


def test_tariff_bands_follow_weekday_and_local_hour():
    # 2026-01-02 is a Friday; the tariff's local time is UTC+1.
    fri = 1767312000
    assert TOU.band(fri + 5 * 3600) == 0  # 06:00 local: night
    assert TOU.band(fri + 6 * 3600) == 1  # 07:00 local: day
    assert TOU.band(fri + 16 * 3600) == 2  # 17:00 local: weekday peak
    assert TOU.band(fri + 20 * 3600) == 1  # 21:00 local: day again
    assert TOU.band(fri + 86400 + 16 * 3600) == 1  # Saturday 17:00: no peak
    assert TOU.band(fri + 22 * 3600) == 0  # 23:00 local: night


@pytest.fixture(scope="module")
def tou_system(tmp_path_factory, sample_files):
    s = System(tmp_path_factory.mktemp("tou") / "gv", sample_files, tariff=TOU, customers=True)
    s.start_gateway()
    runs = s.run_meters()
    s.stop_gateway()
    assert all(r.returncode == 0 for r in runs), [r.output for r in runs]
    s.seal_all()
    yield s
    s.close()


def test_time_of_use_bills_exact_on_sample_day(tou_system):
    released = tou_system.release()
    ok, line = tou_system.cross_check(released)
    assert ok, line
    assert len(released.bills) == 10
    bands = set()
    for gid in tou_system.gateways:
        st = tou_system.store(readonly=True, gateway=gid)
        bands |= {b for (b,) in st.db.execute("SELECT DISTINCT band FROM bill_days")}
        st.close()
    assert bands == {0, 1, 2}  # the day really crossed all three bands


def test_customer_export_reproduces_the_meters_readings(tou_system):
    s = tou_system
    pw = s.base / "pw"
    pw.write_text(PASSWORD)
    # The household's own process, with no home: it logs in to the portal
    # over HTTPS (pinned certificate) and decrypts here.
    r = s.cli(s.base / "customer-c03", "customer", "export", "c03", "--mdms", s.mdms_url(),
              "--ca", str(s.mdms_ca()), "--password-file", str(pw))
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 96 and {x["meter_id"] for x in rows} == {"m03"}
    # Exactly what the meter queued: compare with its own flash log is not
    # possible (acked readings are compacted away), so with ground truth.
    from host_tools import groundtruth

    truth = groundtruth.interval_energy(s.files[2])
    assert [int(x["energy_wh"]) for x in rows] == [truth[e] for e in sorted(truth)]
    registers = [int(x["register_wh"]) for x in rows]
    assert registers == [sum(truth[e] for e in sorted(truth)[:i + 1]) for i in range(96)]
    assert [int(x["seq"]) for x in rows] == list(range(96))


def test_wrong_password_and_other_customers_key_open_nothing(tou_system):
    s = tou_system
    with pytest.raises(ConfigError, match="wrong customer id or password"):
        customer_export.readings(s.mdms_url(), s.mdms_ca(), "c01", "not the password at all")
    # A server that hands c01's readings to c02 (or c02's key to c01) gives
    # nothing away: c02's private key does not unwrap c01's day keys.
    c02 = customer_export.fetch(s.mdms_url(), s.mdms_ca(), "c02", PASSWORD)
    c01 = customer_export.fetch(s.mdms_url(), s.mdms_ca(), "c01", PASSWORD)
    priv2 = customer.unlock({"customer_id": "c02", "kdf": c02["kdf"],
                             "wrapped_private_key": c02["wrapped_private_key"]}, PASSWORD)
    with pytest.raises(ValueError):
        customer.open_day_key(priv2, base64.b64decode(c01["day_keys"][0]["wrapped"]))


def test_gateway_holds_nothing_that_opens_customer_copies(tou_system):
    s = tou_system
    import re

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    gw_files = [(p, g) for g in s.gateways.values() for p in g.home.rglob("*") if p.is_file()]
    for p, g in gw_files:
        data = p.read_bytes()
        assert b"wrapped_private_key" not in data, p
        for pem in re.findall(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----",
                              data, re.S):
            # The gateway's own signing key is encrypted under its passphrase.
            pw = g.env["GRIDVEIL_GATEWAY_PASSPHRASE"].encode() if b"ENCRYPTED" in pem else None
            key = serialization.load_pem_private_key(pem, password=pw)
            assert not isinstance(key, rsa.RSAPrivateKey), f"{p} holds an RSA private key"
    st = s.store(readonly=True)
    cols = [r[1] for r in st.db.execute("PRAGMA table_info(customers)")]
    st.close()
    assert cols == ["customer_id", "public_key", "meters"]


def test_clients_refuse_weakened_key_derivation():
    """What the no-browser client (and, in JavaScript, the portal) accepts
    from a server, whatever it sends: the derivation this release uses,
    at least 600,000 iterations, a 16-byte salt. A key file of the old
    two-salt kind, where a server could set salt_auth == salt_wrap and get
    the wrapping key as the "verifier", is refused."""
    salt = base64.b64encode(bytes(16)).decode()
    good = {"name": customer.KDF_NAME, "iterations": 600_000, "salt": salt}
    assert customer.kdf_params(good) == (bytes(16), 600_000)
    for bad, why in [({**good, "iterations": 1000}, "iterations"),
                     ({**good, "iterations": 10**9}, "iterations"),
                     ({**good, "iterations": "600000"}, "iterations"),
                     ({**good, "salt": base64.b64encode(b"short").decode()}, "salt"),
                     ({**good, "salt": "%%%"}, "malformed"),
                     ({"name": "PBKDF2-SHA256", "iterations": 600_000, "salt_auth": salt,
                       "salt_wrap": salt}, "older version")]:
        with pytest.raises(ConfigError, match=why):
            customer.kdf_params(bad)
    v, w = customer.derive_keys("a fine long passphrase", "c1", bytes(16), 600_000)
    v2, _ = customer.derive_keys("a fine long passphrase", "c2", bytes(16), 600_000)
    assert len({v, w, v2}) == 3  # labels and the customer id separate them

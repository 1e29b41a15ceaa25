"""The key authority's policy, on real keys and a real gateway database:
every kind of refusal, exactly-once release, late readings, and the
tamper-evident decision log."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authority.ledger import Ledger
from authority.policy import Policy, Refusal
from authority.service import Authority, BillRequest
from common import paillier, records
from common.files import ConfigError
from gateway.config import GatewayConfig, GatewayHome
from gateway.pes import PES, Reading
from gateway.seal import seal, sealed_aggregates, signed_bill_days
from gateway.signing import load_private
from gateway.store import Store
from host_tools import provision

DAY0 = 1767225600
T1 = DAY0 + 900


@pytest.fixture
def env(tmp_path):
    provision.init_authority(tmp_path / "authority", 512, k=5)
    provision.init_gateway(tmp_path / "gateway", tmp_path / "authority" / "paillier.pub.json",
                           GatewayConfig(port=5999, grace_s=0, bill_grace_s=0))
    provision.trust_gateway(tmp_path / "authority", tmp_path / "gateway")
    gh = GatewayHome(tmp_path / "gateway")
    for i in range(1, 7):  # big: 5 meters, small: 1 meter
        provision.provision_meter(gh.path, f"m{i}", "big" if i <= 5 else "small",
                                  tmp_path / "meters" / f"m{i}")
    store = Store(gh.db)
    pes = PES(store, paillier.load_public(gh.paillier_pub), 900)
    auth = Authority(tmp_path / "authority")
    yield tmp_path, store, pes, auth, load_private(gh.signing_key)
    auth.close()
    store.close()


def feed_day(pes, meters, base=100):
    """Readings for every interval of day 0: meter i uses base + i Wh."""
    for i in meters:
        rs = [Reading(j, DAY0 + 900 * (j + 1), base + i, 0) for j in range(96)]
        for k in range(0, 96, 32):
            pes.ingest(f"m{i}", rs[k:k + 32], "t", 0)


def seal_now(store, key):
    return seal(store, key, 900, 0, seal_all=True)


def agg(store, nbh, end):
    return next((r, s) for r, s in sealed_aggregates(store) if r.neighbourhood == nbh
                and r.interval_end == end)


def test_release_exactly_once_and_refuse_small_groups(env):
    _, store, pes, auth, key = env
    feed_day(pes, range(1, 7))
    seal_now(store, key)
    rec, sig = agg(store, "big", T1)
    assert rec.contributors == 5
    assert auth.release_aggregate(rec, sig) == sum(100 + i for i in range(1, 6))
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(rec, sig)
    assert e.value.code == "already_released"
    rec, sig = agg(store, "small", T1)  # a single household
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(rec, sig)
    assert e.value.code == "too_few"
    log = auth.ledger.entries()
    assert [(x["granted"], x["reason"].split(":")[0]) for x in log] == \
        [(1, "granted"), (0, "already_released"), (0, "too_few")]


def test_group_of_k_minus_one_refused(env):
    _, store, pes, auth, key = env
    feed_day(pes, range(1, 5))  # 4 of the 5 meters in "big"
    seal_now(store, key)
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(*agg(store, "big", T1))
    assert e.value.code == "too_few"


def test_forged_resigned_and_tampered_records_refused(env):
    _, store, pes, auth, key = env
    feed_day(pes, range(1, 6))
    seal_now(store, key)
    rec, sig = agg(store, "big", T1 + 900)
    other = Ed25519PrivateKey.generate()
    cases = {
        "re-signed by another key": (rec, records.sign(other, rec)),
        "unsigned": (rec, b""),
        "contributors inflated": (dataclasses.replace(rec, contributors=50), sig),
        "ciphertext swapped": (dataclasses.replace(rec, ciphertext=agg(store, "big", T1)[0].ciphertext), sig),
        "ciphertext bit flipped": (dataclasses.replace(
            rec, ciphertext=bytes([rec.ciphertext[0] ^ 1]) + rec.ciphertext[1:]), sig),
    }
    for name, (r, s) in cases.items():
        with pytest.raises(Refusal) as e:
            auth.release_aggregate(r, s)
        assert e.value.code == "bad_signature", name
    wrong = dataclasses.replace(rec, key_id="0" * 16)
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(wrong, records.sign(key, wrong))
    assert e.value.code == "wrong_key"
    assert len([x for x in auth.ledger.entries() if not x["granted"]]) == 6


def test_late_reading_counts_for_bill_not_for_released_interval(env):
    _, store, pes, auth, key = env
    feed_day(pes, range(1, 6))
    seal_now(store, key)
    rec, sig = agg(store, "big", T1)
    first = auth.release_aggregate(rec, sig)
    # A sixth meter joins "big" and reports for the interval already sealed.
    store.db.execute("UPDATE meters SET neighbourhood='big' WHERE meter_id='m6'")
    r = pes.ingest("m6", [Reading(0, T1, 1000, 1000)], None, None)
    assert r.late == 1 and r.accepted == 1
    rec2, sig2 = agg(store, "big", T1)
    assert rec2 == rec  # the sealed interval did not change
    with pytest.raises(Refusal):
        auth.release_aggregate(rec2, sig2)
    # ...and even a freshly signed record with the new sum is refused.
    bigger = dataclasses.replace(rec, ciphertext=pes._add(rec.ciphertext, pes.encrypt(1000)),
                                 contributors=6)
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(bigger, records.sign(key, bigger))
    assert e.value.code == "already_released"
    assert first == sum(100 + i for i in range(1, 6))
    seal_now(store, key)
    bill = {r.meter_id: (r, s) for r, s in signed_bill_days(store)}["m6"]
    assert auth.release_bill(BillRequest("m6", 7, [bill])) == 7 * 1000


def test_bill_policy(env):
    _, store, pes, auth, key = env
    feed_day(pes, range(1, 3))
    seal_now(store, key)
    days = {r.meter_id: (r, s) for r, s in signed_bill_days(store)}
    m1 = days["m1"]
    assert auth.release_bill(BillRequest("m1", 25_000, [m1])) == 96 * 101 * 25_000
    bad = {
        "already_released": BillRequest("m1", 25_000, [m1]),
        "period_too_short": BillRequest("m2", 25_000, []),
        "mixed_meters": BillRequest("m2", 25_000, [m1]),
        "bad_tariff": BillRequest("m2", 0, [days["m2"]]),
    }
    for code, req in bad.items():
        with pytest.raises(Refusal) as e:
            auth.release_bill(req)
        assert e.value.code == code
    later = dataclasses.replace(days["m2"][0], day=days["m2"][0].day + 2)
    with pytest.raises(Refusal) as e:
        auth.release_bill(BillRequest("m2", 1, [days["m2"], (later, records.sign(key, later))]))
    assert e.value.code == "period_gaps"


def test_policy_cannot_be_weakened_below_safe_floor(tmp_path):
    with pytest.raises(ConfigError):
        Policy(k=2).validate()
    with pytest.raises(ConfigError):
        Policy(min_bill_days=0).validate()
    provision.init_authority(tmp_path / "a", 512)
    (tmp_path / "a" / "policy.json").write_text('{"k": 1}')
    provision.init_gateway(tmp_path / "g", tmp_path / "a" / "paillier.pub.json", GatewayConfig())
    provision.trust_gateway(tmp_path / "a", tmp_path / "g")
    with pytest.raises(ConfigError):
        Authority(tmp_path / "a")


@pytest.mark.parametrize("attack", ["edit", "delete", "reorder"])
def test_audit_log_detects_tampering(tmp_path, attack):
    path = tmp_path / "ledger.db"
    led = Ledger(path)
    for i in range(5):
        led.record("mdms", "aggregate", [f"agg:x:{i}"], i % 2 == 0, "granted" if i % 2 == 0 else "too_few")
    assert led.verify()[0]
    led.close()
    con = sqlite3.connect(path)
    if attack == "edit":
        con.execute("UPDATE log SET granted=1 WHERE n=2")
    elif attack == "delete":
        con.execute("DELETE FROM log WHERE n=3")
    else:
        a = con.execute("SELECT at, requester, kind, subject, granted, reason, prev, hash FROM log"
                        " WHERE n=2").fetchone()
        b = con.execute("SELECT at, requester, kind, subject, granted, reason, prev, hash FROM log"
                        " WHERE n=4").fetchone()
        upd = ("UPDATE log SET at=?, requester=?, kind=?, subject=?, granted=?, reason=?, prev=?,"
               " hash=? WHERE n=?")
        con.execute(upd, (*b, 2))
        con.execute(upd, (*a, 4))
    con.commit()
    con.close()
    ok, msg = Ledger(path).verify()
    assert not ok, msg

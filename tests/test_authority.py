"""The key authority on real keys and a real gateway database: each kind of
refusal (and its log entry), exactly-once release, late readings, threshold
shares, keys at rest, and the tamper-evident log."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authority import setup as authority_setup
from authority import threshold
from authority.client import Authority
from authority.holder import DAY, BillRequest, KeyHolder
from authority.ledger import Ledger
from authority.policy import Policy, Refusal
from common import records
from common.files import ConfigError, read_json, write_json
from gateway.config import GatewayConfig, GatewayHome
from gateway.pes import PES, Reading
from gateway.seal import seal, sealed_aggregates, signed_bill_days
from gateway.signing import load_private
from gateway.store import Store
from host_tools import provision

DAY0 = 1767225600
T1 = DAY0 + 900
PRICES = {0: 25_000}


def make_env(tmp_path, threshold_mode=True, passphrase=None):
    provision.init_authority(tmp_path / "authority", 512, k=5, threshold=threshold_mode,
                             passphrases={"single": passphrase})
    provision.init_gateway(tmp_path / "gateway",
                           authority_setup.public_key_file(tmp_path / "authority"),
                           GatewayConfig(port=5999, grace_s=0, bill_grace_s=0))
    provision.trust_gateway(tmp_path / "authority", tmp_path / "gateway")
    gh = GatewayHome(tmp_path / "gateway")
    for i in range(1, 7):  # "big": m1..m5, "small": m6 alone
        provision.provision_meter(gh.path, f"m{i}", "big" if i <= 5 else "small",
                                  tmp_path / "meters" / f"m{i}")
    return gh


@pytest.fixture(params=["threshold", "single"])
def env(request, tmp_path):
    pw = "correct horse battery" if request.param == "single" else None
    gh = make_env(tmp_path, request.param == "threshold", pw)
    store = Store(gh.db)
    pes = PES(store, 900)
    auth = Authority.local(tmp_path / "authority", {"single": pw})
    yield tmp_path, store, pes, auth, load_private(gh.signing_key)
    auth.close()
    store.close()


def feed_day(pes, meters, base=100, day0=DAY0, seq0=0):
    """Readings for every interval of one day: meter i uses base + i Wh."""
    for i in meters:
        rs = [Reading(seq0 + j, day0 + 900 * (j + 1), base + i, 0) for j in range(96)]
        for k in range(0, 96, 32):
            pes.ingest(f"m{i}", rs[k:k + 32], "t", 0)


def seal_now(store, key):
    return seal(store, key, 900, 0, seal_all=True)


def agg(store, nbh, end):
    return next((r, s) for r, s in sealed_aggregates(store) if r.neighbourhood == nbh
                and r.interval_end == end)


def entries(auth):
    return {role: [(e["granted"], e["reason"].split(":")[0]) for e in h.ledger.entries()]
            for role, h in auth.holders.items()}


def test_release_once_and_refuse_a_single_household(env):
    _, store, pes, auth, key = env
    feed_day(pes, range(1, 7))
    seal_now(store, key)
    rec, sig = agg(store, "big", T1)
    assert rec.contributors == 5
    assert auth.release_aggregate(rec, sig) == sum(100 + i for i in range(1, 6))
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(rec, sig)
    assert e.value.code == "already_released"
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(*agg(store, "small", T1))  # one meter's interval
    assert e.value.code == "too_few"
    for log in entries(auth).values():  # every holder logged every decision
        assert log == [(1, "granted"), (0, "already_released"), (0, "too_few")]


def test_group_of_k_minus_one_refused(env):
    _, store, pes, auth, key = env
    feed_day(pes, range(1, 5))  # 4 of the 5 meters in "big"
    seal_now(store, key)
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(*agg(store, "big", T1))
    assert e.value.code == "too_few"


def test_unsigned_resigned_and_tampered_records_refused(env):
    _, store, pes, auth, key = env
    feed_day(pes, range(1, 6))
    seal_now(store, key)
    rec, sig = agg(store, "big", T1 + 900)
    other = Ed25519PrivateKey.generate()
    cases = {
        "re-signed by another key": (rec, records.sign(other, rec)),
        "unsigned": (rec, b""),
        "contributors inflated": (dataclasses.replace(rec, contributors=50), sig),
        "ciphertext swapped": (dataclasses.replace(
            rec, ciphertext=agg(store, "big", T1)[0].ciphertext), sig),
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
    for log in entries(auth).values():
        assert len(log) == 6 and not any(granted for granted, _ in log)


def test_same_interval_twice_after_a_late_reading(env):
    _, store, pes, auth, key = env
    feed_day(pes, range(1, 6))
    seal_now(store, key)
    rec, sig = agg(store, "big", T1)
    first = auth.release_aggregate(rec, sig)
    # A sixth meter joins "big" and reports for the interval already sealed.
    store.db.execute("UPDATE meters SET neighbourhood='big' WHERE meter_id='m6'")
    pes._meters.clear()
    r = pes.ingest("m6", [Reading(0, T1, 1000, 1000)], None, None)
    assert r.late == 1 and r.accepted == 1
    assert agg(store, "big", T1) == (rec, sig)  # the sealed interval did not change
    # ...and even a freshly signed record with the new sum is refused.
    bigger = dataclasses.replace(rec, ciphertext=pes._add(rec.key_id, rec.ciphertext,
                                                          pes.encrypt(0, 1000)[1]), contributors=6)
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(bigger, records.sign(key, bigger))
    assert e.value.code == "already_released"
    assert first == sum(100 + i for i in range(1, 6))
    seal_now(store, key)  # the late reading still counts for m6's bill
    days = signed_bill_days(store, "m6")
    assert auth.release_bill(BillRequest("m6", DAY0, DAY0 + DAY, {0: 7}, days)) == 7 * 1000


def test_bill_policy(env):
    _, store, pes, auth, key = env
    feed_day(pes, range(1, 3))
    seal_now(store, key)
    m1, m2 = signed_bill_days(store, "m1"), signed_bill_days(store, "m2")
    assert auth.release_bill(BillRequest("m1", DAY0, DAY0 + DAY, PRICES, m1)) == \
        96 * 101 * 25_000
    later = dataclasses.replace(m2[0][0], day=m2[0][0].day + 1)
    bad = {
        "already_released": BillRequest("m1", DAY0, DAY0 + DAY, PRICES, m1),
        "period_too_short": BillRequest("m2", DAY0, DAY0 + 3600, PRICES, m2),  # one hour
        "not_whole_days": BillRequest("m2", DAY0 + 3600, DAY0 + DAY + 3600, PRICES, m2),
        "mixed_meters": BillRequest("m2", DAY0, DAY0 + DAY, PRICES, m1),
        "bad_tariff": BillRequest("m2", DAY0, DAY0 + DAY, {1: 5}, m2),
        "period_gaps": BillRequest("m2", DAY0, DAY0 + 3 * DAY, PRICES,
                                   m2 + [(dataclasses.replace(later, day=later.day + 1),
                                          records.sign(key, later))]),
    }
    for code, req in bad.items():
        with pytest.raises(Refusal) as e:
            auth.release_bill(req)
        assert e.value.code == code, code


def test_threshold_one_share_decrypts_nothing(tmp_path):
    gh = make_env(tmp_path)
    store = Store(gh.db)
    pes = PES(store, 900)
    feed_day(pes, range(1, 6))
    seal_now(store, load_private(gh.signing_key))
    rec, sig = agg(store, "big", T1)
    utility = KeyHolder(tmp_path / "authority" / "utility")
    guardian = KeyHolder(tmp_path / "authority" / "guardian")
    pub = utility.home.keys.public(rec.key_id)
    a = utility.release_aggregate(rec, sig)
    assert a.kind == "partial"
    with pytest.raises(ValueError):
        threshold.combine(pub, [a.number])
    # Neither share file holds the private key, and a share is not it.
    for holder in (utility, guardian):
        d = read_json(holder.home.keys.share_file(rec.key_id), "share", secret=True)
        assert set(d["secret"]) == {"n", "d"}
    b = guardian.release_aggregate(rec, sig)
    assert threshold.combine(pub, [a.number, b.number]) == sum(100 + i for i in range(1, 6))
    store.close()


def test_holder_refuses_on_its_own_even_if_the_other_agrees(tmp_path):
    gh = make_env(tmp_path)
    guardian_policy = tmp_path / "authority" / "guardian" / "policy.json"
    write_json(guardian_policy, {**read_json(guardian_policy, "p"), "k": 6})  # stricter guardian
    store = Store(gh.db)
    feed_day(PES(store, 900), range(1, 6))
    seal_now(store, load_private(gh.signing_key))
    auth = Authority.local(tmp_path / "authority")
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(*agg(store, "big", T1))
    assert e.value.code == "too_few" and str(e.value).startswith("guardian:")
    assert entries(auth) == {"utility": [(1, "granted")], "guardian": [(0, "too_few")]}
    auth.close()
    store.close()


def test_single_key_encrypted_at_rest(tmp_path):
    with pytest.raises(ConfigError, match="must be encrypted"):
        provision.init_authority(tmp_path / "a", 512, threshold=False, passphrases={})
    provision.init_authority(tmp_path / "b", 512, threshold=False,
                             passphrases={"single": "a long passphrase"})
    holder_dir = tmp_path / "b"
    kid = read_json(holder_dir / "authority.json", "x")["current_key_id"]
    keyfile = holder_dir / "keys" / f"{kid}.key.json"
    assert keyfile.stat().st_mode & 0o077 == 0
    d = read_json(keyfile, "k", secret=True)
    assert d["encrypted"] and d["kdf"]["name"] == "scrypt" and "secret" not in d
    from authority.keys import KeyDir

    with pytest.raises(ConfigError, match="wrong passphrase"):
        KeyDir(holder_dir / "keys").private(kid, "not the passphrase")
    with pytest.raises(ConfigError, match="encrypted"):
        KeyDir(holder_dir / "keys").private(kid, None)
    priv = KeyDir(holder_dir / "keys").private(kid, "a long passphrase")
    assert str(priv.p) not in keyfile.read_text()


def test_key_rotation_keeps_old_periods(tmp_path):
    gh = make_env(tmp_path)
    store = Store(gh.db)
    feed_day(PES(store, 900), range(1, 6))  # day 0 under the first key
    old_kid = store.key_epochs()[0][1]
    new_kid = authority_setup.rotate(tmp_path / "authority", 512, {})
    day1 = (DAY0 + DAY) // DAY
    provision.rekey_gateway(gh.path, authority_setup.public_key_file(tmp_path / "authority"), day1)
    pes = PES(store, 900)  # a restarted gateway
    feed_day(pes, range(1, 6), base=200, day0=DAY0 + DAY, seq0=96)
    seal_now(store, load_private(gh.signing_key))
    auth = Authority.local(tmp_path / "authority")
    a0 = agg(store, "big", T1)
    a1 = agg(store, "big", T1 + DAY)
    assert (a0[0].key_id, a1[0].key_id) == (old_kid, new_kid)
    assert auth.release_aggregate(*a0) == sum(100 + i for i in range(1, 6))
    assert auth.release_aggregate(*a1) == sum(200 + i for i in range(1, 6))
    days = signed_bill_days(store, "m1")
    with pytest.raises(Refusal) as e:  # one bill cannot span two key epochs
        auth.release_bill(BillRequest("m1", DAY0, DAY0 + 2 * DAY, PRICES, days))
    assert e.value.code == "mixed_keys"
    assert auth.release_bill(BillRequest("m1", DAY0 + DAY, DAY0 + 2 * DAY, PRICES,
                                         days[1:])) == 96 * 201 * 25_000
    auth.close()
    store.close()


def test_differential_privacy_noise_and_budget(tmp_path):
    gh = make_env(tmp_path)
    for role in ("utility", "guardian"):
        p = tmp_path / "authority" / role / "policy.json"
        write_json(p, {**read_json(p, "p"), "dp_epsilon": "1/2", "dp_budget_per_day": "2",
                       "dp_sensitivity_wh": 4000})
    store = Store(gh.db)
    feed_day(PES(store, 900), range(1, 6))
    seal_now(store, load_private(gh.signing_key))
    auth = Authority.local(tmp_path / "authority")
    truth = sum(100 + i for i in range(1, 6))
    noisy = [auth.release_aggregate(*agg(store, "big", T1 + 900 * j), with_dp=True)
             for j in range(4)]  # 4 x 1/2 = the whole day's budget
    assert any(v != truth for v in noisy)  # noise of scale 8000: equal 4 times is ~1e-7
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(*agg(store, "big", T1 + 900 * 4), with_dp=True)
    assert e.value.code == "budget_spent"
    # Without DP the exact value is still available for other intervals.
    assert auth.release_aggregate(*agg(store, "big", T1 + 900 * 5)) == truth
    for h in auth.holders.values():
        assert h.ledger.dp_spent("big", DAY0 // DAY) == 2
    auth.close()
    store.close()


def test_policy_cannot_be_weakened_below_safe_floor(tmp_path):
    for bad in ({"k": 2}, {"min_bill_days": 0}, {"dp_epsilon": "0"}, {"dp_epsilon": "9"},
                {"dp_epsilon": "1", "dp_budget_per_day": "1/2"}, {"dp_sensitivity_wh": 0},
                {"dp_epsilon": "lots"}):
        with pytest.raises(ConfigError):
            Policy.from_json(bad)
    make_env(tmp_path)
    p = tmp_path / "authority" / "utility" / "policy.json"
    write_json(p, {**read_json(p, "p"), "k": 1})
    with pytest.raises(ConfigError):
        Authority.local(tmp_path / "authority")


@pytest.mark.parametrize("attack", ["edit", "delete", "reorder", "truncate"])
def test_audit_log_detects_tampering(tmp_path, attack):
    path = tmp_path / "ledger.db"
    led = Ledger(path)
    receipts = [led.record("mdms", "aggregate", f"agg:x:{i}", i % 2 == 0,
                           "granted" if i % 2 == 0 else "too_few", [f"agg:x:{i}"])
                for i in range(5)]
    assert led.verify(receipts)[0]
    led.close()
    con = sqlite3.connect(path)
    cols = "at, requester, kind, subject, granted, reason, prev, hash"
    if attack == "edit":
        con.execute("UPDATE log SET granted=1 WHERE n=2")
    elif attack == "delete":
        con.execute("DELETE FROM log WHERE n=3")
    elif attack == "truncate":
        con.execute("DELETE FROM log WHERE n=5")  # the chain alone cannot see this
    else:
        a = con.execute(f"SELECT {cols} FROM log WHERE n=2").fetchone()
        b = con.execute(f"SELECT {cols} FROM log WHERE n=4").fetchone()
        upd = f"UPDATE log SET ({cols}) = (?, ?, ?, ?, ?, ?, ?, ?) WHERE n=?"
        con.execute(upd, (*b, 2))
        con.execute(upd, (*a, 4))
    con.commit()
    con.close()
    ok, msg = Ledger(path).verify(receipts)
    assert not ok, msg

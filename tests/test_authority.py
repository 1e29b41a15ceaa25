"""The key holders, each a real service in its own home, on real keys from
the dealer's ceremony and real gateway records: each kind of refusal (and
its log entry at every holder), exactly-once release, late readings, parts
from several gateways, threshold shares, keys at rest, the
tamper-evident log, and a gateway and a token that change while the holders
serve."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import signal
import sqlite3
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.holders import PASSPHRASE, Gateway, Holders, cents, gridveil, group

from authority.client import HolderClient, Refusal, token_hash
from authority.holder import DAY
from authority.ledger import Ledger
from authority.policy import Policy
from common import paillier, records, signing, slots
from common.files import ConfigError, read_json
from gateway.fastenc import RandomnessPool
from gateway.pes import PES, Batch, Reading
from gateway.pesprocess import PesProcess
from host_tools import provision

DAY0 = 1767225600
T1 = DAY0 + 900
FLAT = "flat@1"  # approved at every holder; 25,000 µct/Wh
SIX = {f"m{i}": "big" if i <= 5 else "small" for i in range(1, 7)}  # "small": m6 alone
BIG = [f"m{i}" for i in range(1, 6)]


def feed_day(pes, meters, base=100, day0=DAY0, seq0=0):
    """Readings for every interval of one day: meter i uses base + i Wh."""
    for i in meters:
        rs = [Reading(seq0 + j, day0 + 900 * (j + 1), base + i, 0) for j in range(96)]
        for k in range(0, 96, 32):
            pes.ingest(f"m{i}", rs[k:k + 32], "t", 0)


def release_demand(auth, gw, nbh="big", days=(0,)):
    """Release every aggregate of these days: bills may only count readings
    that released aggregates count."""
    for n, e, *_ in gw.store.sealed_rows():
        if n == nbh and (e - 1 - DAY0) // DAY in days:
            try:
                auth.release_aggregate([gw.agg(n, e)])
            except Refusal as r:
                assert r.code == "already_released"


@pytest.fixture(params=["threshold", "single"])
def env(request, tmp_path):
    holders = Holders(tmp_path, single=request.param == "single")
    gw = Gateway(tmp_path, holders, meters=SIX)
    auth = holders.start()
    yield holders, gw, PES(gw.store, 900), auth
    holders.stop()
    gw.store.close()


def test_release_once_and_refuse_a_single_household(env):
    holders, gw, pes, auth = env
    feed_day(pes, range(1, 7))
    gw.seal()
    rec, sig = gw.agg("big", T1)
    assert rec.contributors == 5
    assert auth.release_aggregate([(rec, sig)]) == (sum(100 + i for i in range(1, 6)), 5)
    # Asked again (a retry after a failure), the same answer: nothing new is released.
    assert auth.release_aggregate([(rec, sig)]) == (sum(100 + i for i in range(1, 6)), 5)
    # Another ciphertext of the same interval (re-randomised, signed by the
    # gateway) is a second release: refused.
    pub = paillier.load_public(holders.pub_file())
    fresh = paillier.to_bytes(pub, paillier.from_bytes(pub, rec.ciphertext) + pub.encrypt(0))
    other = dataclasses.replace(rec, ciphertext=fresh)
    with pytest.raises(Refusal) as e:
        auth.release_aggregate([(other, records.sign(gw.key, other))])
    assert e.value.code == "already_released"
    with pytest.raises(Refusal) as e:
        auth.release_aggregate([gw.agg("small", T1)])  # one meter's interval
    assert e.value.code == "too_few"
    for role in holders.roles:  # every holder logged every decision
        assert holders.log(role) == [(1, "granted"), (1, "granted"), (0, "already_released"),
                                     (0, "too_few")]
        grants = [e for e in holders.client(role).log() if e["kind"] == "aggregate"]
        assert "answered again" in grants[1]["reason"]


def test_group_of_k_minus_one_refused(env):
    _, gw, pes, auth = env
    feed_day(pes, range(1, 5))  # 4 of the 5 meters in "big"
    gw.seal()
    with pytest.raises(Refusal) as e:
        auth.release_aggregate([gw.agg("big", T1)])
    assert e.value.code == "too_few"


def test_unsigned_resigned_and_tampered_records_refused(env):
    holders, gw, pes, auth = env
    feed_day(pes, range(1, 6))
    gw.seal()
    rec, sig = gw.agg("big", T1 + 900)
    other = Ed25519PrivateKey.generate()
    cases = {
        "re-signed by another key": (rec, records.sign(other, rec)),
        "unsigned": (rec, b""),
        "contributors inflated": (dataclasses.replace(rec, contributors=50), sig),
        "ciphertext swapped": (dataclasses.replace(
            rec, ciphertext=gw.agg("big", T1)[0].ciphertext), sig),
        "ciphertext bit flipped": (dataclasses.replace(
            rec, ciphertext=bytes([rec.ciphertext[0] ^ 1]) + rec.ciphertext[1:]), sig),
    }
    for name, (r, s) in cases.items():
        with pytest.raises(Refusal) as e:
            auth.release_aggregate([(r, s)])
        assert e.value.code == "bad_signature", name
    wrong = dataclasses.replace(rec, key_id="0" * 16)
    with pytest.raises(Refusal) as e:
        auth.release_aggregate([(wrong, records.sign(gw.key, wrong))])
    assert e.value.code == "wrong_key"
    stranger = dataclasses.replace(rec, gateway_id="gw-rogue")
    with pytest.raises(Refusal) as e:
        auth.release_aggregate([(stranger, records.sign(other, stranger))])
    assert e.value.code == "unknown_gateway"
    for role in holders.roles:
        log = holders.log(role)
        assert len(log) == 7 and not any(granted for granted, _ in log)


def test_same_interval_twice_after_a_late_reading(env):
    _, gw, pes, auth = env
    feed_day(pes, range(1, 6))
    gw.seal()
    rec, sig = gw.agg("big", T1)
    first, _ = auth.release_aggregate([(rec, sig)])
    # A sixth meter joins "big" and reports for the interval already sealed.
    gw.store.db.execute("UPDATE meters SET neighbourhood='big' WHERE meter_id='m6'")
    pes._meters.clear()
    r = pes.ingest("m6", [Reading(0, T1, 1000, 1000)], None, None)
    assert r.late == 1 and r.accepted == 1
    assert gw.agg("big", T1) == (rec, sig)  # the sealed interval did not change
    # ...and even a freshly signed record with the new sum is refused.
    bigger = dataclasses.replace(rec, ciphertext=pes._add(rec.key_id, rec.ciphertext,
                                                          pes.encrypt(0, 1000)[1]), contributors=6,
                                 meters=tuple(sorted(rec.meters + ("m6",))))
    with pytest.raises(Refusal) as e:
        auth.release_aggregate([(bigger, records.sign(gw.key, bigger))])
    assert e.value.code == "already_released"
    assert first == sum(100 + i for i in range(1, 6))
    gw.seal()
    # The late reading counts in the neighbourhood's next open interval, for
    # its aggregate and its bill alike (day 1 here: all of day 0 is sealed).
    moved, _ = gw.agg("big", DAY0 + DAY + 900)
    assert moved.meters == ("m6",)
    assert gw.bill_days("m6")[0][0].day == (DAY0 + DAY) // DAY
    assert gw.bill_days("m6")[0][0].intervals == (DAY0 + DAY + 900,)
    # That interval holds m6 alone, so it is never released, and neither is
    # a bill that counts it: otherwise the bill would be the reading.
    with pytest.raises(Refusal) as e:
        auth.release_aggregate([moved_part := gw.agg("big", DAY0 + DAY + 900)])
    assert e.value.code == "too_few" and moved_part[0].meters == ("m6",)
    with pytest.raises(Refusal) as e:
        auth.release_bills(["big"], DAY0 + DAY, DAY0 + 2 * DAY,
                           group(gw, ["m6"], DAY0 + DAY, DAY0 + 2 * DAY))
    assert e.value.code == "unreleased_demand"


def test_bill_policy(env):
    """Each bill's own checks, as the refusal of the group that carries it
    (a group goes out whole or not at all)."""
    holders, gw, pes, auth = env
    feed_day(pes, range(1, 6))
    gw.seal()
    m1, m2 = gw.bill_days("m1"), gw.bill_days("m2")
    with pytest.raises(Refusal) as e:  # before the day's aggregates are released
        auth.release_bills(["big"], DAY0, DAY0 + DAY, group(gw, BIG, DAY0, DAY0 + DAY))
    assert e.value.code == "unreleased_demand"
    release_demand(auth, gw)
    later = dataclasses.replace(m2[0][0], day=m2[0][0].day + 1)
    bad = {
        "period_too_short": (DAY0, DAY0 + 3600, ("m2", FLAT, m2)),  # one hour
        "not_whole_days": (DAY0 + 3600, DAY0 + DAY + 3600, ("m2", FLAT, m2)),
        "mixed_meters": (DAY0, DAY0 + DAY, ("m2", FLAT, m1)),
        "unknown_tariff": (DAY0, DAY0 + DAY, ("m2", "cheap@1", m2)),
        "mixed_tariffs": (DAY0, DAY0 + DAY, ("m2", FLAT, [(dataclasses.replace(
            m2[0][0], tariff="tou-3band@1"), records.sign(gw.key, dataclasses.replace(
                m2[0][0], tariff="tou-3band@1")))])),
        "period_gaps": (DAY0, DAY0 + DAY, ("m2", FLAT, m2 + [(later, records.sign(gw.key,
                                                                                later))])),
    }
    for code, (start, end, bill) in bad.items():
        with pytest.raises(Refusal) as e:
            auth.release_bills(["big"], start, end, group(gw, BIG, start, end,
                                                          replace={"m2": bill}))
        assert e.value.code == code, code
    amounts = auth.release_bills(["big"], DAY0, DAY0 + DAY, group(gw, BIG, DAY0, DAY0 + DAY))
    for i in range(1, 6):
        assert amounts[f"m{i}"] in cents(96 * (100 + i) * 25_000)
    # Asked again, the same amounts (the same dither); a bill of other
    # ciphertexts for the same days is a second release, refused.
    assert auth.release_bills(["big"], DAY0, DAY0 + DAY,
                              group(gw, BIG, DAY0, DAY0 + DAY)) == amounts
    pub = paillier.load_public(holders.pub_file())
    rec = m2[0][0]
    band, c = rec.bands[0]
    other = dataclasses.replace(rec, bands=((band, paillier.to_bytes(
        pub, paillier.from_bytes(pub, c) + pub.encrypt(0))),) + rec.bands[1:])
    with pytest.raises(Refusal) as e:
        auth.release_bills(["big"], DAY0, DAY0 + DAY, group(
            gw, BIG, DAY0, DAY0 + DAY, replace={"m2": ("m2", FLAT, [(other, records.sign(
                gw.key, other))])}))
    assert e.value.code == "already_released"


def test_parts_from_several_gateways_are_combined_once(tmp_path):
    """A neighbourhood across two gateways: neither part alone reaches k;
    both together are released once, as their exact sum."""
    holders = Holders(tmp_path)
    a = Gateway(tmp_path, holders, "gwA", {f"m{i}": "big" for i in range(1, 4)})
    b = Gateway(tmp_path, holders, "gwB", {f"m{i}": "big" for i in range(4, 7)})
    feed_day(PES(a.store, 900), range(1, 4))
    feed_day(PES(b.store, 900), range(4, 7))
    a.seal()
    b.seal()
    auth = holders.start()
    try:
        for part in (a.agg("big", T1), b.agg("big", T1)):
            with pytest.raises(Refusal) as e:
                auth.release_aggregate([part])
            assert e.value.code == "too_few"
        with pytest.raises(Refusal) as e:  # the same gateway's part twice
            auth.release_aggregate([a.agg("big", T1), a.agg("big", T1)])
        assert e.value.code == "mixed_parts"
        with pytest.raises(Refusal) as e:  # parts of different intervals
            auth.release_aggregate([a.agg("big", T1), b.agg("big", T1 + 900)])
        assert e.value.code == "mixed_parts"
        both = [a.agg("big", T1), b.agg("big", T1)]
        assert auth.release_aggregate(both) == (sum(100 + i for i in range(1, 7)), 6)
        assert auth.release_aggregate(both[::-1]) == (sum(100 + i for i in range(1, 7)), 6)
        with pytest.raises(Refusal) as e:  # one gateway's part alone, now
            auth.release_aggregate(both[:1])
        assert e.value.code == "too_few"
    finally:
        holders.stop()


def test_threshold_one_share_decrypts_nothing(tmp_path):
    holders = Holders(tmp_path)
    gw = Gateway(tmp_path, holders, meters=SIX)
    feed_day(PES(gw.store, 900), range(1, 6))
    gw.seal()
    rec, sig = gw.agg("big", T1)
    auth = holders.start()
    try:
        pub = auth.public_key(rec.key_id)
        decision = auth.covering(lambda d: d.covers_aggregate("big", T1))
        (a,) = auth.holders["utility"].aggregates(decision, [[(rec, sig)]])["packs"]
        assert a["kind"] == "partial"
        with pytest.raises(ValueError):
            paillier.combine_partials(pub, [int(a["number"])])
        # Each share file is encrypted under its holder's passphrase.
        for role in holders.roles:
            d = read_json(holders.homes[role] / "keys" / f"{rec.key_id}.share.json", "share",
                          secret=True)
            assert d["encrypted"] and "secret" not in d
        (b,) = auth.holders["guardian"].aggregates(decision, [[(rec, sig)]])["packs"]
        (value,) = slots.unpack(paillier.combine_raw(pub, [int(a["number"]), int(b["number"])]),
                                1)
        assert value == sum(100 + i for i in range(1, 6))
    finally:
        holders.stop()


def test_holder_refuses_on_its_own_even_if_the_other_agrees(tmp_path):
    holders = Holders(tmp_path)
    holders.set_policy("guardian", k=6)  # a stricter guardian
    gw = Gateway(tmp_path, holders, meters=SIX)
    feed_day(PES(gw.store, 900), range(1, 6))
    gw.seal()
    auth = holders.start()
    try:
        with pytest.raises(Refusal) as e:
            auth.release_aggregate([gw.agg("big", T1)])
        assert e.value.code == "too_few" and str(e.value).startswith("guardian:")
        assert holders.log("utility") == [(1, "granted")]
        assert holders.log("guardian") == [(0, "too_few")]
    finally:
        holders.stop()


def test_keys_are_encrypted_at_rest_and_a_clear_share_is_refused(tmp_path):
    r = gridveil(tmp_path / "h", "holder", "init", "--role", "single", "--export",
                 str(tmp_path / "t.json"), check=False)
    assert r.returncode == 2 and "encrypted at rest" in r.stderr and "Traceback" not in r.stderr
    holders = Holders(tmp_path / "single", single=True)
    kid = holders.key_ids[0]
    keyfile = holders.homes["single"] / "keys" / f"{kid}.key.json"
    assert keyfile.stat().st_mode & 0o077 == 0
    d = read_json(keyfile, "k", secret=True)
    assert d["encrypted"] and d["kdf"]["name"] == "scrypt" and "secret" not in d
    from authority.keys import KeyDir

    with pytest.raises(ConfigError, match="wrong passphrase"):
        KeyDir(keyfile.parent).private(kid, "not the passphrase")
    home = holders.homes["single"]
    r = gridveil(home, "holder", "serve", "--port", "0", env={"GRIDVEIL_HOLDER_PASSPHRASE":
                                                              "wrong passphrase!"}, check=False)
    assert r.returncode == 2 and "wrong passphrase" in r.stderr
    # A key file someone stored in the clear (say, by hand) is refused at start.
    priv = KeyDir(keyfile.parent).private(kid, holders.env["single"]["GRIDVEIL_HOLDER_PASSPHRASE"])
    keyfile.write_text(json.dumps({"kind": "gridveil-paillier-private", "key_id": kid,
                                   "encrypted": False,
                                   "secret": {"p": str(priv.p), "q": str(priv.q)}}))
    r = gridveil(home, "holder", "serve", "--port", "0", env=holders.env["single"], check=False)
    assert r.returncode == 2 and "stored unencrypted; refusing it" in r.stderr
    # The dealer's sealed part opens only with its own holder's transport key.
    other = Holders(tmp_path / "other")
    r = gridveil(other.homes["utility"], "holder", "import-key",
                 str(holders.exchange / "keys" / f"{kid}.single.sealed.json"), "--pub",
                 str(holders.pub_file()), env=other.env["utility"], check=False)
    assert r.returncode == 2 and "sealed for another holder" in r.stderr


def test_key_rotation_keeps_old_periods(tmp_path):
    holders = Holders(tmp_path)
    gw = Gateway(tmp_path, holders, meters=SIX)
    feed_day(PES(gw.store, 900), range(1, 6))  # day 0 under the first key
    old_kid = gw.store.key_epochs()[0][1]
    new_kid = holders.new_epoch()
    day1 = (DAY0 + DAY) // DAY
    provision.rekey_gateway(gw.home.path, holders.pub_file(new_kid), day1,
                            holders.epoch_file(new_kid))
    pes = PES(gw.store, 900)  # a restarted gateway
    feed_day(pes, range(1, 6), base=200, day0=DAY0 + DAY, seq0=96)
    gw.seal()
    auth = holders.start()
    try:
        a0, a1 = gw.agg("big", T1), gw.agg("big", T1 + DAY)
        assert (a0[0].key_id, a1[0].key_id) == (old_kid, new_kid)
        assert auth.release_aggregate([a0])[0] == sum(100 + i for i in range(1, 6))
        assert auth.release_aggregate([a1])[0] == sum(200 + i for i in range(1, 6))
        release_demand(auth, gw, days=(0, 1))
        with pytest.raises(Refusal) as e:  # one bill cannot span two key epochs
            auth.release_bills(["big"], DAY0, DAY0 + 2 * DAY, group(gw, BIG, DAY0, DAY0 + 2 * DAY))
        assert e.value.code == "mixed_keys"
        amounts = auth.release_bills(["big"], DAY0 + DAY, DAY0 + 2 * DAY,
                                     group(gw, BIG, DAY0 + DAY, DAY0 + 2 * DAY))
        assert amounts["m1"] in cents(96 * 201 * 25_000)
    finally:
        holders.stop()


def test_a_restarted_pes_process_uses_no_randomness_made_for_the_old_key(tmp_path):
    """The gateway's PES process and its randomness pool start under the
    first key; the key is rotated and the PES process dies. Its successor
    encrypts under the new key, where the pool's values (n-th residues
    modulo the old n²) would make ciphertexts nobody can decrypt: the
    released sum must be exact."""
    holders = Holders(tmp_path)
    gw = Gateway(tmp_path, holders, meters=SIX)
    pool = RandomnessPool(workers=1, size=50)
    proc = PesProcess(gw.home.db, 900, 448, pool)
    proc.start()
    pool.start(proc.h_s, proc.nsquare, 448)
    old_kid = proc.key_id
    try:
        deadline = time.monotonic() + 60
        while pool.queue.qsize() < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.queue.qsize() >= 20  # values for the old key, waiting
        new_kid = holders.new_epoch()
        provision.rekey_gateway(gw.home.path, holders.pub_file(new_kid), (DAY0 + DAY) // DAY,
                                holders.epoch_file(new_kid))
        os.kill(proc.proc.pid, signal.SIGKILL)
        proc.proc.join()
        t = T1 + DAY
        batches = [Batch(f"m{i}", [Reading(0, t, 300 + i, 300 + i)]) for i in range(1, 6)]
        results = asyncio.run(proc.ingest_group(batches))
        assert [r.accepted for r in results] == [1] * 5
        assert (old_kid, proc.key_id) == (gw.store.key_epochs()[0][1], new_kid)
    finally:
        proc.close()
        pool.close()
    gw.seal()
    auth = holders.start()
    try:
        (agg, sig) = gw.agg("big", t)
        assert agg.key_id == new_kid
        assert auth.release_aggregate([(agg, sig)])[0] == sum(300 + i for i in range(1, 6))
    finally:
        holders.stop()


def test_differential_privacy_noise_on_every_release_and_a_budget_that_renews(tmp_path):
    """The holders' policy puts noise on every release; nobody asks for it,
    nobody can opt out, and it never runs out: each release spends the
    day's epsilon divided by the day's intervals, and a meter is in at most
    one release per interval, so any day of releases spends at most the
    day's epsilon, however many days go by."""
    holders = Holders(tmp_path, dp="on")
    gw = Gateway(tmp_path, holders, meters=SIX)
    pes = PES(gw.store, 900)
    for d in range(3):  # three whole days: more releases than a day's budget allows
        feed_day(pes, range(1, 6), day0=DAY0 + d * DAY, seq0=96 * d)
    gw.seal()
    auth = holders.start()
    try:
        truth = sum(100 + i for i in range(1, 6))
        items = [[gw.agg("big", DAY0 + 900 * (j + 1))] for j in range(3 * 96)]
        answers = auth.release_aggregates(items)
        assert all(a.noisy for a in answers) and len(answers) == 3 * 96
        values = [a.wh for a in answers]
        # Noise of scale 2500 x 96 / 1 per holder: the mean of 288 is far
        # from any one of them, and within a few standard errors of the truth.
        assert sum(v != truth for v in values) > 280
        spread = (sum((v - truth) ** 2 for v in values) / len(values)) ** 0.5
        assert 2500 * 96 < spread < 4 * 2500 * 96
        assert abs(sum(values) / len(values) - truth) < 5 * spread / len(values) ** 0.5
        # Asked again (as a retry would, or a requester that hopes to average
        # the noise away): the same values, and no budget spent (below).
        assert [a.wh for a in auth.release_aggregates(items)] == values
    finally:
        holders.stop()
    for role in holders.roles:
        entries = Ledger(holders.homes[role] / "authority.db").entries()
        grants = [e for e in entries if e["kind"] == "aggregate" and e["granted"]]
        assert sum(len(json.loads(e["marks"])["agg"]) for e in grants) == 3 * 96
        fresh = [e for e in grants if json.loads(e["marks"])["agg"]]
        assert all("epsilon 1/96 per household)" in e["reason"] for e in fresh)
        assert sum(len(json.loads(e["marks"])["again"]) for e in grants) == 3 * 96


def test_policy_cannot_be_weakened_below_safe_floor(tmp_path):
    for bad in ({"k": 2}, {"min_bill_days": 0}, {"dp_epsilon_per_day": "0"},
                {"dp_epsilon_per_day": "11"}, {"dp_sensitivity_wh": 0},
                {"dp_epsilon_per_day": "lots"}, {"dp": "ask"}, {"billing": "weekly"},
                {"min_key_bits": 100}, {"interval_s": 7}, {"interval_s": 1000},
                {"dp_budget_per_household": "2000"}):
        with pytest.raises(ConfigError):
            Policy.from_json(bad)
    holders = Holders(tmp_path)
    holders.set_policy("utility", k=1)
    r = gridveil(holders.homes["utility"], "holder", "serve", "--port", "0",
                 env=holders.env["utility"], check=False)
    assert r.returncode == 2 and "policy k must be" in r.stderr


@pytest.mark.parametrize("attack", ["edit", "delete", "reorder", "truncate", "unrelease",
                                    "drop a member"])
def test_audit_log_detects_tampering(tmp_path, attack):
    path = tmp_path / "ledger.db"
    led = Ledger(path)
    receipts = [led.grant("mdms", "aggregate", f"agg:x:{DAY0 + 900 * i}", "granted",
                          [("x", DAY0 + 900 * i, ["m1", "m2"])]) if i % 2 else
                led.record("mdms", "aggregate", f"agg:x:{DAY0 + 900 * i}", False, "too_few: ")
                for i in range(1, 6)]
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
    elif attack == "unrelease":  # to release agg:x:<first> a second time
        con.execute("UPDATE agg_marks SET bits = zeroblob(12)")
    elif attack == "drop a member":  # to leave a household out of a group of bills
        con.execute("DELETE FROM meter_marks WHERE meter='m2'")
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


EAST = {f"e{i}": "east" for i in range(1, 6)}


def test_a_gateway_its_key_and_a_token_change_while_the_holders_serve(tmp_path):
    holders = Holders(tmp_path)
    gw1 = Gateway(tmp_path, holders, meters=SIX)
    gw2 = None
    try:
        auth = holders.start()
        # A gateway trusted (and its meters enrolled and consented) now.
        gw2 = Gateway(tmp_path, holders, "gw2", meters=EAST)
        pes = PES(gw2.store, 900)
        for i, m in enumerate(EAST, 1):
            pes.ingest(m, [Reading(j, DAY0 + 900 * (j + 1), 10 * i, 0) for j in range(4)],
                       "t", 0)
        gw2.seal()
        assert auth.release_aggregate([gw2.agg("east", DAY0 + 900)]) == (150, 5)

        # Its signing key rotates: the new one trusted beside the old, then used.
        env = {"GRIDVEIL_GATEWAY_PASSPHRASE": PASSPHRASE}
        new_pub = tmp_path / "gw2-new.pub"
        gridveil(gw2.home.path, "gateway", "signing-key", "new", "--export-key", str(new_pub),
                 env=env)
        for role in holders.roles:
            gridveil(holders.homes[role], "holder", "trust-gateway", "gw2", str(new_pub), "--add")
        gridveil(gw2.home.path, "gateway", "signing-key", "switch", env=env)
        gw2.key = signing.load_private(gw2.home.signing_key, PASSPHRASE)
        for i, m in enumerate(EAST, 1):
            pes.ingest(m, [Reading(4, DAY0 + 900 * 5, 10 * i, 0)], "t", 0)
        gw2.seal()
        assert auth.release_aggregate([gw2.agg("east", DAY0 + 900 * 5)]) == (150, 5)  # new key
        assert auth.release_aggregate([gw2.agg("east", DAY0 + 1800)]) == (150, 5)  # old key
        for role in holders.roles:  # the overlap ends: the old key's records are refused
            gridveil(holders.homes[role], "holder", "trust-gateway", "gw2", str(new_pub))
        with pytest.raises(Refusal) as r:
            auth.release_aggregate([gw2.agg("east", DAY0 + 2700)])
        assert r.value.code == "bad_signature"

        # The MDMS's token at the guardian's holder revoked: refused at once.
        home = holders.homes["guardian"]
        assert "1 token(s) of mdms revoked" in gridveil(home, "holder", "deny", "mdms").stdout
        with pytest.raises(ConfigError, match="401"):
            holders.client("guardian").policy()
        # A new one allowed: accepted at once; the old one stays refused.
        token = secrets.token_urlsafe(24)
        gridveil(home, "holder", "allow", "mdms", "--token-hash", token_hash(token))
        cert = home / "tls" / "cert.pem"
        fresh = HolderClient("guardian", holders.urls["guardian"], token, cert)
        assert fresh.policy()["k"] == 5
        with pytest.raises(ConfigError, match="401"):
            holders.client("guardian").policy()
    finally:
        holders.stop()
        gw1.store.close()
        if gw2 is not None:
            gw2.store.close()


def test_a_restored_key_holder_releases_nothing_twice(tmp_path):
    """The guardian's holder is backed up, releases more, and is put back
    to its backup. It refuses every release until reconciled; the
    utility's export alone (it could leave entries out) and a kept head it
    does not reach are not enough; its auditor's export of its own log
    brings back exactly what it released, which it then refuses to release
    again, while new values go out as before."""
    from authority.backup import read_manifest

    holders = Holders(tmp_path)
    gw = Gateway(tmp_path, holders, meters=SIX)
    pes = PES(gw.store, 900)
    feed_day(pes, range(1, 7))
    gw.seal()
    ends = [DAY0 + 900 * (i + 1) for i in range(6)]
    g_home, env = holders.homes["guardian"], holders.env["guardian"]

    def export(role: str, name: str, after: int = 0):
        out = tmp_path / name
        gridveil(holders.homes[role], "holder", "export-log", "--after", str(after), "--out",
                 str(out), env=holders.env[role])
        return str(out)

    try:
        auth = holders.start()
        assert auth.release_aggregate([gw.agg("big", ends[0])])[1] == 5
        gridveil(g_home, "holder", "backup", "--out", str(tmp_path / "g.tar.gz"))
        at_backup = read_manifest(tmp_path / "g.tar.gz")["head"]["n"]
        for e in ends[1:4]:  # released after the backup: the restore forgets them
            assert auth.release_aggregate([gw.agg("big", e)])[1] == 5
        kept_head = tmp_path / "kept-head.json"  # what the guardian's auditor keeps
        gridveil(g_home, "holder", "head", "--out", str(kept_head), env=env)
        auditor = export("guardian", "auditor.json", after=at_backup)
        peer = export("utility", "utility.json")
        holders.stop()

        r = gridveil(g_home, "holder", "restore", str(tmp_path / "g.tar.gz"), "--replace")
        assert "releases nothing until reconciled" in r.stdout
        r = gridveil(g_home, "holder", "serve", "--port", "0", env=env, check=False)
        assert r.returncode == 2 and "serves nothing until reconciled" in r.stderr, r.stderr

        # The other holder's export and a kept head beyond the log: refused, nothing served.
        r = gridveil(g_home, "holder", "reconcile", "--log", peer, "--kept-head",
                     str(kept_head), check=False)
        assert r.returncode == 2 and "releases nothing" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        r = gridveil(g_home, "holder", "reconcile", "--log", auditor, "--kept-head",
                     str(kept_head))
        assert "entries of this holder's own log put back" in r.stdout
        assert json.loads(kept_head.read_text())["n"] == json.loads(gridveil(
            g_home, "holder", "head", env=env).stdout)["n"]

        auth = holders.start()
        for e in ends[1:4]:  # released once: refused (the noise they had is not in any copy)
            with pytest.raises(Refusal) as r:
                auth.release_aggregate([gw.agg("big", e)])
            assert r.value.code == "already_released"
        assert auth.release_aggregate([gw.agg("big", ends[4])])[1] == 5  # serves again
        assert holders.client("guardian").verify()["ok"]
        holders.stop()

        # Restored again, with no auditor's copy this time: the other holder's
        # export still marks what both released, so none of it goes out twice.
        peer = export("utility", "utility2.json")
        gridveil(g_home, "holder", "restore", str(tmp_path / "g.tar.gz"), "--replace")
        r = gridveil(g_home, "holder", "reconcile", "--log", peer)
        assert "4 values and bills marked released from the other holder's log" in r.stdout
        auth = holders.start()
        for e in ends[1:5]:
            with pytest.raises(Refusal) as r:
                auth.release_aggregate([gw.agg("big", e)])
            assert r.value.code == "already_released"
        assert auth.release_aggregate([gw.agg("big", ends[5])])[1] == 5
        assert holders.client("guardian").verify()["ok"]
    finally:
        holders.stop()
        gw.store.close()

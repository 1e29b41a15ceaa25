"""The utility as attacker, with only its own powers: it runs the MDMS and
proposes tariffs. Each attack goes through the parties' real interfaces
(the holders' HTTP API, their command line) and must be refused, with
nothing released. (Issue: privacy that holds against the utility.)"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from helpers.holders import CENT, REPO, Gateway, Holders, cents, gridveil, group
from test_authority import BIG, DAY0, SIX, feed_day, release_demand

from authority.client import Refusal, _item
from authority.holder import DAY
from authority.ledger import Ledger
from gateway.pes import PES


def decoding_tariff(**changes) -> dict:
    base = json.loads((REPO / "data" / "tariffs" / "tou-3band.json").read_text())
    return {**base, **changes}


@pytest.mark.parametrize("name, tariff, why", [
    ("powers of 2^24 as prices", decoding_tariff(id="decode", prices={
        "0": 1, "1": 2**24, "2": 2**48}), "prices must be"),
    ("a price of 2^400", decoding_tariff(id="huge", prices={
        "0": 15500, "1": 24750, "2": 2**400}), "prices must be"),
    ("far-apart prices", decoding_tariff(id="apart", prices={
        "0": 1000, "1": 24750, "2": 200000}), "dearest band"),
    ("eight one-hour bands", {"id": "hourly", "bands": {str(b): f"h{b}" for b in range(8)},
                              "rules": [{"days": list(range(7)), "from_hour": 8 + b,
                                         "to_hour": 9 + b, "band": b} for b in range(1, 8)],
                              "default_band": 0,
                              "prices": {str(b): 20000 + b for b in range(8)}}, "at most 4"),
    ("a one-hour band", decoding_tariff(id="onehour", rules=[
        {"days": list(range(7)), "from_hour": 3, "to_hour": 4, "band": 2}]), "less than 2 hours"),
])
def test_holders_refuse_tariffs_that_would_encode_readings(tmp_path, name, tariff, why):
    holders = Holders(tmp_path)
    f = tmp_path / "t.json"
    f.write_text(json.dumps(tariff))
    for role in holders.roles:
        r = gridveil(holders.homes[role], "holder", "tariff-approve", str(f), check=False)
        assert r.returncode == 2 and why in r.stderr, (name, r.stderr)
        assert not list((holders.homes[role] / "tariffs").glob(f"{tariff['id']}@*"))


def test_requester_cannot_bring_its_own_prices_or_tariff(tmp_path):
    holders = Holders(tmp_path)
    gw = Gateway(tmp_path, holders, meters=SIX)
    feed_day(PES(gw.store, 900), range(1, 6))
    gw.seal()
    auth = holders.start()
    try:
        release_demand(auth, gw)
        # The MDMS's own prices in the request: refused as malformed, before any policy.
        bills = group(gw, BIG, DAY0, DAY0 + DAY)
        decision = auth.covering(lambda d: d.covers_bills(["big"], DAY0, DAY0 + DAY))
        for role in holders.roles:
            for where in ("group", "bill"):
                body = {"decision": decision.to_json(), "neighbourhoods": ["big"],
                        "start": DAY0, "end": DAY0 + DAY,
                        "bills": [{"meter_id": m, "tariff": t, "days": [_item(r, s) for r, s in d],
                                   **({"prices": {"0": 2**24}} if where == "bill" else {})}
                                  for m, t, d in bills],
                        **({"prices": {"0": 2**24}} if where == "group" else {})}
                req = urllib.request.Request(holders.urls[role] + "/v1/bills",
                                             data=json.dumps(body).encode(),
                                             headers={"Authorization": f"Bearer {holders.token}"})
                with pytest.raises(urllib.error.HTTPError) as e:
                    urllib.request.urlopen(req, timeout=30)
                assert e.value.code == 400 and b"approved tariffs" in e.value.read()
        # A tariff of its own naming: not in the guardian's registry.
        with pytest.raises(Refusal) as e:
            auth.release_bills(["big"], DAY0, DAY0 + DAY,
                               group(gw, BIG, DAY0, DAY0 + DAY, tariff="decode@1"))
        assert e.value.code == "unknown_tariff"
        for role in holders.roles:
            assert holders.log(role)[-1] == (0, "unknown_tariff")
        # The honest request still works: prices from the registry.
        assert auth.release_bills(["big"], DAY0, DAY0 + DAY, bills)["m1"] in \
            cents(96 * 101 * 25_000)
    finally:
        holders.stop()


def test_default_policy_bills_only_whole_calendar_months(tmp_path):
    """A one-day bill is a day's consumption of one household: by default
    the holders bill whole calendar months only (the demo sets days)."""
    from gateway.pes import Reading

    holders = Holders(tmp_path, billing="calendar-month", k=3)
    gw = Gateway(tmp_path, holders, meters={f"m{i}": "big" for i in range(1, 4)})
    jan1 = DAY0  # 2026-01-01 00:00 UTC
    pes = PES(gw.store, 900)
    for i in range(1, 4):  # one reading a day (a whole day's worth), January and Feb 1st
        pes.ingest(f"m{i}", [Reading(d, jan1 + d * DAY + DAY, 10 * 96, 0) for d in range(32)],
                   None, None)
    gw.seal()
    three = ["m1", "m2", "m3"]
    auth = holders.start()
    try:
        for n, e, *_ in gw.store.sealed_rows():
            auth.release_aggregate([gw.agg(n, e)])
        for start, n, code in ((jan1, 1, "period_too_short"), (jan1, 7, "period_too_short"),
                               (jan1 + DAY, 31, "not_whole_months")):
            with pytest.raises(Refusal) as e:
                auth.release_bills(["big"], start, start + n * DAY,
                                   group(gw, three, start, start + n * DAY))
            assert e.value.code == code, (start, n)
        january = group(gw, three, jan1, jan1 + 31 * DAY)
        assert all(len(days) == 31 for _, _, days in january)
        assert auth.release_bills(["big"], jan1, jan1 + 31 * DAY, january)["m1"] in \
            cents(31 * 96 * 10 * 25_000)
    finally:
        holders.stop()


def test_dummy_meters_and_one_households_many_meters_do_not_make_k(tmp_path):
    """One real household plus four meters the utility provisioned itself:
    the gateway counts five meters, but the guardian enrolled only the real
    one. And five meters of one household count as one household."""
    holders = Holders(tmp_path)
    gw = Gateway(tmp_path, holders, meters=SIX, enroll=False)
    holders.enroll({f"m{i}": f"utility-dummy-{i}" for i in range(1, 6)}, roles=["utility"])
    holders.enroll({"m1": "house-1"}, roles=["guardian"])  # the only real household
    feed_day(PES(gw.store, 900), range(1, 6))
    gw.seal()
    rec, sig = gw.agg("big", DAY0 + 900)
    assert rec.contributors == 5  # what the gateway saw
    auth = holders.start()
    try:
        with pytest.raises(Refusal) as e:
            auth.release_aggregate([(rec, sig)])
        assert e.value.code == "too_few" and "1 enrolled households" in str(e.value)
        assert holders.log("guardian") == [(0, "too_few")]
        # The guardian enrolls the other four meters, all for household 1.
        holders.enroll({f"m{i}": "house-1" for i in range(2, 6)}, roles=["guardian"])
        with pytest.raises(Refusal) as e:
            auth.release_aggregate([gw.agg("big", DAY0 + 1800)])
        assert e.value.code == "too_few"
    finally:
        holders.stop()


def test_renamed_neighbourhood_cannot_release_the_same_households_again(tmp_path):
    """A copy of the gateway's database with the neighbourhood renamed, sealed
    and signed again: the same meters' same interval under a new name."""
    holders = Holders(tmp_path)
    gw = Gateway(tmp_path, holders, meters=SIX)
    feed_day(PES(gw.store, 900), range(1, 6))
    gw.seal()
    rec, sig = gw.agg("big", DAY0 + 900)
    auth = holders.start()
    try:
        auth.release_aggregate([(rec, sig)])
        import dataclasses

        from common import records

        for name in ("big-copy", "elsewhere", "x" * 40):
            renamed = dataclasses.replace(rec, neighbourhood=name)
            with pytest.raises(Refusal) as e:
                auth.release_aggregate([(renamed, records.sign(gw.key, renamed))])
            assert e.value.code == "already_released" and "already in a released" in str(e.value)
    finally:
        holders.stop()


def test_a_delayed_packet_gives_nothing_to_subtract(tmp_path):
    """The utility holds one meter's packets past the grace period (it
    controls the network), then releases that day's bills and aggregates.
    Before, the bills minus the aggregates were exactly the held readings;
    now each late reading counts in one aggregate and one bill of the same
    later interval, and a bill counts only readings in released aggregates,
    so whatever is released, bills and aggregates agree to the Wh."""
    from gateway.pes import Reading

    holders = Holders(tmp_path)
    gw = Gateway(tmp_path, holders, meters={f"m{i}": "big" for i in range(1, 6)})
    pes = PES(gw.store, 900)
    wh = {i: 100 + i for i in range(1, 6)}
    held = 40  # m1's readings from interval 40 of day 0 on are delayed
    for i in range(1, 6):
        n = held if i == 1 else 96
        pes.ingest(f"m{i}", [Reading(j, DAY0 + 900 * (j + 1), wh[i], 0) for j in range(n)],
                   None, None)
    gw.seal()  # the grace period is over: all of day 0 is sealed without m1's last 56
    late = pes.ingest("m1", [Reading(j, DAY0 + 900 * (j + 1), wh[1], 0)
                             for j in range(held, 96)], None, None)
    assert late.late == 96 - held and late.accepted == 96 - held
    for i in range(1, 6):  # day 1, on time
        pes.ingest(f"m{i}", [Reading(96 + j, DAY0 + DAY + 900 * (j + 1), wh[i], 0)
                             for j in range(96)], None, None)
    gw.seal()
    auth = holders.start()
    try:
        aggs, refused = {}, []
        for n, e, *_ in gw.store.sealed_rows():
            try:
                aggs[e] = auth.release_aggregate([gw.agg(n, e)])[0]
            except Refusal as r:
                refused.append((e, r.code))
        # Day 0 after m1 went quiet: four households, too few to release.
        assert refused == [(DAY0 + 900 * (j + 1), "too_few") for j in range(held, 96)]
        released = {}
        for day in (0, 1):
            start = DAY0 + day * DAY
            try:
                released[day] = auth.release_bills(["big"], start, start + DAY,
                                                   group(gw, BIG, start, start + DAY))
            except Refusal as r:
                assert r.code == "unreleased_demand"
        # Day 0's bills would count the four households' unreleased intervals
        # (m1's alone would not: its held readings moved to day 1), and a
        # period's bills go out all together or not at all: none of day 0's.
        assert set(released) == {1}
        day1 = sum(v for e, v in aggs.items() if e > DAY0 + DAY)
        assert day1 == 96 * sum(wh.values()) + (96 - held) * wh[1]  # no Wh lost
        # Nothing to subtract but each bill's rounding to the cent.
        exact = {f"m{i}": (96 + (96 - held if i == 1 else 0)) * wh[i] * 25_000 for i in wh}
        assert all(released[1][m] in cents(exact[m]) for m in exact)
        assert sum(exact.values()) == day1 * 25_000
    finally:
        holders.stop()


def test_audit_state_is_the_logs_and_kept_heads_catch_a_rewritten_log(tmp_path):
    """The utility edits its own holder's database: deletes the "released"
    rows (to release an interval again), or rewrites the log and recomputes
    the chain (the hash chain has no key). The first is caught by the log
    itself, and the holder refuses to serve; the second by a head that an
    auditor kept, signed with the holder's own key."""
    import hashlib
    import sqlite3

    from authority.ledger import entry_hash

    holders = Holders(tmp_path)
    gw = Gateway(tmp_path, holders, meters=SIX)
    feed_day(PES(gw.store, 900), range(1, 6))
    gw.seal()
    auth = holders.start()
    try:
        auth.release_aggregate([gw.agg("big", DAY0 + 900)])
        kept = auth.holders["guardian"].head()  # what the auditor keeps, over the API
    finally:
        holders.stop()
    (tmp_path / "kept.json").write_text(json.dumps(kept))
    u, g = holders.homes["utility"], holders.homes["guardian"]

    con = sqlite3.connect(u / "authority.db")
    con.execute("DELETE FROM agg_marks")
    con.commit()
    con.close()
    r = gridveil(u, "holder", "verify", check=False)
    assert r.returncode == 1 and "released-once set differs from the log" in r.stdout
    r = gridveil(u, "holder", "serve", "--port", "0", env=holders.env["utility"], check=False)
    assert r.returncode == 2 and "refusing to serve" in r.stderr

    # The guardian's log, rewritten without the grant, chain recomputed.
    con = sqlite3.connect(g / "authority.db")
    con.execute("DELETE FROM log WHERE granted=1")
    for table in ("agg_marks", "meter_marks", "meter_sets", "answers", "checkpoints"):
        con.execute(f"DELETE FROM {table}")
    prev = "0" * 64
    for n, at, req, kind, subj, granted, reason, marks, dp in con.execute(
            "SELECT n, at, requester, kind, subject, granted, reason, marks, dp FROM log"
            " ORDER BY n").fetchall():
        h = entry_hash(prev, at, req, kind, subj, bool(granted), reason, marks, dp)
        con.execute("UPDATE log SET prev=?, hash=? WHERE n=?", (prev, h, n))
        prev = h
    con.commit()
    con.close()
    assert gridveil(g, "holder", "verify").returncode == 0  # the chain alone cannot tell
    r = gridveil(g, "holder", "verify", "--head", str(tmp_path / "kept.json"), check=False)
    assert r.returncode == 1 and "missing or changed" in r.stdout
    forged = {**kept, "hash": hashlib.sha256(b"x").hexdigest()}
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    r = gridveil(g, "holder", "verify", "--head", str(tmp_path / "forged.json"), check=False)
    assert r.returncode == 2 and "not a head signed by this holder" in r.stderr


def test_gateway_takes_no_key_of_the_utilitys_own(tmp_path):
    """The utility rekeys a gateway to a Paillier key it made itself (it would
    then decrypt every reading): the gateway takes a key epoch only with the
    guardian's signature, and the guardian signs only keys it holds a share
    of, of at least the size its policy sets."""
    from common import paillier

    holders = Holders(tmp_path)
    gw = Gateway(tmp_path, holders, meters=SIX)
    own_pub, _ = paillier.generate(512)
    paillier.save_public(tmp_path / "own.pub.json", own_pub)
    cases = {  # signature file -> what the gateway says
        holders.epoch_file(): "is for key",  # the guardian's, but for the real key
    }
    # The utility's own holder signs the operator's key: not the guardian's key.
    r = gridveil(holders.homes["utility"], "holder", "sign-epoch", "--key-id",
                 paillier.key_id(own_pub), "--out", str(tmp_path / "u.json"),
                 env=holders.env["utility"], check=False)
    assert r.returncode == 2 and "holds no share" in r.stderr
    forged = json.loads(holders.epoch_file().read_text())
    forged["key_id"] = paillier.key_id(own_pub)
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    cases[tmp_path / "forged.json"] = "bad signature"
    for sig, why in cases.items():
        r = gridveil(gw.home.path, "gateway", "rekey", "--from-day", "2030-01-01",
                     "--paillier-pub", str(tmp_path / "own.pub.json"), "--epoch-signature",
                     str(sig), check=False)
        assert r.returncode == 2 and why in r.stderr, r.stderr
    assert len(gw.store.key_epochs()) == 1  # still only the holders' key


def test_holders_refuse_keys_under_their_policys_size(tmp_path):
    """A holder with the default policy takes no key under 2048 bits."""
    home = tmp_path / "h"
    env = {"GRIDVEIL_HOLDER_PASSPHRASE": "a holder passphrase"}
    gridveil(home, "holder", "init", "--role", "single", "--export", str(tmp_path / "t.json"),
             env=env)
    gridveil(tmp_path, "keygen", "--bits", "1024", "--out", str(tmp_path / "keys"), "--single",
             str(tmp_path / "t.json"))
    (pub,) = (tmp_path / "keys").glob("*.pub.json")
    kid = pub.name.split(".")[0]
    r = gridveil(home, "holder", "import-key", str(tmp_path / "keys" / f"{kid}.single.sealed.json"),
                 "--pub", str(pub), env=env, check=False)
    assert r.returncode == 2 and "refuses keys under 2048 bits" in r.stderr


def test_requester_cannot_opt_out_of_the_guardians_noise(tmp_path):
    """The guardian's policy puts noise on releases; the utility's own holder
    says none. The utility asks without noise, then asks again under fresh
    names to average the noise away: the guardian's noise is in every
    released value, a request that says anything about noise is malformed,
    and the same households' interval is released once only."""
    import dataclasses

    from common import records

    holders = Holders(tmp_path, dp={"guardian": "on"})
    gw = Gateway(tmp_path, holders, meters=SIX)
    feed_day(PES(gw.store, 900), range(1, 6))
    gw.seal()
    truth = sum(100 + i for i in range(1, 6))
    auth = holders.start()
    try:
        rec, sig = gw.agg("big", DAY0 + 900)
        decision = auth.covering(lambda d: d.covers_aggregate("big", DAY0 + 900))
        body = json.dumps({"decision": decision.to_json(), "aggregates": [
            {"parts": [_item(rec, sig)]}], "dp": False}).encode()
        req = urllib.request.Request(holders.urls["guardian"] + "/v1/aggregates", data=body,
                                     headers={"Authorization": f"Bearer {holders.token}"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 400 and b"holder's policy" in e.value.read()
        values = [auth.release_aggregate([gw.agg("big", DAY0 + 900 * j)])[0] for j in range(1, 9)]
        assert auth.last_noisy and sum(v != truth for v in values) >= 7
        for name in ("again-1", "again-2"):
            renamed = dataclasses.replace(rec, neighbourhood=name)
            with pytest.raises(Refusal) as e:
                auth.release_aggregate([(renamed, records.sign(gw.key, renamed))])
            assert e.value.code == "already_released"
    finally:
        holders.stop()


def test_one_households_big_interval_moves_an_aggregate_by_the_bound_only(tmp_path):
    """The guardian's noise is made for a sensitivity (2,500 Wh): a household
    that used 9,000 Wh in one interval must not stick out of the noise. The
    gateway adds min(energy, bound) to the aggregate, counts the clipping
    for the operator, and bills the whole energy."""
    from gateway.pes import Reading

    holders = Holders(tmp_path, dp={"guardian": "on"})  # the epoch is signed with the bound
    gw = Gateway(tmp_path, holders, meters={f"m{i}": "big" for i in range(1, 6)})
    pes = PES(gw.store, 900)
    wh = {1: [9000, 2500], **{i: [100 + i, 200 + i] for i in range(2, 6)}}
    results = [pes.ingest(f"m{i}", [Reading(j, DAY0 + 900 * (j + 1), e, 0)
                                    for j, e in enumerate(wh[i])], None, None)
               for i in range(1, 6)]
    assert [r.clipped for r in results] == [1, 0, 0, 0, 0]  # 2,500 is not above the bound
    assert gw.store.counters() == {"clipped": 1}
    gw.seal()
    # Released without noise here, to see the sums exactly: the guardian turns
    # noise off after signing (its own choice, not the requester's).
    holders.set_policy("guardian", dp="off")
    auth = holders.start()
    try:
        got = [auth.release_aggregate([gw.agg("big", DAY0 + 900 * j)])[0] for j in (1, 2)]
        truth = [sum(min(wh[i][j], 2500) for i in wh) for j in (0, 1)]
        assert got == truth == [2500 + 414, 2500 + 814]
        bills = auth.release_bills(["big"], DAY0, DAY0 + DAY, group(gw, BIG, DAY0, DAY0 + DAY))
        assert bills["m1"] in cents((9000 + 2500) * 25_000)  # the bill counts the whole energy
    finally:
        holders.stop()
    r = gridveil(gw.home.path, "gateway", "status")
    assert "clipped to the guardian's bound (2500 Wh) in aggregates: 1" in r.stdout


def test_held_readings_in_one_aggregate_get_noise_for_all_of_them(tmp_path):
    """The utility holds one meter's packets until their intervals are
    sealed; they then count in the next open interval, beside that meter's
    own reading: three readings of one household, each up to the bound, in
    one sum. The record names the meter once per reading, and the guardian
    scales that release's noise to three readings: every release costs a
    household the same epsilon, so the day's budget holds (and never runs
    out) whatever the network does."""
    from gateway.pes import Reading

    holders = Holders(tmp_path, dp={"guardian": "on"})
    gw = Gateway(tmp_path, holders, meters={f"m{i}": "big" for i in range(1, 6)})
    pes = PES(gw.store, 900)
    for i in range(1, 6):  # interval 1 from everyone; 2 and 3 held for m1
        pes.ingest(f"m{i}", [Reading(j, DAY0 + 900 * (j + 1), 100, 0)
                             for j in range(1 if i == 1 else 3)], None, None)
    gw.seal()
    for i in range(1, 6):
        late = pes.ingest(f"m{i}", [Reading(j, DAY0 + 900 * (j + 1), 100, 0)
                                    for j in range(1 if i == 1 else 3, 4)], None, None)
        assert late.late == (2 if i == 1 else 0)
    gw.seal()
    rec, _ = gw.agg("big", DAY0 + 900 * 4)
    assert rec.meters == ("m1", "m1", "m1", "m2", "m3", "m4", "m5") and rec.contributors == 5
    auth = holders.start()
    try:
        auth.release_aggregate([gw.agg("big", DAY0 + 900)])
        auth.release_aggregate([gw.agg("big", DAY0 + 900 * 4)])
        assert auth.last_noisy
    finally:
        holders.stop()
    grants = [e["reason"] for e in Ledger(holders.homes["guardian"] / "authority.db").entries()
              if e["kind"] == "aggregate"]
    assert grants[0].endswith("with DP noise (epsilon 1/96 per household)")
    assert grants[1].endswith("(epsilon 1/96 per household; scaled for 3 readings of one"
                              " household)")


def test_noise_needs_an_epoch_signed_with_the_bound(tmp_path):
    """Noise for a 2,500 Wh sensitivity means nothing if the gateways do not
    clip: an epoch signed while the guardian's noise was off carries no
    bound, and the guardian refuses to add noise to sums under it."""
    holders = Holders(tmp_path)  # noise off when the epoch was signed: clip_wh = 0
    assert json.loads(holders.epoch_file().read_text())["clip_wh"] == 0
    holders.set_policy("guardian", dp="on")
    gw = Gateway(tmp_path, holders, meters=SIX)
    feed_day(PES(gw.store, 900), range(1, 6))
    gw.seal()
    auth = holders.start()
    try:
        with pytest.raises(Refusal) as e:
            auth.release_aggregate([gw.agg("big", DAY0 + 900)])
        assert e.value.code == "unclipped_epoch"
    finally:
        holders.stop()
    # Nor can the guardian re-sign the same key with a bound: gateways use it already.
    r = gridveil(holders.homes["guardian"], "holder", "sign-epoch", "--key-id",
                 holders.key_ids[-1], "--out", str(tmp_path / "again.json"),
                 env=holders.env["guardian"], check=False)
    assert r.returncode == 2 and "needs a new key epoch" in r.stderr


def test_ciphertext_lengths_say_nothing_about_consumption(tmp_path):
    """The utility reads every item the gateways push to its MDMS, with its
    length. Two neighbourhoods of five households, one using nothing and
    one 16 kWh every quarter hour: each kind of item is exactly as long for
    both (before, a customer's sealed copy gave away whether an interval
    was under 24 Wh, under 256 Wh or more, 96 times in 96)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from common import records
    from gateway.pes import Reading

    holders = Holders(tmp_path)
    meters = {f"z{i}": "idle" for i in range(5)} | {f"b{i}": "busy" for i in range(5)}
    gw = Gateway(tmp_path, holders, meters=meters)
    der = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key() \
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for m in meters:  # each meter its own customer
        gw.store.add_customer(f"c-{m}", der, [m])
        gw.store.db.execute("UPDATE meters SET customer=? WHERE meter_id=?", (f"c-{m}", m))
    pes = PES(gw.store, 900)
    for m in meters:
        wh = 0 if m.startswith("z") else 16_000
        pes.ingest(m, [Reading(j, DAY0 + 900 * (j + 1), wh, wh * (j + 1)) for j in range(96)],
                   None, None)
    gw.seal()
    lengths: dict[tuple[str, str], set[tuple[str, int]]] = {}
    for _, item in gw.store.outbox_batch(100_000):
        for field in ("ct", "wrapped", "record"):
            if field not in item:
                continue
            data = base64.b64decode(item[field])
            if field == "record":
                rec = records.parse(data)
                who = rec.neighbourhood[0] if hasattr(rec, "neighbourhood") else rec.meter_id[0]
            else:
                who = item["meter_id"][0]
            lengths.setdefault((item["kind"], field), set()).add(
                ("z" if who in "zi" else "b", len(data)))
    assert {k[0] for k in lengths} == {"copy", "daykey", "aggregate", "billday"}
    for (kind, field), seen in lengths.items():
        assert len({n for _, n in seen}) == 1, (kind, field, sorted(seen))
        assert {w for w, _ in seen} == {"z", "b"}, (kind, field)


def test_bills_held_back_for_one_household_difference_nothing_out(tmp_path):
    """The blocked-bill attack, as the utility runs it (bills of two days
    stand in for a month): it lets m6's first reading through, holds the
    rest of m6's period on the network until the next period, then asks for
    the five neighbours' bills. Their bills minus the period's aggregates
    would be m6's one reading. The holders release a period's bills for all
    the households its released aggregates counted, or for none; m6's bill
    cannot go (its readings of the period's last day have not arrived), so
    none goes. The period's bills then go out with the next period's, for
    everyone, once m6's held readings have arrived there; and a bill that
    leaves out a day of the meter's records is refused."""
    from gateway.pes import Reading

    holders = Holders(tmp_path, billing="days")
    six = {f"m{i}": "big" for i in range(1, 7)}
    gw = Gateway(tmp_path, holders, meters=six)
    pes = PES(gw.store, 900)
    wh = {i: 100 + i for i in range(1, 7)}

    def day(i, d, js):
        return pes.ingest(f"m{i}", [Reading(96 * d + j, DAY0 + d * DAY + 900 * (j + 1), wh[i], 0)
                                    for j in js], None, None)

    day(6, 0, [0])  # m6's first reading gets through; the rest of its period is held
    for d in (0, 1):
        for i in range(1, 6):
            day(i, d, range(96))
    gw.seal()  # days 0 and 1 are sealed without m6's held readings
    for d in (2, 3):  # the next period: m6's backlog arrives first, then everyone is on time
        for i in range(1, 7):
            if i == 6 and d == 2:
                r = pes.ingest("m6", [Reading(k, DAY0 + 900 * (k + 1), wh[6], 0)
                                      for k in range(1, 192)], None, None)
                assert r.late == 191
            day(i, d, range(96))
    gw.seal()
    auth = holders.start()
    try:
        release_demand(auth, gw, days=(0, 1, 2, 3))
        p1, p2 = DAY0, DAY0 + 2 * DAY  # periods of two days
        five = [f"m{i}" for i in range(1, 6)]
        # The neighbours alone: their bills minus the aggregates would be m6's reading.
        with pytest.raises(Refusal) as e:
            auth.release_bills(["big"], p1, p2, group(gw, five, p1, p2))
        assert e.value.code == "incomplete_group" and "m6" in str(e.value)
        # With m6's bill: m6 reported nothing on the period's last day.
        with pytest.raises(Refusal) as e:
            auth.release_bills(["big"], p1, p2, group(gw, list(six), p1, p2))
        assert e.value.code == "period_open"
        # Both periods together, everyone: released. m6's bill holds its whole
        # two periods, the held readings included.
        end = DAY0 + 4 * DAY
        m1_days = [d for d in gw.bill_days("m1") if d[0].day < end // DAY]
        with pytest.raises(Refusal) as e:  # ...but not with one of m1's days left out
            auth.release_bills(["big"], p1, end, group(gw, list(six), p1, end, replace={
                "m1": ("m1", "flat@1", m1_days[:1] + m1_days[2:])}))
        assert e.value.code == "period_gaps"
        bills = auth.release_bills(["big"], p1, end, group(gw, list(six), p1, end))
        for i in range(1, 7):
            assert bills[f"m{i}"] in cents(4 * 96 * wh[i] * 25_000)
    finally:
        holders.stop()
    # Nothing of the first period alone was ever released as a bill.
    for role in holders.roles:
        granted = [e for e in Ledger(holders.homes[role] / "authority.db").entries()
                   if e["kind"] == "bill" and e["granted"]]
        assert [e["subject"] for e in granted] == [f"bills:big:{DAY0}-{DAY0 + 4 * DAY}"]


def _tariff(holders, tid: str, prices: dict) -> str:
    """A tariff the holders approve, within their bounds: band 1 is Monday
    evening, 18 to 20 h UTC; band 0 the rest of the week."""
    t = {"id": tid, "version": 1, "utc_offset_min": 0, "bands": {"0": "rest", "1": "monday"},
         "rules": [{"days": [0], "from_hour": 18, "to_hour": 20, "band": 1}],
         "default_band": 0, "prices": prices}
    f = holders.exchange / f"{tid}.json"
    f.write_text(json.dumps(t))
    for role in holders.roles:
        gridveil(holders.homes[role], "holder", "tariff-approve", str(f))
    return f"{tid}@1"


def test_bills_do_not_decode_into_band_totals(tmp_path, umass_files):
    """Near-equal prices (150,000 and 150,001 µct/Wh, band 1 = Monday 18-20
    h): a bill exact to the micro-cent is 150,000 x the week's total + the
    Monday evening's, and both came out exactly for 5 of 5 households. The
    holders release bills in whole cents, rounded at random by a dither the
    requester cannot steer, so the same decoding gets neither, for none of
    them. And the worst spread the bounds allow (1:4) leaves a bill
    consistent with thousands of Monday-evening totals. Real data: the
    UMass apartments' week, as 7-day bills."""
    from common import tariff as tariff_mod
    from gateway.pes import Reading
    from host_tools import groundtruth

    holders = Holders(tmp_path)
    near = _tariff(holders, "near", {"0": 150_000, "1": 150_001})
    spread = _tariff(holders, "spread", {"0": 50_000, "1": 200_000})
    houses = {f"a{i}": f.name for i, f in enumerate(umass_files[:5], 1)}
    gw = Gateway(tmp_path, holders, meters={m: "block" for m in houses})
    t_near = tariff_mod.parse(json.loads((holders.exchange / "near.json").read_text()))
    gw.store.add_tariff(t_near)
    gw.store.db.execute("UPDATE meters SET tariff='near'")
    pes = PES(gw.store, 900)
    truth = {}
    for (m, _), f in zip(houses.items(), umass_files[:5], strict=True):
        week = groundtruth.interval_energy(f)  # 2016-01-01 to -07: seven whole days
        assert len(week) == 7 * 96
        pes.ingest(m, [Reading(j, e, wh, 0) for j, (e, wh) in enumerate(sorted(week.items()))],
                   None, None)
        monday = sum(wh for e, wh in week.items() if t_near.band(e - 900) == 1)
        truth[m] = (sum(week.values()), monday)
    gw.seal()
    start = (min(week) - 1) // DAY * DAY
    auth = holders.start()
    try:
        done = auth.release_aggregates([[gw.agg(n, e)] for n, e, *_ in gw.store.sealed_rows()])
        assert len(done) == 7 * 96 and not any(isinstance(a, Refusal) for a in done)
        bills = auth.release_bills(["block"], start, start + 7 * DAY,
                                   group(gw, list(houses), start, start + 7 * DAY, tariff=near))
    finally:
        holders.stop()

    def decode(amount):  # total and Monday-evening total, if the bill were exact
        return amount // 150_000, amount % 150_000

    exact = {m: 150_000 * t + 1 * b for m, (t, b) in truth.items()}
    assert all(decode(exact[m]) == truth[m] for m in houses)  # the attack, on exact bills
    for m in houses:
        assert bills[m] in cents(exact[m])  # within its cent...
        assert decode(bills[m])[1] != truth[m][1]  # ...and the Monday evening is gone
    # The worst spread within the bounds: how many Monday-evening totals b1 fit
    # one released bill, for some week's total? (price 50,000 for the rest,
    # 200,000 for Monday evening; the bill known to the cent)
    t, b1 = truth["a1"]
    bill = (50_000 * (t - b1) + 200_000 * b1) // CENT * CENT
    fits = [x for x in range(0, 20_000) if any(
        abs(50_000 * (y - x) + 200_000 * x - bill) < CENT
        for y in ((bill - 150_000 * x) // 50_000 + d for d in (-1, 0, 1)) if y >= x)]
    assert len(fits) > 10_000 and b1 in fits
    assert spread  # approved, within the bounds

"""The MDMS's intake and store, on SQLite and on a real PostgreSQL server:
pushes are verified against the sending gateway's key and stored
idempotently; a gateway speaks only for its own meters; the newest bill
day version wins; an interval is offered for release only once every
gateway serving its neighbourhood has sealed past it; the web app's
sessions, throttling and requests work the same on both."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authority.policy import Policy
from common import records, signing
from mdms import fleet, intake, scope
from mdms.store import MdmsStore

END = 1767225600 + 900


class FakeGateway:
    """Signs like a gateway; the records' ciphertexts are opaque here."""

    def __init__(self, store: MdmsStore, gid: str):
        self.id = gid
        self.key = Ed25519PrivateKey.generate()
        store.trust_gateway(gid, signing.public_pem(self.key.public_key()).decode())

    def signed(self, kind: str, rec) -> dict:
        return {"kind": kind, "record": base64.b64encode(rec.signed_bytes()).decode(),
                "signature": base64.b64encode(records.sign(self.key, rec)).decode()}

    def agg(self, nbh: str, end: int, n: int = 3) -> dict:
        return self.signed("aggregate", records.AggregateRecord(
            self.id, nbh, end - 900, end, n, bytes([n]) * 16, "k1"))

    def billday(self, meter: str, day: int, version: int) -> dict:
        return self.signed("billday", records.BillDayRecord(
            self.id, meter, day, 96, version, ((0, bytes([version]) * 16),), "k1"))

    def push(self, store: MdmsStore, items: list, key=None) -> int:
        body = json.dumps({"gateway": self.id, "items": items,
                           "health": {"at": time.time(), "meters": [], "rejects": []}}).encode()
        return intake.intake(store, body, self.id, signing.sign_b64(key or self.key, body))


def meter(mid: str, nbh: str = "north", customer: str | None = None) -> dict:
    return {"kind": "meter", "meter_id": mid, "neighbourhood": nbh, "customer": customer,
            "tariff": "flat"}


@pytest.fixture
def store(mdms_db):
    s = MdmsStore(mdms_db)
    yield s
    s.close()


def test_intake_is_idempotent_and_verified(store):
    a = FakeGateway(store, "gwA")
    batch = [meter("m1"), a.agg("north", END), a.billday("m1", 20454, 0),
             {"kind": "daykey", "meter_id": "m1", "day": 20454, "key_no": 0,
              "wrapped": base64.b64encode(b"w" * 8).decode()},
             {"kind": "copy", "meter_id": "m1", "seq": 0, "day": 20454, "key_no": 0,
              "nonce": base64.b64encode(b"n" * 12).decode(),
              "ct": base64.b64encode(b"c" * 20).decode()}]
    assert a.push(store, batch) == 5
    first = store.counts()
    assert a.push(store, batch) == 5  # a resent batch (the ack was lost) changes nothing
    assert store.counts() == first
    assert first["aggregate_parts"] == first["bill_days"] == first["sealed_readings"] == 1
    with pytest.raises(PermissionError, match="bad signature"):
        a.push(store, batch, key=Ed25519PrivateKey.generate())
    with pytest.raises(PermissionError, match="unknown gateway"):
        intake.intake(store, b"{}", "gw-nobody", "")


def test_a_gateway_speaks_only_for_itself(store):
    a, b = FakeGateway(store, "gwA"), FakeGateway(store, "gwB")
    a.push(store, [meter("m1")])
    before = store.counts()
    bad = {
        "meter 'm1' is not registered through gateway gwB": [
            {"kind": "copy", "meter_id": "m1", "seq": 5, "day": 20454, "key_no": 0,
             "nonce": "AAAA", "ct": "AAAA"}],
        "belongs to gateway gwA": [meter("m1", "south")],
        "names gateway 'gwA', sent by 'gwB'": [a.agg("north", END)],
        "bad signature": [{**b.agg("north", END), "signature": a.agg("north", END)["signature"]}],
        "unknown item kind": [{"kind": "reading", "wh": 5}],
    }
    for message, items in bad.items():
        # A bad item anywhere rejects the whole batch: nothing of it is stored.
        with pytest.raises(intake.BadItem, match=message):
            b.push(store, [meter("m9"), *items])
    assert store.counts() == before


def test_newest_bill_day_version_wins(store):
    a = FakeGateway(store, "gwA")
    a.push(store, [meter("m1"), a.billday("m1", 20454, 1)])
    a.push(store, [a.billday("m1", 20454, 0)])  # an older version arriving late
    (row,) = store.signed_bill_days()
    assert records.parse(row["record"]).version == 1
    a.push(store, [a.billday("m1", 20454, 2)])
    (row,) = store.signed_bill_days()
    assert records.parse(row["record"]).version == 2


def test_release_waits_for_every_gateway_of_the_neighbourhood(store):
    a, b = FakeGateway(store, "gwA"), FakeGateway(store, "gwB")
    a.push(store, [meter("m1"), a.agg("north", END), a.agg("north", END + 900)])
    b.push(store, [meter("m2"), b.agg("north", END)])
    mark = {"kind": "sealed_through", "neighbourhood": "north"}
    a.push(store, [{**mark, "through": END + 900}])
    assert store.unreleased_aggregate_parts() == {}  # gwB has not sealed past END yet
    b.push(store, [{**mark, "through": END}])
    ready = store.unreleased_aggregate_parts()
    assert list(ready) == [("north", END)] and len(ready[("north", END)]) == 2
    store.save_aggregate("north", END, 42, 6, False)
    b.push(store, [{**mark, "through": END + 900}, {**mark, "through": 0}])  # never goes back
    assert list(store.unreleased_aggregate_parts()) == [("north", END + 900)]


def test_a_retired_gateway_holds_nothing_up_and_its_meters_move(store):
    a, b = FakeGateway(store, "gwA"), FakeGateway(store, "gwB")
    mark = {"kind": "sealed_through", "neighbourhood": "north"}
    a.push(store, [meter("m1"), a.agg("north", END), a.agg("north", END + 900),
                   {**mark, "through": END + 900}])
    b.push(store, [meter("m2"), b.agg("north", END), {**mark, "through": END}])
    assert list(store.unreleased_aggregate_parts()) == [("north", END)]  # gwB lags
    assert store.retire_gateway("gwB") == 1  # gwB dies
    ready = store.unreleased_aggregate_parts()
    assert sorted(ready) == [("north", END), ("north", END + 900)]
    assert len(ready[("north", END)]) == 2  # what it pushed still counts
    with pytest.raises(PermissionError, match="retired"):
        b.push(store, [b.agg("north", END + 1800)])
    a.push(store, [meter("m2")])  # its meter, re-provisioned at gwA
    assert store.meter_gateway("m2") == "gwA"
    with pytest.raises(intake.BadItem, match="belongs to gateway gwA"):
        FakeGateway(store, "gwC").push(store, [meter("m2")])


def test_a_gateway_key_rotates_with_an_overlap(store):
    a = FakeGateway(store, "gwA")
    old = a.key
    a.push(store, [meter("m1"), a.agg("north", END)])
    a.key = Ed25519PrivateKey.generate()  # `gridveil gateway signing-key new` / `switch`
    new_pem = signing.public_pem(a.key.public_key()).decode()
    with pytest.raises(PermissionError, match="bad signature"):
        a.push(store, [a.agg("north", END + 900)])  # not trusted yet
    store.trust_gateway("gwA", new_pem, add=True)
    assert a.push(store, [a.agg("north", END + 900)]) == 1  # the new key
    assert a.push(store, [a.agg("north", END + 1800)], key=old) == 1  # and still the old
    store.trust_gateway("gwA", new_pem)  # the overlap ends
    with pytest.raises(PermissionError, match="bad signature"):
        a.push(store, [meter("m1")], key=old)


def test_web_state_on_both_databases(store):
    store.add_user("alice", "admin", "scrypt$x")
    assert store.user("alice")["role"] == "admin"
    with pytest.raises(Exception, match="(?i)unique|constraint|duplicate"):
        store.add_user("alice", "admin", "scrypt$x")
    store.add_session("h1", "alice", "admin", "csrf", time.time() + 60)
    assert store.session("h1")["username"] == "alice"
    assert store.update_user("alice", role="auditor") and not store.update_user("nobody", "x")
    assert store.user("alice") == {"username": "alice", "role": "auditor", "pw_hash": "scrypt$x"}
    assert store.session("h1") is None  # a role change ends the user's sessions
    store.add_session("h1", "alice", "auditor", "csrf", time.time() + 60)
    assert store.update_user("alice", pw_hash="scrypt$y") and store.session("h1") is None
    assert store.user("alice")["pw_hash"] == "scrypt$y"
    store.delete_user("alice")
    assert store.session("h1") is None and store.user("alice") is None
    store.put_failures("ip:x", 3, 1.0, 2.0)
    store.put_failures("ip:x", 4, 1.0, 5.0)
    assert store.failures("ip:x") == (4, 1.0, 5.0)
    rid = store.add_request("bills", {"period_days": 1}, "bob")
    assert store.request(rid)["status"] == "pending"
    assert store.decide(rid, "declined", "g", "nothing released", "too soon")
    assert not store.decide(rid, "approved", "g", "released 3 bills")  # decided once only
    (done,) = store.requests("decided")
    assert (done["id"], done["status"], done["reason"]) == (rid, "declined", "too soon")
    assert store.secret("s") == store.secret("s") and len(store.secret("s")) == 32


def test_guardian_sees_what_a_request_would_release(store):
    """The scope the guardian decides on counts households (a household's two
    meters once), and forecasts what the strictest holder's k refuses."""
    a = FakeGateway(store, "gwA")
    # north: six meters of five households; south: two households.
    north = [f"n{i}" for i in range(6)]
    a.push(store, [*(meter(m, "north", f"h{min(i, 4)}") for i, m in enumerate(north)),
                   meter("s0", "south", "h10"), meter("s1", "south", "h11")])
    items = []
    for end in (END, END + 900, END + 1800):
        for nbh, ms in (("north", north), ("south", ["s0", "s1"])):
            items.append(a.signed("aggregate", records.AggregateRecord(
                "gwA", nbh, end - 900, end, len(ms), b"c" * 16, "k1", tuple(ms))))
    a.push(store, items + [{"kind": "sealed_through", "neighbourhood": n, "through": END + 1800}
                           for n in ("north", "south")])
    lenient, strict = Policy(k=5).to_json(), Policy(k=6, dp="off").to_json()
    req = {"kind": "aggregates", "params": "{}"}
    s = scope.describe(store, {"utility": lenient, "guardian": lenient}, req)
    assert s.lines == ["Neighbourhood north: 3 quarter-hour totals from 2026-01-01 00:00 UTC"
                       " to 2026-01-01 00:45 UTC, each the sum of 5 to 5 households."]
    assert s.refused == ["Neighbourhood south: 3 quarter-hour(s) with fewer than 5 households"
                         " would be refused."]
    assert "utility key holder adds random noise" in s.noise
    s = scope.describe(store, {"utility": lenient, "guardian": strict}, req)  # k=6 decides
    assert s.lines == [] and len(s.refused) == 2
    # Bills: the six north meters' 45 signed days from the 1st of a month, and
    # one released north quarter hour in each of those days. A group's bills
    # go out together, so they are counted by group and period.
    day0 = 20454  # 2026-01-01
    days = range(day0, day0 + 45)
    a.push(store, [a.billday(m, d, 0) for m in north for d in days] + [
        a.signed("aggregate", records.AggregateRecord(
            "gwA", "north", d * 86400 + 3600 - 900, d * 86400 + 3600, 6, b"c" * 16, "k1",
            tuple(north))) for d in days] + [
        {"kind": "sealed_through", "neighbourhood": "north", "through": (day0 + 45) * 86400}])
    for d in days:
        store.save_aggregate("north", d * 86400 + 3600, 1, 5, False)
    weekly = {"kind": "bills", "params": json.dumps({"period": 7})}
    s = scope.describe(store, {"utility": Policy(billing="days").to_json(),
                               "guardian": Policy(billing="calendar-month").to_json()}, weekly)
    assert s.lines == ["36 bill total(s) in 6 group(s) of neighbourhoods, covering 2026-01-01 to"
                       " 2026-02-11; each group's bills go out together. Each is one sum of"
                       " money, in whole cents; no reading is revealed."]
    assert s.refused[-1] == "All of them: the policy bills by calendar month only."
    assert s.refused[0] == ("bills of north from 2026-02-12 wait: 6 meter(s) have not reported"
                            " on the period's last day yet (n0, n1, n2, n3, n4)")
    monthly = {"kind": "bills", "params": json.dumps({"period": "month"})}  # all of January
    s = scope.describe(store, {"guardian": Policy().to_json()}, monthly)
    assert s.lines[0].startswith("6 bill total(s) in 1 group(s)")
    assert s.refused == ["bills of north from 2026-02-01 wait: 6 meter(s) have not reported on"
                         " the period's last day yet (n0, n1, n2, n3, n4)"]  # February goes on
    s = scope.describe(store, {"g": Policy(billing="days", min_bill_days=2).to_json()},
                       {"kind": "bills", "params": "{}"})
    assert s.refused == ["All of them: the policy asks for at least 2 day(s) per bill."]


def test_fleet_view_flags_late_and_silent_meters(store):
    """Thresholds from the last reading's age, a day's sparkline from the
    quarter-hourly history, alerts in order of urgency."""
    a = FakeGateway(store, "gwA")
    a.push(store, [meter("m1"), meter("m2"), meter("m3")])
    # Health reports newer than the push's: an hour or so from now, mid quarter hour.
    now = (int(time.time()) // 900 + 5) * 900 + 450

    def health(at, **seen):
        intake.put_health(store, "gwA", {"at": at, "rejects": [["m2", "bad_mac", 3]], "meters": [
            {"meter_id": m, "last_seen": t, "accepted": n, "backlog": 9 if m == "m2" else 0,
             "duplicates": 0, "late": 0}
            for m, (t, n) in seen.items()]})

    health(now - 3 * 900, m1=(now - 3 * 900, 4), m2=(now - 3 * 900, 4))
    health(now - 60, m1=(now - 600, 8), m2=(now - 3600, 5))
    v = fleet.view(store, now)
    state = {m["meter_id"]: m["fresh"] for m in v["meters"]}
    assert state == {"m1": "ok", "m2": "late", "m3": "silent"}
    assert v["counts"] == {"ok": 1, "late": 1, "silent": 1}
    assert v["alerts"][0] == ("silent", "m3 (north): no reading for over two hours")
    assert [t for _, t in v["alerts"][1:]] == [
        "m2 (north): no reading for over 30 min", "m2: 9 readings queued on the meter, not"
        " delivered", "m2: 3 datagrams rejected (bad_mac)"]
    # m1: 4 readings three quarter hours ago (new meter: from 0), 4 more now.
    spark = [float(p.split(",")[1]) for p in v["meters"][0]["spark"].split()]
    assert len(spark) == fleet.HISTORY and spark[-4] == spark[-1] == 0.0  # full height
    assert sum(1 for y in spark if y < 20) == 2


def test_meter_telemetry_is_shown_in_words_and_raises_alerts(store):
    """What a gateway forwards of a meter's health is kept as integers only
    (it is shown on a page) and read out for the operator."""
    a = FakeGateway(store, "gwA")
    a.push(store, [meter("m1"), meter("m2")])
    now = time.time() + 60
    intake.put_health(store, "gwA", {"at": now, "rejects": [], "meters": [
        {"meter_id": "m1", "last_seen": now, "accepted": 4, "duplicates": 0, "late": 0,
         "telemetry": json.dumps(
            {"reset_cause": 3, "uptime_s": 7260, "free_heap": 5000, "rssi_dbm": -90,
             "sensor_rejects_permille": 75, "merges": 2, "seq_reserve": 1000,
             "note": "<script>", "p1_telegrams": 1.5})},
        {"meter_id": "m2", "last_seen": now, "accepted": 4, "duplicates": 0, "late": 0,
         "telemetry": "not json"}]})
    m1, m2 = store.meters()
    assert "note" not in m1["telemetry"] and "p1_telegrams" not in m1["telemetry"]
    assert m2["telemetry"] is None
    v = fleet.view(store, now)
    assert v["meters"][0]["device"] == [
        "last start: watchdog", "up 2 h 1 min", "4.9 KiB memory free", "Wi-Fi -90 dBm",
        "sensor inputs rejected: 7.5 %", "readings merged for lack of room: 2",
        "OSCORE sequence numbers left: 1e+03"]
    assert [t for _, t in v["alerts"]] == [
        "m1: restarted by its watchdog", "m1: low memory (4 KiB free)", "m1: weak Wi-Fi (-90 dBm)",
        "m1: noisy sensor (7.5 % rejected)",
        "m1: OSCORE sequence numbers nearly used up (it starts a new context)"]
    assert v["meters"][1]["device"] == []


def test_a_period_whose_last_day_a_meter_missed_is_billed_with_the_next(store):
    """Two-day billing periods. In the first, meter x reports nothing on
    the last day (its readings are held back, or it was off): that period's
    bills cannot go out alone, for anyone. The MDMS carries the group into
    the next period and asks for both periods' bills together, once every
    meter has reported on the last day of it."""
    from mdms.releases import bill_groups

    a = FakeGateway(store, "gwA")
    meters = ["a", "b", "x"]
    a.push(store, [meter(m, "north", f"h-{m}") for m in meters])
    day0 = 20454
    items, prev = [], dict.fromkeys(meters, -1)
    for d in range(day0, day0 + 6):
        for m in meters:
            if m == "x" and d in (day0 + 1, day0 + 2, day0 + 3):
                continue  # x silent: the last day of period 1, and all of period 2
            items.append(a.signed("billday", records.BillDayRecord(
                "gwA", m, d, 96, 0, ((0, b"c" * 16),), "k1", "flat@1",
                (d * 86400 + 900,), prev[m])))
            prev[m] = d
        items.append(a.signed("aggregate", records.AggregateRecord(
            "gwA", "north", d * 86400, d * 86400 + 900, 3, b"c" * 16, "k1", tuple(meters))))
    a.push(store, items)
    for d in range(day0, day0 + 6):
        store.save_aggregate("north", d * 86400 + 900, 1, 3, False)
    ready, notes = bill_groups(store, 2)
    assert [(g.neighbourhoods, g.first, g.end, g.meters) for g in ready] == \
        [(["north"], day0, day0 + 6, meters)]
    assert [r["day"] for r in store.bill_days_of(["x"], day0, day0 + 6)["x"]] == \
        [day0, day0 + 4, day0 + 5]
    assert notes == []
    # Before x came back, the group waited, carried, with a note saying why.
    store.db.execute("DELETE FROM bill_days WHERE meter_id='x' AND day >= ?", (day0 + 4,))
    ready, notes = bill_groups(store, 2)
    assert ready == [] and len(notes) == 1 and "(x)" in notes[0], notes


def test_one_release_job_at_a_time_across_processes(mdms_db):
    """Two MDMS processes on one database (two stores, two connections):
    the release job's lease goes to one, is renewed only by it, and passes
    to the other once it is dropped or lapses."""
    a, b = MdmsStore(mdms_db), MdmsStore(mdms_db)
    try:
        assert a.take_lease("release-job", "host-a", 60)
        assert not b.take_lease("release-job", "host-b", 60)
        assert a.take_lease("release-job", "host-a", 60)  # renewed by its holder
        a.drop_lease("release-job", "host-b")  # only the holder can drop it
        assert not b.take_lease("release-job", "host-b", 60)
        a.drop_lease("release-job", "host-a")
        assert b.take_lease("release-job", "host-b", 0.2)
        assert not a.take_lease("release-job", "host-a", 60)
        time.sleep(0.3)  # host-b died without dropping it: the lease lapses
        assert a.take_lease("release-job", "host-a", 60)
    finally:
        a.close()
        b.close()


def test_retention_drops_whole_months_and_keeps_the_rest(store):
    """What the operator's retention lets go: on PostgreSQL and Citus whole
    monthly partitions (DROP TABLE, no row deletes), on SQLite the rows; the
    month after the cut stays whole."""
    a = FakeGateway(store, "gwA")
    jan, feb = 1767225600, 1769904000  # 2026-01-01 and 2026-02-01, UTC
    a.push(store, [meter("m1"), a.agg("north", jan + 900), a.agg("north", jan + 1800),
                   a.agg("north", feb + 900)])
    assert len(store.unreleased_aggregate_parts()) == 0  # nothing sealed through yet
    gone = store.drop_before(feb // 86400)
    if store.db.dialect == "postgresql":
        assert "aggregate_parts_202601" in gone
        assert all(name.endswith("_202601") for name in gone), gone
    else:
        assert "2 rows of aggregate_parts" in gone
    a.push(store, [{"kind": "sealed_through", "neighbourhood": "north", "through": feb + 900}])
    assert list(store.unreleased_aggregate_parts()) == [("north", feb + 900)]


def test_citus_places_each_table_by_the_key_its_queries_use(citus):
    """On the cluster: meter-keyed tables distributed by meter_id and
    co-located (their joins stay on one worker), neighbourhood-keyed ones
    by neighbourhood, small shared ones replicated to every node, the web
    app's own state on the coordinator."""
    s = MdmsStore(citus.new_database())
    try:
        rows = s.db.rows("SELECT logicalrelid::text AS t, partmethod AS m, colocationid AS c,"
                         " column_to_column_name(logicalrelid, partkey) AS k"
                         " FROM pg_dist_partition")
        placed = {r["t"]: r for r in rows if "_20" not in r["t"]}  # not the partitions
    finally:
        s.close()
    for table in ("meters", "bill_days", "sealed_readings", "customer_day_keys", "bills",
                  "day_members", "meter_history"):
        assert placed[table]["m"] == "h" and placed[table]["k"] == "meter_id", table
        assert placed[table]["c"] == placed["meters"]["c"], table
    for table in ("aggregate_parts", "released_aggregates", "sealed_through"):
        assert placed[table]["k"] == "neighbourhood", table
        assert placed[table]["c"] == placed["aggregate_parts"]["c"], table
    for table in ("gateways", "tariffs", "users", "secrets"):
        assert placed[table]["m"] == "n", table  # reference: on every node
    for table in ("sessions", "login_failures", "leases", "settings"):
        assert table not in placed, table

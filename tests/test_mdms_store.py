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

from common import records, signing
from mdms import intake
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


def meter(mid: str, nbh: str = "north") -> dict:
    return {"kind": "meter", "meter_id": mid, "neighbourhood": nbh, "customer": None,
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
            {"kind": "copy", "meter_id": "m1", "seq": 5, "day": 1, "key_no": 0,
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


def test_web_state_on_both_databases(store):
    store.add_user("alice", "admin", "scrypt$x")
    assert store.user("alice")["role"] == "admin"
    with pytest.raises(Exception, match="(?i)unique|constraint|duplicate"):
        store.add_user("alice", "admin", "scrypt$x")
    store.add_session("h1", "alice", "admin", "csrf", time.time() + 60)
    assert store.session("h1")["username"] == "alice"
    store.delete_user("alice")
    assert store.session("h1") is None and store.user("alice") is None
    store.put_failures("ip:x", 3, 1.0, 2.0)
    store.put_failures("ip:x", 4, 1.0, 5.0)
    assert store.failures("ip:x") == (4, 1.0, 5.0)
    rid = store.add_request("bills", {"period_days": 1}, "bob")
    assert store.request(rid)["status"] == "pending"
    assert store.decide(rid, "approved", "g", "ok") and not store.decide(rid, "declined", "g", "")
    assert store.requests("decided")[0]["id"] == rid
    assert store.secret("s") == store.secret("s") and len(store.secret("s")) == 32

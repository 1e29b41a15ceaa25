"""Group commit (gateway/groupcommit.py, PES.ingest_group): batches that
arrive together share one transaction, each still stands or falls alone,
a customer's sealed copies always have their day key, and a saturated
gateway answers with a retry time instead of queueing without bound."""

from __future__ import annotations

import asyncio
import base64
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from test_pes import DAY0, decrypt_demand, pes  # noqa: F401 -- the fixture

from common import customer
from gateway.groupcommit import GroupCommit, Saturated
from gateway.pes import PES, Batch, Reading
from gateway.store import StoreError
from host_tools import provision

DAY = 86400


def in_thread(store: PES, executor: ThreadPoolExecutor):
    """PES.ingest_group off the event loop, as GroupCommit awaits it."""
    async def commit(batches):
        return await asyncio.get_running_loop().run_in_executor(executor, store.ingest_group,
                                                                batches)
    return commit


def test_batches_arriving_together_share_commits_and_sum_exactly(pes):  # noqa: F811
    pes, priv = pes
    executor = ThreadPoolExecutor(max_workers=1)
    commits = GroupCommit(in_thread(pes, executor))
    batches = [Batch(m, [Reading(k, DAY0 + 900 * (k + 1), 10 * k + i, 0)], "fw", 0)
               for k in range(10) for i, m in enumerate(("m1", "m2"))]

    async def all_at_once():
        return await asyncio.gather(*(commits.ingest(b) for b in batches),
                                    commits.ingest(Batch("ghost", [Reading(0, DAY0 + 900, 1, 1)])),
                                    return_exceptions=True)

    results = asyncio.run(all_at_once())
    executor.shutdown()
    assert isinstance(results[-1], StoreError)  # the unregistered meter alone is refused
    assert [r.accepted for r in results[:-1]] == [1] * 20
    assert commits.groups < 21 and commits.grouped > 0  # they did share commits
    for k in range(10):  # m1 sent 10k, m2 10k + 1, for interval k
        assert decrypt_demand(pes, priv, DAY0 + 900 * (k + 1)) == 20 * k + 1
    assert pes.store.last_seq("m1") == pes.store.last_seq("m2") == 9


def test_a_batch_refused_inside_a_group_takes_its_day_key_with_it(pes, tmp_path,  # noqa: F811
                                                                  monkeypatch):
    """m3's household gets sealed copies. Its second batch fails after it made
    a day key; the third, for the same day, must not use that key (its
    wrapped copy was rolled back): every copy opens with a stored key."""
    pes, _ = pes
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    pes.store.add_customer("c3", der, ["m3"])
    gw_home = pes.store.path.parent
    provision.provision_meter(gw_home, "m3", "n", tmp_path / "meters" / "m3", customer_id="c3",
                              passphrase="x" * 12)
    pes = PES(pes.store, 900)  # the registry as it is now
    finish = pes.store.finish_batch

    def failing(meter_id, last_seq, *args, **kw):
        if meter_id == "m3" and last_seq == 1:
            raise StoreError("simulated failure after the day key was made")
        return finish(meter_id, last_seq, *args, **kw)

    monkeypatch.setattr(pes.store, "finish_batch", failing)
    d1 = DAY0 + DAY
    results = pes.ingest_group([
        Batch("m3", [Reading(0, DAY0 + 900, 5, 5)]),
        Batch("m3", [Reading(1, d1 + 900, 6, 11)]),   # fails: rolled back with its day key
        Batch("m1", [Reading(0, DAY0 + 900, 7, 7)]),
        Batch("m3", [Reading(2, d1 + 1800, 8, 19)]),  # same day as the failed one
    ])
    assert isinstance(results[1], StoreError)
    assert [results[i].accepted for i in (0, 2, 3)] == [1, 1, 1]
    items = [item for _, item in pes.store.outbox_batch(1000)]
    keys = {(i["meter_id"], i["day"], i["key_no"]): i for i in items if i["kind"] == "daykey"}
    copies = [i for i in items if i["kind"] == "copy"]
    assert sorted(c["seq"] for c in copies) == [0, 2]
    for c in copies:
        wrapped = keys[(c["meter_id"], c["day"], c["key_no"])]["wrapped"]
        day_key = customer.open_day_key(key, base64.b64decode(wrapped))
        values = customer.open_reading(day_key, "m3", c["seq"], base64.b64decode(c["nonce"]),
                                       base64.b64decode(c["ct"]))
        assert values[2] == {0: 5, 2: 8}[c["seq"]]


def test_a_saturated_gateway_says_when_to_come_back(pes):  # noqa: F811
    pes, _ = pes
    executor = ThreadPoolExecutor(max_workers=1)
    commits = GroupCommit(in_thread(pes, executor), max_waiting=4)

    async def burst():
        return await asyncio.gather(*(commits.ingest(Batch("m1", [Reading(
            k, DAY0 + 900 * (k + 1), 1, k)])) for k in range(12)), return_exceptions=True)

    results = asyncio.run(burst())
    executor.shutdown()
    busy = [r for r in results if isinstance(r, Saturated)]
    stored = [r for r in results if not isinstance(r, Exception)]
    assert len(busy) == 8 and len(stored) == 4  # bounded: the rest were told to wait
    assert all(1 <= r.retry_s <= 600 for r in busy)
    assert pes.store.last_seq("m1") == 3  # exactly what was acknowledged, nothing more


@pytest.mark.parametrize("waiting,rate", [(0, 100.0), (500, 100.0), (500, 1.0), (3000, 100.0)])
def test_retry_time_follows_the_backlog(pes, waiting, rate):  # noqa: F811
    pes, _ = pes
    commits = GroupCommit(in_thread(pes, None), batches_per_s=rate)
    commits._waiting = [None] * waiting
    drain = waiting / rate
    seen = {commits.retry_after() for _ in range(200)}
    # In the second half of the drain time (at least 1 s, at most 10 minutes),
    # and spread, not one value for everybody.
    assert all(max(1, min(600, round(drain / 2))) <= r <= max(1, min(600, round(drain)))
               for r in seen)
    assert len(seen) > 1 or drain < 3
    # Refused by time: more than 15 s of work waiting is too much.
    assert commits.saturated() == (drain > 15)


def test_an_sqlite_failure_inside_one_batch_is_a_store_error_for_it_alone(pes,  # noqa: F811
                                                                          monkeypatch):
    import sqlite3

    pes, _ = pes
    count = pes.store.count

    def broken(name, n):
        raise sqlite3.OperationalError("database or disk is full")

    pes._clip = {k: 1 for k in pes._clip}  # every reading is clipped, so count() runs
    monkeypatch.setattr(pes.store, "count", broken)
    results = pes.ingest_group([Batch("m1", [Reading(0, DAY0 + 900, 5, 5)])])
    assert isinstance(results[0], StoreError) and "disk is full" in str(results[0])
    monkeypatch.setattr(pes.store, "count", count)
    assert pes.store.last_seq("m1") == -1  # nothing of it stayed

"""The PES and its SQLite store, in process: exact sums against plaintext,
duplicates dropped, and a full disk that loses nothing."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import paillier, signing
from gateway.config import GatewayConfig, GatewayHome
from gateway.pes import PES, Reading
from gateway.store import Store, StoreError
from host_tools import provision

DAY0 = 1767225600


@pytest.fixture
def pes(tmp_path):
    # The whole key, in this unit test only: it checks sums against plaintext.
    pub, priv = paillier.generate(512)
    paillier.save_public(tmp_path / "pub.json", pub)
    guardian = Ed25519PrivateKey.generate()  # stands in for the guardian's signature
    (tmp_path / "guardian.pub").write_bytes(signing.public_pem(guardian.public_key()))
    (tmp_path / "epoch.json").write_text(json.dumps({
        "key_id": paillier.key_id(pub), "clip_wh": 0,
        "signature": base64.b64encode(guardian.sign(paillier.epoch_statement(pub, 0))).decode()}))
    provision.init_gateway(tmp_path / "gateway", tmp_path / "pub.json", GatewayConfig(port=5999),
                           tmp_path / "epoch.json", tmp_path / "guardian.pub", "x" * 12)
    gh = GatewayHome(tmp_path / "gateway")
    for i in (1, 2):
        provision.provision_meter(gh.path, f"m{i}", "n", tmp_path / "meters" / f"m{i}",
                                  passphrase="x" * 12)
    store = Store(gh.db)
    yield PES(store, 900), priv
    store.close()


def decrypt_demand(pes, priv, end):
    (c,) = pes.store.db.execute("SELECT ciphertext FROM demand WHERE interval_end=?",
                                (end,)).fetchone()
    return priv.decrypt(paillier.from_bytes(priv.public_key, c))


def test_accumulators_are_exact_and_duplicates_dropped(pes):
    pes, priv = pes
    a = [Reading(i, DAY0 + 900 * (i + 1), 10 * i + 1, 0) for i in range(4)]
    b = [Reading(i, DAY0 + 900 * (i + 1), 7, 0) for i in range(4)]
    r = pes.ingest("m1", a[:3], "fw", 1)
    assert (r.accepted, r.duplicates, r.acked) == (3, 0, [0, 1, 2])
    r = pes.ingest("m1", a[1:], "fw", 0)  # an ack got lost: 1 and 2 come again
    assert (r.accepted, r.duplicates, r.acked) == (1, 2, [1, 2, 3])
    pes.ingest("m2", b, None, None)
    for i in range(4):
        assert decrypt_demand(pes, priv, DAY0 + 900 * (i + 1)) == 10 * i + 1 + 7
    (c, n), = pes.store.db.execute("SELECT ciphertext, readings FROM bill_days WHERE meter_id='m1'")
    assert n == 4 and priv.decrypt(paillier.from_bytes(priv.public_key, c)) == \
        sum(x.energy_wh for x in a)


def test_full_disk_rolls_back_the_whole_batch(pes):
    pes, priv = pes
    pes.ingest("m1", [Reading(0, DAY0 + 900, 5, 5)], None, None)
    db = pes.store.db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")  # the disk is now full
    batch = [Reading(i, DAY0 + 900 * (i + 1), 1000 + i, 0) for i in range(1, 40)]
    with pytest.raises(StoreError, match="nothing was stored"):
        pes.ingest("m1", batch, None, None)
    assert db.execute("SELECT last_seq FROM meters WHERE meter_id='m1'").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM demand").fetchone()[0] == 1
    db.execute("PRAGMA max_page_count=1073741823")  # space again: the meter retries
    r = pes.ingest("m1", batch, None, None)
    assert r.accepted == 39
    assert decrypt_demand(pes, priv, DAY0 + 900 * 5) == 1004


def test_unregistered_meter_is_a_store_error(pes):
    pes, _ = pes
    with pytest.raises(StoreError):
        pes.ingest("ghost", [Reading(0, DAY0 + 900, 1, 1)], None, None)


def test_merged_reading_counts_in_its_last_interval_for_demand_and_bill(pes):
    """A meter whose queue overflowed merged three intervals into one
    reading: its split is unknown, so all of it counts in the last of them,
    for the aggregate as for the bill, never for the bill alone (which would
    make bills minus aggregates equal to it)."""
    pes, priv = pes
    r = pes.ingest("m1", [Reading(0, DAY0 + 900, 5, 5), Reading(1, DAY0 + 3600, 30, 35, span=3)],
                   None, None)
    assert (r.accepted, r.late) == (2, 1)
    ends = [e for (e,) in pes.store.db.execute("SELECT interval_end FROM demand ORDER BY 1")]
    assert ends == [DAY0 + 900, DAY0 + 3600]
    assert decrypt_demand(pes, priv, DAY0 + 3600) == 30
    (c,) = pes.store.db.execute("SELECT ciphertext FROM bill_days WHERE meter_id='m1'").fetchone()
    assert priv.decrypt(paillier.from_bytes(priv.public_key, c)) == 35


def test_an_interval_counted_before_the_upgrade_seals_with_all_its_meters(pes):
    """A gateway upgraded while an interval is open: the meters its old
    code listed in demand.meters and those counted since in demand_meters
    all reach the sealed record, once per reading, sorted; the sum is exact."""
    import base64 as b64

    from common import records
    from gateway import seal

    pes, priv = pes
    end = DAY0 + 900
    pes.ingest("m2", [Reading(0, end, 40, 40)], None, None)
    db = pes.store.db
    # What the old code had written: the list in the row, no demand_meters rows.
    db.execute("UPDATE demand SET meters='m2' WHERE interval_end=?", (end,))
    db.execute("DELETE FROM demand_meters")
    pes.ingest("m1", [Reading(0, end, 2, 2), Reading(1, end + 900, 3, 5)], None, None)
    assert pes.store.demand_meters("n", end) == ["m1", "m2"]
    key = Ed25519PrivateKey.generate()
    assert seal.seal(pes.store, key, "gw", 900, 0, seal_all=True).aggregates == 2
    sealed = {}
    for _, item in pes.store.outbox_batch(100):
        if item.get("kind") == "aggregate":
            rec = records.parse(b64.b64decode(item["record"]))
            sealed[rec.interval_end] = rec
    assert sealed[end].meters == ("m1", "m2") and sealed[end].contributors == 2
    assert priv.decrypt(paillier.from_bytes(priv.public_key, sealed[end].ciphertext)) == 42
    assert sealed[end + 900].meters == ("m1",)
    assert db.execute("SELECT COUNT(*) FROM demand_meters").fetchone()[0] == 0

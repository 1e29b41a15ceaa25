"""Stores made by an earlier release open in this one: migrated in place,
with a copy of what they were kept beside them first, and nothing lost.
tests/fixtures/gateway-schema1.db is a gateway database made by the
release before schema versions (3 meters, 8 readings each, sealed, with
an outbox), under the passphrase "fixture-passphrase"."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from gateway.store import SCHEMA_VERSION, Store, StoreError

FIXTURE = Path(__file__).parent / "fixtures" / "gateway-schema1.db"
TABLES = ("meters", "sealed", "bill_days", "bill_signed", "outbox", "meter_keys", "settings",
          "key_epochs", "customer_day_keys")


def rows(path: Path) -> dict[str, list]:
    con = sqlite3.connect(path)
    try:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}
    finally:
        con.close()


def test_a_gateway_database_of_the_previous_release_is_upgraded_and_loses_nothing(tmp_path):
    db = tmp_path / "gateway.db"
    shutil.copy(FIXTURE, db)
    before = rows(db)
    assert len(before["meters"]) == 3 and len(before["sealed"]) == 8 and before["outbox"]
    store = Store(db)
    try:
        assert store.setting_int("schema") == SCHEMA_VERSION
        assert store.last_seqs() == {"m1": 7, "m2": 7, "m3": 7}
        assert store.kept_seq("m2") == 7  # the new column, as if it had always been there
        store.mark_kept({"m2": 5})
        assert store.kept_seq("m2") == 5
    finally:
        store.close()
    after = rows(db)
    for t in TABLES:
        if t in ("meters", "settings"):
            continue  # a column and a row more
        assert after[t] == before[t], t
    assert [r[:-1] for r in after["meters"]] == [r for r in before["meters"]]
    copy = db.with_name(f"gateway.db.before-schema-{SCHEMA_VERSION}")
    assert rows(copy) == before  # the copy made first is the old database as it was
    Store(db).close()  # opened again: nothing more to do, the copy stays as it was
    assert rows(copy) == before


def test_a_database_of_a_newer_release_is_refused_not_changed(tmp_path):
    db = tmp_path / "gateway.db"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE settings SET value=? WHERE name='schema'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer GridVeil"):
        Store(db)


def test_an_mdms_database_of_a_newer_release_is_refused(tmp_path):
    from common.files import ConfigError
    from mdms.schema import SCHEMA_VERSION as MDMS_SCHEMA
    from mdms.store import MdmsStore

    url = f"sqlite:///{tmp_path / 'mdms.db'}"
    MdmsStore(url).close()
    con = sqlite3.connect(tmp_path / "mdms.db")
    con.execute("UPDATE settings SET value=? WHERE name='schema'", (str(MDMS_SCHEMA + 1),))
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match="newer GridVeil"):
        MdmsStore(url)

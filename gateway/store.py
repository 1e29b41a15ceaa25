"""The gateway's SQLite database (WAL). It holds ciphertext accumulators,
sealed records, dedup state, fleet health and the outbox of what is still
to be pushed to the MDMS, and never a plaintext reading. Every SQL
statement of the gateway is a named method here.

All writes go through one connection on one thread; a batch of readings is
one transaction, committed before the meter is acknowledged. Whatever must
reach the MDMS (a signed record, a customer's sealed copy) goes into the
outbox in the same transaction as the state it comes from, so a crash
between the two is impossible; the pusher (gateway/push.py) deletes an
outbox row only after the MDMS has committed it.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from phe import PaillierPublicKey

from common import backup as archive
from common import tariff as tariff_mod
from common.tariff import Tariff

SCHEMA = """
-- Paillier public keys by epoch: readings of day >= from_day use key_id;
-- clip_wh is the guardian's bound on what one reading adds to an aggregate
CREATE TABLE IF NOT EXISTS key_epochs (
    key_id TEXT PRIMARY KEY,
    from_day INTEGER UNIQUE NOT NULL,
    n TEXT NOT NULL,
    clip_wh INTEGER NOT NULL DEFAULT 0
);
-- gateway-wide counts the operator sees (not per meter: that would tell
-- which household used much in some interval)
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tariffs (id TEXT PRIMARY KEY, definition TEXT NOT NULL);
-- households' sealing keys, from the guardian's signed bindings: a meter's
-- readings are sealed to its household only if the household consented to it
CREATE TABLE IF NOT EXISTS customers (
    customer_id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    meters TEXT                                -- JSON: the meters it consented to
);
CREATE TABLE IF NOT EXISTS meters (
    meter_id TEXT PRIMARY KEY,
    kid BLOB UNIQUE NOT NULL,
    neighbourhood TEXT NOT NULL,
    customer TEXT,
    tariff TEXT NOT NULL DEFAULT 'flat',
    last_seq INTEGER NOT NULL DEFAULT -1,      -- dedup: highest reading seq stored
    last_end INTEGER,                          -- interval end of that reading
    last_seen REAL,
    fw_version TEXT,
    backlog INTEGER,
    telemetry TEXT,                            -- JSON: the meter's latest health (payload key 5)
    accepted INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    late INTEGER NOT NULL DEFAULT 0
);
-- open (neighbourhood, interval) accumulators; moved to sealed when sealed
CREATE TABLE IF NOT EXISTS demand (
    neighbourhood TEXT NOT NULL,
    interval_end INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    meters TEXT NOT NULL,  -- '', or (before demand_meters) the meters, comma-separated
    PRIMARY KEY (neighbourhood, interval_end)
);
-- the meters counted in an open (neighbourhood, interval), one row per
-- reading (the key holders charge privacy budget per reading), deleted when
-- it is sealed: one small insert per reading, where rewriting a sorted list
-- of a thousand meters each time was the PES's largest cost after
-- encryption. One b-tree, ordered as the seal reads it.
CREATE TABLE IF NOT EXISTS demand_meters (
    neighbourhood TEXT NOT NULL,
    interval_end INTEGER NOT NULL,
    meter_id TEXT NOT NULL,
    seq INTEGER NOT NULL,                      -- the reading's
    PRIMARY KEY (neighbourhood, interval_end, meter_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sealed (
    neighbourhood TEXT NOT NULL,
    interval_end INTEGER NOT NULL,
    interval_start INTEGER NOT NULL,
    ciphertext BLOB NOT NULL,
    meters TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature BLOB NOT NULL,
    sealed_at REAL NOT NULL,
    PRIMARY KEY (neighbourhood, interval_end)
);
-- (meter, day, tariff band) accumulators for bills
CREATE TABLE IF NOT EXISTS bill_days (
    meter_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    band INTEGER NOT NULL,
    ciphertext BLOB NOT NULL,
    readings INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (meter_id, day, band)
);
-- one signed record per (meter, day) over all its bands; a late reading
-- clears the signature and bumps the version, to be signed again
CREATE TABLE IF NOT EXISTS bill_signed (
    meter_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    signature BLOB,
    intervals TEXT NOT NULL DEFAULT '',        -- ends of the aggregates the day's readings are in
    prev_day INTEGER,                          -- the meter's previous day with readings (-1: none)
    PRIMARY KEY (meter_id, day)
);
-- customers' sealed copies: per (meter, day) data keys wrapped to the
-- customer's public key, and each reading under one of them (AES-GCM)
CREATE TABLE IF NOT EXISTS customer_day_keys (
    meter_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    key_no INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    PRIMARY KEY (meter_id, day, key_no)
);
-- what is still to be pushed to the MDMS, oldest first (JSON items)
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, item TEXT NOT NULL);
-- per neighbourhood: every interval ending at or before `through` is sealed
CREATE TABLE IF NOT EXISTS seal_marks (neighbourhood TEXT PRIMARY KEY, through INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS oscore_sender (kid BLOB PRIMARY KEY, reserved INTEGER NOT NULL);
-- the meters' OSCORE master secrets, each sealed under the passphrase's key
-- (gateway/keystore.py), at the generation of the meter's ratchet
CREATE TABLE IF NOT EXISTS meter_keys (
    kid BLOB PRIMARY KEY,
    meter_id TEXT UNIQUE NOT NULL,
    generation INTEGER NOT NULL,
    ratchet INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rejects (
    meter_id TEXT NOT NULL,   -- '' when the sender is unknown
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (meter_id, reason)
);
"""


# 1: every database from before schema versions; 2: kept_seq (backups).
SCHEMA_VERSION = 2


class StoreError(Exception):
    """The database cannot be opened or written (locked, corrupt, disk full)."""


class Store:
    def __init__(self, path: Path, readonly: bool = False):
        self.path = Path(path)
        try:
            if readonly:
                if not self.path.exists():
                    raise StoreError(f"gateway database not found: {self.path}")
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                          isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, isolation_level=None,
                                          check_same_thread=False, timeout=30)
                self.db.execute("PRAGMA journal_mode=WAL")
                # FULL: a commit is on disk before the meter is acknowledged.
                self.db.execute("PRAGMA synchronous=FULL")
                version = self._schema_version()
                if version > SCHEMA_VERSION:
                    self.db.close()
                    raise StoreError(f"{self.path} was made by a newer GridVeil (schema"
                                     f" {version}; this release knows {SCHEMA_VERSION}): run"
                                     " that release, or restore the copy made before the"
                                     " upgrade")
                if 0 < version < SCHEMA_VERSION:  # a copy first, as it was
                    archive.snapshot(self.db, self.path.with_name(
                        f"{self.path.name}.before-schema-{SCHEMA_VERSION}"))
                self.db.executescript(SCHEMA)
                cols = {r[1] for r in self.db.execute("PRAGMA table_info(key_epochs)")}
                if "clip_wh" not in cols:  # a database from before clipping: epochs unclipped
                    self.db.execute("ALTER TABLE key_epochs ADD COLUMN clip_wh INTEGER NOT NULL"
                                    " DEFAULT 0")
                cols = {r[1] for r in self.db.execute("PRAGMA table_info(meters)")}
                if "telemetry" not in cols:  # a database from before telemetry
                    self.db.execute("ALTER TABLE meters ADD COLUMN telemetry TEXT")
                cols = {r[1] for r in self.db.execute("PRAGMA table_info(customers)")}
                if "meters" not in cols:  # keys from before bindings: no consent, no copies
                    self.db.execute("ALTER TABLE customers ADD COLUMN meters TEXT")
                cols = {r[1] for r in self.db.execute("PRAGMA table_info(bill_signed)")}
                if "prev_day" not in cols:  # from before the chain: its days sign as v4
                    self.db.execute("ALTER TABLE bill_signed ADD COLUMN prev_day INTEGER")
                cols = {r[1] for r in self.db.execute("PRAGMA table_info(meters)")}
                if "kept_seq" not in cols:  # from before backups (gateway/backup.py)
                    self.db.execute("ALTER TABLE meters ADD COLUMN kept_seq INTEGER")
                if version != SCHEMA_VERSION:
                    self.set_setting("schema", SCHEMA_VERSION)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open gateway database {self.path}: {e}") from None

    def _schema_version(self) -> int:
        """0: a new database; 1: one from before versions."""
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE"
                                                " type='table'")}
        if "meters" not in tables:
            return 0
        if "settings" in tables:
            row = self.db.execute("SELECT value FROM settings WHERE name='schema'").fetchone()
            if row:
                return int(row[0])
        return 1

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self):
        """One write transaction. Any SQLite failure inside it (locked,
        disk full, corrupt) rolls everything back and becomes a StoreError."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"cannot start a transaction: {e}") from None
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException as e:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may already have rolled back on its own
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"database write failed, nothing was stored: {e}") from None
            raise

    @contextmanager
    def savepoint(self, name: str):
        """Inside a transaction: on an exception, undo only what was written
        since the savepoint, and let the exception through (an SQLite
        failure as a StoreError, as transaction() does)."""
        try:
            self.db.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                try:
                    self.db.execute(f"ROLLBACK TO {name}")
                    self.db.execute(f"RELEASE {name}")
                except sqlite3.Error:
                    pass  # the transaction is gone: its own rollback will say so
                raise
            self.db.execute(f"RELEASE {name}")
        except sqlite3.Error as e:
            raise StoreError(f"database write failed, nothing of this batch was stored: {e}") \
                from None

    # --- registry -------------------------------------------------------
    def add_meter(self, meter_id: str, kid: bytes, neighbourhood: str, customer: str | None,
                  tariff: str = "flat", key: tuple[bool, bytes] | None = None):
        """Register a meter, and with it its sealed key (ratchet, sealed):
        one transaction, so no meter is registered without its key."""
        if tariff != "flat" and tariff not in self.tariffs():
            raise StoreError(f"unknown tariff {tariff!r}; add it with `gridveil tariff add`")
        if self.kid_in_use(kid) or self.db.execute("SELECT 1 FROM meters WHERE meter_id=?",
                                                   (meter_id,)).fetchone():
            raise StoreError(f"meter {meter_id} (or its key id) is already registered")
        with self.transaction() as db:
            db.execute("INSERT INTO meters (meter_id, kid, neighbourhood, customer, tariff)"
                       " VALUES (?, ?, ?, ?, ?)", (meter_id, kid, neighbourhood, customer, tariff))
            if key is not None:
                self.put_meter_key(meter_id, kid, 0, key[0], key[1])
            self.outbox_add({"kind": "meter", "meter_id": meter_id,
                             "neighbourhood": neighbourhood, "customer": customer,
                             "tariff": tariff})

    def kid_in_use(self, kid: bytes) -> bool:
        return self.db.execute("SELECT 1 FROM meters WHERE kid=?", (kid,)).fetchone() is not None

    def meter_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM meters").fetchone()[0]

    def meter_tariff(self, meter_id: str) -> Tariff:
        """The meter's tariff, read alone (sealing asks once per bill day)."""
        row = self.db.execute("SELECT m.tariff, t.definition FROM meters m LEFT JOIN tariffs t"
                              " ON t.id = m.tariff WHERE m.meter_id=?", (meter_id,)).fetchone()
        return tariff_mod.parse(json.loads(row[1])) if row[1] else tariff_mod.FLAT

    def meter_registration(self, meter_id: str) -> tuple[str, str, bytes | None] | None:
        """(neighbourhood, tariff id, the household's sealing key DER, or None
        unless its binding names this meter)."""
        row = self.db.execute(
            "SELECT m.neighbourhood, m.tariff, c.public_key, c.meters FROM meters m"
            " LEFT JOIN customers c ON c.customer_id = m.customer WHERE m.meter_id=?",
            (meter_id,)).fetchone()
        if row is None:
            return None
        consented = row[3] is not None and meter_id in json.loads(row[3])
        return row[0], row[1], row[2] if consented else None

    def meters(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM meters ORDER BY meter_id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    # --- key epochs, tariffs, customers -------------------------------------
    def key_epochs(self) -> list[tuple[int, str, PaillierPublicKey, int]]:
        """[(from_day, key_id, public key, clip_wh)], oldest first."""
        return [(d, k, PaillierPublicKey(int(n)), clip) for d, k, n, clip in self.db.execute(
            "SELECT from_day, key_id, n, clip_wh FROM key_epochs ORDER BY from_day")]

    def add_key_epoch(self, pub: PaillierPublicKey, from_day: int, clip_wh: int) -> str:
        from common import paillier

        kid = paillier.key_id(pub)
        epochs = self.key_epochs()
        if epochs and from_day <= epochs[-1][0]:
            raise StoreError("a new key epoch must start after the current one")
        used = self.db.execute("SELECT MAX(day) FROM bill_days").fetchone()[0]
        if used is not None and from_day <= used:
            raise StoreError(f"readings exist up to day {used}; the new epoch must start later")
        try:
            self.db.execute("INSERT INTO key_epochs VALUES (?, ?, ?, ?)",
                            (kid, from_day, str(pub.n), clip_wh))
        except sqlite3.IntegrityError:
            raise StoreError(f"key {kid} is already an epoch of this gateway") from None
        return kid

    def tariffs(self) -> dict[str, Tariff]:
        out = {"flat": tariff_mod.FLAT}
        for tid, definition in self.db.execute("SELECT id, definition FROM tariffs"):
            out[tid] = tariff_mod.parse(json.loads(definition))
        return out

    def add_tariff(self, t: Tariff) -> None:
        old = self.tariffs().get(t.id)
        if old is not None and t.version <= old.version:
            raise StoreError(f"tariff {t.id} is at version {old.version} here; a changed tariff"
                             " needs a higher \"version\"")
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO tariffs VALUES (?, ?)",
                       (t.id, json.dumps(t.to_json())))
            self.outbox_add({"kind": "tariff", "definition": t.to_json()})

    def add_customer(self, customer_id: str, public_key_der: bytes, meters: list[str]) -> None:
        """A household's sealing key and the meters it consented to (its
        newest binding replaces an older one)."""
        with self.transaction() as db:
            db.execute("INSERT INTO customers VALUES (?, ?, ?) ON CONFLICT (customer_id) DO"
                       " UPDATE SET public_key=excluded.public_key, meters=excluded.meters",
                       (customer_id, public_key_der, json.dumps(sorted(meters))))
            db.execute("INSERT INTO settings VALUES ('registry', ?) ON CONFLICT (name) DO"
                       " UPDATE SET value = CAST(value AS INTEGER) + 1", (1,))

    def registry_version(self) -> int:
        """Grows with every change of a household's key or meters: a running
        PES reads its registrations again."""
        row = self.db.execute("SELECT value FROM settings WHERE name='registry'").fetchone()
        return int(row[0]) if row else 0

    def customer_key(self, customer_id: str) -> bytes | None:
        row = self.db.execute("SELECT public_key FROM customers WHERE customer_id=?",
                              (customer_id,)).fetchone()
        return row[0] if row else None

    # --- ingest: dedup state, accumulators, customers' copies ---------------
    def last_seq(self, meter_id: str) -> int:
        return self.db.execute("SELECT last_seq FROM meters WHERE meter_id=?",
                               (meter_id,)).fetchone()[0]

    def position(self, meter_id: str) -> tuple[int, int | None]:
        """(last_seq, last_end) in one read; (-1, None) for a meter never heard."""
        row = self.db.execute("SELECT last_seq, last_end FROM meters WHERE meter_id=?",
                              (meter_id,)).fetchone()
        return (row[0], row[1]) if row else (-1, None)

    def last_end(self, meter_id: str) -> int | None:
        """Interval end of the newest reading stored for this meter."""
        return self.db.execute("SELECT last_end FROM meters WHERE meter_id=?",
                               (meter_id,)).fetchone()[0]

    def is_sealed(self, nbh: str, end: int) -> bool:
        return self.db.execute("SELECT 1 FROM sealed WHERE neighbourhood=? AND interval_end=?",
                               (nbh, end)).fetchone() is not None

    def demand(self, nbh: str, end: int) -> tuple[str, bytes] | None:
        """(key id, ciphertext) of an open (neighbourhood, interval)."""
        return self.db.execute("SELECT key_id, ciphertext FROM demand WHERE"
                               " neighbourhood=? AND interval_end=?", (nbh, end)).fetchone()

    def put_demand(self, nbh: str, end: int, kid: str, c: bytes, meter_id: str, seq: int,
                   new: bool) -> None:
        """The interval's new sum, with meter_id's reading seq counted in it."""
        if new:
            self.db.execute("INSERT INTO demand VALUES (?, ?, ?, ?, '')", (nbh, end, kid, c))
        else:
            self.db.execute("UPDATE demand SET ciphertext=? WHERE neighbourhood=?"
                            " AND interval_end=?", (c, nbh, end))
        self.db.execute("INSERT INTO demand_meters VALUES (?, ?, ?, ?)",
                        (nbh, end, meter_id, seq))

    def demand_meters(self, nbh: str, end: int) -> list[str]:
        """The meters counted in an open interval, once per reading, sorted."""
        row = self.db.execute("SELECT meters FROM demand WHERE neighbourhood=? AND"
                              " interval_end=?", (nbh, end)).fetchone()
        older = row[0].split(",") if row and row[0] else []  # counted before the upgrade
        return sorted(older + [m for (m,) in self.db.execute(
            "SELECT meter_id FROM demand_meters WHERE neighbourhood=? AND interval_end=?",
            (nbh, end))])

    def bill_band(self, meter_id: str, day: int, band: int) -> bytes | None:
        row = self.db.execute("SELECT ciphertext FROM bill_days WHERE meter_id=? AND day=?"
                              " AND band=?", (meter_id, day, band)).fetchone()
        return row[0] if row else None

    def put_bill_band(self, meter_id: str, day: int, band: int, kid: str, c: bytes,
                      new: bool, interval_end: int) -> None:
        if new:
            self.db.execute("INSERT INTO bill_days VALUES (?, ?, ?, ?, 1, ?)",
                            (meter_id, day, band, c, kid))
        else:
            self.db.execute("UPDATE bill_days SET ciphertext=?, readings=readings+1"
                            " WHERE meter_id=? AND day=? AND band=?", (c, meter_id, day, band))
        # A change after signing makes a new version that must be signed again.
        # A new day links to the meter's previous one: a meter's days only
        # ever move forward (a late reading counts in the next open interval).
        self.db.execute("INSERT INTO bill_signed (meter_id, day, intervals, prev_day)"
                        " VALUES (?, ?, ?, (SELECT COALESCE(MAX(day), -1) FROM bill_signed"
                        "  WHERE meter_id=? AND day < ?))"
                        " ON CONFLICT(meter_id, day) DO UPDATE SET"
                        " version = version + (signature IS NOT NULL), signature = NULL,"
                        " intervals = CASE WHEN instr(',' || intervals || ',', ',' || ? || ',')"
                        " THEN intervals ELSE intervals || ',' || ? END",
                        (meter_id, day, str(interval_end), meter_id, day, str(interval_end),
                         str(interval_end)))

    def bill_intervals(self, meter_id: str, day: int) -> tuple[tuple[int, ...], int | None]:
        """(the aggregates' interval ends the day's readings are in, the
        meter's previous day with readings)."""
        text, prev = self.db.execute("SELECT intervals, prev_day FROM bill_signed WHERE"
                                     " meter_id=? AND day=?", (meter_id, day)).fetchone()
        return tuple(sorted(int(t) for t in text.split(",") if t)), prev

    def next_day_key_no(self, meter_id: str, day: int) -> int:
        """A key number the MDMS has not seen for this (meter, day). After a
        restore, numbers the lost state had handed out may already be at
        the MDMS with another key: they start above the restore's floor."""
        n = self.db.execute("SELECT COALESCE(MAX(key_no) + 1, 0) FROM customer_day_keys"
                            " WHERE meter_id=? AND day=?", (meter_id, day)).fetchone()[0]
        return max(n, self.setting_int("day_key_floor"))

    def add_day_key(self, meter_id: str, day: int, key_no: int, wrapped: bytes) -> None:
        self.db.execute("INSERT INTO customer_day_keys VALUES (?, ?, ?, ?)",
                        (meter_id, day, key_no, wrapped))
        self.outbox_add({"kind": "daykey", "meter_id": meter_id, "day": day, "key_no": key_no,
                         "wrapped": _b64(wrapped)})

    def add_sealed_copy(self, meter_id: str, seq: int, day: int, key_no: int, nonce: bytes,
                        ct: bytes) -> None:
        """A customer's sealed reading goes to the MDMS only; the gateway keeps
        nothing of it once pushed."""
        self.outbox_add({"kind": "copy", "meter_id": meter_id, "seq": seq, "day": day,
                         "key_no": key_no, "nonce": _b64(nonce), "ct": _b64(ct)})

    def finish_batch(self, meter_id: str, last_seq: int, last_end: int | None, fw, backlog,
                     accepted: int, duplicates: int, late: int, telemetry=None) -> None:
        self.db.execute(
            "UPDATE meters SET last_seq=?, last_end=COALESCE(?, last_end), last_seen=?,"
            " fw_version=COALESCE(?, fw_version), backlog=COALESCE(?, backlog),"
            " telemetry=COALESCE(?, telemetry),"
            " accepted=accepted+?, duplicates=duplicates+?, late=late+? WHERE meter_id=?",
            (last_seq, last_end, now(), fw, backlog,
             json.dumps(telemetry, sort_keys=True) if telemetry else None,
             accepted, duplicates, late, meter_id))

    # --- sealing -----------------------------------------------------------
    def data_clock(self) -> dict[str, int]:
        """Per neighbourhood: the oldest last-reported interval end of its meters."""
        return dict(self.db.execute("SELECT neighbourhood, MIN(COALESCE(last_end, 0)) FROM meters"
                                    " GROUP BY neighbourhood").fetchall())

    def open_demand(self) -> list[tuple[str, int, bytes, str]]:
        """(neighbourhood, interval end, ciphertext, key id), oldest first."""
        return self.db.execute("SELECT neighbourhood, interval_end, ciphertext, key_id"
                               " FROM demand ORDER BY interval_end").fetchall()

    def seal_demand(self, nbh: str, end: int, start: int, c: bytes, meters: str, key_id: str,
                    signed_item: dict) -> None:
        self.db.execute("INSERT INTO sealed VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (nbh, end, start, c, meters, key_id,
                         base64.b64decode(signed_item["signature"]), now()))
        self.db.execute("DELETE FROM demand WHERE neighbourhood=? AND interval_end=?", (nbh, end))
        self.db.execute("DELETE FROM demand_meters WHERE neighbourhood=? AND interval_end=?",
                        (nbh, end))
        self.outbox_add(signed_item)

    def neighbourhoods(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT neighbourhood FROM meters")]

    def mark_sealed_through(self, nbh: str, through: int) -> None:
        """Every interval of `nbh` ending at or before `through` is sealed: the
        MDMS may combine it with other gateways' parts and release it."""
        row = self.db.execute("SELECT through FROM seal_marks WHERE neighbourhood=?",
                              (nbh,)).fetchone()
        if row is None or through > row[0]:
            self.db.execute("INSERT OR REPLACE INTO seal_marks VALUES (?, ?)", (nbh, through))
            self.outbox_add({"kind": "sealed_through", "neighbourhood": nbh, "through": through})

    def last_sealed_end(self, nbh: str) -> int:
        return self.db.execute("SELECT COALESCE(MAX(interval_end), 0) FROM sealed"
                               " WHERE neighbourhood=?", (nbh,)).fetchone()[0]

    def unsigned_bill_days(self) -> list[tuple[str, int, int, str]]:
        """(meter, day, version, neighbourhood) of day accumulators to sign."""
        return self.db.execute("SELECT s.meter_id, s.day, s.version, m.neighbourhood"
                               " FROM bill_signed s JOIN meters m USING (meter_id)"
                               " WHERE s.signature IS NULL").fetchall()

    def bill_day_bands(self, meter_id: str, day: int) -> list[tuple[int, bytes, int, str]]:
        """(band, ciphertext, readings, key id) of one (meter, day)."""
        return self.db.execute("SELECT band, ciphertext, readings, key_id FROM bill_days"
                               " WHERE meter_id=? AND day=? ORDER BY band",
                               (meter_id, day)).fetchall()

    def sign_bill_day(self, meter_id: str, day: int, signed_item: dict) -> None:
        self.db.execute("UPDATE bill_signed SET signature=? WHERE meter_id=? AND day=?",
                        (base64.b64decode(signed_item["signature"]), meter_id, day))
        self.outbox_add(signed_item)

    def sealed_rows(self) -> list[tuple]:
        return self.db.execute(
            "SELECT neighbourhood, interval_end, interval_start, ciphertext, meters, key_id,"
            " signature FROM sealed ORDER BY neighbourhood, interval_end").fetchall()

    # --- outbox to the MDMS ------------------------------------------------
    def outbox_add(self, item: dict) -> None:
        self.db.execute("INSERT INTO outbox (item) VALUES (?)", (json.dumps(item),))

    def outbox_batch(self, limit: int) -> list[tuple[int, dict]]:
        return [(i, json.loads(t)) for i, t in self.db.execute(
            "SELECT id, item FROM outbox ORDER BY id LIMIT ?", (limit,))]

    def outbox_done(self, upto_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM outbox WHERE id <= ?", (upto_id,))

    def fleet_figures(self, silent_before: float) -> dict[str, int]:
        """The meters' totals, for /metrics (gateway/metrics.py)."""
        row = self.db.execute(
            "SELECT COUNT(*), TOTAL(accepted), TOTAL(duplicates), TOTAL(late),"
            " TOTAL(COALESCE(backlog, 0)), TOTAL(last_seen IS NULL OR last_seen < ?)"
            " FROM meters", (silent_before,)).fetchone()
        return dict(zip(("meters", "stored", "duplicates", "late", "backlog", "silent"),
                        (int(x) for x in row), strict=True))

    def outbox_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    # --- sender sequence numbers of the gateway's own OSCORE messages ----
    def reserved_seq(self, kid: bytes) -> int:
        row = self.db.execute("SELECT reserved FROM oscore_sender WHERE kid=?", (kid,)).fetchone()
        return row[0] if row else 0

    def reserve_seq(self, kid: bytes, upto: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO oscore_sender VALUES (?, ?)", (kid, upto))

    # --- the meters' sealed keys (gateway/keystore.py) --------------------
    # --- settings, backups ----------------------------------------------------------
    def setting_int(self, name: str, default: int = 0) -> int:
        row = self.db.execute("SELECT value FROM settings WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else default

    def set_setting(self, name: str, value) -> None:
        self.db.execute("INSERT INTO settings VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
                        " SET value=excluded.value", (name, str(value)))

    def last_seqs(self) -> dict[str, int]:
        return last_seqs_of(self.db)

    def keep_all(self) -> None:
        """Everything stored is in a backup (this database is one, restored)."""
        self.db.execute("UPDATE meters SET kept_seq=last_seq")

    def freeze_kept(self) -> None:
        """Before a first backup: from now on acks say that readings after
        each meter's current last one are in no backup yet."""
        self.db.execute("UPDATE meters SET kept_seq=last_seq WHERE kept_seq IS NULL")

    def mark_kept(self, seqs: dict[str, int]) -> None:
        """A backup holds each meter's readings up to these: the meters may
        forget them (gateway/backup.py)."""
        with self.transaction():
            self.db.executemany("UPDATE meters SET kept_seq=MAX(COALESCE(kept_seq, -1), ?)"
                                " WHERE meter_id=?", [(q, m) for m, q in seqs.items()])
            self.set_setting("last_backup_at", int(time.time()))

    def kept_seq(self, meter_id: str) -> int:
        """How far a backup holds this meter's readings; until a gateway's
        first backup, as far as its database does (the meter forgets what
        is acknowledged)."""
        row = self.db.execute("SELECT COALESCE(kept_seq, last_seq) FROM meters WHERE"
                              " meter_id=?", (meter_id,)).fetchone()
        return row[0] if row else -1

    def keystore_salt(self) -> bytes:
        """The salt of the key the meters' secrets are sealed under."""
        self.db.execute("INSERT OR IGNORE INTO settings VALUES ('keystore_salt', ?)",
                        (secrets.token_bytes(16),))
        return self.db.execute("SELECT value FROM settings WHERE name='keystore_salt'"
                               ).fetchone()[0]

    def meter_keys(self) -> list[tuple[str, bytes, int, int, bytes]]:
        """(meter, kid, generation, ratchet, sealed) of every meter."""
        return self.db.execute("SELECT meter_id, kid, generation, ratchet, sealed FROM meter_keys"
                               ).fetchall()

    def put_meter_key(self, meter_id: str, kid: bytes, generation: int, ratchet: bool,
                      sealed: bytes) -> None:
        self.db.execute("INSERT INTO meter_keys VALUES (?, ?, ?, ?, ?)",
                        (kid, meter_id, generation, int(ratchet), sealed))

    def advance_meter_key(self, kid: bytes, generation: int, sealed: bytes) -> None:
        """The meter's next generation replaces its older one (never the
        other way round)."""
        self.db.execute("UPDATE meter_keys SET generation=?, sealed=? WHERE kid=? AND"
                        " generation < ?", (generation, sealed, kid, generation))

    def meter_ids(self) -> set[str]:
        return {m for (m,) in self.db.execute("SELECT meter_id FROM meters")}

    # --- rejected-message counters --------------------------------------
    def add_rejects(self, counts: dict[tuple[str, str], int]) -> None:
        with self.transaction() as db:
            for (meter_id, reason), n in counts.items():
                db.execute("INSERT INTO rejects VALUES (?, ?, ?) ON CONFLICT(meter_id, reason)"
                           " DO UPDATE SET count = count + excluded.count", (meter_id, reason, n))

    def count(self, name: str, n: int = 1) -> None:
        self.db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
                        " SET n = n + excluded.n", (name, n))

    def counters(self) -> dict[str, int]:
        try:
            return dict(self.db.execute("SELECT name, n FROM counters").fetchall())
        except sqlite3.OperationalError:  # read-only, on a database from before counters
            return {}

    def rejects(self) -> dict[tuple[str, str], int]:
        return {(m, r): n for m, r, n in self.db.execute("SELECT * FROM rejects")}


def last_seqs_of(con: sqlite3.Connection) -> dict[str, int]:
    """Each meter's newest stored reading, in any connection to a gateway
    database (a backup's snapshot)."""
    return dict(con.execute("SELECT meter_id, last_seq FROM meters").fetchall())


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def now() -> float:
    return time.time()

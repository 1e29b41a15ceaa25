"""The gateway's SQLite database (WAL). It holds ciphertext accumulators,
sealed records, dedup state and fleet health, and never a plaintext reading.

All writes go through one connection on one thread; a batch of readings is
one transaction, committed before the meter is acknowledged.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meters (
    meter_id TEXT PRIMARY KEY,
    kid BLOB UNIQUE NOT NULL,
    neighbourhood TEXT NOT NULL,
    customer TEXT,
    last_seq INTEGER NOT NULL DEFAULT -1,      -- dedup: highest reading seq stored
    last_end INTEGER,                          -- interval end of that reading
    last_seen REAL,
    fw_version TEXT,
    backlog INTEGER,
    accepted INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    late INTEGER NOT NULL DEFAULT 0
);
-- open (neighbourhood, interval) accumulators; moved to sealed when sealed
CREATE TABLE IF NOT EXISTS demand (
    neighbourhood TEXT NOT NULL,
    interval_end INTEGER NOT NULL,
    ciphertext BLOB NOT NULL,
    contributors INTEGER NOT NULL,
    PRIMARY KEY (neighbourhood, interval_end)
);
CREATE TABLE IF NOT EXISTS sealed (
    neighbourhood TEXT NOT NULL,
    interval_end INTEGER NOT NULL,
    interval_start INTEGER NOT NULL,
    ciphertext BLOB NOT NULL,
    contributors INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    signature BLOB NOT NULL,
    sealed_at REAL NOT NULL,
    PRIMARY KEY (neighbourhood, interval_end)
);
-- (meter, day, tariff band) accumulators for bills; signed when the day is
-- closed, re-signed with a new version if a late reading changes them
CREATE TABLE IF NOT EXISTS bill_days (
    meter_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    band INTEGER NOT NULL,
    ciphertext BLOB NOT NULL,
    readings INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    key_id TEXT NOT NULL,
    signature BLOB,
    PRIMARY KEY (meter_id, day, band)
);
CREATE TABLE IF NOT EXISTS oscore_sender (kid BLOB PRIMARY KEY, reserved INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rejects (
    meter_id TEXT NOT NULL,   -- '' when the sender is unknown
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (meter_id, reason)
);
"""


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
                self.db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open gateway database {self.path}: {e}") from None

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

    # --- registry -------------------------------------------------------
    def meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def add_meter(self, meter_id: str, kid: bytes, neighbourhood: str, customer: str | None):
        try:
            self.db.execute("INSERT INTO meters (meter_id, kid, neighbourhood, customer)"
                            " VALUES (?, ?, ?, ?)", (meter_id, kid, neighbourhood, customer))
        except sqlite3.IntegrityError:
            raise StoreError(f"meter {meter_id} (or its key id) is already registered") from None

    def meters(self) -> list[sqlite3.Row]:
        cur = self.db.execute("SELECT * FROM meters ORDER BY meter_id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    # --- sender sequence numbers of the gateway's own OSCORE messages ----
    def reserved_seq(self, kid: bytes) -> int:
        row = self.db.execute("SELECT reserved FROM oscore_sender WHERE kid=?", (kid,)).fetchone()
        return row[0] if row else 0

    def reserve_seq(self, kid: bytes, upto: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO oscore_sender VALUES (?, ?)", (kid, upto))

    # --- rejected-message counters --------------------------------------
    def add_rejects(self, counts: dict[tuple[str, str], int]) -> None:
        with self.transaction() as db:
            for (meter_id, reason), n in counts.items():
                db.execute("INSERT INTO rejects VALUES (?, ?, ?) ON CONFLICT(meter_id, reason)"
                           " DO UPDATE SET count = count + excluded.count", (meter_id, reason, n))

    def rejects(self) -> dict[tuple[str, str], int]:
        return {(m, r): n for m, r, n in self.db.execute("SELECT * FROM rejects")}


def now() -> float:
    return time.time()

"""The gateway's SQLite database (WAL). It holds ciphertext accumulators,
sealed records, dedup state and fleet health, and never a plaintext reading.

All writes go through one connection on one thread; a batch of readings is
one transaction, committed before the meter is acknowledged.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from phe import PaillierPublicKey

from common import tariff as tariff_mod
from common.tariff import Tariff

SCHEMA = """
-- Paillier public keys by epoch: readings of day >= from_day use key_id
CREATE TABLE IF NOT EXISTS key_epochs (
    key_id TEXT PRIMARY KEY,
    from_day INTEGER UNIQUE NOT NULL,
    n TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tariffs (id TEXT PRIMARY KEY, definition TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS customers (customer_id TEXT PRIMARY KEY, public_key BLOB NOT NULL);
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
CREATE TABLE IF NOT EXISTS sealed_readings (
    meter_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    day INTEGER NOT NULL,
    key_no INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (meter_id, seq)
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
    def add_meter(self, meter_id: str, kid: bytes, neighbourhood: str, customer: str | None,
                  tariff: str = "flat"):
        if tariff != "flat" and tariff not in self.tariffs():
            raise StoreError(f"unknown tariff {tariff!r}; add it with `gridveil tariff add`")
        if customer is not None and not self.db.execute(
                "SELECT 1 FROM customers WHERE customer_id=?", (customer,)).fetchone():
            raise StoreError(f"unknown customer {customer!r}; create it with"
                             " `gridveil customer create`")
        try:
            self.db.execute("INSERT INTO meters (meter_id, kid, neighbourhood, customer, tariff)"
                            " VALUES (?, ?, ?, ?, ?)", (meter_id, kid, neighbourhood, customer,
                                                        tariff))
        except sqlite3.IntegrityError:
            raise StoreError(f"meter {meter_id} (or its key id) is already registered") from None

    # --- key epochs, tariffs, customers -------------------------------------
    def key_epochs(self) -> list[tuple[int, str, PaillierPublicKey]]:
        """[(from_day, key_id, public key)], oldest first."""
        return [(d, k, PaillierPublicKey(int(n))) for d, k, n in self.db.execute(
            "SELECT from_day, key_id, n FROM key_epochs ORDER BY from_day")]

    def add_key_epoch(self, pub: PaillierPublicKey, from_day: int) -> str:
        from common import paillier

        kid = paillier.key_id(pub)
        epochs = self.key_epochs()
        if epochs and from_day <= epochs[-1][0]:
            raise StoreError("a new key epoch must start after the current one")
        used = self.db.execute("SELECT MAX(day) FROM bill_days").fetchone()[0]
        if used is not None and from_day <= used:
            raise StoreError(f"readings exist up to day {used}; the new epoch must start later")
        try:
            self.db.execute("INSERT INTO key_epochs VALUES (?, ?, ?)", (kid, from_day, str(pub.n)))
        except sqlite3.IntegrityError:
            raise StoreError(f"key {kid} is already an epoch of this gateway") from None
        return kid

    def tariffs(self) -> dict[str, Tariff]:
        out = {"flat": tariff_mod.FLAT}
        for tid, definition in self.db.execute("SELECT id, definition FROM tariffs"):
            out[tid] = tariff_mod.parse(json.loads(definition))
        return out

    def add_tariff(self, t: Tariff) -> None:
        self.db.execute("INSERT OR REPLACE INTO tariffs VALUES (?, ?)", (t.id, json.dumps(t.to_json())))

    def add_customer(self, customer_id: str, public_key_der: bytes) -> None:
        try:
            self.db.execute("INSERT INTO customers VALUES (?, ?)", (customer_id, public_key_der))
        except sqlite3.IntegrityError:
            raise StoreError(f"customer {customer_id} already exists") from None

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

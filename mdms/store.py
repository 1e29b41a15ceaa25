"""The MDMS database (SQLite, WAL): web users, sessions, login throttling,
release requests awaiting the privacy guardian, and released values. It
holds no plaintext reading and nothing that decrypts one."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    pw_hash TEXT NOT NULL,
    created REAL NOT NULL
);
-- customers log in with a verifier their browser derives from the password;
-- only a slow hash of it is kept
CREATE TABLE IF NOT EXISTS customer_logins (
    customer_id TEXT PRIMARY KEY,
    verifier_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    role TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    first_at REAL NOT NULL,
    locked_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS released_aggregates (
    neighbourhood TEXT NOT NULL,
    interval_end INTEGER NOT NULL,
    wh INTEGER NOT NULL,
    noisy INTEGER NOT NULL DEFAULT 0,
    released_at REAL NOT NULL,
    PRIMARY KEY (neighbourhood, interval_end)
);
CREATE TABLE IF NOT EXISTS bills (
    meter_id TEXT NOT NULL,
    first_day INTEGER NOT NULL,
    days INTEGER NOT NULL,
    amount_uct INTEGER NOT NULL,
    released_at REAL NOT NULL,
    PRIMARY KEY (meter_id, first_day)
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,             -- aggregates | bills
    params TEXT NOT NULL,           -- JSON
    requested_by TEXT NOT NULL,
    requested_at REAL NOT NULL,
    status TEXT NOT NULL,           -- pending | approved | declined
    decided_by TEXT,
    decided_at REAL,
    outcome TEXT
);
"""


class MdmsStore:
    def __init__(self, path: Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                  timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def rows(self, sql: str, args=()) -> list[dict]:
        cur = self.db.execute(sql, args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def secret(self, name: str) -> bytes:
        """A random server-side key, made on first use (e.g. for decoys)."""
        import secrets

        self.db.execute("INSERT OR IGNORE INTO secrets VALUES (?, ?)",
                        (name, secrets.token_bytes(32)))
        return self.db.execute("SELECT value FROM secrets WHERE name=?", (name,)).fetchone()[0]

    # --- released values ----------------------------------------------------
    def save_released(self, released, period_days: int = 1, noisy: bool = False) -> None:
        now = time.time()
        self.db.executemany("INSERT OR REPLACE INTO released_aggregates VALUES (?, ?, ?, ?, ?)",
                            [(n, e, wh, int(noisy), now)
                             for (n, e), wh in released.aggregates.items()])
        self.db.executemany("INSERT OR REPLACE INTO bills VALUES (?, ?, ?, ?, ?)",
                            [(m, d, period_days, amount, now)
                             for (m, d), amount in released.bills.items()])

    # --- release requests ---------------------------------------------------
    def add_request(self, kind: str, params: dict, who: str) -> int:
        cur = self.db.execute("INSERT INTO requests (kind, params, requested_by, requested_at,"
                              " status) VALUES (?, ?, ?, ?, 'pending')",
                              (kind, json.dumps(params), who, time.time()))
        return cur.lastrowid

    def decide(self, rid: int, status: str, who: str, outcome: str) -> bool:
        cur = self.db.execute("UPDATE requests SET status=?, decided_by=?, decided_at=?, outcome=?"
                              " WHERE id=? AND status='pending'",
                              (status, who, time.time(), outcome, rid))
        return cur.rowcount == 1

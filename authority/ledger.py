"""The authority's own SQLite database: which subjects were released, and
the hash-chained log of every decision, granted or refused.

Each log entry's hash covers the previous entry's hash, so an edit,
deletion or reordering breaks the chain at that point (`verify`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS released (subject TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    n INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    requester TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    granted INTEGER NOT NULL,
    reason TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""


def entry_hash(prev: str, at: float, requester: str, kind: str, subject: str, granted: bool,
               reason: str) -> str:
    body = json.dumps([prev, repr(at), requester, kind, subject, bool(granted), reason])
    return hashlib.sha256(body.encode()).hexdigest()


class Ledger:
    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def was_released(self, subject: str) -> bool:
        return self.db.execute("SELECT 1 FROM released WHERE subject=?",
                               (subject,)).fetchone() is not None

    def record(self, requester: str, kind: str, subjects: list[str], granted: bool,
               reason: str) -> None:
        """Append the decision (and mark the subjects released if granted) in
        one transaction: a release is never unlogged, nor logged twice."""
        at = time.time()
        subject = ",".join(subjects)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT hash FROM log ORDER BY n DESC LIMIT 1").fetchone()
            prev = row[0] if row else GENESIS
            h = entry_hash(prev, at, requester, kind, subject, granted, reason)
            self.db.execute("INSERT INTO log (at, requester, kind, subject, granted, reason, prev,"
                            " hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (at, requester, kind, subject, int(granted), reason, prev, h))
            if granted:
                self.db.executemany("INSERT INTO released VALUES (?, ?)",
                                    [(s, at) for s in subjects])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def entries(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM log ORDER BY n")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def verify(self) -> tuple[bool, str]:
        prev = GENESIS
        entries = self.entries()
        for e in entries:
            if e["prev"] != prev:
                return False, f"entry {e['n']}: chain broken (entry missing or reordered)"
            h = entry_hash(prev, e["at"], e["requester"], e["kind"], e["subject"],
                           bool(e["granted"]), e["reason"])
            if h != e["hash"]:
                return False, f"entry {e['n']}: contents were changed"
            prev = h
        return True, f"{len(entries)} entries, chain intact"

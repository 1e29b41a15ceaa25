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
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS released (subject TEXT PRIMARY KEY, at REAL NOT NULL);
-- differential-privacy budget spent, per neighbourhood and UTC day, as a
-- fraction "num/den" so that sums stay exact
CREATE TABLE IF NOT EXISTS dp_spent (
    neighbourhood TEXT NOT NULL,
    day INTEGER NOT NULL,
    spent TEXT NOT NULL,
    PRIMARY KEY (neighbourhood, day)
);
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


@dataclass(frozen=True)
class Receipt:
    """Where a decision sits in the log. A requester that keeps receipts can
    later prove that the log was cut short (the chain alone cannot)."""

    n: int
    hash: str


class Ledger:
    def __init__(self, path: Path):
        # One holder thread uses it (authority/api.py); the API's worker is not
        # the thread that opened it.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def was_released(self, subject: str) -> bool:
        return self.db.execute("SELECT 1 FROM released WHERE subject=?",
                               (subject,)).fetchone() is not None

    def dp_spent(self, neighbourhood: str, day: int) -> Fraction:
        row = self.db.execute("SELECT spent FROM dp_spent WHERE neighbourhood=? AND day=?",
                              (neighbourhood, day)).fetchone()
        return Fraction(row[0]) if row else Fraction(0)

    def record(self, requester: str, kind: str, subject: str, granted: bool, reason: str,
               marks: list[str] = (), dp_spend: tuple[str, int, Fraction] | None = None
               ) -> Receipt:
        """Append the decision (and mark the subjects released, and spend the
        privacy budget, if granted) in one transaction: a release is never
        unlogged, nor logged twice. `marks` are the things released at most
        once (one per interval, one per meter-day)."""
        at = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT hash FROM log ORDER BY n DESC LIMIT 1").fetchone()
            prev = row[0] if row else GENESIS
            h = entry_hash(prev, at, requester, kind, subject, granted, reason)
            self.db.execute("INSERT INTO log (at, requester, kind, subject, granted, reason, prev,"
                            " hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (at, requester, kind, subject, int(granted), reason, prev, h))
            n = self.db.execute("SELECT last_insert_rowid()").fetchone()[0]
            if granted:
                self.db.executemany("INSERT INTO released VALUES (?, ?)",
                                    [(m, at) for m in marks])
                if dp_spend is not None:
                    nbh, day, eps = dp_spend
                    total = self.dp_spent(nbh, day) + eps
                    self.db.execute("INSERT OR REPLACE INTO dp_spent VALUES (?, ?, ?)",
                                    (nbh, day, str(total)))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return Receipt(n, h)

    def entries(self, after: int = 0, limit: int = -1) -> list[dict]:
        cur = self.db.execute("SELECT * FROM log WHERE n > ? ORDER BY n LIMIT ?", (after, limit))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def verify(self, receipts: list[Receipt] = ()) -> tuple[bool, str]:
        """Check the chain, and that every receipt handed out is still there."""
        prev = GENESIS
        entries = self.entries()
        by_n = {e["n"]: e["hash"] for e in entries}
        for r in receipts:
            if by_n.get(r.n) != r.hash:
                return False, f"entry {r.n} from a receipt is missing or changed (log cut short?)"
        for e in entries:
            if e["prev"] != prev:
                return False, f"entry {e['n']}: chain broken (entry missing or reordered)"
            h = entry_hash(prev, e["at"], e["requester"], e["kind"], e["subject"],
                           bool(e["granted"]), e["reason"])
            if h != e["hash"]:
                return False, f"entry {e['n']}: contents were changed"
            prev = h
        return True, f"{len(entries)} entries, chain intact"

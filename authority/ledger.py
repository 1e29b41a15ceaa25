"""A key holder's own SQLite database: the hash-chained log of every
decision, granted or refused, and the state its decisions depend on (which
subjects were released, how much privacy budget is spent).

Each log entry's hash covers the previous entry's hash and everything the
entry changed (the subjects it marked released, the budget it spent), so
an edit, deletion or reordering breaks the chain at that point. The state
tables are only a cache of the log: `verify` rebuilds them from the log and
compares, so deleting a "released" row (to release something twice) is
caught, and the holder refuses to start on it. Because a chain anyone can
recompute proves little by itself, the holder signs its chain head with its
own Ed25519 key (`head`); an auditor keeps signed heads, and `verify`
checks that a kept head is still in the chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

GENESIS = "0" * 64
HEAD_LABEL = "gridveil-log-head-v1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS released (subject TEXT PRIMARY KEY, at REAL NOT NULL);
-- differential-privacy budget spent by each enrolled household over its
-- lifetime, as a fraction "num/den" so that sums stay exact
CREATE TABLE IF NOT EXISTS dp_spent (household TEXT PRIMARY KEY, spent TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    n INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    requester TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    granted INTEGER NOT NULL,
    reason TEXT NOT NULL,
    marks TEXT NOT NULL DEFAULT '[]',   -- JSON: subjects this grant released
    dp TEXT NOT NULL DEFAULT '',        -- JSON [[household, ...], "epsilon"] spent, or ''
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""


def entry_hash(prev: str, at: float, requester: str, kind: str, subject: str, granted: bool,
               reason: str, marks: str = "[]", dp: str = "") -> str:
    body = json.dumps([prev, repr(at), requester, kind, subject, bool(granted), reason, marks,
                       dp])
    return hashlib.sha256(body.encode()).hexdigest()


def head_bytes(role: str, n: int, h: str) -> bytes:
    return f"{HEAD_LABEL}|{role}|{n}|{h}".encode()


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

    def dp_spent(self, household: str) -> Fraction:
        row = self.db.execute("SELECT spent FROM dp_spent WHERE household=?",
                              (household,)).fetchone()
        return Fraction(row[0]) if row else Fraction(0)

    def record(self, requester: str, kind: str, subject: str, granted: bool, reason: str,
               marks: list[str] = (), dp_spend: tuple[list[str], Fraction] | None = None
               ) -> Receipt:
        """Append the decision (and mark the subjects released, and spend the
        privacy budget, if granted) in one transaction: a release is never
        unlogged, nor logged twice. `marks` are the things released at most
        once (one per interval, one per (meter, interval), one per
        meter-day); the entry's hash covers them."""
        at = time.time()
        marks = list(marks) if granted else []
        dp = json.dumps([sorted(dp_spend[0]), str(dp_spend[1])]) \
            if granted and dp_spend is not None else ""
        marks_json = json.dumps(marks)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT hash FROM log ORDER BY n DESC LIMIT 1").fetchone()
            prev = row[0] if row else GENESIS
            h = entry_hash(prev, at, requester, kind, subject, granted, reason, marks_json, dp)
            self.db.execute("INSERT INTO log (at, requester, kind, subject, granted, reason,"
                            " marks, dp, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (at, requester, kind, subject, int(granted), reason, marks_json, dp,
                             prev, h))
            n = self.db.execute("SELECT last_insert_rowid()").fetchone()[0]
            self.db.executemany("INSERT INTO released VALUES (?, ?)", [(m, at) for m in marks])
            if dp:
                households, eps = dp_spend
                for household in households:
                    self.db.execute("INSERT OR REPLACE INTO dp_spent VALUES (?, ?)",
                                    (household, str(self.dp_spent(household) + eps)))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return Receipt(n, h)

    def entries(self, after: int = 0, limit: int = -1) -> list[dict]:
        cur = self.db.execute("SELECT * FROM log WHERE n > ? ORDER BY n LIMIT ?", (after, limit))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def head(self) -> Receipt:
        row = self.db.execute("SELECT n, hash FROM log ORDER BY n DESC LIMIT 1").fetchone()
        return Receipt(*row) if row else Receipt(0, GENESIS)

    def verify(self, receipts: list[Receipt] = ()) -> tuple[bool, str]:
        """Check the chain; that the released-once set and the privacy budget
        are exactly what the log's grants say; and that every receipt (or
        kept head) handed out is still there."""
        prev = GENESIS
        entries = self.entries()
        by_n = {e["n"]: e["hash"] for e in entries}
        for r in receipts:
            if r.n and by_n.get(r.n) != r.hash:
                return False, f"entry {r.n} from a receipt is missing or changed (log cut short?)"
        released: set[str] = set()
        spent: dict[str, Fraction] = {}
        for e in entries:
            if e["prev"] != prev:
                return False, f"entry {e['n']}: chain broken (entry missing or reordered)"
            h = entry_hash(prev, e["at"], e["requester"], e["kind"], e["subject"],
                           bool(e["granted"]), e["reason"], e["marks"], e["dp"])
            if h != e["hash"]:
                return False, f"entry {e['n']}: contents were changed"
            released |= set(json.loads(e["marks"]))
            if e["dp"]:
                households, eps = json.loads(e["dp"])
                for household in households:
                    spent[household] = spent.get(household, Fraction(0)) + Fraction(eps)
            prev = h
        table = {s for (s,) in self.db.execute("SELECT subject FROM released")}
        if table != released:
            return False, (f"the released-once set differs from the log ({len(released - table)}"
                           f" released subjects missing, {len(table - released)} unlogged)")
        budget = {h: Fraction(s) for h, s in self.db.execute("SELECT * FROM dp_spent")}
        if budget != {k: v for k, v in spent.items() if v}:
            return False, "the privacy budget spent differs from the log"
        return True, f"{len(entries)} entries, chain intact, state matches the log"


def check_head(pub, head: dict) -> Receipt:
    """A head an auditor kept, as a receipt, if `pub` (the holder's signing
    key) signed it; ValueError otherwise."""
    try:
        pub.verify(base64.b64decode(head["signature"], validate=True),
                   head_bytes(head["role"], head["n"], head["hash"]))
        return Receipt(int(head["n"]), str(head["hash"]))
    except Exception:  # noqa: BLE001 - InvalidSignature, bad base64, missing or odd fields
        raise ValueError("not a head signed by this holder") from None


def sign_head(sign, role: str, head: Receipt) -> dict:
    """A head an auditor can keep: {role, n, hash, signature}."""
    return {"role": role, "n": head.n, "hash": head.hash,
            "signature": base64.b64encode(sign(head_bytes(role, head.n, head.hash))).decode()}

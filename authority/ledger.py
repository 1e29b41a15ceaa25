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
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

GENESIS = "0" * 64
HEAD_LABEL = "gridveil-log-head-v1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS released (subject TEXT PRIMARY KEY, at REAL NOT NULL);
-- before w-event privacy: the lifetime budget each household had spent, as
-- a fraction "num/den" (kept so that an old log still verifies; no longer written)
CREATE TABLE IF NOT EXISTS dp_spent (household TEXT PRIMARY KEY, spent TEXT NOT NULL);
-- the meters of every released aggregate, by neighbourhood and interval:
-- what a group of bills must cover (docs/privacy.md, "No differencing")
CREATE TABLE IF NOT EXISTS members (
    neighbourhood TEXT NOT NULL,
    interval_end INTEGER NOT NULL,
    meter TEXT NOT NULL,
    PRIMARY KEY (neighbourhood, interval_end, meter)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_meter ON members (meter, interval_end);
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


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A connection to the holder's database (WAL, every commit on disk),
    with `schema` made. One holder thread uses each (authority/api.py); the
    API's worker is not the thread that opened it."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


class Ledger:
    def __init__(self, path: Path):
        self.db = connect(path, SCHEMA)
        self._in_batch = False

    def close(self) -> None:
        self.db.close()

    def was_released(self, subject: str) -> bool:
        return self.db.execute("SELECT 1 FROM released WHERE subject=?",
                               (subject,)).fetchone() is not None

    @contextmanager
    def batch(self):
        """Several decisions in one transaction (one fsync): each sees the
        marks of those before it; a crash keeps all of them or none, and
        nothing is answered before the commit."""
        self.db.execute("BEGIN IMMEDIATE")
        self._in_batch = True
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        finally:
            self._in_batch = False

    def record(self, requester: str, kind: str, subject: str, granted: bool, reason: str,
               marks: list[str] = (), members: tuple[str, int, list[str]] | None = None
               ) -> Receipt:
        """Append the decision (and, if granted, mark the subjects released
        and the aggregate's members) in one transaction: a release is never
        unlogged, nor logged twice. `marks` are the things released at most
        once (one per interval, one per (meter, interval), one per
        meter-day); the entry's hash covers them, and the members are what
        its subject and marks name."""
        at = time.time()
        marks = list(marks) if granted else []
        marks_json = json.dumps(marks)
        own = not self._in_batch
        if own:
            self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT hash FROM log ORDER BY n DESC LIMIT 1").fetchone()
            prev = row[0] if row else GENESIS
            h = entry_hash(prev, at, requester, kind, subject, granted, reason, marks_json, "")
            n = self.db.execute("INSERT INTO log (at, requester, kind, subject, granted, reason,"
                                " marks, dp, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?)",
                                (at, requester, kind, subject, int(granted), reason, marks_json,
                                 prev, h)).lastrowid
            self.db.executemany("INSERT INTO released VALUES (?, ?)", [(m, at) for m in marks])
            if granted and members is not None:
                nbh, end, meters = members
                self.db.executemany("INSERT OR IGNORE INTO members VALUES (?, ?, ?)",
                                    [(nbh, end, m) for m in meters])
            if own:
                self.db.execute("COMMIT")
        except BaseException:
            if own:
                self.db.execute("ROLLBACK")
            raise
        return Receipt(n, h)

    def members(self, neighbourhoods, after: int, upto: int) -> set[str]:
        """Meters in released aggregates of these neighbourhoods whose
        interval ends in (after, upto]."""
        out: set[str] = set()
        for nbh in neighbourhoods:
            out.update(m for (m,) in self.db.execute(
                "SELECT DISTINCT meter FROM members WHERE neighbourhood=? AND interval_end > ?"
                " AND interval_end <= ?", (nbh, after, upto)))
        return out

    def neighbourhoods_of(self, meter: str, after: int, upto: int) -> set[str]:
        return {n for (n,) in self.db.execute(
            "SELECT DISTINCT neighbourhood FROM members WHERE meter=? AND interval_end > ?"
            " AND interval_end <= ?", (meter, after, upto))}

    def entries(self, after: int = 0, limit: int = -1) -> list[dict]:
        cur = self.db.execute("SELECT * FROM log WHERE n > ? ORDER BY n LIMIT ?", (after, limit))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def head(self) -> Receipt:
        row = self.db.execute("SELECT n, hash FROM log ORDER BY n DESC LIMIT 1").fetchone()
        return Receipt(*row) if row else Receipt(0, GENESIS)

    def verify(self, receipts: list[Receipt] = ()) -> tuple[bool, str]:
        """Check the chain; that the released-once set, the aggregates'
        members and the privacy budget of old entries are exactly what the
        log's grants say; and that every receipt (or kept head) handed out
        is still there."""
        prev = GENESIS
        entries = self.entries()
        by_n = {e["n"]: e["hash"] for e in entries}
        for r in receipts:
            if r.n and by_n.get(r.n) != r.hash:
                return False, f"entry {r.n} from a receipt is missing or changed (log cut short?)"
        released: set[str] = set()
        members: set[tuple[str, int, str]] = set()
        spent: dict[str, Fraction] = {}
        for e in entries:
            if e["prev"] != prev:
                return False, f"entry {e['n']}: chain broken (entry missing or reordered)"
            h = entry_hash(prev, e["at"], e["requester"], e["kind"], e["subject"],
                           bool(e["granted"]), e["reason"], e["marks"], e["dp"])
            if h != e["hash"]:
                return False, f"entry {e['n']}: contents were changed"
            marks = json.loads(e["marks"])
            released |= set(marks)
            if e["kind"] == "aggregate" and e["granted"]:
                members |= aggregate_members(e["subject"], marks)
            if e["dp"]:
                households, eps = json.loads(e["dp"])
                for household in households:
                    spent[household] = spent.get(household, Fraction(0)) + Fraction(eps)
            prev = h
        table = {s for (s,) in self.db.execute("SELECT subject FROM released")}
        if table != released:
            return False, (f"the released-once set differs from the log ({len(released - table)}"
                           f" released subjects missing, {len(table - released)} unlogged)")
        if set(self.db.execute("SELECT neighbourhood, interval_end, meter FROM members")) != \
                members:
            return False, "the released aggregates' members differ from the log"
        budget = {h: Fraction(s) for h, s in self.db.execute("SELECT * FROM dp_spent")}
        if budget != {k: v for k, v in spent.items() if v}:
            return False, "the privacy budget spent differs from the log"
        return True, f"{len(entries)} entries, chain intact, state matches the log"


def aggregate_members(subject: str, marks: list[str]) -> set[tuple[str, int, str]]:
    """(neighbourhood, interval end, meter) of a granted aggregate, from its
    subject agg:<nbh>:<end> and its marks mi:<meter>:<end> (names hold no ':')."""
    _, nbh, end = subject.split(":")
    return {(nbh, int(end), m.split(":")[1]) for m in marks if m.startswith("mi:")}


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

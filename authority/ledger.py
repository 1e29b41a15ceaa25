"""A key holder's own SQLite database: the hash-chained log of every
decision, granted or refused, and the state its decisions depend on (what
was released, compactly: authority/marks.py).

Each log entry's hash covers the previous entry's hash and everything the
entry changed (the values it marked released, the bills), so an edit,
deletion or reordering breaks the chain at that point. A request of many
values is one entry: its marks name each value and the set of meters it
counted, one short line each.

The state tables are a cache of the log. `verify` rebuilds them from the
whole log, streaming, into a scratch database beside the ledger and
compares: deleting a "released" mark (to release something twice) is
caught. Because a chain anyone can recompute proves little by itself, the
holder signs its chain head with its own Ed25519 key (`head`); an auditor
keeps signed heads, and `verify` checks that a kept head is still there.

The holder keeps signed checkpoints of its own head. At start-up it checks
the chain from the newest one (a bounded number of entries, whatever the
history) and runs the full verification in the background; until that
ends, tampering with older state on its disk is not yet seen
(docs/privacy.md). It also keeps, for a while, what it answered for each
value (the noise it drew), so a request asked again after a failure gets
the very same answer: no grant is lost, and no value is released twice
with fresh noise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.files import ConfigError

from .marks import SCHEMA as MARKS_SCHEMA
from .marks import STATE, Marks, _int, set_digest

GENESIS = "0" * 64
HEAD_LABEL = "gridveil-log-head-v1"
CHECKPOINT_EVERY = 50  # entries (a request of many values is one)
# A log this short is verified whole at start-up. Both bounds: an entry can
# decide thousands of values, so a few entries can take long to verify.
FULL_AT_START = 200
FULL_AT_START_BYTES = 1 << 20
ANSWERS_KEPT_S = 30 * 86400  # how long a retried request gets the same answer
RESTORED = "restored"  # meta, while a holder put back to a backup is not reconciled
SCHEMA_VERSION = 1  # the log's own format; older logs migrate in _migrate

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    n INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    requester TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    granted INTEGER NOT NULL,
    reason TEXT NOT NULL,
    marks TEXT NOT NULL DEFAULT '[]',   -- JSON: what this entry released
    dp TEXT NOT NULL DEFAULT '',        -- older logs: the privacy budget spent; kept for the hash
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_kind ON log (kind, n);
-- what each released value was answered with, to answer a retry the same
CREATE TABLE IF NOT EXISTS answers (
    subject TEXT PRIMARY KEY, item TEXT NOT NULL, noise INTEGER NOT NULL,
    contributors INTEGER NOT NULL, noisy INTEGER NOT NULL, at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_by_age ON answers (at);
CREATE TABLE IF NOT EXISTS checkpoints (
    n INTEGER PRIMARY KEY, hash TEXT NOT NULL, at REAL NOT NULL, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + MARKS_SCHEMA
LEGACY = ("released", "members", "dp_spent")  # the state before marks.py


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


@dataclass(frozen=True)
class Answered:
    """What a value was answered with: a retry of the same item gets it again."""
    item: str  # digest of what was asked (the signed parts, or the bill's ciphertext)
    noise: int
    contributors: int
    noisy: bool


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
    def __init__(self, path: Path, interval_s: int | None = None):
        self.path = Path(path)
        self.db = connect(self.path, SCHEMA)
        made = self.meta("schema")
        if made is not None and int(made) > SCHEMA_VERSION:
            self.db.close()
            raise ConfigError(f"{self.path} was made by a newer GridVeil (schema {made}; this"
                              f" release knows {SCHEMA_VERSION}): run that release")
        if made is None:
            self.set_meta("schema", str(SCHEMA_VERSION))
        self._in_batch = False
        self.interval_s = self._grid(interval_s)
        self.marks = Marks(self.db, self.interval_s)
        self._migrate()

    def close(self) -> None:
        self.db.close()

    def _grid(self, interval_s: int | None) -> int:
        """The grid the bitmaps are laid on: the policy's interval, fixed at
        the first start of the holder (a changed grid would misread every
        mark). Without one (a tool reading the log), the one kept."""
        row = self.db.execute("SELECT value FROM meta WHERE name='interval_s'").fetchone()
        if row is not None:
            return int(row[0])
        if interval_s is not None:
            self.db.execute("INSERT INTO meta VALUES ('interval_s', ?)", (str(interval_s),))
        return interval_s or 900

    def _migrate(self) -> None:
        """A log from before marks.py: its state rebuilt from the log itself
        (the old tables were a cache of it), then the old tables dropped."""
        old = {r[0] for r in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")} & set(LEGACY)
        if not old:
            return
        with self.batch():
            for table in STATE:
                self.db.execute(f"DELETE FROM {table}")
            for e in self._iter_entries(self.db):
                if e["granted"] and e["marks"] not in ("", "[]"):
                    self.marks.apply(json.loads(e["marks"]), e["subject"])
            for table in sorted(old):
                self.db.execute(f"DROP TABLE {table}")

    @contextmanager
    def batch(self):
        """Several decisions in one transaction (one fsync): each sees the
        marks of those before it; a crash keeps all of them or none, and
        nothing is answered before the commit."""
        if self._in_batch:
            yield
            return
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
               marks=None) -> Receipt:
        """Append one decision. `marks` says what it decided value by value
        (the compact form of marks.Marks.apply, with "again" and "refused"
        lists); what a grant released is applied to the state by the
        caller, in the same transaction. The entry's hash covers it."""
        at = time.time()
        marks_json = json.dumps(marks or [], separators=(",", ":"))
        with self.batch():
            row = self.db.execute("SELECT hash FROM log ORDER BY n DESC LIMIT 1").fetchone()
            prev = row[0] if row else GENESIS
            h = entry_hash(prev, at, requester, kind, subject, granted, reason, marks_json, "")
            n = self.db.execute("INSERT INTO log (at, requester, kind, subject, granted, reason,"
                                " marks, dp, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?)",
                                (at, requester, kind, subject, int(granted), reason, marks_json,
                                 prev, h)).lastrowid
        return Receipt(n, h)

    def grant(self, requester: str, kind: str, subject: str, reason: str,
              aggregates=(), bills=()) -> Receipt:
        """Mark and log, in one transaction, released sums [(neighbourhood,
        interval end, meters)] and bills [(meter, first day, end day)]."""
        with self.batch():
            b = self.marks.batch(list(aggregates))
            agg = [[nbh, end, b.mark(nbh, end, meters)] for nbh, end, meters in aggregates]
            b.flush()
            self.marks.mark_bills(list(bills))
            return self.record(requester, kind, subject, True, reason,
                               {"agg": agg, "bills": [list(x) for x in bills]})

    # --- answers kept for retries ------------------------------------------------
    def answered(self, subject: str) -> Answered | None:
        row = self.db.execute("SELECT item, noise, contributors, noisy FROM answers WHERE"
                              " subject=?", (subject,)).fetchone()
        return None if row is None else Answered(row[0], row[1], row[2], bool(row[3]))

    def keep_answers(self, rows: list[tuple[str, Answered]]) -> None:
        now = time.time()
        self.db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                            [(s, a.item, a.noise, a.contributors, int(a.noisy), now)
                             for s, a in rows])
        self.db.execute("DELETE FROM answers WHERE at < ?", (now - ANSWERS_KEPT_S,))

    # --- the log -----------------------------------------------------------------
    def entries(self, after: int = 0, limit: int = -1, kind: str = "",
                before: int = 0) -> list[dict]:
        """Entries after n=`after` (oldest first), or before n=`before`
        (newest first) when given; of one kind if asked."""
        where, args = ["n > ?"], [after]
        if before:
            where.append("n < ?")
            args.append(before)
        if kind:
            where.append("kind = ?")
            args.append(kind)
        cur = self.db.execute(f"SELECT * FROM log WHERE {' AND '.join(where)} ORDER BY n"
                              f" {'DESC' if before else ''} LIMIT ?", (*args, limit))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    @staticmethod
    def _iter_entries(db, after: int = 0, upto: int = 1 << 62):
        cur = db.execute("SELECT * FROM log WHERE n > ? AND n <= ? ORDER BY n", (after, upto))
        cols = [d[0] for d in cur.description]
        while rows := cur.fetchmany(500):
            for r in rows:
                yield dict(zip(cols, r, strict=True))

    def head(self) -> Receipt:
        return head_of(self.db)

    # --- after a restore (authority/backup.py) ---------------------------------------
    def meta(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def set_meta(self, name: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM meta WHERE name=?", (name,))
        else:
            self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET"
                            " value=excluded.value", (name, value))

    def entry_hash_at(self, n: int) -> str | None:
        row = self.db.execute("SELECT hash FROM log WHERE n=?", (n,)).fetchone()
        return row[0] if row else None

    def meter_sets(self, digests) -> dict[str, str]:
        out = {}
        for d in sorted(set(digests)):
            row = self.db.execute("SELECT meters FROM meter_sets WHERE digest=?", (d,)).fetchone()
            if row:
                out[d] = row[0]
        return out

    def continue_chain(self, entries: list[dict], meter_sets: dict[str, str]) -> int:
        """Append entries that follow this log's head, exactly as they were
        (a copy of this holder's own log kept elsewhere): each must link to
        the one before and hash as it says, and what the granted ones
        released is marked again. All or nothing; returns how many."""
        for digest, text in meter_sets.items():
            if set_digest(json.loads(text))[0] != digest:
                raise ValueError(f"meter set {digest} does not match its digest")
        added = 0
        with self.batch():
            self.db.executemany("INSERT OR IGNORE INTO meter_sets VALUES (?, ?)",
                                sorted(meter_sets.items()))
            head = self.head()
            for e in entries:
                if e["n"] <= head.n:
                    continue  # already here
                if e["n"] != head.n + 1 or e["prev"] != head.hash:
                    raise ValueError(f"entry {e['n']} does not follow entry {head.n} here")
                h = entry_hash(e["prev"], e["at"], e["requester"], e["kind"], e["subject"],
                               bool(e["granted"]), e["reason"], e["marks"], e["dp"])
                if h != e["hash"]:
                    raise ValueError(f"entry {e['n']} does not hash as it says")
                self.db.execute("INSERT INTO log (n, at, requester, kind, subject, granted,"
                                " reason, marks, dp, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
                                " ?, ?, ?)", (e["n"], e["at"], e["requester"], e["kind"],
                                              e["subject"], int(bool(e["granted"])), e["reason"],
                                              e["marks"], e["dp"], e["prev"], h))
                if e["granted"] and e["marks"] not in ("", "[]"):
                    self.marks.apply(json.loads(e["marks"]), e["subject"])
                head = Receipt(e["n"], h)
                added += 1
        return added

    # --- checkpoints -----------------------------------------------------------------
    def checkpoint(self, sign, role: str, force: bool = False) -> None:
        """Sign and keep the head, every CHECKPOINT_EVERY entries (or now)."""
        head = self.head()
        last = self.db.execute("SELECT MAX(n) FROM checkpoints").fetchone()[0] or 0
        if head.n and (force or head.n - last >= CHECKPOINT_EVERY) and head.n != last:
            sig = base64.b64encode(sign(head_bytes(role, head.n, head.hash))).decode()
            self.db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                            (head.n, head.hash, time.time(), sig))

    def verify_from_checkpoint(self, pub, role: str) -> tuple[bool, str]:
        """The chain from the newest signed checkpoint to the head, and that
        what those entries released is in the state: a bounded check, for
        start-up. Without a checkpoint (or a short log): everything."""
        row = self.db.execute("SELECT n, hash, signature FROM checkpoints ORDER BY n DESC"
                              " LIMIT 1").fetchone()
        if row is None or (self.head().n <= FULL_AT_START and self._bytes() <= FULL_AT_START_BYTES):
            return self.verify()
        n, h, sig = row
        try:
            pub.verify(base64.b64decode(sig), head_bytes(role, n, h))
        except Exception:  # noqa: BLE001 - InvalidSignature or junk
            return False, f"checkpoint {n} is not signed by this holder's key"
        got = self.db.execute("SELECT hash FROM log WHERE n=?", (n,)).fetchone()
        if got is None or got[0] != h:
            return False, f"entry {n} of the signed checkpoint is missing or changed"
        prev, count = h, 0
        for e in self._iter_entries(self.db, n):
            if e["prev"] != prev or entry_hash(prev, e["at"], e["requester"], e["kind"],
                                               e["subject"], bool(e["granted"]), e["reason"],
                                               e["marks"], e["dp"]) != e["hash"]:
                return False, f"entry {e['n']}: chain broken or contents changed"
            if e["granted"] and not self._in_state(json.loads(e["marks"])):
                return False, f"entry {e['n']}: what it released is missing from the state"
            prev, count = e["hash"], count + 1
        return True, f"chain intact from checkpoint {n} ({count} entries since)"

    def _bytes(self) -> int:
        """The database's size, without reading it."""
        return self.db.execute("PRAGMA page_count").fetchone()[0] * \
            self.db.execute("PRAGMA page_size").fetchone()[0]

    def _in_state(self, marks) -> bool:
        if not isinstance(marks, dict):
            return True  # an older entry: the full verification checks it
        keys = []
        for nbh, end, digest in marks.get("agg", []):
            meters = self.marks.meter_set(digest)
            if meters is None:
                return False
            keys.append((nbh, end, meters))
        b = self.marks.batch(keys)
        for nbh, end, meters in keys:
            day, bit = self.marks.where(end)
            if not b.released(nbh, end) or any(not b.mine.get((m, day, nbh), 0) >> bit & 1
                                               for m in meters):
                return False
        return all(self.marks.billed(m, f, e) == f for m, f, e in marks.get("bills", []))

    # --- the full verification -----------------------------------------------------
    def verify(self, receipts: list[Receipt] = ()) -> tuple[bool, str]:
        """Check the whole chain, that the state is exactly what the log's
        grants make it, and that every receipt (or kept head) handed out is
        still there. Streams the log and rebuilds the state in a scratch
        database on disk, so memory stays flat whatever the history; reads
        one snapshot of the live database, so the holder may go on serving."""
        scratch = self.path.with_name(self.path.name + f".verify-{os.getpid()}.db")
        scratch.unlink(missing_ok=True)
        con = sqlite3.connect(f"file:{scratch}", uri=True, isolation_level=None,
                              check_same_thread=False)
        try:
            con.execute("PRAGMA journal_mode=OFF")
            con.execute("PRAGMA synchronous=OFF")
            con.executescript(MARKS_SCHEMA)
            con.execute("ATTACH ? AS live", (f"file:{self.path}?mode=ro",))
            con.execute("BEGIN")  # one snapshot of the live database from here on
            return self._verify_into(con, receipts)
        except sqlite3.DatabaseError as e:
            return False, f"the log cannot be read: {e}"
        finally:
            con.close()
            scratch.unlink(missing_ok=True)

    def _verify_into(self, con: sqlite3.Connection, receipts) -> tuple[bool, str]:
        for digest, text in con.execute("SELECT digest, meters FROM live.meter_sets").fetchall():
            if set_digest(json.loads(text))[0] != digest:
                return False, f"meter set {digest} was changed"
        con.execute("INSERT INTO main.meter_sets SELECT * FROM live.meter_sets")
        grid = con.execute("SELECT value FROM live.meta WHERE name='interval_s'").fetchone()
        marks = Marks(con, int(grid[0]) if grid else self.interval_s)
        # Receipts handed out, and the holder's own signed checkpoints.
        wanted = {r.n: r.hash for r in receipts if r.n}
        for n, h in con.execute("SELECT n, hash FROM live.checkpoints").fetchall():
            if wanted.setdefault(n, h) != h:
                return False, f"checkpoint {n} and a receipt disagree"
        prev, count = GENESIS, 0
        # `log` resolves to live.log (the scratch database has none); the
        # replay writes the scratch database's own state tables.
        for e in self._iter_entries(con):
            if e["prev"] != prev:
                return False, f"entry {e['n']}: chain broken (entry missing or reordered)"
            h = entry_hash(prev, e["at"], e["requester"], e["kind"], e["subject"],
                           bool(e["granted"]), e["reason"], e["marks"], e["dp"])
            if h != e["hash"]:
                return False, f"entry {e['n']}: contents were changed"
            if wanted.pop(e["n"], h) != h:
                return False, f"entry {e['n']} from a receipt is missing or changed"
            if e["granted"] and e["marks"] not in ("", "[]"):
                try:
                    marks.apply(json.loads(e["marks"]), e["subject"])
                except (ValueError, TypeError, KeyError, sqlite3.IntegrityError) as err:
                    return False, f"entry {e['n']}: its marks cannot be replayed ({err})"
            prev, count = h, count + 1
        if wanted:
            return False, f"entry {min(wanted)} from a receipt is missing or changed (log cut short?)"
        for table in STATE:
            for a, b in (("live", "main"), ("main", "live")):
                if con.execute(f"SELECT 1 FROM (SELECT * FROM {a}.{table} EXCEPT"
                               f" SELECT * FROM {b}.{table}) LIMIT 1").fetchone():
                    return False, (f"the released-once set differs from the log ({table}: rows"
                                   f" {'missing from the log' if a == 'live' else 'missing'})")
        return True, f"{count} entries, chain intact, state matches the log"


def head_of(con: sqlite3.Connection) -> Receipt:
    """The head of the log in any connection to a holder's database (a
    backup's snapshot, a read-only one)."""
    row = con.execute("SELECT n, hash FROM log ORDER BY n DESC LIMIT 1").fetchone()
    return Receipt(*row) if row else Receipt(0, GENESIS)


def figures_of(path: Path, day: int) -> tuple[int, list[int]]:
    """(log entries, the released-interval bitmaps of `day` by
    neighbourhood), read-only, for /metrics (authority/metrics.py)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        bits = [_int(b) for (b,) in con.execute("SELECT bits FROM agg_marks WHERE day=?",
                                                 (day,))]
        return head_of(con).n, bits
    finally:
        con.close()


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

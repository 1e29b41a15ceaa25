"""What a key holder has released, kept compactly in its database: the
state its policy checks read, rebuilt from its log to verify it.

- `agg_marks`: per (neighbourhood, day), a bitmap of the intervals whose
  sum was released (each at most once);
- `meter_marks`: per (meter, day, neighbourhood), a bitmap of the
  intervals in which the meter was counted in a released sum of that
  neighbourhood. A meter's interval is in one released sum at most, and a
  group of bills must cover every meter a neighbourhood's sums counted;
- `bill_marks`: per meter, the [first day, end day) of each released bill;
- `meter_sets`: the meters of released sums, by the digest the log names
  them with (a neighbourhood's set rarely changes from one interval to the
  next, so the log stays small: one short line per released value).

An interval is its end time; its bit is its place in the day on the
holder's grid (interval_s, fixed once anything was released). A bitmap
row costs a few bytes per meter-day, whatever the number of releases.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

DAY = 86400

SCHEMA = """
CREATE TABLE IF NOT EXISTS agg_marks (
    neighbourhood TEXT NOT NULL, day INTEGER NOT NULL, bits BLOB NOT NULL,
    PRIMARY KEY (neighbourhood, day)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meter_marks (
    meter TEXT NOT NULL, day INTEGER NOT NULL, neighbourhood TEXT NOT NULL, bits BLOB NOT NULL,
    PRIMARY KEY (meter, day, neighbourhood)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS meter_marks_by_neighbourhood ON meter_marks (neighbourhood, day);
CREATE TABLE IF NOT EXISTS bill_marks (
    meter TEXT NOT NULL, first_day INTEGER NOT NULL, end_day INTEGER NOT NULL,
    PRIMARY KEY (meter, first_day)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meter_sets (digest TEXT PRIMARY KEY, meters TEXT NOT NULL)
    WITHOUT ROWID;
"""
STATE = ("agg_marks", "meter_marks", "bill_marks")
IN_CHUNK = 400


def set_digest(meters) -> tuple[str, str]:
    """(digest, JSON) of a set of meters: the log names a released sum's meters by it."""
    text = json.dumps(sorted(set(meters)), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32], text


def _int(blob) -> int:
    return int.from_bytes(blob, "little") if blob else 0


class Marks:
    """The state tables on one connection (the ledger's: same transactions)."""

    def __init__(self, db: sqlite3.Connection, interval_s: int):
        self.db = db
        self.step = interval_s
        self.width = (DAY // interval_s + 7) // 8

    def where(self, end: int) -> tuple[int, int]:
        """(day, bit) of the interval ending at `end`."""
        return (end - 1) // DAY, ((end - 1) % DAY) // self.step

    def _blob(self, bits: int) -> bytes:
        return bits.to_bytes(self.width, "little")

    # --- aggregates, a batch at a time -----------------------------------------
    def batch(self, keys) -> MarkBatch:
        """The marks that (neighbourhood, end, meters) keys touch, loaded in
        a few queries, checked and set in memory, written by flush()."""
        return MarkBatch(self, keys)

    def meter_set(self, digest: str) -> list[str] | None:
        row = self.db.execute("SELECT meters FROM meter_sets WHERE digest=?",
                              (digest,)).fetchone()
        return None if row is None else json.loads(row[0])

    # --- what bills read -------------------------------------------------------------
    def members(self, neighbourhoods, first_day: int, end_day: int) -> set[str]:
        """Meters counted in released sums of these neighbourhoods in days [first, end)."""
        out: set[str] = set()
        for nbh in neighbourhoods:
            out.update(m for (m,) in self.db.execute(
                "SELECT DISTINCT meter FROM meter_marks WHERE neighbourhood=? AND day >= ?"
                " AND day < ?", (nbh, first_day, end_day)))
        return out

    def neighbourhoods_of(self, meter: str, first_day: int, end_day: int) -> set[str]:
        return {n for (n,) in self.db.execute(
            "SELECT DISTINCT neighbourhood FROM meter_marks WHERE meter=? AND day >= ?"
            " AND day < ?", (meter, first_day, end_day))}

    def released_intervals(self, meter: str, day: int) -> int:
        """The bits of the day's intervals in which the meter was counted, anywhere."""
        bits = 0
        for (b,) in self.db.execute("SELECT bits FROM meter_marks WHERE meter=? AND day=?",
                                    (meter, day)):
            bits |= _int(b)
        return bits

    def interval_released(self, meter: str, end: int) -> bool:
        day, bit = self.where(end)
        return bool(self.released_intervals(meter, day) >> bit & 1)

    def billed(self, meter: str, first_day: int, end_day: int) -> int | None:
        """A day of [first, end) some released bill of the meter covered, or None."""
        row = self.db.execute("SELECT first_day FROM bill_marks WHERE meter=? AND first_day < ?"
                              " AND end_day > ? LIMIT 1", (meter, end_day, first_day)).fetchone()
        return None if row is None else max(row[0], first_day)

    def mark_bills(self, bills) -> None:
        """[(meter, first day, end day)]"""
        self.db.executemany("INSERT INTO bill_marks VALUES (?, ?, ?)", bills)

    # --- replay (verification, migration) ------------------------------------------
    def apply(self, marks, subject: str) -> None:
        """Apply the marks of one granted log entry: the compact form
        ({"agg": [[nbh, end, set digest]], "bills": [[meter, first, end]]})
        or the older list of subjects (agg:N:E, mi:M:E, bill:M:D)."""
        if isinstance(marks, dict):
            keys = []
            for nbh, end, digest in marks.get("agg", []):
                meters = self.meter_set(digest)
                if meters is None:
                    raise ValueError(f"meter set {digest} of a released sum is missing")
                keys.append((nbh, end, meters))
            b = self.batch(keys)
            for nbh, end, meters in keys:
                b.mark(nbh, end, meters)
            b.flush()
            self.mark_bills([tuple(x) for x in marks.get("bills", [])])
            return
        by_end: dict[int, list[str]] = {}
        for m in marks:
            kind, _, rest = m.partition(":")
            if kind == "mi":
                meter, end = rest.rsplit(":", 1)
                by_end.setdefault(int(end), []).append(meter)
            elif kind == "bill":
                meter, day = rest.rsplit(":", 1)
                self.mark_bills([(meter, int(day), int(day) + 1)])
        nbh = subject.split(":")[1] if subject.startswith("agg:") else ""
        keys = [(nbh, end, meters) for end, meters in by_end.items()]
        b = self.batch(keys)
        for key in keys:
            b.mark(*key)
        b.flush()


class MarkBatch:
    def __init__(self, marks: Marks, keys):
        self.m = marks
        self.agg: dict[tuple[str, int], int] = {}
        self.mine: dict[tuple[str, int, str], int] = {}  # (meter, day, nbh) -> bits
        self.any: dict[tuple[str, int], int] = {}  # (meter, day) -> bits in any neighbourhood
        self.sets: dict[str, str] = {}
        self.dirty_agg: set = set()
        self.dirty_meter: set = set()
        pairs = {(nbh, marks.where(end)[0]) for nbh, end, _ in keys}
        for nbh, day in pairs:
            row = marks.db.execute("SELECT bits FROM agg_marks WHERE neighbourhood=? AND day=?",
                                   (nbh, day)).fetchone()
            self.agg[(nbh, day)] = _int(row[0]) if row else 0
        by_day: dict[int, set[str]] = {}
        for _, end, meters in keys:
            by_day.setdefault(marks.where(end)[0], set()).update(meters)
        for day, meters in by_day.items():
            ms = sorted(meters)
            for i in range(0, len(ms), IN_CHUNK):
                part = ms[i:i + IN_CHUNK]
                for meter, nbh, bits in marks.db.execute(
                        "SELECT meter, neighbourhood, bits FROM meter_marks WHERE day=? AND"
                        " meter IN (" + ",".join("?" * len(part)) + ")", (day, *part)):
                    self.mine[(meter, day, nbh)] = _int(bits)
                    self.any[(meter, day)] = self.any.get((meter, day), 0) | _int(bits)

    def released(self, nbh: str, end: int) -> bool:
        day, bit = self.m.where(end)
        return bool(self.agg.get((nbh, day), 0) >> bit & 1)

    def counted(self, meters, end: int) -> str | None:
        """The first of the meters already counted in a released sum of this interval."""
        day, bit = self.m.where(end)
        return next((m for m in sorted(set(meters)) if self.any.get((m, day), 0) >> bit & 1),
                    None)

    def mark(self, nbh: str, end: int, meters) -> str:
        """Mark the sum released; returns the digest of its meter set."""
        day, bit = self.m.where(end)
        self.agg[(nbh, day)] = self.agg.get((nbh, day), 0) | 1 << bit
        self.dirty_agg.add((nbh, day))
        for meter in set(meters):
            self.mine[(meter, day, nbh)] = self.mine.get((meter, day, nbh), 0) | 1 << bit
            self.any[(meter, day)] = self.any.get((meter, day), 0) | 1 << bit
            self.dirty_meter.add((meter, day, nbh))
        digest, text = set_digest(meters)
        self.sets[digest] = text
        return digest

    def flush(self) -> None:
        db, blob = self.m.db, self.m._blob
        db.executemany("INSERT INTO agg_marks VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET"
                       " bits=excluded.bits", [(n, d, blob(self.agg[(n, d)]))
                                               for n, d in sorted(self.dirty_agg)])
        db.executemany("INSERT INTO meter_marks VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                       " bits=excluded.bits", [(m, d, n, blob(self.mine[(m, d, n)]))
                                               for m, d, n in sorted(self.dirty_meter)])
        db.executemany("INSERT OR IGNORE INTO meter_sets VALUES (?, ?)", sorted(self.sets.items()))
        self.dirty_agg.clear()
        self.dirty_meter.clear()

"""The SQL of releases: what waits to be released, what the key holders
released or refused, who was counted where (for bills), the release job's
lease, and retention.

Nothing here reads all of history. Aggregates wait behind a cursor per
neighbourhood (everything up to it is released or refused for good) and
come a page at a time; bills are worked out one billing period at a time
from `day_members`, the compact record of which neighbourhoods' released
aggregates counted each meter each day.
"""

from __future__ import annotations

import time

from . import schema
from .intakestore import chunks

DAY = 86400
# What waits to be released: parts of intervals that every gateway serving
# the neighbourhood sealed past, after its cursor, neither released nor refused.
PENDING = (
    " FROM aggregate_parts p"
    " JOIN (SELECT g.neighbourhood, MIN(COALESCE(s.through, -1)) AS sealed"
    "   FROM gateway_neighbourhoods g LEFT JOIN sealed_through s"
    "   ON s.neighbourhood = g.neighbourhood AND s.gateway_id = g.gateway_id"
    "   GROUP BY g.neighbourhood) w ON w.neighbourhood = p.neighbourhood"
    " LEFT JOIN release_cursors c ON c.neighbourhood = p.neighbourhood"
    " LEFT JOIN released_aggregates r ON r.neighbourhood = p.neighbourhood"
    "   AND r.interval_end = p.interval_end"
    " LEFT JOIN aggregate_refusals x ON x.neighbourhood = p.neighbourhood"
    "   AND x.interval_end = p.interval_end"
    " WHERE p.interval_end <= w.sealed AND p.interval_end > COALESCE(c.through, -1)"
    " AND r.neighbourhood IS NULL AND x.neighbourhood IS NULL")
# Tables the operator's retention applies to (the released values and the
# bills are the utility's records and are kept).
RETAINED = ("sealed_readings", "customer_day_keys", "bill_days", "day_members",
            "aggregate_parts")


class ReleaseStore:
    db = None
    _partitions: set

    # --- aggregates ---------------------------------------------------------------
    def pending_aggregates(self, after: tuple[str, int] = ("", -1), limit: int = 2000
                           ) -> list[tuple[tuple[str, int], list[tuple[bytes, bytes]]]]:
        """Up to `limit` (neighbourhood, interval end) keys after `after`, in
        order, each with every gateway's (record, signature): intervals not
        released nor refused yet that every gateway serving the
        neighbourhood has sealed past."""
        rows = self.db.rows(
            "SELECT p.neighbourhood, p.interval_end, p.record, p.signature" + PENDING
            + " AND (p.neighbourhood > ? OR (p.neighbourhood = ? AND p.interval_end > ?))"
            " ORDER BY p.neighbourhood, p.interval_end, p.gateway_id LIMIT ?",
            (after[0], after[0], after[1], limit + 64))  # 64: one interval's parts at most
        out: dict[tuple[str, int], list] = {}
        for r in rows:
            key = (r["neighbourhood"], r["interval_end"])
            if key not in out and len(out) == limit:
                break
            out.setdefault(key, []).append((r["record"], r["signature"]))
        else:
            if len(rows) == limit + 64 and len(out) > 1:
                out.popitem()  # its parts may go on past the page
        return list(out.items())

    def pending_span(self) -> list[dict]:
        """Per neighbourhood: how many intervals wait, the first and the
        last (one row per neighbourhood, whatever the backlog)."""
        return self.db.rows("SELECT p.neighbourhood, COUNT(DISTINCT p.interval_end) AS n,"
                            " MIN(p.interval_end) AS first, MAX(p.interval_end) AS last"
                            + PENDING + " GROUP BY p.neighbourhood ORDER BY p.neighbourhood")

    def unreleased_aggregate_parts(self, limit: int = 100_000) -> dict:
        """(neighbourhood, interval end) -> every gateway's (record, signature),
        of what waits (at most `limit`)."""
        return dict(self.pending_aggregates(limit=limit))

    def save_aggregates(self, rows) -> None:
        """[(neighbourhood, interval end, Wh, contributors, noisy)] as released."""
        rows = list(rows)
        self.ensure_partitions("released_aggregates", {(e - 1) // DAY for _, e, *_ in rows})
        at = time.time()
        self.db.many("INSERT INTO released_aggregates VALUES (?, ?, ?, ?, ?, ?)"
                     " ON CONFLICT (neighbourhood, interval_end) DO NOTHING",
                     [(n, e, wh, c, int(noisy), at) for n, e, wh, c, noisy in rows])
        if rows:
            self.db.execute("INSERT INTO settings VALUES ('released_through', ?) ON CONFLICT"
                            " (name) DO UPDATE SET value=excluded.value WHERE"
                            " CAST(settings.value AS BIGINT) < CAST(excluded.value AS BIGINT)",
                            (str(max(e for _, e, *_ in rows)),))

    def save_aggregate(self, nbh: str, end: int, wh: int, contributors: int, noisy: bool) -> None:
        """One released value, and the meters its stored parts counted."""
        self.save_aggregates([(nbh, end, wh, contributors, noisy)])
        from common import records

        self.add_day_members({(m, (end - 1) // DAY, nbh) for r in self.db.rows(
            "SELECT record FROM aggregate_parts WHERE neighbourhood=? AND interval_end=?",
            (nbh, end)) for m in records.parse(r["record"]).meters})

    def save_refusals(self, rows) -> None:
        """[(neighbourhood, interval end, code, message)] refused for good."""
        at = time.time()
        self.db.many("INSERT INTO aggregate_refusals VALUES (?, ?, ?, ?, ?)"
                     " ON CONFLICT (neighbourhood, interval_end) DO NOTHING",
                     [(n, e, c, m[:500], at) for n, e, c, m in rows])

    def refusals(self, limit: int = 100) -> list[dict]:
        return self.db.rows("SELECT * FROM aggregate_refusals ORDER BY at DESC LIMIT ?",
                            (limit,))

    def advance_cursors(self, through: dict[str, int]) -> None:
        self.db.many("INSERT INTO release_cursors VALUES (?, ?) ON CONFLICT (neighbourhood)"
                     " DO UPDATE SET through=excluded.through"
                     " WHERE release_cursors.through < excluded.through",
                     sorted(through.items()))

    def released_through(self) -> int:
        """The end of the latest interval released anywhere."""
        return int(self.db.scalar("SELECT value FROM settings WHERE name='released_through'")
                   or 0)

    def add_day_members(self, rows) -> None:
        """[(meter, day, neighbourhood)]: counted in a released aggregate."""
        rows = sorted(set(rows))
        self.ensure_partitions("day_members", {d for _, d, _ in rows})
        self.db.many("INSERT INTO day_members VALUES (?, ?, ?) ON CONFLICT DO NOTHING", rows)

    def released_aggregates(self, neighbourhood: str | None = None, since: int = 0,
                            limit: int = 20_000) -> list[dict]:
        """Released values ending after `since`, the newest `limit`, in order."""
        where, args = "interval_end > ?", [since]
        if neighbourhood:
            where += " AND neighbourhood = ?"
            args.append(neighbourhood)
        rows = self.db.rows("SELECT neighbourhood, interval_end, wh, contributors, noisy FROM"
                            f" released_aggregates WHERE {where} ORDER BY interval_end DESC,"
                            " neighbourhood LIMIT ?", (*args, limit))
        return sorted(rows, key=lambda r: (r["neighbourhood"], r["interval_end"]))

    # --- bills ---------------------------------------------------------------------
    def anchor_day(self) -> int | None:
        """The first day anything was metered: N-day billing periods count from it."""
        v = self.db.scalar("SELECT value FROM settings WHERE name='anchor_day'")
        return None if v is None else int(v)

    def set_anchor_day(self, day: int) -> None:
        """Set once, by the first bill day stored: periods never move."""
        if getattr(self, "_anchored", False):
            return
        self.db.execute("INSERT INTO settings VALUES ('anchor_day', ?) ON CONFLICT (name)"
                        " DO NOTHING", (str(day),))
        self._anchored = True

    def member_neighbourhoods(self, first: int, end: int) -> list[str]:
        return [r["neighbourhood"] for r in self.db.rows(
            "SELECT DISTINCT neighbourhood FROM day_members WHERE day >= ? AND day < ?"
            " ORDER BY neighbourhood", (first, end))]

    def shared_meters(self, first: int, end: int) -> list[tuple[str, str]]:
        """(meter, neighbourhood) of meters counted in more than one
        neighbourhood in [first, end): they join those neighbourhoods' bills."""
        return [(r["meter_id"], r["neighbourhood"]) for r in self.db.rows(
            "SELECT DISTINCT meter_id, neighbourhood FROM day_members WHERE day >= ? AND day < ?"
            " AND meter_id IN (SELECT meter_id FROM day_members WHERE day >= ? AND day < ?"
            " GROUP BY meter_id HAVING COUNT(DISTINCT neighbourhood) > 1)",
            (first, end, first, end))]

    def members(self, neighbourhoods, first: int, end: int) -> list[str]:
        out: set[str] = set()
        for part in chunks(sorted(neighbourhoods)):
            out.update(r["meter_id"] for r in self.db.rows(
                "SELECT DISTINCT meter_id FROM day_members WHERE day >= ? AND day < ? AND"
                " neighbourhood IN (" + ",".join("?" * len(part)) + ")", (first, end, *part)))
        return sorted(out)

    def bill_days_of(self, meters, first: int, end: int) -> dict[str, list[dict]]:
        """meter -> its signed day records in [first, end), in day order."""
        out: dict[str, list] = {m: [] for m in meters}
        for part in chunks(sorted(meters)):
            for r in self.db.rows("SELECT meter_id, day, record, signature FROM bill_days"
                                  " WHERE day >= ? AND day < ? AND meter_id IN ("
                                  + ",".join("?" * len(part)) + ") ORDER BY meter_id, day",
                                  (first, end, *part)):
                out[r["meter_id"]].append(r)
        return out

    def billed(self, meters, first_day: int) -> set[str]:
        out: set[str] = set()
        for part in chunks(sorted(meters)):
            out.update(r["meter_id"] for r in self.db.rows(
                "SELECT meter_id FROM bills WHERE first_day = ? AND meter_id IN ("
                + ",".join("?" * len(part)) + ")", (first_day, *part)))
        return out

    def signed_bill_days(self, meter_id: str | None = None) -> list[dict]:
        where, args = (" WHERE meter_id=?", (meter_id,)) if meter_id else ("", ())
        return self.db.rows("SELECT meter_id, day, record, signature FROM bill_days" + where
                            + " ORDER BY meter_id, day", args)

    def carried(self) -> dict[int, tuple[set[str], int]]:
        """first day -> (neighbourhoods, end of the period it was carried from)."""
        out: dict[int, tuple[set, int]] = {}
        for r in self.db.rows("SELECT * FROM carried_groups ORDER BY first_day"):
            nbhs, end = out.setdefault(r["first_day"], (set(), r["period_end"]))
            nbhs.add(r["neighbourhood"])
            out[r["first_day"]] = (nbhs, max(end, r["period_end"]))
        return out

    def carry(self, first_day: int, neighbourhoods, period_end: int) -> None:
        self.db.many("INSERT INTO carried_groups VALUES (?, ?, ?) ON CONFLICT (first_day,"
                     " neighbourhood) DO UPDATE SET period_end=excluded.period_end",
                     [(first_day, n, period_end) for n in sorted(neighbourhoods)])

    def drop_carried(self, first_day: int) -> None:
        self.db.execute("DELETE FROM carried_groups WHERE first_day=?", (first_day,))

    def bill_periods_done(self) -> int | None:
        v = self.db.scalar("SELECT value FROM settings WHERE name='bills_done_through'")
        return None if v is None else int(v)

    def set_bill_periods_done(self, day: int) -> None:
        self.db.execute("INSERT INTO settings VALUES ('bills_done_through', ?) ON CONFLICT"
                        " (name) DO UPDATE SET value=excluded.value", (str(day),))

    def save_bills(self, rows) -> None:
        """[(meter, first day, days, amount in µct)]"""
        at = time.time()
        self.db.many("INSERT INTO bills VALUES (?, ?, ?, ?, ?) ON CONFLICT (meter_id, first_day)"
                     " DO NOTHING", [(m, f, d, a, at) for m, f, d, a in rows])

    def save_bill(self, meter_id: str, first_day: int, days: int, amount_uct: int) -> None:
        self.save_bills([(meter_id, first_day, days, amount_uct)])

    def bills(self, meter_id: str | None = None, first: int = 0, end: int = 1 << 31,
              limit: int = 20_000) -> list[dict]:
        """Bills whose period starts in [first, end), the newest `limit`."""
        where, args = "first_day >= ? AND first_day < ?", [first, end]
        if meter_id:
            where += " AND meter_id = ?"
            args.append(meter_id)
        rows = self.db.rows(f"SELECT meter_id, first_day, days, amount_uct FROM bills WHERE {where}"
                            " ORDER BY first_day DESC, meter_id LIMIT ?", (*args, limit))
        return sorted(rows, key=lambda r: (r["meter_id"], r["first_day"]))

    # --- the release job's lease ------------------------------------------------------
    def take_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Whether `owner` holds the lease now (taken, or renewed): one MDMS
        process runs the release job at a time; another takes over once
        the holder stops renewing."""
        now = time.time()
        return self.db.execute(
            "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
            " owner=excluded.owner, until=excluded.until"
            " WHERE leases.until < ? OR leases.owner = excluded.owner",
            (name, owner, now + seconds, now)) == 1

    def drop_lease(self, name: str, owner: str) -> None:
        self.db.execute("DELETE FROM leases WHERE name=? AND owner=?", (name, owner))

    # --- retention --------------------------------------------------------------------
    def drop_before(self, day: int) -> list[str]:
        """Drop what the retention lets go: on PostgreSQL every monthly
        partition that ends on or before `day`, whole; on SQLite the rows
        before it, by range. Returns what went, in words."""
        gone = []
        for table in RETAINED:
            column, unit = schema.PARTITIONED[table]
            if self.db.dialect == "postgresql":
                for name, _, end in schema.partitions(self.db, table):
                    if end <= day:
                        self.db.execute(f"DROP TABLE {name}")
                        self._partitions.discard(name)
                        gone.append(name)
            else:
                n = self.db.execute(f"DELETE FROM {table} WHERE {column} < ?",
                                    (day * DAY // unit,))
                if n:
                    gone.append(f"{n} rows of {table}")
        return gone

"""Sealing: after a grace period for late readings, each (neighbourhood,
interval) accumulator becomes one signed aggregate record, exactly once;
each closed (meter, day) bill accumulator is signed for billing.

"Now" is the wall clock for live meters. For replays of recorded data the
gateway can run on the data's own clock instead: a neighbourhood's time is
the oldest "last interval end" among its meters, i.e. every meter has
reported past it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common import records

from .pes import DAY
from .store import Store, now

log = logging.getLogger("gridveil.seal")


@dataclass
class SealResult:
    aggregates: int = 0
    bill_days: int = 0


def data_clock(store: Store) -> dict[str, int]:
    """Per neighbourhood: the oldest last-reported interval end of its meters."""
    rows = store.db.execute("SELECT neighbourhood, MIN(COALESCE(last_end, 0)) FROM meters"
                            " GROUP BY neighbourhood").fetchall()
    return dict(rows)


def seal(store: Store, key, interval_s: int, grace_s: int, clock: str = "wall",
         seal_all: bool = False, bill_grace_s: int | None = None) -> SealResult:
    """Seal what is due. seal_all ignores the clock: every open accumulator
    is sealed now (used at the end of a replay)."""
    result = SealResult()
    bill_grace_s = grace_s if bill_grace_s is None else bill_grace_s
    if clock == "data":
        clocks = data_clock(store)
    wall = now()

    def current(nbh: str) -> float:
        return clocks.get(nbh, 0) if clock == "data" else wall

    with store.transaction() as db:
        for nbh, end, c, n, key_id in db.execute(
                "SELECT neighbourhood, interval_end, ciphertext, contributors, key_id FROM demand"
                " ORDER BY interval_end").fetchall():
            if not seal_all and end + grace_s > current(nbh):
                continue
            rec = records.AggregateRecord(nbh, end - interval_s, end, n, c, key_id)
            db.execute("INSERT INTO sealed VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (nbh, end, end - interval_s, c, n, key_id, records.sign(key, rec), wall))
            db.execute("DELETE FROM demand WHERE neighbourhood=? AND interval_end=?", (nbh, end))
            result.aggregates += 1
        for meter_id, day, version, nbh in db.execute(
                "SELECT s.meter_id, s.day, s.version, m.neighbourhood FROM bill_signed s"
                " JOIN meters m USING (meter_id) WHERE s.signature IS NULL").fetchall():
            if not seal_all and (day + 1) * DAY + bill_grace_s > current(nbh):
                continue
            rec = _bill_record(db, meter_id, day, version)
            db.execute("UPDATE bill_signed SET signature=? WHERE meter_id=? AND day=?",
                       (records.sign(key, rec), meter_id, day))
            result.bill_days += 1
    if result.aggregates or result.bill_days:
        log.info("sealed %d aggregates and signed %d bill days", result.aggregates,
                 result.bill_days)
    return result


def _bill_record(db, meter_id: str, day: int, version: int) -> records.BillDayRecord:
    rows = db.execute("SELECT band, ciphertext, readings, key_id FROM bill_days"
                      " WHERE meter_id=? AND day=? ORDER BY band", (meter_id, day)).fetchall()
    return records.BillDayRecord(meter_id, day, sum(r[2] for r in rows), version,
                                 tuple((b, c) for b, c, _, _ in rows), rows[0][3])


def sealed_aggregates(store: Store) -> list[tuple[records.AggregateRecord, bytes]]:
    out = []
    for nbh, end, start, c, n, key_id, sig in store.db.execute(
            "SELECT neighbourhood, interval_end, interval_start, ciphertext, contributors, key_id,"
            " signature FROM sealed ORDER BY neighbourhood, interval_end"):
        out.append((records.AggregateRecord(nbh, start, end, n, c, key_id), sig))
    return out


def signed_bill_days(store: Store, meter_id: str | None = None
                     ) -> list[tuple[records.BillDayRecord, bytes]]:
    out = []
    for m, day, version, sig in store.db.execute(
            "SELECT meter_id, day, version, signature FROM bill_signed"
            " WHERE signature IS NOT NULL AND (? IS NULL OR meter_id = ?) ORDER BY meter_id, day",
            (meter_id, meter_id)).fetchall():
        out.append((_bill_record(store.db, m, day, version), sig))
    return out

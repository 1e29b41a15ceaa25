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
                "SELECT d.neighbourhood, d.interval_end, d.ciphertext, d.contributors, m.value"
                " FROM demand d JOIN meta m ON m.key='paillier_key_id'"
                " ORDER BY d.interval_end").fetchall():
            if not seal_all and end + grace_s > current(nbh):
                continue
            rec = records.AggregateRecord(nbh, end - interval_s, end, n, c, key_id)
            db.execute("INSERT INTO sealed VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (nbh, end, end - interval_s, c, n, key_id, records.sign(key, rec), wall))
            db.execute("DELETE FROM demand WHERE neighbourhood=? AND interval_end=?", (nbh, end))
            result.aggregates += 1
        for meter_id, day, band, c, readings, version, key_id, nbh in db.execute(
                "SELECT b.meter_id, b.day, b.band, b.ciphertext, b.readings, b.version, b.key_id,"
                " m.neighbourhood FROM bill_days b JOIN meters m USING (meter_id)"
                " WHERE b.signature IS NULL").fetchall():
            if not seal_all and (day + 1) * DAY + bill_grace_s > current(nbh):
                continue
            rec = records.BillDayRecord(meter_id, day, band, readings, version, c, key_id)
            db.execute("UPDATE bill_days SET signature=? WHERE meter_id=? AND day=? AND band=?",
                       (records.sign(key, rec), meter_id, day, band))
            result.bill_days += 1
    if result.aggregates or result.bill_days:
        log.info("sealed %d aggregates and signed %d bill days", result.aggregates,
                 result.bill_days)
    return result


def sealed_aggregates(store: Store) -> list[tuple[records.AggregateRecord, bytes]]:
    out = []
    for nbh, end, start, c, n, key_id, sig in store.db.execute(
            "SELECT neighbourhood, interval_end, interval_start, ciphertext, contributors, key_id,"
            " signature FROM sealed ORDER BY neighbourhood, interval_end"):
        out.append((records.AggregateRecord(nbh, start, end, n, c, key_id), sig))
    return out


def signed_bill_days(store: Store) -> list[tuple[records.BillDayRecord, bytes]]:
    out = []
    for row in store.db.execute(
            "SELECT meter_id, day, band, readings, version, ciphertext, key_id, signature"
            " FROM bill_days WHERE signature IS NOT NULL ORDER BY meter_id, day, band"):
        out.append((records.BillDayRecord(*row[:7]), row[7]))
    return out

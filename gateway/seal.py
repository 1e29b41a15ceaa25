"""Sealing: after a grace period for late readings, each (neighbourhood,
interval) accumulator becomes one signed aggregate record, exactly once;
each closed (meter, day) bill accumulator is signed for billing. Both go
into the outbox in the same transaction, for the MDMS.

"Now" is the wall clock for live meters. For replays of recorded data the
gateway can run on the data's own clock instead: a neighbourhood's time is
the oldest "last interval end" among its meters, i.e. every meter has
reported past it.

After each run the gateway tells the MDMS, per neighbourhood, up to which
interval end everything is sealed; the MDMS combines a (neighbourhood,
interval) from several gateways only once every gateway serving that
neighbourhood has sealed past it, so no part can arrive after a release.
"""

from __future__ import annotations

import base64
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


def signed_item(kind: str, key, rec) -> dict:
    return {"kind": kind, "record": base64.b64encode(rec.signed_bytes()).decode(),
            "signature": base64.b64encode(records.sign(key, rec)).decode()}


def seal(store: Store, key, gateway_id: str, interval_s: int, grace_s: int,
         clock: str = "wall", seal_all: bool = False,
         bill_grace_s: int | None = None) -> SealResult:
    """Seal what is due. seal_all ignores the clock: every open accumulator
    is sealed now (used at the end of a replay)."""
    result = SealResult()
    bill_grace_s = grace_s if bill_grace_s is None else bill_grace_s
    clocks = store.data_clock() if clock == "data" else {}
    wall = now()

    def current(nbh: str) -> float:
        return clocks.get(nbh, 0) if clock == "data" else wall

    with store.transaction():
        for nbh, end, c, key_id in store.open_demand():
            if not seal_all and end + grace_s > current(nbh):
                continue
            names = tuple(store.demand_meters(nbh, end))
            rec = records.AggregateRecord(gateway_id, nbh, end - interval_s, end, len(set(names)), c,
                                          key_id, names)
            store.seal_demand(nbh, end, end - interval_s, c, ",".join(names), key_id,
                              signed_item("aggregate", key, rec))
            result.aggregates += 1
        for meter_id, day, version, nbh in store.unsigned_bill_days():
            if not seal_all and (day + 1) * DAY + bill_grace_s > current(nbh):
                continue
            store.sign_bill_day(meter_id, day, signed_item(
                "billday", key, bill_record(store, gateway_id, meter_id, day, version)))
            result.bill_days += 1
        for nbh in store.neighbourhoods():
            through = store.last_sealed_end(nbh) if seal_all else \
                int(current(nbh) - grace_s) // interval_s * interval_s
            store.mark_sealed_through(nbh, through)
    if result.aggregates or result.bill_days:
        log.info("sealed %d aggregates and signed %d bill days", result.aggregates,
                 result.bill_days)
    return result


def bill_record(store: Store, gateway_id: str, meter_id: str, day: int,
                version: int) -> records.BillDayRecord:
    rows = store.bill_day_bands(meter_id, day)
    intervals, prev_day = store.bill_intervals(meter_id, day)
    return records.BillDayRecord(gateway_id, meter_id, day, sum(r[2] for r in rows), version,
                                 tuple((b, c) for b, c, _, _ in rows), rows[0][3],
                                 store.meter_tariff(meter_id).ref, intervals, prev_day)

"""The MDMS side of a release: take the gateway's signed records, ask the
key authority to release them, and lay out what it released."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from authority.policy import Refusal
from authority.service import Authority, BillRequest
from gateway import seal
from gateway.store import Store

HOUR = 3600


@dataclass
class Released:
    aggregates: dict[tuple[str, int], int] = field(default_factory=dict)  # (nbh, end) -> Wh
    bills: dict[tuple[str, int], int] = field(default_factory=dict)  # (meter, day) -> micro-cents
    refusals: list[str] = field(default_factory=list)


def release_all(store: Store, authority: Authority, price_uct_per_wh: int) -> Released:
    out = Released()
    for rec, sig in seal.sealed_aggregates(store):
        try:
            out.aggregates[(rec.neighbourhood, rec.interval_end)] = \
                authority.release_aggregate(rec, sig)
        except Refusal as r:
            out.refusals.append(f"{rec.neighbourhood} @ {rec.interval_end}: {r}")
    for rec, sig in seal.signed_bill_days(store):
        try:
            out.bills[(rec.meter_id, rec.day)] = authority.release_bill(
                BillRequest(rec.meter_id, price_uct_per_wh, [(rec, sig)]))
        except Refusal as r:
            out.refusals.append(f"bill {rec.meter_id} day {rec.day}: {r}")
    return out


def hourly(aggregates: dict[tuple[str, int], int]) -> dict[str, dict[int, int | None]]:
    """Per neighbourhood, Wh per hour (hour start -> Wh); None where a
    quarter of the hour was not released."""
    by: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for (nbh, end), wh in aggregates.items():
        by[nbh][(end - 1) // HOUR * HOUR].append(wh)
    return {nbh: {h: sum(v) for h, v in sorted(hours.items())} for nbh, hours in by.items()}


def format_demand(aggregates: dict[tuple[str, int], int]) -> str:
    import datetime as dt

    table = hourly(aggregates)
    nbhs = sorted(table)
    hours = sorted({h for t in table.values() for h in t})
    lines = ["hour (UTC)        " + "".join(f"{n:>12}" for n in nbhs) + "   (kWh)"]
    for h in hours:
        stamp = dt.datetime.fromtimestamp(h, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        cells = "".join(f"{table[n][h] / 1000:>12.3f}" if h in table[n] else f"{'-':>12}"
                        for n in nbhs)
        lines.append(f"{stamp:<18}{cells}")
    return "\n".join(lines)


def format_bills(bills: dict[tuple[str, int], int]) -> str:
    import datetime as dt

    lines = ["meter     day           bill"]
    for (meter, day), uct in sorted(bills.items()):
        date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
        lines.append(f"{meter:<9} {date}  {uct / 1_000_000:>10.4f} ct")
    return "\n".join(lines)

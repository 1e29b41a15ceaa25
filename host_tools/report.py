"""The MDMS side of a release: take the gateway's signed records, ask the
key authority to release them, and lay out what it released."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from authority.client import Authority
from authority.holder import BillRequest
from authority.policy import Refusal
from gateway import seal
from gateway.store import Store

HOUR = 3600
DAY = 86400


@dataclass
class Released:
    aggregates: dict[tuple[str, int], int] = field(default_factory=dict)  # (nbh, end) -> Wh
    bills: dict[tuple[str, int], int] = field(default_factory=dict)  # (meter, first day) -> µct
    refusals: list[str] = field(default_factory=list)


def meter_prices(store: Store) -> dict[str, dict[int, int]]:
    tariffs = store.tariffs()
    return {m["meter_id"]: tariffs[m["tariff"]].prices for m in store.meters()}


def release_aggregates(store: Store, authority: Authority, out: Released,
                       with_dp: bool = False, skip: set = frozenset()) -> None:
    """Ask for every sealed aggregate not in `skip` {(nbh, interval end)}."""
    for rec, sig in seal.sealed_aggregates(store):
        if (rec.neighbourhood, rec.interval_end) in skip:
            continue
        try:
            out.aggregates[(rec.neighbourhood, rec.interval_end)] = \
                authority.release_aggregate(rec, sig, with_dp)
        except Refusal as r:
            out.refusals.append(f"{rec.neighbourhood} @ {rec.interval_end}: {r}")


def release_bills(store: Store, authority: Authority, out: Released, period_days: int = 1,
                  skip: set = frozenset()) -> None:
    """One bill per meter per run of `period_days` consecutive signed days;
    a leftover shorter run is not billed yet. `skip` {(meter, first day)}
    holds bills already released."""
    prices = meter_prices(store)
    by_meter = defaultdict(list)
    for rec, sig in seal.signed_bill_days(store):
        by_meter[rec.meter_id].append((rec, sig))
    for meter_id, days in by_meter.items():
        days.sort(key=lambda x: x[0].day)
        for i in range(0, len(days) - period_days + 1, period_days):
            chunk = days[i:i + period_days]
            if (meter_id, chunk[0][0].day) in skip:
                continue
            start = chunk[0][0].day * DAY
            req = BillRequest(meter_id, start, start + period_days * DAY, prices[meter_id], chunk)
            try:
                out.bills[(meter_id, chunk[0][0].day)] = authority.release_bill(req)
            except Refusal as r:
                out.refusals.append(f"bill {meter_id} from day {chunk[0][0].day}: {r}")


def release_all(store: Store, authority: Authority, period_days: int = 1,
                with_dp: bool = False) -> Released:
    out = Released()
    release_aggregates(store, authority, out, with_dp)
    release_bills(store, authority, out, period_days)
    return out


def hourly(aggregates: dict[tuple[str, int], int]) -> dict[str, dict[int, int]]:
    """Per neighbourhood, Wh per hour (hour start -> Wh)."""
    by: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for (nbh, end), wh in aggregates.items():
        by[nbh][(end - 1) // HOUR * HOUR] += wh
    return {nbh: dict(sorted(hours.items())) for nbh, hours in by.items()}


def format_demand(aggregates: dict[tuple[str, int], int]) -> str:
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


def format_bills(bills: dict[tuple[str, int], int], period_days: int = 1) -> str:
    lines = ["meter     period                      amount"]
    for (meter, day), uct in sorted(bills.items()):
        first = dt.date(1970, 1, 1) + dt.timedelta(days=day)
        last = first + dt.timedelta(days=period_days - 1)
        span = str(first) if period_days == 1 else f"{first} .. {last}"
        lines.append(f"{meter:<9} {span:<24} {uct / 100_000_000:>9.2f} EUR"
                     f"  ({uct / 1_000_000:.4f} ct)")
    return "\n".join(lines)

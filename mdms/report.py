"""What the MDMS prints of a release: hourly neighbourhood demand and bills,
as tables for a terminal."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

HOUR = 3600


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


def format_bills(bills: dict[tuple[str, int], int], period: int | str = 1) -> str:
    """Bills in whole cents (the key holders round each at random to one of
    its two nearest cents)."""
    from .releases import period_of

    lines = ["meter     period                      amount"]
    for (meter, day), uct in sorted(bills.items()):
        first = dt.date(1970, 1, 1) + dt.timedelta(days=day)
        last = first + dt.timedelta(days=period_of(day, period, anchor=day)[1] - day - 1)
        span = str(first) if first == last else f"{first} .. {last}"
        lines.append(f"{meter:<9} {span:<24} {uct / 100_000_000:>9.2f} EUR")
    return "\n".join(lines)

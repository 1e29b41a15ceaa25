"""Plaintext ground truth, recomputed straight from the data files.

This deliberately shares no code with the firmware: it parses the files
with Python's datetime and Decimal and applies the metering rule from
docs/protocol.md on its own:

  * each row is average power over [t, t + 60 s); power is truncated to
    whole mW, so a row's energy is mW * 60 mJ;
  * the register is floor(cumulative mJ / 3,600,000) in whole Wh;
  * an interval's energy is the register at its end minus the register at
    the end of the previous interval.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

MJ_PER_WH = 3_600_000
DAY = 86400


def _row(line: str) -> tuple[int, int]:
    t, p = line.split(",")
    if "-" in t:
        ts = dt.datetime.strptime(t, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
        mw = (Decimal(p) * 1_000_000).to_integral_value(rounding=ROUND_FLOOR)
        return int(ts.timestamp()), int(mw)
    return int(t), int(p)


def rows(path: Path) -> list[tuple[int, int]]:
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(_row(line))
    return out


def interval_energy(path: Path, interval_s: int = 900, sample_s: int = 60) -> dict[int, int]:
    """{interval end: Wh} for one meter."""
    data = rows(path)
    if not data:
        return {}
    first_end = (data[0][0] // interval_s + 1) * interval_s
    cum_mj = 0
    register_at: dict[int, int] = {}
    for start, mw in data:
        cum_mj += mw * sample_s
        end = start + sample_s
        if end % interval_s == 0 and end >= first_end:
            register_at[end] = cum_mj // MJ_PER_WH
    out = {}
    prev = 0
    for end in sorted(register_at):
        out[end] = register_at[end] - prev
        prev = register_at[end]
    return out


def aggregates(per_meter: dict[str, dict[int, int]],
               neighbourhood_of: dict[str, str]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = defaultdict(int)
    for meter, intervals in per_meter.items():
        for end, wh in intervals.items():
            out[(neighbourhood_of[meter], end)] += wh
    return dict(out)


def bills(per_meter: dict[str, dict[int, int]], tariffs: dict, interval_s: int,
          period_days: int = 1) -> dict[tuple[str, int], int]:
    """{(meter, first day of period): micro-cents} for every complete period,
    periods counted from each meter's first day with readings. The band of
    an interval is looked up with the tariff's own rule (common/tariff.py);
    the sums and products here are plain integers."""
    out = {}
    for meter, intervals in per_meter.items():
        t = tariffs[meter]
        by_day: dict[int, int] = defaultdict(int)
        for end, wh in intervals.items():
            by_day[(end - 1) // DAY] += wh * t.prices[t.band(end - interval_s)]
        days = sorted(by_day)
        for i in range(0, len(days) - period_days + 1, period_days):
            out[(meter, days[i])] = sum(by_day[d] for d in days[i:i + period_days])
    return out

"""Synthetic household consumption with a realistic daily shape, written in
GridVeil's own replay format (see firmware/replay.py):

    # comment lines
    <Unix seconds of the minute's start>,<average power in mW>

Each household gets its own size and habits from a seeded generator: a
cycling fridge and standby base load, a morning peak, cooking and lighting
in the evening, and occasional kettles, washing machines and ovens.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

DAY = 86400


def _bump(minute: int, centre_h: float, width_h: float) -> float:
    d = (minute / 60 - centre_h) / width_h
    return math.exp(-0.5 * d * d)


def household(seed: int, start: int, days: int = 1) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    size = rng.uniform(0.6, 1.6)
    base_w = rng.uniform(60, 180) * size
    wake = rng.uniform(6.0, 8.0)
    dinner = rng.uniform(17.5, 19.5)
    fridge_period = rng.randint(35, 55)
    events = []  # (start minute, duration, watts)
    for day in range(days):
        off = day * 1440
        for _ in range(rng.randint(2, 5)):  # kettle
            events.append((off + rng.randint(360, 1380), rng.randint(2, 4), rng.uniform(1800, 2400)))
        if rng.random() < 0.5:  # washing machine
            events.append((off + rng.randint(540, 1200), rng.randint(60, 110), rng.uniform(400, 900)))
        if rng.random() < 0.6:  # oven
            events.append((off + int(dinner * 60) - rng.randint(30, 60), rng.randint(30, 70),
                           rng.uniform(1500, 2500)))
    rows = []
    for m in range(days * 1440):
        md = m % 1440
        w = base_w
        w += 90 * size if (m % fridge_period) < fridge_period * 0.4 else 0
        w += 700 * size * _bump(md, wake + 0.7, 0.6)
        w += 1100 * size * _bump(md, dinner, 1.1)
        w += 350 * size * _bump(md, 21.5, 1.5)
        w += sum(watts for s, dur, watts in events if s <= m < s + dur)
        w *= rng.uniform(0.93, 1.07)
        rows.append((start + m * 60, int(w * 1000)))
    return rows


def write(path: Path, rows: list[tuple[int, int]], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"# gridveil-sample v1: synthetic household, seed {seed}\n")
        f.write("# unix_seconds_of_minute_start,average_power_mW\n")
        for t, mw in rows:
            f.write(f"{t},{mw}\n")


def generate(out_dir: Path, meters: int = 10, start: int = 1767225600, days: int = 1,
             seed: int = 2026) -> list[Path]:
    """Default start: 2026-01-01 00:00 UTC."""
    paths = []
    for i in range(1, meters + 1):
        p = Path(out_dir) / f"household{i:02d}.csv"
        write(p, household(seed * 1000 + i, start, days), seed * 1000 + i)
        paths.append(p)
    return paths

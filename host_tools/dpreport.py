"""What the default privacy policy protects and what its noise costs, on the
real UMass week (../shared/data), written into docs/privacy.md: the
clipping bound against real quarter hours, and the relative error of
released neighbourhood totals (quarter hour, hour, day) against group size.

    python -m host_tools.dpreport [--out docs/privacy.md]

Each released total gets one discrete-Laplace sample from the key holders'
own sampler at the default policy. In threshold mode both holders add
noise, so the error there is about sqrt(2) times larger.
"""

from __future__ import annotations

import argparse
import math
import statistics
from fractions import Fraction
from pathlib import Path

from authority import dp
from authority.policy import Policy

from . import groundtruth

REPO = Path(__file__).resolve().parents[1]
UMASS = REPO.parent / "shared" / "data" / "umass-apartments-2016"
BEGIN, END = "<!-- dp-report:begin -->", "<!-- dp-report:end -->"


def clipping(per: list[dict[int, int]], bound: int) -> str:
    """What real households use in a quarter hour, against the bound."""
    values = sorted(v for p in per for v in p.values())

    def q(f: float) -> int:
        return values[min(len(values) - 1, int(f * len(values)))]

    over = sum(v > bound for v in values)
    return (f"The bound the gateways clip each reading to (the sensitivity) comes from the same"
            f" data: of {len(values):,} household quarter hours the median is {q(0.5)} Wh, the"
            f" 99th percentile {q(0.99)} Wh, the 99.9th {q(0.999)} Wh and the largest"
            f" {values[-1]} Wh; a bound of {bound} Wh clips {over} of them"
            f" ({over / len(values):.3%}), and only in the aggregate (a bill counts every Wh).")


def table(per: list[dict[int, int]], scale: Fraction) -> list[tuple]:
    """(households, mean sum, mean |noise|, median relative error) for
    quarter-hour, hourly and daily sums of the first g apartments."""
    ends = sorted(per[0])
    rows = []
    for g in (5, 10):
        for span, label in ((1, "a quarter hour"), (4, "an hour"), (96, "a day")):
            sums, noise = [], []
            for i in range(0, len(ends) - span + 1, span):
                sums.append(sum(p[e] for p in per[:g] for e in ends[i:i + span]))
                noise.append(abs(sum(dp.discrete_laplace(scale) for _ in range(span))))
            rel = [n / s for n, s in zip(noise, sums, strict=True) if s > 0]
            rows.append((g, label, statistics.mean(sums), statistics.mean(noise),
                         statistics.median(rel)))
    return rows


def markdown(per, rows, pol: Policy) -> str:
    scale = float(dp.scale_for(pol.epsilon, pol.dp_sensitivity_wh))
    mean_household = statistics.mean(statistics.mean(p.values()) for p in per)
    out = [BEGIN, "",
           f"Measured by `make privacy-report` (`python -m host_tools.dpreport`) on the UMass"
           f" week (10 apartments, 672 quarter hours each), at the default policy: epsilon"
           f" {pol.dp_epsilon_per_day} per household over any day, so {pol.epsilon} per release"
           f" of a quarter hour, and sensitivity {pol.dp_sensitivity_wh} Wh: discrete Laplace"
           f" noise of scale {scale:,.0f} Wh on every released quarter-hour total (one holder;"
           " with two that both add noise, the sum of two samples, about 1.4 times as much).", "",
           clipping(per, pol.dp_sensitivity_wh), "",
           "**What the budget protects.** Over any 24 hours of releases, everything one"
           f" household used (every reading, at most {pol.dp_sensitivity_wh} Wh each, in every"
           " interval) changes the probability of anything released by a factor of at most"
           f" e^{pol.dp_epsilon_per_day} (about {math.exp(Fraction(pol.dp_epsilon_per_day)):.1f}):"
           " whether it was home, cooked or slept, on any day, is hidden that well. Longer"
           " stretches add up: a week of its days is protected with 7 times the epsilon. The"
           " budget never runs out; it is spent as the day's releases are made, again each day.",
           "", "**What the noise costs an analyst**, on the real data (single holder):", "",
           "| households | sum over | mean sum (Wh) | mean abs. noise (Wh) | median relative error |",
           "| ---: | --- | ---: | ---: | ---: |"]
    for g, label, s, n, rel in rows:
        out.append(f"| {g} | {label} | {s:,.0f} | {n:,.0f} | {rel:.0%} |")
    out += ["", "The noise does not grow with the neighbourhood; the sum does. With the mean"
            f" apartment using {mean_household:.0f} Wh a quarter hour, the expected relative"
            " error of a neighbourhood's total:", "",
            "| households | a quarter hour | an hour | a day |", "| ---: | ---: | ---: | ---: |"]
    for g in (100, 1_000, 10_000, 100_000):
        q = scale / (g * mean_household)  # mean |Laplace| = scale
        out.append(f"| {g:,} | {q:.1%} | {q * 2 / 4:.1%} | {q * 9.8 / 96:.1%} |")
    out += ["", "(A sum of n samples has about sqrt(n) times one sample's spread: an hour's"
            " noise is about twice a quarter hour's, a day's about 10 times, while the sum"
            " grows 4 and 96 times.) So at epsilon 1 a day, per-quarter-hour demand is"
            " useful from neighbourhoods of tens of thousands of households, hourly and daily"
            " demand from thousands; for the small groups that k = 5 allows, the totals are"
            " mostly noise, and k-anonymity, release-once and the bills' rounding are what"
            " protect households. The guardian sets the epsilon (`dp_epsilon_per_day`, at most"
            " 10) and whether noise is on; the requester never does.", "", END]
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "privacy.md"))
    args = ap.parse_args(argv)
    files = sorted(UMASS.glob("Apt*_2016-01-01_07.csv"), key=lambda p: int(p.name[3:p.name.index("_")]))
    if len(files) != 10:
        raise SystemExit(f"the UMass data is not in {UMASS}")
    pol = Policy()
    per = [groundtruth.interval_energy(f) for f in files]
    md = markdown(per, table(per, dp.scale_for(pol.epsilon, pol.dp_sensitivity_wh)), pol)
    path = Path(args.out)
    text = path.read_text()
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + md + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + md + "\n"
    path.write_text(text)
    print(md)


if __name__ == "__main__":
    main()

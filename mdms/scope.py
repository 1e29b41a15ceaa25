"""What approving a pending request would release, in words the privacy
guardian can decide on: which neighbourhoods and times, how many households
each value sums, which values the key holders' policy would refuse, and the
noise they add.

This is the MDMS's forecast from what it stores; each key holder still
checks every value on its own when asked (it counts only the households the
guardian enrolled, so it can refuse more than is forecast here, never less
strictly)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from common import records

from .releases import bill_groups
from .store import MdmsStore

SAMPLE = 2000  # pending values whose households are counted for the guardian's page


@dataclass
class Scope:
    lines: list[str] = field(default_factory=list)     # what would be released
    refused: list[str] = field(default_factory=list)   # what the policy would refuse
    noise: str = ""
    error: str = ""                                    # the holders could not be asked


def utc_text(ts) -> str:
    """A time for people to read; the auditor's subjects use it too."""
    return dt.datetime.fromtimestamp(int(ts), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _date(day: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=day)


def _strictest(policies: dict[str, dict]) -> dict:
    """A value is released only if every holder agrees, so the strictest
    setting of each rule is the one that decides."""
    ps = list(policies.values())
    return {"k": max(p["k"] for p in ps),
            "min_bill_days": max(p["min_bill_days"] for p in ps),
            "calendar_month": any(p["billing"] == "calendar-month" for p in ps),
            "dp": [(role, p["dp_epsilon_per_day"]) for role, p in policies.items()
                   if p["dp"] == "on"]}


def _aggregates(store: MdmsStore, rule: dict, out: Scope) -> None:
    """Per neighbourhood, what waits; households counted on the first
    SAMPLE values (the page stays quick whatever the backlog)."""
    span = store.pending_span()
    if not span:
        out.lines.append("No sealed quarter-hours wait; approving releases nothing now.")
        return
    sizes: dict[str, list[int]] = {}
    for (nbh, _), parts in store.pending_aggregates(limit=SAMPLE):
        meters = sorted({m for rec, _ in parts for m in records.parse(rec).meters})
        sizes.setdefault(nbh, []).append(len(set(store.households(meters).values())))
    for r in span:
        nbh, seen = r["neighbourhood"], sizes.get(r["neighbourhood"], [])
        ok = [n for n in seen if n >= rule["k"]]
        when = f"from {utc_text(r['first'] - 900)} to {utc_text(r['last'])}"
        if not seen:
            out.lines.append(f"Neighbourhood {nbh}: {r['n']} quarter-hour totals {when}.")
        elif ok:
            out.lines.append(f"Neighbourhood {nbh}: {len(ok) if len(seen) == r['n'] else r['n']}"
                             f" quarter-hour totals {when}, each the sum of {min(ok)} to"
                             f" {max(ok)} households" + ("." if len(seen) == r["n"] else
                                                         f" (counted on the first {len(seen)})."))
        if len(ok) < len(seen):
            out.refused.append(f"Neighbourhood {nbh}: {len(seen) - len(ok)} quarter-hour(s) with"
                               f" fewer than {rule['k']} households would be refused.")


def _bills(store: MdmsStore, period, rule: dict, out: Scope) -> None:
    ready, notes = bill_groups(store, period)
    out.refused += notes
    if not ready:
        out.lines.append("No billing period is complete for every household it would bill;"
                         " approving releases nothing now.")
        return
    bills = sum(len(g.meters) for g in ready)
    first, last = min(g.first for g in ready), max(g.end for g in ready)
    out.lines.append(f"{bills} bill total(s) in {len(ready)} group(s) of neighbourhoods, covering"
                     f" {_date(first)} to {_date(last - 1)}; each group's bills go out together."
                     " Each is one sum of money, in whole cents; no reading is revealed.")
    days = {g.end - g.first for g in ready}
    if min(days) < rule["min_bill_days"]:
        out.refused.append(f"All of them: the policy asks for at least {rule['min_bill_days']}"
                           " day(s) per bill.")
    elif rule["calendar_month"] and period != "month":
        out.refused.append("All of them: the policy bills by calendar month only.")


def describe(store: MdmsStore, policies: dict[str, dict], request: dict) -> Scope:
    """`policies`: each key holder's policy by role (Authority.policies())."""
    out = Scope()
    rule = _strictest(policies)
    if request["kind"] == "aggregates":
        _aggregates(store, rule, out)
        out.noise = ("Noise: " + "; ".join(f"the {role} key holder adds random noise to each"
                                           f" total (epsilon {eps} per meter over any day)"
                                           for role, eps in rule["dp"])
                     if rule["dp"] else "Noise: none; the totals are exact.")
    else:
        params = json.loads(request["params"])
        _bills(store, params.get("period", params.get("period_days", 1)), rule, out)
    return out

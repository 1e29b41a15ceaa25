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
    household = {m["meter_id"]: m["customer_id"] or m["meter_id"] for m in store.meters()}
    per_nbh: dict[str, list[tuple[int, int, int]]] = {}
    for (nbh, end), parts in store.unreleased_aggregate_parts().items():
        recs = [records.parse(rec) for rec, _ in parts]
        meters = {m for r in recs for m in r.meters}
        per_nbh.setdefault(nbh, []).append(
            (recs[0].interval_start, end, len({household.get(m, m) for m in meters})))
    if not per_nbh:
        out.lines.append("No sealed quarter-hours wait; approving releases nothing now.")
    for nbh, items in sorted(per_nbh.items()):
        ok = [n for _, _, n in items if n >= rule["k"]]
        few = len(items) - len(ok)
        if ok:
            first, last = min(i[0] for i in items), max(i[1] for i in items)
            out.lines.append(
                f"Neighbourhood {nbh}: {len(ok)} quarter-hour totals from {utc_text(first)} to"
                f" {utc_text(last)}, each the sum of {min(ok)} to {max(ok)} households.")
        if few:
            out.refused.append(f"Neighbourhood {nbh}: {few} quarter-hour(s) with fewer than"
                               f" {rule['k']} households would be refused.")


def _bills(store: MdmsStore, period, rule: dict, out: Scope) -> None:
    ready, notes = bill_groups(store, period)
    out.refused += notes
    if not ready:
        out.lines.append("No billing period is complete for every household it would bill;"
                         " approving releases nothing now.")
        return
    bills = sum(len(g[3]) for g in ready)
    first, last = min(g[1] for g in ready), max(g[2] for g in ready)
    out.lines.append(f"{bills} bill total(s) in {len(ready)} group(s) of neighbourhoods, covering"
                     f" {_date(first)} to {_date(last - 1)}; each group's bills go out together."
                     " Each is one sum of money, in whole cents; no reading is revealed.")
    days = {g[2] - g[1] for g in ready}
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

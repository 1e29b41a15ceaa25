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

from .releases import bill_chunks
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
            "dp": [(role, p["dp_epsilon"]) for role, p in policies.items() if p["dp"] == "on"]}


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


def _bills(store: MdmsStore, period_days: int, rule: dict, out: Scope) -> None:
    chunks = list(bill_chunks(store, period_days))
    if not chunks:
        out.lines.append(f"No meter has {period_days} signed day(s) not billed yet;"
                         " approving releases nothing now.")
        return
    meters = {m for m, _ in chunks}
    first = min(c[0]["day"] for _, c in chunks)
    last = max(c[-1]["day"] for _, c in chunks)
    out.lines.append(f"{len(chunks)} bill total(s) for {len(meters)} meter(s), one per"
                     f" {period_days} day(s), covering {_date(first)} to {_date(last)}."
                     " Each is one sum of money; no reading is revealed.")
    if period_days < rule["min_bill_days"]:
        out.refused.append(f"All of them: the policy asks for at least {rule['min_bill_days']}"
                           " day(s) per bill.")
    elif rule["calendar_month"]:
        partial = sum(1 for _, c in chunks
                      if _date(c[0]["day"]).day != 1 or _date(c[0]["day"] + period_days).day != 1)
        if partial:
            out.refused.append(f"{partial} bill(s) not covering whole calendar months: the"
                               " policy bills by calendar month only.")


def describe(store: MdmsStore, policies: dict[str, dict], request: dict) -> Scope:
    """`policies`: each key holder's policy by role (Authority.policies())."""
    out = Scope()
    rule = _strictest(policies)
    if request["kind"] == "aggregates":
        _aggregates(store, rule, out)
        out.noise = ("Noise: " + "; ".join(f"the {role} key holder adds random noise to each"
                                           f" total (privacy budget epsilon {eps} per release)"
                                           for role, eps in rule["dp"])
                     if rule["dp"] else "Noise: none; the totals are exact.")
    else:
        _bills(store, int(json.loads(request["params"]).get("period_days", 1)), rule, out)
    return out

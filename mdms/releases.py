"""Releases, as the MDMS does them: for every (neighbourhood, interval) that
all gateways serving it have sealed, one item carrying every gateway's
signed part; for every billing period, the bills of every household that
a group of neighbourhoods' released aggregates counted in it, together.
Both go to every key holder over its HTTP API, each under a decision the
privacy guardian signed at its own holder; the values that come back are
stored for the dashboard.

An analyst or billing clerk asks in the web app; the MDMS proposes the
request to the guardian's holder (`propose`), where the guardian decides;
`sync` finds the signed decision and releases what it allows. The guardian
may also approve routine releases ahead of time (a standing approval),
which `gridveil mdms release` uses.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from authority.client import Authority, Refusal
from common import records
from common.files import ConfigError

from .store import MdmsStore

log = logging.getLogger("gridveil.mdms.releases")
HOUR = 3600
DAY = 86400
EPOCH = dt.date(1970, 1, 1)


@dataclass
class Released:
    aggregates: dict[tuple[str, int], int] = field(default_factory=dict)  # (nbh, end) -> Wh
    bills: dict[tuple[str, int], int] = field(default_factory=dict)  # (meter, first day) -> µct
    refusals: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # not refused: not decided, not complete
    period: str | int = 1  # the billing period the bills were asked for

    def to_json(self) -> dict:
        return {"aggregates": [[n, e, wh] for (n, e), wh in sorted(self.aggregates.items())],
                "bills": [[m, d, a] for (m, d), a in sorted(self.bills.items())],
                "refusals": self.refusals, "waiting": self.waiting}


def release_aggregates(store: MdmsStore, authority: Authority, out: Released,
                       decision=None) -> None:
    """Whether a value carries noise is the holders' policy, not ours."""
    pending = store.unreleased_aggregate_parts()
    keys = list(pending)
    items = [[(records.parse(rec), sig) for rec, sig in pending[k]] for k in keys]
    undecided = 0
    for (nbh, end), res in zip(keys, authority.release_aggregates(items, decision), strict=True):
        if isinstance(res, Refusal):
            if res.code == "no_decision":
                undecided += 1
            else:
                out.refusals.append(f"{nbh} @ {end}: {res}")
            continue
        store.save_aggregate(nbh, end, res.wh, res.contributors, res.noisy)
        out.aggregates[(nbh, end)] = res.wh
    if undecided:
        out.waiting.append(f"{undecided} quarter-hour total(s) wait for the privacy guardian's"
                           " decision")


# --- billing periods ------------------------------------------------------------
def period_of(day: int, period: str | int, anchor: int = 0) -> tuple[int, int]:
    """[first day, end day) of the billing period holding `day`: a calendar
    month (UTC), or one of the runs of `period` days counted from the day
    `anchor` (the first day anything was metered)."""
    if period == "month":
        d = EPOCH + dt.timedelta(days=day)
        first = d.replace(day=1)
        nxt = (first + dt.timedelta(days=32)).replace(day=1)
        return (first - EPOCH).days, (nxt - EPOCH).days
    n = int(period)
    start = anchor + (day - anchor) // n * n
    return start, start + n


def policy_period(policies: dict[str, dict]) -> str | int:
    """The billing period the holders' policies allow: calendar months if
    any of them bills by month, else the longest of their shortest bills."""
    if any(p.get("billing") == "calendar-month" for p in policies.values()):
        return "month"
    return max(int(p.get("min_bill_days", 1)) for p in policies.values())


def _groups(parts, carried) -> list[tuple[set[str], set[str], list[int]]]:
    """(neighbourhoods, meters, starts of groups carried in) of each group
    that shares a meter: bills of a household counted in two neighbourhoods
    go out with both, and a group carried over from an earlier period
    joins the groups it shares a neighbourhood or a meter with."""
    parent: dict[str, str] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for nbh, meters in parts:
        for m in meters:
            parent[find("m:" + m)] = find("n:" + nbh)
    for nbhs, meters, first in carried:
        names = [f"n:{n}" for n in nbhs] + [f"m:{m}" for m in meters]
        for x in names:
            parent[find(x)] = find(names[0])
        parent[find(f"s:{first}")] = find(names[0])
    comps: dict[str, tuple[set, set, list]] = defaultdict(lambda: (set(), set(), []))
    for x in list(parent):
        nbhs, meters, starts = comps[find(x)]
        kind, name = x[0], x[2:]
        if kind == "n":
            nbhs.add(name)
        elif kind == "m":
            meters.add(name)
        else:
            starts.append(int(name))
    return [c for c in comps.values() if c[0]]


def bill_groups(store: MdmsStore, period):
    """(neighbourhoods, first day, end day, {meter: [day rows]}) of every
    group of households that the neighbourhoods' released aggregates
    counted in a billing period, not billed yet, whose bills can all go
    out; and notes on those that cannot yet. A group in which a meter
    reported nothing on the period's last day (its readings may be held
    back somewhere) is carried into the next period and billed with it."""
    days_of: dict[str, dict[int, dict]] = defaultdict(dict)
    for row in store.signed_bill_days():
        days_of[row["meter_id"]][row["day"]] = row
    anchor = min((d for days in days_of.values() for d in days), default=0)
    horizon = max((d for days in days_of.values() for d in days), default=0)
    billed = {(b["meter_id"], b["first_day"]) for b in store.bills()}
    by_period: dict[tuple[int, int], list] = defaultdict(list)
    for r in store.released_parts():
        by_period[period_of((r["interval_end"] - 1) // DAY, period, anchor)].append(
            (r["neighbourhood"], records.parse(r["record"]).meters))
    ready, notes, carried = [], [], []
    for (first, last), parts in sorted(by_period.items()):
        carry_in, carried = carried, []
        for nbhs, meters, starts in _groups(parts, carry_in):
            start = min([first, *starts])
            if all((m, start) in billed for m in meters):
                continue
            chunk = {m: [days_of[m][d] for d in range(start, last) if d in days_of[m]]
                     for m in sorted(meters)}
            silent = sorted(m for m in meters if last - 1 not in days_of[m])
            if silent:
                if horizon >= last:  # the period is over: its bills go with the next one
                    carried.append((nbhs, meters, start))
                else:
                    notes.append(f"bills of {', '.join(sorted(nbhs))} from"
                                 f" {EPOCH + dt.timedelta(start)} wait: {len(silent)} meter(s)"
                                 f" have not reported on the period's last day yet"
                                 f" ({', '.join(silent[:5])})")
                continue
            ready.append((sorted(nbhs), start, last, chunk))
    for nbhs, meters, start in carried:
        silent = sorted(m for m in meters if not days_of[m] or max(days_of[m]) < horizon)
        notes.append(f"bills of {', '.join(sorted(nbhs))} from {EPOCH + dt.timedelta(start)}"
                     f" wait: {len(silent) or 'some'} meter(s) reported nothing on a period's"
                     f" last day ({', '.join(silent[:5])}); they go out with the first period"
                     " in which every one of them has")
    return ready, notes


def release_bills(store: MdmsStore, authority: Authority, out: Released,
                  period: str | int = 1, decision=None) -> None:
    """The bills of each group of neighbourhoods and period, all together.
    The tariff is the one the gateway signed into the day records; its
    prices are the holders'."""
    ready, notes = bill_groups(store, period)
    out.waiting += notes
    for nbhs, first, last, chunk in ready:
        bills = []
        for meter_id, rows in chunk.items():
            signed = [(records.parse(d["record"]), d["signature"]) for d in rows]
            bills.append((meter_id, signed[0][0].tariff, signed))
        try:
            amounts = authority.release_bills(nbhs, first * DAY, last * DAY, bills, decision)
        except Refusal as r:
            if r.code == "no_decision":
                out.waiting.append(f"bills of {', '.join(nbhs)} from"
                                   f" {EPOCH + dt.timedelta(first)} wait for the privacy"
                                   " guardian's decision")
            else:
                out.refusals.append(f"bills of {', '.join(nbhs)} from"
                                    f" {EPOCH + dt.timedelta(first)}: {r}")
            continue
        for meter_id, amount in amounts.items():
            store.save_bill(meter_id, first, last - first, amount)
            out.bills[(meter_id, first)] = amount


def release_all(store: MdmsStore, authority: Authority,
                period: str | int | None = None) -> Released:
    """Everything the guardian's decisions allow; bills by `period`, or by
    what the holders' policies allow."""
    out = Released()
    if period is None:
        period = policy_period(authority.policies())
    out.period = period
    sync(store, authority, period)
    release_aggregates(store, authority, out)
    release_bills(store, authority, out, period)
    return out


# --- requests and the guardian's decisions --------------------------------------
def scope(store: MdmsStore, kind: str, period: str | int) -> dict | None:
    """What a request would cover now: the neighbourhoods and the span of
    what waits to be released, as the guardian's holder is asked to decide
    it; None when nothing waits."""
    if kind == "aggregates":
        waiting = list(store.unreleased_aggregate_parts())
        if not waiting:
            return None
        step = min(records.parse(p[0][0]).interval_end - records.parse(p[0][0]).interval_start
                   for p in store.unreleased_aggregate_parts().values())
        return {"neighbourhoods": sorted({n for n, _ in waiting}),
                "start": min(e for _, e in waiting) - step, "end": max(e for _, e in waiting)}
    ready, _ = bill_groups(store, period)
    if not ready:
        return None
    return {"neighbourhoods": sorted({n for g in ready for n in g[0]}),
            "start": min(g[1] for g in ready) * DAY, "end": max(g[2] for g in ready) * DAY}


def propose(store: MdmsStore, authority: Authority, rid: int) -> str:
    """Send a request to the guardian's holder; returns what happened, in words."""
    req = store.request(rid)
    params = req["params_json"]
    s = scope(store, req["kind"], _period(params, 1))
    if s is None:
        store.decide(rid, "declined", "-", "nothing to release", "nothing waited to be released")
        return "nothing waits to be released"
    what = "aggregates" if req["kind"] == "aggregates" else "bills"
    note = f"{req['requested_by']} asks for {what}" + (
        f" (billing period: {_period(params, 1)})" if what == "bills" else "")
    pid = authority.propose(what, s["neighbourhoods"], s["start"], s["end"], note, f"mdms:{rid}")
    store.set_request_params(rid, {**params, "proposal": pid, "scope": s})
    log.info("request %d proposed to the privacy guardian as %d", rid, pid)
    return f"sent to the privacy guardian as request {pid}"


def _period(params: dict, default):
    """A request's billing period: "month" or days (older requests: period_days)."""
    return params.get("period", params.get("period_days", default))


def sync(store: MdmsStore, authority: Authority, period: str | int = 1) -> list[str]:
    """Find the guardian's decisions on our requests: a declined request is
    marked with the guardian's reason, an approved one released. Requests
    the guardian's holder has not had yet are sent again."""
    notes = []
    pending = store.requests("pending")
    if not pending:
        return notes
    try:
        authority.refresh_decisions()
        by_ref = {d.request: d for d, revoked in authority.decisions() if not revoked}
        for req in reversed(pending):
            rid = req["id"]
            params = store.request(rid)["params_json"]
            if "proposal" not in params:
                notes.append(f"request {rid}: " + propose(store, authority, rid))
                continue
            d = by_ref.get(f"mdms:{rid}")
            if d is None:
                continue
            if not d.approved:
                store.decide(rid, "declined", "guardian", "nothing released", d.reason)
                notes.append(f"request {rid}: declined by the privacy guardian")
                continue
            out = Released()
            if req["kind"] == "aggregates":
                release_aggregates(store, authority, out, d)
            else:
                release_bills(store, authority, out, _period(params, period), d)
            released = len(out.aggregates) + len(out.bills)
            outcome = f"released {released} {'aggregates' if req['kind'] == 'aggregates' else 'bills'}"
            if out.refusals:
                outcome += f"; the key holders' policy refused {len(out.refusals)}"
            store.decide(rid, "approved", "guardian", outcome)
            notes.append(f"request {rid}: {outcome}")
            log.info("request %d approved by the privacy guardian: %s", rid, outcome)
    except ConfigError as e:
        notes.append(f"the key holders could not be asked: {e}")
        log.warning("requests could not be synced with the key holders: %s", e)
    return notes


def demand_views(rows: list[dict]):
    """(hourly {nbh: [[hour, kWh]]}, daily profile {nbh: [24 mean kWh]},
    peaks [{nbh, day, hour, kwh}]) from released quarter-hours."""
    hourly: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        hourly[r["neighbourhood"]][(r["interval_end"] - 1) // HOUR * HOUR] += r["wh"]
    series = {n: [[h, wh / 1000] for h, wh in sorted(hs.items())] for n, hs in hourly.items()}
    profile, peaks = {}, []
    for n, hs in hourly.items():
        sums, counts = [0.0] * 24, [0] * 24
        by_day: dict[int, list] = defaultdict(list)
        for h, wh in hs.items():
            sums[h // HOUR % 24] += wh / 1000
            counts[h // HOUR % 24] += 1
            by_day[h // 86400].append((wh, h))
        profile[n] = [round(s / c, 3) if c else None for s, c in zip(sums, counts, strict=True)]
        for _, items in sorted(by_day.items()):
            wh, h = max(items)
            peaks.append({"neighbourhood": n, "hour": h, "kwh": wh / 1000})
    return series, profile, sorted(peaks, key=lambda p: (p["hour"], p["neighbourhood"]))



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
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from authority.client import Authority, Refusal
from common import records
from common.files import ConfigError

from .store import MdmsStore

log = logging.getLogger("gridveil.mdms.releases")
HOUR = 3600
DAY = 86400
PAGE = 2000  # aggregates per request to the holders
PARALLEL = 2  # requests in flight: the holders work while we store
EPOCH = dt.date(1970, 1, 1)


@dataclass
class Released:
    aggregates: dict[tuple[str, int], int] = field(default_factory=dict)  # (nbh, end) -> Wh
    bills: dict[tuple[str, int], int] = field(default_factory=dict)  # (meter, first day) -> µct
    refusals: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # not refused: not decided, not complete
    period: str | int = 1  # the billing period the bills were asked for
    seconds: dict[str, float] = field(default_factory=dict)  # each stage's wall time

    def to_json(self) -> dict:
        return {"aggregates": [[n, e, wh] for (n, e), wh in sorted(self.aggregates.items())],
                "bills": [[m, d, a] for (m, d), a in sorted(self.bills.items())],
                "refusals": self.refusals, "waiting": self.waiting, "seconds": self.seconds}


# A refusal with one of these codes may turn into a grant later (a decision
# still to come); any other is the holders' final word on that value.
WAITING = ("no_decision", "out_of_scope")


def release_aggregates(store: MdmsStore, authority: Authority, out: Released,
                       decision=None, page: int = PAGE, parallel: int = PARALLEL,
                       keep=lambda: None) -> None:
    """Everything that waits, a page at a time, `parallel` pages in flight
    so that the holders' cores stay busy. Results are stored in page order
    and each neighbourhood's cursor moves past what is decided, so a run
    that stops halfway (a holder down, this process killed) resumes where
    it stopped; the holders answer a page asked again with the same values,
    so nothing granted is lost. Whether a value carries noise is the
    holders' policy, not ours."""
    after: tuple[str, int] = ("", -1)
    undecided = 0
    with ThreadPoolExecutor(parallel, thread_name_prefix="release") as pool:
        in_flight: deque = deque()
        while True:
            keep()  # the job's lease: stop if another process took the job over
            pending = store.pending_aggregates(after, page)
            if pending:
                after = pending[-1][0]
                items = [[(records.parse(rec), sig) for rec, sig in parts] for _, parts in pending]
                in_flight.append((pending, items, pool.submit(
                    authority.release_aggregates, items, decision)))
            if in_flight and (len(in_flight) >= parallel or not pending):
                done, items, future = in_flight.popleft()
                undecided += _store_results(store, out, done, items, future.result())
            if not pending and not in_flight:
                break
    if undecided:
        out.waiting.append(f"{undecided} quarter-hour total(s) wait for the privacy guardian's"
                           " decision")


def _store_results(store: MdmsStore, out: Released, pending, items, results) -> int:
    """Store one page's answers; returns how many wait for a decision."""
    granted, refused, members, waiting = [], [], set(), set()
    through: dict[str, int] = {}
    for ((nbh, end), _), parts, res in zip(pending, items, results, strict=True):
        if isinstance(res, Refusal) and res.code in WAITING:
            waiting.add(nbh)
            continue
        if isinstance(res, Refusal):
            refused.append((nbh, end, res.code, str(res)))
            out.refusals.append(f"{nbh} @ {end}: {res}")
        else:
            granted.append((nbh, end, res.wh, res.contributors, res.noisy))
            members.update((m, (end - 1) // DAY, nbh) for rec, _ in parts for m in rec.meters)
            out.aggregates[(nbh, end)] = res.wh
        if nbh not in waiting:  # decided, and so is everything before it
            through[nbh] = end
    with store.db.transaction():
        store.save_aggregates(granted)
        store.save_refusals(refused)
        store.add_day_members(members)
        store.advance_cursors(through)
    return sum(1 for ((n, _), _), r in zip(pending, results, strict=True)
               if isinstance(r, Refusal) and r.code in WAITING)


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


def _union(links) -> dict[str, str]:
    """Neighbourhood -> its group's representative: neighbourhoods that
    share a meter bill together (`links`: [(meter, neighbourhood)])."""
    parent: dict[str, str] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_of: dict[str, str] = {}
    for meter, nbh in links:
        parent[find(nbh)] = find(first_of.setdefault(meter, nbh))
    return {n: find(n) for n in list(parent)}


@dataclass
class Group:
    neighbourhoods: list[str]
    first: int  # day; earlier than the period's when carried in
    end: int  # day, exclusive
    meters: list[str]
    carried: list[int] = field(default_factory=list)  # first days of groups carried into it


def period_groups(store: MdmsStore, first: int, end: int, horizon: int
                  ) -> tuple[list[Group], list[Group], bool]:
    """The groups of households whose bills of the period [first, end) can
    all go out now, those that wait, and whether the period is settled
    (nothing in it waits; a group carried on waits in carried_groups).
    Groups carried in from earlier periods join the groups they share a
    neighbourhood with. A group in which a meter reported nothing on the
    period's last day (its readings may be held back somewhere) is carried
    into the next period once the period is over (`horizon`, the latest
    day released, is past it)."""
    rep = _union(store.shared_meters(first, end))
    groups: dict[str, Group] = {}
    for n in store.member_neighbourhoods(first, end):
        g = groups.setdefault(rep.get(n, n), Group([], first, end, []))
        g.neighbourhoods.append(n)
    for start, (nbhs, _) in sorted(store.carried().items()):
        if start >= first:
            continue
        merged = Group(sorted(nbhs), start, end, [], [start])
        for key in [k for k, g in groups.items() if nbhs & set(g.neighbourhoods)]:
            g = groups.pop(key)
            merged.neighbourhoods = sorted(set(merged.neighbourhoods) | set(g.neighbourhoods))
            merged.first = min(merged.first, g.first)
            merged.carried += g.carried
        groups[merged.neighbourhoods[0]] = merged
    ready, waiting, settled = [], [], True
    for g in groups.values():
        g.meters = store.members(g.neighbourhoods, g.first, end)
        if not g.meters or len(store.billed(g.meters, g.first)) == len(g.meters):
            continue
        days = store.bill_days_of(g.meters, end - 1, end)
        silent = sorted(m for m in g.meters if not days[m])
        if not silent:
            ready.append(g)
        elif horizon >= end:  # the period is over: its bills go with the next one
            store.carry(g.first, g.neighbourhoods, end)
        else:
            settled = False
            g.meters = silent
            waiting.append(g)
    return ready, waiting, settled


def _waiting_note(g: Group) -> str:
    return (f"bills of {', '.join(g.neighbourhoods)} from {EPOCH + dt.timedelta(g.first)} wait:"
            f" {len(g.meters)} meter(s) have not reported on the period's last day yet"
            f" ({', '.join(g.meters[:5])})")


def _carried_notes(store: MdmsStore, seen: set[int]) -> list[str]:
    return [f"bills of {', '.join(sorted(nbhs))} from {EPOCH + dt.timedelta(start)} wait: a"
            " meter reported nothing on a period's last day; they go out with the first period"
            " in which every one of them has" for start, (nbhs, _) in store.carried().items()
            if start not in seen]


def billing_periods(store: MdmsStore, period) -> tuple[list[tuple[int, int]], int]:
    """The periods not settled yet, from the oldest, up to the one holding
    the latest released day; and that day (the horizon)."""
    anchor = store.anchor_day()
    if anchor is None:
        return [], 0
    horizon = (store.released_through() - 1) // DAY
    day = store.bill_periods_done()
    day = anchor if day is None else day
    out = []
    while day <= horizon:
        first, end = period_of(day, period, anchor)
        out.append((first, end))
        day = end
    return out, horizon


def bill_groups(store: MdmsStore, period) -> tuple[list[Group], list[str]]:
    """Every group whose bills can go out now, in all unsettled periods,
    and notes on those that wait (for the guardian's page, and tests)."""
    periods, horizon = billing_periods(store, period)
    ready, notes, seen = [], [], set()
    for first, end in periods:
        r, w, _ = period_groups(store, first, end, horizon)
        ready += r
        notes += [_waiting_note(g) for g in w]
        seen.update(s for g in r + w for s in [g.first, *g.carried])
    return ready, notes + _carried_notes(store, seen)


def release_bills(store: MdmsStore, authority: Authority, out: Released,
                  period: str | int = 1, decision=None, keep=lambda: None) -> None:
    """The bills of each group of neighbourhoods and period, all together,
    one group at a time (only its day records in memory). The tariff is
    the one the gateway signed into the day records; its prices are the
    holders'. A period is settled once each of its groups was billed or
    carried on; the next run starts from the oldest unsettled one."""
    periods, horizon = billing_periods(store, period)
    all_settled, seen = True, set()
    for first, end in periods:
        ready, waiting, settled = period_groups(store, first, end, horizon)
        out.waiting += [_waiting_note(g) for g in waiting]
        for g in ready:
            keep()
            settled &= _bill_group(store, authority, out, g, decision)
        seen.update(s for g in ready + waiting for s in [g.first, *g.carried])
        all_settled &= settled
        if all_settled:
            store.set_bill_periods_done(end)
    out.waiting += _carried_notes(store, seen)


def _bill_group(store: MdmsStore, authority: Authority, out: Released, g: Group,
                decision) -> bool:
    days = store.bill_days_of(g.meters, g.first, g.end)
    bills = []
    for meter_id in g.meters:
        signed = [(records.parse(d["record"]), d["signature"]) for d in days[meter_id]]
        bills.append((meter_id, signed[0][0].tariff, signed))
    when = f"bills of {', '.join(g.neighbourhoods)} from {EPOCH + dt.timedelta(g.first)}"
    try:
        amounts = authority.release_bills(g.neighbourhoods, g.first * DAY, g.end * DAY, bills,
                                          decision)
    except Refusal as r:
        if r.code in WAITING:
            out.waiting.append(f"{when} wait for the privacy guardian's decision")
        else:
            out.refusals.append(f"{when}: {r}")
        return False
    with store.db.transaction():
        store.save_bills([(m, g.first, g.end - g.first, a) for m, a in amounts.items()])
        for start in g.carried:
            store.drop_carried(start)
    out.bills.update(((m, g.first), a) for m, a in amounts.items())
    return True


def release_all(store: MdmsStore, authority: Authority,
                period: str | int | None = None, keep=lambda: None) -> Released:
    """Everything the guardian's decisions allow; bills by `period`, or by
    what the holders' policies allow. `keep` is called between pages (the
    release job renews its lease there)."""
    out = Released()
    if period is None:
        period = policy_period(authority.policies())
    out.period = period
    sync(store, authority, period)
    for stage, run in (("aggregates", lambda: release_aggregates(store, authority, out,
                                                                 keep=keep)),
                       ("bills", lambda: release_bills(store, authority, out, period,
                                                       keep=keep))):
        t = time.monotonic()
        run()
        out.seconds[stage] = round(time.monotonic() - t, 3)
    if out.aggregates or out.bills:
        log.info("released %d aggregates in %.1f s and %d bills in %.1f s", len(out.aggregates),
                 out.seconds["aggregates"], len(out.bills), out.seconds["bills"])
    return out


# --- requests and the guardian's decisions --------------------------------------
def scope(store: MdmsStore, kind: str, period: str | int) -> dict | None:
    """What a request would cover now: the neighbourhoods and the span of
    what waits to be released, as the guardian's holder is asked to decide
    it; None when nothing waits."""
    if kind == "aggregates":
        span = store.pending_span()
        if not span:
            return None
        rec = records.parse(store.pending_aggregates(limit=1)[0][1][0][0])
        return {"neighbourhoods": [r["neighbourhood"] for r in span],
                "start": min(r["first"] for r in span) - (rec.interval_end - rec.interval_start),
                "end": max(r["last"] for r in span)}
    ready, _ = bill_groups(store, period)
    if not ready:
        return None
    return {"neighbourhoods": sorted({n for g in ready for n in g.neighbourhoods}),
            "start": min(g.first for g in ready) * DAY, "end": max(g.end for g in ready) * DAY}


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



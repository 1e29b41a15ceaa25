"""Releases, as the MDMS does them: for every (neighbourhood, interval) that
all gateways serving it have sealed, one request carrying every gateway's
signed part; for every meter, one bill per billing period from its signed
day records. Both go to every key holder over its HTTP API; the values
that come back are stored for the dashboard.

An analyst or billing clerk asks in the web app, the privacy guardian
approves or declines there, and only then does this run (`approve`).
`gridveil mdms release` runs the same from the command line.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from authority.client import Authority, Refusal
from common import records

from .store import MdmsStore

log = logging.getLogger("gridveil.mdms.releases")
HOUR = 3600
DAY = 86400


@dataclass
class Released:
    aggregates: dict[tuple[str, int], int] = field(default_factory=dict)  # (nbh, end) -> Wh
    bills: dict[tuple[str, int], int] = field(default_factory=dict)  # (meter, first day) -> µct
    refusals: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"aggregates": [[n, e, wh] for (n, e), wh in sorted(self.aggregates.items())],
                "bills": [[m, d, a] for (m, d), a in sorted(self.bills.items())],
                "refusals": self.refusals}


def release_aggregates(store: MdmsStore, authority: Authority, out: Released) -> None:
    """Whether a value carries noise is the holders' policy, not ours."""
    for (nbh, end), parts in store.unreleased_aggregate_parts().items():
        signed = [(records.parse(rec), sig) for rec, sig in parts]
        try:
            wh, contributors = authority.release_aggregate(signed)
        except Refusal as r:
            out.refusals.append(f"{nbh} @ {end}: {r}")
            continue
        store.save_aggregate(nbh, end, wh, contributors, authority.last_noisy)
        out.aggregates[(nbh, end)] = wh


def bill_chunks(store: MdmsStore, period_days: int):
    """(meter, [day rows]) for every run of `period_days` consecutive signed
    days not billed yet; a leftover shorter run is not billed yet."""
    billed = {(b["meter_id"], b["first_day"]) for b in store.bills()}
    by_meter = defaultdict(list)
    for row in store.signed_bill_days():
        by_meter[row["meter_id"]].append(row)
    for meter_id, days in by_meter.items():
        for i in range(0, len(days) - period_days + 1, period_days):
            chunk = days[i:i + period_days]
            if (meter_id, chunk[0]["day"]) not in billed:
                yield meter_id, chunk


def release_bills(store: MdmsStore, authority: Authority, out: Released,
                  period_days: int = 1) -> None:
    """One bill per meter per run of `period_days` consecutive signed days.
    The tariff is the one the gateway signed into the day records; its
    prices are the holders'."""
    for meter_id, chunk in bill_chunks(store, period_days):
        first = chunk[0]["day"]
        signed = [(records.parse(d["record"]), d["signature"]) for d in chunk]
        try:
            amount = authority.release_bill(meter_id, first * DAY, (first + period_days) * DAY,
                                            signed[0][0].tariff, signed)
        except Refusal as r:
            out.refusals.append(f"bill {meter_id} from day {first}: {r}")
            continue
        store.save_bill(meter_id, first, period_days, amount)
        out.bills[(meter_id, first)] = amount


def release_all(store: MdmsStore, authority: Authority, period_days: int = 1) -> Released:
    out = Released()
    release_aggregates(store, authority, out)
    release_bills(store, authority, out, period_days)
    return out


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


def approve(store: MdmsStore, authority: Authority, rid: int, who: str) -> str:
    """The holders log the approval first: a release whose approval could
    not be logged does not happen (the ConfigError stops it here)."""
    req = store.request(rid)
    if req is None:
        return "no such pending request"
    params = json.loads(req["params"])
    authority.note_decision(f"request:{rid} {req['kind']}", True,
                            f"approved by privacy guardian {who}")
    out = Released()
    if req["kind"] == "aggregates":
        release_aggregates(store, authority, out)
    else:
        release_bills(store, authority, out, int(params.get("period_days", 1)))
    released = len(out.aggregates) + len(out.bills)
    what = "aggregates" if req["kind"] == "aggregates" else "bills"
    outcome = f"released {released} {what}"
    if out.refusals:
        outcome += f"; the key holders' policy refused {len(out.refusals)}"
    if not released and not out.refusals:
        outcome = "nothing new to release"
    store.decide(rid, "approved", who, outcome)
    log.info("request %d approved by %s: %s", rid, who, outcome)
    return outcome


def decline(store: MdmsStore, authority: Authority, rid: int, who: str, reason: str) -> None:
    """Like an approval, the holders log a decline first, so every decision
    the requester sees is in their logs too (a holder that cannot be told
    leaves the request pending, to decide again)."""
    req = store.request(rid)
    if req is None:
        return
    authority.note_decision(f"request:{rid} {req['kind']}", False,
                            f"declined by privacy guardian {who}: {reason}")
    if store.decide(rid, "declined", who, "nothing released", reason):
        log.info("request %d declined by %s", rid, who)

"""The operator's view of the fleet: how fresh each meter's last reading
is (with thresholds a quarter-hourly meter should meet), a sparkline of
readings stored per quarter hour over the last day, and the alerts that
follow from both. Metadata only: when meters reported, never what."""

from __future__ import annotations

import json
from collections import defaultdict

BUCKET = 900  # the history's step: one quarter hour
HISTORY = 96  # buckets kept: one day
LATE_S, SILENT_S = 30 * 60, 2 * 3600  # two missed reports; eight
BACKLOG_ALERT = 8  # readings queued on the meter: it reports but cannot deliver


def freshness(last_seen, now: float) -> str:
    if last_seen is None:
        return "silent"
    age = now - last_seen
    return "ok" if age < LATE_S else "late" if age < SILENT_S else "silent"


def sparkline(points: list[tuple[int, int]], now: float, width: int = 96,
              height: int = 20) -> str:
    """SVG polyline points: readings stored per quarter hour, the last day.
    `points` are (bucket, accepted so far) samples, in order."""
    end = int(now) // BUCKET
    per = defaultdict(int)
    prev = 0  # a meter first sampled inside the window is new: it started at 0
    for bucket, accepted in points:
        if bucket > end - HISTORY:  # the one sample before the window is the baseline
            per[bucket] += max(0, accepted - prev)
        prev = accepted
    top = max(per.values(), default=0) or 1
    xs = range(end - HISTORY + 1, end + 1)
    return " ".join(f"{i * width / (HISTORY - 1):.1f},{height - per[b] * height / top:.1f}"
                    for i, b in enumerate(xs))


def view(store, now: float) -> dict:
    meters = store.meters()
    history = store.meter_history((int(now) // BUCKET) - HISTORY)
    rejects, gateways = defaultdict(dict), []
    for g in store.gateways():
        for m, reason, n in json.loads(g["rejects"] or "[]"):
            rejects[m][reason] = rejects[m].get(reason, 0) + n
        gateways.append({"id": g["gateway_id"], "health_at": g["health_at"],
                         "fresh": freshness(g["health_at"], now),
                         "counters": json.loads(g["counters"] or "{}")})
    rows, alerts = [], []
    for m in meters:
        state = freshness(m["last_seen"], now)
        r = rejects.get(m["meter_id"], {})
        rows.append({**m, "fresh": state, "rejects": r,
                     "spark": sparkline(history.get(m["meter_id"], []), now)})
        if state != "ok":
            alerts.append((state, f"{m['meter_id']} ({m['neighbourhood']}): no reading for"
                                  f" {'over two hours' if state == 'silent' else 'over 30 min'}"))
        if (m["backlog"] or 0) >= BACKLOG_ALERT:
            alerts.append(("late", f"{m['meter_id']}: {m['backlog']} readings queued on the"
                                   " meter, not delivered"))
        if r:
            alerts.append(("late", f"{m['meter_id']}: {sum(r.values())} datagrams rejected"
                                   f" ({', '.join(sorted(r))})"))
    for g in gateways:
        if g["fresh"] != "ok":
            alerts.append((g["fresh"], f"gateway {g['id']}: no health report for over"
                                       f" {'two hours' if g['fresh'] == 'silent' else '30 min'}"))
    order = {"silent": 0, "late": 1}
    alerts.sort(key=lambda a: order[a[0]])
    return {"meters": rows, "gateways": gateways, "alerts": alerts,
            "unknown": rejects.get("", {}), "counts": {s: sum(1 for r in rows if r["fresh"] == s)
                                                       for s in ("ok", "late", "silent")}}

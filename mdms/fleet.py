"""The operator's view of the fleet: how fresh each meter's last reading
is (with thresholds a quarter-hourly meter should meet), a sparkline of
readings stored per quarter hour over the last day, and the alerts that
follow from both. Metadata only: when meters reported, never what."""

from __future__ import annotations

import json
from collections import defaultdict

from .intakestore import BUCKET, HISTORY  # the sparkline's ring: a day of quarter hours

LATE_S, SILENT_S = 30 * 60, 2 * 3600  # two missed reports; eight
BACKLOG_ALERT = 8  # readings queued on the meter: it reports but cannot deliver
# The meter's own telemetry (firmware/telemetry.py): machine.reset_cause()
# as the ESP32 port numbers it, and what makes an alert.
RESETS = {1: "power-on", 2: "hard reset", 3: "watchdog", 4: "deep sleep wake",
          5: "software reset (after a fault)"}
LOW_HEAP = 8 * 1024  # bytes free: below this an allocation may fail in an exchange
WEAK_RSSI = -85  # dBm: below this, Wi-Fi drops packets
NOISY_SENSOR = 50  # per mille of inputs rejected (bounce, bad CRC)
SEQ_LOW = 1 << 20  # of 2^40 per context: years of requests, but worth a look
PAGE = 100  # meters per page
ALERTS = 200  # meters that need a look, listed at most


def duration(seconds: int) -> str:
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    return f"{d} d {h} h" if d else f"{h} h {rest // 60} min" if h else f"{rest // 60} min"


def device(t: dict) -> tuple[list[str], list[str]]:
    """A meter's telemetry in words, and the alerts it raises."""
    lines, alerts = [], []
    if "reset_cause" in t:
        lines.append(f"last start: {RESETS.get(t['reset_cause'], 'unknown cause')}")
        if t["reset_cause"] in (3, 5) and t.get("uptime_s", 0) < 86400:
            alerts.append(f"restarted by {'its watchdog' if t['reset_cause'] == 3 else 'a fault'}")
    if "uptime_s" in t:
        lines.append(f"up {duration(t['uptime_s'])}")
    if "free_heap" in t:
        lines.append(f"{t['free_heap'] / 1024:.1f} KiB memory free")
        if t["free_heap"] < LOW_HEAP:
            alerts.append(f"low memory ({t['free_heap'] // 1024} KiB free)")
    if "rssi_dbm" in t:
        lines.append(f"Wi-Fi {t['rssi_dbm']} dBm")
        if t["rssi_dbm"] < WEAK_RSSI:
            alerts.append(f"weak Wi-Fi ({t['rssi_dbm']} dBm)")
    if "sensor_rejects_permille" in t:
        lines.append(f"sensor inputs rejected: {t['sensor_rejects_permille'] / 10:g} %")
        if t["sensor_rejects_permille"] >= NOISY_SENSOR:
            alerts.append(f"noisy sensor ({t['sensor_rejects_permille'] / 10:g} % rejected)")
    if "p1_telegrams" in t:
        lines.append(f"P1 telegrams since start: {t['p1_telegrams']}")
    if t.get("merges"):
        lines.append(f"readings merged for lack of room: {t['merges']}")
    if "seq_reserve" in t:
        lines.append(f"OSCORE sequence numbers left: {t['seq_reserve']:.2g}")
        if t["seq_reserve"] < SEQ_LOW:
            alerts.append("OSCORE sequence numbers nearly used up (it starts a new context)")
    return lines, alerts


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


def view(store, now: float, after: str = "", page: int = PAGE) -> dict:
    """The fleet at `now`: counts by state, the meters that need a look (at
    most ALERTS of them, the longest silent first), one page of meters in
    id order from `after`, and the gateways. Bounded whatever the fleet's
    size: counts are one aggregate query, the rest are pages."""
    late_before, silent_before = now - LATE_S, now - SILENT_S
    counts = store.fleet_counts(late_before, silent_before)
    troubled = store.troubled_meters(late_before, BACKLOG_ALERT, ALERTS)
    meters = store.meters(after, page + 1)
    more = meters[page - 1]["meter_id"] if len(meters) > page else None  # the next page's `after`
    meters = meters[:page]
    history = store.meter_history((int(now) // BUCKET) - HISTORY,
                                  [m["meter_id"] for m in meters])
    rejects, gateways = defaultdict(dict), []
    for g in store.gateways():
        for m, reason, n in json.loads(g["rejects"] or "[]"):
            rejects[m][reason] = rejects[m].get(reason, 0) + n
        gateways.append({"id": g["gateway_id"], "health_at": g["health_at"],
                         "fresh": freshness(g["health_at"], now),
                         "counters": json.loads(g["counters"] or "{}")})
    rows = []
    for m in meters:
        health, _ = device(json.loads(m.get("telemetry") or "{}"))
        rows.append({**m, "fresh": freshness(m["last_seen"], now),
                     "rejects": rejects.get(m["meter_id"], {}), "device": health,
                     "spark": sparkline(history.get(m["meter_id"], []), now)})
    alerts = []
    for m in troubled:
        state = freshness(m["last_seen"], now)
        alerts += [("late", f"{m['meter_id']}: {t}") for t in json.loads(m["trouble"] or "[]")]
        if state != "ok":
            alerts.append((state, f"{m['meter_id']} ({m['neighbourhood']}): no reading for"
                                  f" {'over two hours' if state == 'silent' else 'over 30 min'}"))
        if (m["backlog"] or 0) >= BACKLOG_ALERT:
            alerts.append(("late", f"{m['meter_id']}: {m['backlog']} readings queued on the"
                                   " meter, not delivered"))
    for m, r in sorted(rejects.items()):
        if m:
            alerts.append(("late", f"{m}: {sum(r.values())} datagrams rejected"
                                   f" ({', '.join(sorted(r))})"))
    for g in gateways:
        if g["fresh"] != "ok":
            alerts.append((g["fresh"], f"gateway {g['id']}: no health report for over"
                                       f" {'two hours' if g['fresh'] == 'silent' else '30 min'}"))
    order = {"silent": 0, "late": 1}
    alerts.sort(key=lambda a: order[a[0]])
    return {"meters": rows, "gateways": gateways, "alerts": alerts, "more": more,
            "more_alerts": len(troubled) == ALERTS, "unknown": rejects.get("", {}),
            "counts": counts}

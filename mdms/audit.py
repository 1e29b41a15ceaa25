"""The auditor's view of the key holders' decision logs: both holders'
decisions in one list, newest first, each subject in words, filtered,
searched and paged, and the same selection as CSV. The logs come from the
holders' own APIs; their hash chains are verified there (`/v1/verify`).

A holder logs a request of many values as one entry that names each value
and what it decided on it; here each value is a row. A page view reads
the newest WINDOW rows of each holder at most (older ones: `?before=N`,
or `gridveil holder log` at the holder), so it costs the same after a
day or a decade."""

from __future__ import annotations

import datetime as dt
import json
import re

from common.files import ConfigError

from .scope import utc_text

PAGE = 50
WINDOW = 5000  # rows per holder that one page view reads at most
ENTRIES = 200  # log entries per request to a holder
KINDS = ("aggregate", "bill", "decision")
NEWEST = 10 ** 15 - 1  # "before" this: from the newest entry (the API takes 15 digits)


def readable(subject: str) -> str:
    """`agg:north:1767229200` -> `north, the quarter hour to 2026-01-01 01:00 UTC`;
    `bill:m03:<start>-<end>` -> `bill of m03, 2026-01-01 to 2026-01-02`."""
    if m := re.fullmatch(r"agg:(.+):(\d+)", subject):
        return f"{m[1]}, the quarter hour to {utc_text(m[2])}"
    if m := re.fullmatch(r"bill:(.+):(\d+)-(\d+)", subject):
        first, last = (dt.datetime.fromtimestamp(int(t), dt.timezone.utc).date()
                       for t in (m[2], int(m[3]) - 1))
        return f"bill of {m[1]}, {first}" + (f" to {last}" if last != first else "")
    if m := re.fullmatch(r"(\d+) aggregates(?:: agg:(.+):(\d+) \.\. agg:(.+):(\d+))?", subject):
        return f"{m[1]} quarter-hour totals" + (
            f", {m[2]} to {utc_text(m[3])} .. {m[4]} to {utc_text(m[5])}" if m[2] else "")
    if m := re.fullmatch(r"request:(\d+) (\w+)", subject):
        return f"release request #{m[1]} ({m[2]})"
    return subject


def expand(e: dict) -> list[dict]:
    """A log entry as rows, one per value it decided on."""
    try:
        marks = json.loads(e.get("marks") or "[]")
    except ValueError:
        marks = []
    if not isinstance(marks, dict) or not any(marks.get(k) for k in ("agg", "again",
                                                                       "refused")):
        return [e]
    rows = [{**e, "subject": f"agg:{nbh}:{end}", "granted": 1} for nbh, end, *_ in
            marks.get("agg", [])]
    rows += [{**e, "subject": f"agg:{nbh}:{end}", "granted": 1,
              "reason": "answered again (granted before; the same value)"}
             for nbh, end in marks.get("again", [])]
    rows += [{**e, "subject": subject or e["subject"], "granted": 0, "reason": code}
             for subject, code in marks.get("refused", [])]
    return rows


def fetch(holders: dict, before: int = 0) -> tuple[list[dict], list[dict]]:
    """([{role, ok, message}], [row + role, newest first]): the newest
    WINDOW rows of each holder's log, from entry `before` down if given. A
    holder that cannot be reached is reported, not fatal."""
    status, rows = [], []
    for role, h in holders.items():
        try:
            v = h.verify()
            mine, cursor = [], before or NEWEST
            while len(mine) < WINDOW:
                page = h.log(before=cursor, limit=ENTRIES)
                for e in page:
                    mine += [{**r, "role": role} for r in expand(e)]
                if len(page) < ENTRIES:
                    break
                cursor = page[-1]["n"]
            status.append({"role": role, "ok": v["ok"], "message": v["message"]})
            rows += mine
        except ConfigError as e:
            status.append({"role": role, "ok": False, "message": f"unreachable: {e}"})
    rows.sort(key=lambda e: (e["at"], e["role"], e["n"]), reverse=True)
    return status, rows


def verdict(e: dict) -> str:
    if e["kind"] == "decision":
        return "approved" if e["granted"] else "declined"
    return "granted" if e["granted"] else "refused"


def select(entries: list[dict], role: str = "", kind: str = "", decision: str = "",
           q: str = "") -> list[dict]:
    q = q.strip().lower()
    out = []
    for e in entries:
        if (role and e["role"] != role) or (kind and e["kind"] != kind) or \
                (decision and verdict(e) != decision):
            continue
        words = " ".join((e["subject"], readable(e["subject"]), e["requester"], e["reason"] or ""))
        if q and q not in words.lower():
            continue
        out.append(e)
    return out

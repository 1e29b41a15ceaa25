"""The auditor's view of the key holders' decision logs: both holders'
entries in one list, newest first, each subject in words, filtered,
searched and paged, and the same selection as CSV. The logs come from the
holders' own APIs; their hash chains are verified there (`/v1/verify`)."""

from __future__ import annotations

import datetime as dt
import re

from common.files import ConfigError

from .scope import utc_text

PAGE = 50
MAX_ENTRIES = 100_000  # per holder: a bound on what one page view fetches
KINDS = ("aggregate", "bill", "decision")


def readable(subject: str) -> str:
    """`agg:north:1767229200` -> `north, the quarter hour to 2026-01-01 01:00 UTC`;
    `bill:m03:<start>-<end>` -> `bill of m03, 2026-01-01 to 2026-01-02`."""
    if m := re.fullmatch(r"agg:(.+):(\d+)", subject):
        return f"{m[1]}, the quarter hour to {utc_text(m[2])}"
    if m := re.fullmatch(r"bill:(.+):(\d+)-(\d+)", subject):
        first, last = (dt.datetime.fromtimestamp(int(t), dt.timezone.utc).date()
                       for t in (m[2], int(m[3]) - 1))
        return f"bill of {m[1]}, {first}" + (f" to {last}" if last != first else "")
    if m := re.fullmatch(r"request:(\d+) (\w+)", subject):
        return f"release request #{m[1]} ({m[2]})"
    return subject


def fetch(holders: dict) -> tuple[list[dict], list[dict]]:
    """([{role, ok, message}], [entry + role, newest first]). A holder that
    cannot be reached is reported, not fatal."""
    status, entries = [], []
    for role, h in holders.items():
        try:
            v = h.verify()
            got, after = [], 0
            while len(got) < MAX_ENTRIES:
                page = h.log(after=after)
                got += page
                if len(page) < 5000:
                    break
                after = page[-1]["n"]
            status.append({"role": role, "ok": v["ok"], "message": v["message"]})
            entries += [{**e, "role": role} for e in got]
        except ConfigError as e:
            status.append({"role": role, "ok": False, "message": f"unreachable: {e}"})
    entries.sort(key=lambda e: (e["at"], e["role"], e["n"]), reverse=True)
    return status, entries


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

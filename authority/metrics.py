"""A key holder's /metrics and /healthz (common/metrics.py): its log, what
it answered and refused since it started, how much of today's releases
(its privacy budget: each interval of each neighbourhood once) are spent,
and whether it may serve at all (a broken log, a restore not reconciled)."""

from __future__ import annotations

import time
from collections import Counter

from common import metrics

from .ledger import figures_of
from .marks import DAY


def figures(holder, answers: Counter):
    head, today = figures_of(holder.home.ledger, int(time.time() // DAY))
    step = holder.policy.interval_s
    yield metrics.gauge("holder_log_entries", "decisions in this holder's log", head)
    yield metrics.counter("holder_answers", "POSTs since this process started, by outcome"
                          " (answered, or the whole request's refusal code)", label="outcome",
                          values=answers)
    yield metrics.gauge("holder_intervals_per_day", "releases a neighbourhood can have in a day"
                        " (one per interval of the grid)", DAY // step)
    yield metrics.gauge("holder_released_today", "(neighbourhood, interval) sums released for"
                        " today (UTC) so far", sum(b.bit_count() for b in today))
    yield metrics.gauge("holder_neighbourhoods_released_today", "neighbourhoods with a release"
                        " for today", len(today))
    ok, _ = holder.verification()
    yield metrics.gauge("holder_log_verified", "1 while the log's latest verification passed",
                        int(ok))
    yield metrics.gauge("holder_restored_unreconciled", "1 while restored from a backup and not"
                        " reconciled (it releases nothing)", int(holder.restored()))
    size = sum(p.stat().st_size for p in (holder.home.ledger, holder.home.ledger.with_name(
        holder.home.ledger.name + "-wal")) if p.exists())
    yield metrics.gauge("holder_db_bytes", "the holder's database on disk", size)


def health(holder) -> tuple[bool, dict]:
    ok, msg = holder.verification()
    if not ok:
        return False, {"role": holder.role, "error": f"log failed verification: {msg}"}
    if holder.restored():
        return False, {"role": holder.role, "error": "restored from a backup, not reconciled"}
    return True, {"role": holder.role}

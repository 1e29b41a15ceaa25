"""The gateway guard's bounded parts on their own: the duplicate cache (cap
and expiry without a timer per entry), the per-source token buckets, and
the rate-limited log."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from gateway.guard import BoundedDuplicates, LoopWithoutDedupTimers, TokenBuckets
from gateway.ratelog import RateLog


def test_duplicate_cache_is_capped_and_expires_without_timers():
    cache = BoundedDuplicates(cap=3)
    loop = asyncio.new_event_loop()
    try:
        wrapped = LoopWithoutDedupTimers(loop, cache)
        for mid in range(5):  # as aiocoap's _deduplicate_message does
            handle = wrapped.call_later(247, functools.partial(cache.pop, ("r", mid)))
            assert handle is None
            cache[("r", mid)] = None
        assert list(cache) == [("r", 2), ("r", 3), ("r", 4)] and cache.evicted == 2
        assert not loop._scheduled  # no timer per entry
        other = wrapped.call_later(5, lambda: None)  # every other timer is the loop's own
        assert other is not None and len(loop._scheduled) == 1
        other.cancel()
        wrapped.call_later(0.01, functools.partial(cache.pop, ("r", 9)))
        cache[("r", 9)] = None
        cache.expire_in(("r", 2), 0.01)
        time.sleep(0.02)
        cache[("r", 10)] = None  # the expired front entry goes when a new one comes
        assert ("r", 2) not in cache and ("r", 10) in cache
        assert cache.pop(("never", 0)) is None  # lenient, as aiocoap's timers expect
    finally:
        loop.close()


def test_token_buckets_limit_each_source_and_forget_the_oldest():
    b = TokenBuckets(rate=10, burst=5, max_sources=2)
    t = 1000.0
    assert [b.allow("a", t) for _ in range(7)] == [True] * 5 + [False] * 2
    assert b.allow("a", t + 0.1)  # refilled at 10/s
    assert b.allow("b", t) and b.allow("c", t)
    assert len(b) == 2  # "a" was forgotten: state stays bounded


def test_rate_log_says_the_first_and_counts_the_rest(caplog):
    r = RateLog(logging.getLogger("t"), window_s=0.05)
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(1000):
            r.warning("forged", "forged request %d", i)
        time.sleep(0.06)
        r.flush()
    lines = [rec.getMessage() for rec in caplog.records]
    assert lines == ["forged request 0", "... and 999 more forged in the last 0 s"]

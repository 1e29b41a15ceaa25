# Wall-clock time for a board that learns it over the network.
#
# Time comes from the real-time clock, which NTP sets; the tick counter is
# used only for short spans. (ESP32 ticks wrap at 2^30 ms, and differences
# are exact only below half that, 6.2 days: a clock built on a tick base
# jumps back 12.4 days when NTP stays away that long.)
#
# NTP is unauthenticated and the utility runs the network, so an answer
# that would move a set clock by more than MAX_STEP_S is refused. The
# gateway's OSCORE-protected responses carry its time: that source is
# authenticated, so it may set the clock when the meter has none, and move
# it when the two disagree by more than MAX_STEP_S (a first NTP answer that
# was a lie is corrected this way).
#
# Until the clock is set, nothing may be stamped with a time: energy is held
# in a PreSyncBuffer keyed by the tick counter, one bucket per minute, and
# stamped with the time it was measured once the clock is known. No energy
# is dropped: when the buffer is full the two oldest buckets merge, and a
# bucket never gets older than MAX_AGE_MS (its energy moves to the next
# one), so tick differences stay far from the wrap.
import time
from array import array

BUCKET_MS = 60000
MAX_AGE_MS = 3 * 86400 * 1000
MAX_STEP_S = 600
MIN_UTC = 1767225600  # 2026-01-01: anything earlier is not now


class Clock:
    """`rtc` has now() and set(utc) in Unix seconds (boards/esp32 wraps
    machine.RTC; tests use a fake)."""

    def __init__(self, rtc, ticks_ms=time.ticks_ms):
        self.rtc = rtc
        self._ticks = ticks_ms
        self.synced = False
        self.refused = 0  # NTP answers refused as implausible

    def utc(self, ticks=None):
        """UTC seconds at `ticks` (default: now); None before the first sync."""
        if not self.synced:
            return None
        now = self.rtc.now()
        if ticks is None:
            return now
        return now - time.ticks_diff(self._ticks(), ticks) // 1000

    def ntp(self, utc_s):
        """An NTP answer. Returns True if the clock took it."""
        if utc_s < MIN_UTC or (self.synced and abs(utc_s - self.rtc.now()) > MAX_STEP_S):
            self.refused += 1
            return False
        self.rtc.set(utc_s)
        self.synced = True
        return True

    def gateway(self, utc_s):
        """The gateway's time from a verified response. Returns True if the
        clock was set or moved by it."""
        if utc_s < MIN_UTC or (self.synced and abs(utc_s - self.rtc.now()) <= MAX_STEP_S):
            return False
        self.rtc.set(utc_s)
        self.synced = True
        return True


class PreSyncBuffer:
    """Buckets (first tick, last tick, mJ), oldest first, in two arrays made
    at boot: a full buffer is about 3 KiB allocated once, never moved,
    where a list of small lists cost three times that and fragmented the
    heap (the ESP32 path's first MemoryError in `make bench`). Ticks go in
    an 'i' array (they are below 2^30); the energy in a 'q' one, since a
    merged bucket can pass 2^31 mJ."""

    def __init__(self, max_buckets=180):
        self.max_buckets = max_buckets
        self._t = array("i", bytes(4 * 2 * (max_buckets + 1)))  # first, last tick
        self._mj = array("q", bytes(8 * (max_buckets + 1)))
        self.n = 0
        self.merged = 0

    @property
    def buckets(self):
        t, e = self._t, self._mj
        return [(t[2 * i], t[2 * i + 1], e[i]) for i in range(self.n)]

    def _merge_first(self):
        # The oldest bucket's energy joins the next one; the rest move up.
        t, e = self._t, self._mj
        e[1] += e[0]
        for i in range(1, self.n):
            e[i - 1] = e[i]
            t[2 * i - 2], t[2 * i - 1] = t[2 * i], t[2 * i + 1]
        self.n -= 1
        self.merged += 1

    def add(self, ticks, mj):
        t, e = self._t, self._mj
        # Never older than MAX_AGE_MS: the energy moves to the next minute
        # (or, alone, to now), far before tick differences could wrap.
        while self.n and time.ticks_diff(ticks, t[1]) > MAX_AGE_MS:
            if self.n > 1:
                self._merge_first()
            else:
                t[0] = t[1] = ticks
                self.merged += 1
        last = self.n - 1
        if self.n and time.ticks_diff(ticks, t[2 * last]) < BUCKET_MS:
            t[2 * last + 1] = ticks
            e[last] += mj
            return
        i = self.n
        t[2 * i] = t[2 * i + 1] = ticks
        e[i] = mj
        self.n += 1
        if self.n > self.max_buckets:
            self._merge_first()

    def total(self):
        return sum(self._mj[i] for i in range(self.n))

    def drain(self, clock):
        """(utc, mJ) oldest first, each stamped at its bucket's last tick;
        the buffer is empty once all have been taken."""
        t, e = self._t, self._mj
        for i in range(self.n):
            yield clock.utc(t[2 * i + 1]), e[i]
        self.n = 0

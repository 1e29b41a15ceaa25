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
    def __init__(self, max_buckets=180):
        self.max_buckets = max_buckets
        self.buckets = []  # [start ticks, end ticks, mJ], oldest first
        self.merged = 0

    def add(self, ticks, mj):
        b = self.buckets
        # Never older than MAX_AGE_MS: the energy moves to the next minute
        # (or, alone, to now), far before tick differences could wrap.
        while b and time.ticks_diff(ticks, b[0][1]) > MAX_AGE_MS:
            if len(b) > 1:
                b[1][2] += b[0][2]
                del b[0]
            else:
                b[0][0] = b[0][1] = ticks
            self.merged += 1
        if b and time.ticks_diff(ticks, b[-1][0]) < BUCKET_MS:
            b[-1][1] = ticks
            b[-1][2] += mj
            return
        b.append([ticks, ticks, mj])
        if len(b) > self.max_buckets:
            b[1][2] += b[0][2]
            del b[0]
            self.merged += 1

    def total(self):
        return sum(x[2] for x in self.buckets)

    def drain(self, clock):
        """[(utc, mJ)] oldest first, each stamped at its bucket's last tick."""
        out = [(clock.utc(end), mj) for _, end, mj in self.buckets]
        self.buckets = []
        return out

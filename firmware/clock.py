# Wall-clock time for a board that learns it over the network (NTP).
#
# Until the clock is synchronised, nothing may be stamped with a time:
# energy is held in a PreSyncBuffer keyed by the monotonic tick counter,
# one bucket per minute. Once the clock is known, each bucket's end is
# converted to UTC and handed to the register, which then closes intervals
# at the right wall-clock boundaries. A reading is never stamped with a
# wrong time, and no energy is dropped: when the buffer is full the two
# oldest buckets merge (the energy moves to the later bucket's time).
# ticks_ms wraps after about 12 days, and differences are only exact up to
# half that: a board that cannot reach NTP for six days merges, it does not
# guess.
import time

BUCKET_MS = 60000


class Clock:
    def __init__(self, ticks_ms=time.ticks_ms):
        self._ticks = ticks_ms
        self._base_utc = None
        self._base_ticks = None

    @property
    def synced(self):
        return self._base_utc is not None

    def sync(self, utc_s):
        self._base_ticks = self._ticks()
        self._base_utc = utc_s

    def utc(self, ticks=None):
        """UTC seconds at `ticks` (default: now); None before the first sync."""
        if self._base_utc is None:
            return None
        if ticks is None:
            ticks = self._ticks()
        return self._base_utc + time.ticks_diff(ticks, self._base_ticks) // 1000


class PreSyncBuffer:
    def __init__(self, max_buckets=180):
        self.max_buckets = max_buckets
        self.buckets = []  # [start ticks, end ticks, mJ], oldest first
        self.merged = 0

    def add(self, ticks, mj):
        b = self.buckets
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

# The energy register: cumulative Wh plus the sub-Wh remainder, the
# interval that is open, and when it closes into a queued reading. Its
# state lives in the reading queue's file (readings, remainders and
# checkpoints of the open interval), so a restart resumes where it was.

MJ_PER_WH = 3600000  # sensors report energy in millijoules


class Register:
    """Cumulative energy in whole Wh plus the sub-Wh remainder, and the
    interval that is currently open."""

    def __init__(self, queue, interval_s, checkpoint_s=120, mark=None):
        self.queue = queue
        # A sensor with its own absolute register (P1) gives it here; saved
        # with every checkpoint, it lets a restart count the energy of the
        # gap exactly (sensor_mark, below).
        self.mark = mark
        self.interval_s = interval_s
        # The open interval's energy goes to flash every checkpoint_s (when
        # it changed): a restart loses at most that long's energy, for at
        # most 86400 / checkpoint_s short appends a day (docs/hardware.md).
        self.checkpoint_s = checkpoint_s
        # The sub-Wh energy carried past the last reading survives a restart
        # with it (energy is never dropped; docs/protocol.md).
        self.residual_mj = queue.residual_mj
        last = queue.last
        if last is None:
            self.seq, self.wh, self.interval_end = 0, 0, None
        else:
            self.seq, self.wh, self.interval_end = last[0] + 1, last[3], last[1] + interval_s
        self.wh_at_last_close = self.wh
        self.saved = None  # what the last checkpoint holds
        self.saved_at = None
        self.sensor_mark = None  # the sensor's register that the saved energy reaches
        if queue.open is not None:  # the open interval, as last checkpointed
            end, wh, self.residual_mj, self.saved_at, mark = queue.open
            self.interval_end, self.wh = end, self.wh + wh
            self.saved = (end, wh, self.residual_mj)
            if mark >= 0:
                self.sensor_mark = mark

    @property
    def resume_after(self):
        """Time of the last sample already counted (in a queued reading or
        the open interval's checkpoint): a replaying sensor resumes after it."""
        if self.queue.open is not None:
            return self.queue.open[3]
        return None if self.queue.last is None else self.queue.last[1]

    def checkpoint(self, now):
        """Save the open interval if checkpoint_s passed and it changed."""
        if self.interval_end is None or (self.saved_at is not None and
                                         now - self.saved_at < self.checkpoint_s):
            return False
        state = (self.interval_end, self.wh - self.wh_at_last_close, self.residual_mj)
        if state == self.saved:
            return False
        self.queue.checkpoint(state[0], state[1], state[2], now, self._mark())
        self.saved, self.saved_at = state, now
        return True

    def _mark(self):
        m = self.mark() if self.mark is not None else None
        return -1 if m is None else m

    def add(self, mj):
        self.residual_mj += mj
        whole = self.residual_mj // MJ_PER_WH
        self.wh += whole
        self.residual_mj -= whole * MJ_PER_WH

    def resync(self, gw_seq, gw_end):
        """The gateway's position, from its Response #1: the newest reading it
        stored (seq, interval end). A meter whose flash was wiped starts
        counting at 0 again; its new readings would be dropped as duplicates,
        so they are renumbered to follow the gateway's. Readings the gateway
        already has (an acknowledgement lost) keep their numbers."""
        shift = self.queue.renumber(gw_seq, gw_end)
        if self.queue.last is not None:
            self.seq = max(self.seq, self.queue.last[0] + 1)
        if self.seq <= gw_seq:
            shift = max(shift, gw_seq + 1 - self.seq)
            self.seq = gw_seq + 1
        return shift

    def close_due(self, now):
        """Close the open interval if its end has passed; returns how many
        readings were queued (0 or 1)."""
        step = self.interval_s
        if self.interval_end is None:
            # The first interval ends at the first boundary at or after now.
            self.interval_end = ((now - 1) // step + 1) * step
        if now < self.interval_end:
            return 0
        energy = self.wh - self.wh_at_last_close
        # After a gap (power off) realign to the wall clock rather than
        # inventing zero readings for intervals that were not measured.
        nxt = self.interval_end + step
        nxt = nxt if now < nxt else (now // step + 1) * step
        mark = self._mark()
        then = (nxt, 0, self.residual_mj, now, mark) if mark >= 0 else None
        self.queue.append(self.seq, self.interval_end, energy, self.wh, self.residual_mj, then)
        if then is not None:
            self.saved, self.saved_at = then[:3], now
        self.seq += 1
        self.wh_at_last_close = self.wh
        self.interval_end = nxt
        return 1

# The meter's health, sent with every request (key 5 of the payload, see
# docs/protocol.md) so that an operator can tell a meter that reboots,
# runs out of memory or loses its signal from one that is merely quiet.
#
# Nothing here may follow consumption: the gateway forwards these values
# to the utility in the clear. So the pulse count (which is the energy
# register) is never sent; a sensor reports only the share of its inputs
# it rejected, per mille, and P1 the telegrams it received, which arrive
# at a fixed rate whatever the household does.
import gc
import time

import oscore

RESET, UPTIME, HEAP, RSSI, SEQ_LEFT, REJECTS, TELEGRAMS, MERGES = range(8)


class Telemetry:
    def __init__(self, keys, queue, board):
        self.keys = keys
        self.queue = queue
        self.board = board
        self.uptime_ms = 0
        self._last = time.ticks_ms()

    def __call__(self):
        # Uptime is summed from tick differences, each far shorter than the
        # tick counter's wrap (2^30 ms on the ESP32), so it never jumps back.
        now = time.ticks_ms()
        self.uptime_ms += time.ticks_diff(now, self._last)
        self._last = now
        ctx = self.keys.ctx
        # Free after a collection: garbage is room the allocator takes back
        # whenever it needs it, so it counts as free (the operator's alert).
        gc.collect()
        t = {UPTIME: self.uptime_ms // 1000, HEAP: gc.mem_free(), MERGES: self.queue.merges,
             SEQ_LEFT: oscore.MAX_SEQNO - ctx.seqno.value if ctx is not None else 0}
        if hasattr(self.board, "health"):
            self.board.health(t)  # reset cause, RSSI, the sensor's counters
        return t

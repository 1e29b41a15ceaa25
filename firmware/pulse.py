# S0 / LED pulse counter: one pulse per fixed amount of energy (the meter's
# "impulses per kWh", e.g. 1000 imp/kWh = 1 Wh per pulse). The pin
# interrupt only counts; it allocates nothing, as MicroPython's hard
# interrupts require. Contact bounce shorter than debounce_ms is ignored.
import time

MJ_PER_KWH = 3600000000


class PulseCounter:
    def __init__(self, pin, imp_per_kwh, debounce_ms=20, trigger=None, ticks_ms=time.ticks_ms):
        if imp_per_kwh <= 0:
            raise ValueError("impulses per kWh must be positive")
        self.imp_per_kwh = imp_per_kwh
        self.debounce_ms = debounce_ms
        self._ticks = ticks_ms
        self.pulses = 0
        self.bounces = 0
        self._last = None
        self._reported_mj = 0
        if pin is not None:
            pin.irq(handler=self._irq, trigger=trigger if trigger is not None else pin.IRQ_FALLING)

    def _irq(self, pin):
        t = self._ticks()
        if self._last is not None and time.ticks_diff(t, self._last) < self.debounce_ms:
            self.bounces += 1
            return
        self._last = t
        self.pulses += 1

    def rejects_permille(self):
        """Edges ignored as bounce, per mille of all edges: a worn contact or
        a noisy line shows here, and the share says nothing of the energy."""
        return self.bounces * 1000 // ((self.pulses + self.bounces) or 1)

    def read(self):
        """Energy in mJ since the previous read. Computed from the running
        total, so a non-integer mJ per pulse never loses a remainder."""
        total = self.pulses * MJ_PER_KWH // self.imp_per_kwh
        delta = total - self._reported_mj
        self._reported_mj = total
        return delta

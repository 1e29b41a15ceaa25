# S0 / LED pulse counting: one pulse per fixed amount of energy (the meter's
# "impulses per kWh", e.g. 1000 imp/kWh = 1 Wh per pulse).
#
# HardwarePulses (the default on an ESP32) counts in the PCNT peripheral
# through machine.Counter: the hardware sees every edge, whatever the CPU is
# doing (a flash write, a Wi-Fi call), and its glitch filter drops spikes
# shorter than filter_ns. PulseCounter counts in a pin interrupt instead;
# on the ESP32 that interrupt is soft, so edges that wait behind a flash
# write are stamped late and can be taken for bounce, and more than a few
# pending ones are dropped. It stays for mechanical (reed) contacts, whose
# bounce lasts milliseconds, longer than any hardware filter.
import time

MJ_PER_KWH = 3600000000


class _Pulses:
    def __init__(self, imp_per_kwh):
        if imp_per_kwh <= 0:
            raise ValueError("impulses per kWh must be positive")
        self.imp_per_kwh = imp_per_kwh
        self.pulses = 0
        self._reported_mj = 0

    def _energy(self):
        # From the running total, so a non-integer mJ per pulse never loses
        # a remainder.
        total = self.pulses * MJ_PER_KWH // self.imp_per_kwh
        delta = total - self._reported_mj
        self._reported_mj = total
        return delta


class HardwarePulses(_Pulses):
    """`counter`: a started machine.Counter (value() is the count since it
    was started, widened past the 16-bit hardware counter by the port)."""

    def __init__(self, counter, imp_per_kwh):
        super().__init__(imp_per_kwh)
        self.counter = counter
        self._last = counter.value()

    def read(self):
        """Energy in mJ since the previous read."""
        v = self.counter.value()
        # Never reset: a reset between reading and clearing could drop an
        # edge. A count that went down means the unit was re-initialised.
        self.pulses += v - self._last if v >= self._last else v
        self._last = v
        return self._energy()


class PulseCounter(_Pulses):
    """Counts in a pin interrupt that allocates nothing, as MicroPython's
    hard interrupts require; contact bounce shorter than debounce_ms is
    ignored."""

    def __init__(self, pin, imp_per_kwh, debounce_ms=20, trigger=None, ticks_ms=time.ticks_ms):
        super().__init__(imp_per_kwh)
        self.debounce_ms = debounce_ms
        self._ticks = ticks_ms
        self.bounces = 0
        self._last = None
        if pin is not None:
            pin.irq(handler=self._irq, trigger=trigger if trigger is not None else pin.IRQ_FALLING)

    def _irq(self, pin):
        t = self._ticks()
        # A difference below 0 is not bounce: the last pulse is over 6.2
        # days old and the 2^30 ms tick counter's difference wrapped.
        if self._last is not None and 0 <= time.ticks_diff(t, self._last) < self.debounce_ms:
            self.bounces += 1
            return
        self._last = t
        self.pulses += 1

    def rejects_permille(self):
        """Edges ignored as bounce, per mille of all edges: a worn contact or
        a noisy line shows here, and the share says nothing of the energy."""
        return self.bounces * 1000 // ((self.pulses + self.bounces) or 1)

    def read(self):
        """Energy in mJ since the previous read."""
        return self._energy()

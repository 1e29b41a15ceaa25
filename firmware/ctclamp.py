# CT clamp: current from an ADC burst over whole mains cycles.
#
# The clamp's secondary drives a burden resistor biased at mid-rail, so the
# ADC sees a sine around a DC offset. A burst of `cycles` whole cycles at
# `per_cycle` samples each is taken; the mean of the burst is the DC offset
# (exact over whole cycles), and the RMS of what remains is the current.
# Integer arithmetic throughout (the ESP32 has single-precision floats
# only); calibration comes from the board settings:
#   ua_per_count  microamps of primary current per ADC count (read_u16 scale)
#   volts_mv      nominal mains voltage, e.g. 230000
#   pf_permille   assumed power factor x 1000 (1000 for resistive loads)
import math
import time


def isqrt(n):
    """Integer square root: exact floor for any n >= 0. A float estimate
    (single precision on the ESP32) padded to be above the root, then
    Newton steps down to the exact value."""
    if n < 2:
        return n
    x = int(math.sqrt(n) * 1.01) + 1
    while True:
        y = (x + n // x) // 2
        if y >= x:
            return x
        x = y


class CTClamp:
    def __init__(self, adc, ua_per_count, volts_mv=230000, pf_permille=1000, mains_hz=50,
                 per_cycle=40, cycles=10, pace=True, ticks_ms=time.ticks_ms):
        self.adc = adc
        self.ua_per_count = ua_per_count
        self.volts_mv = volts_mv
        self.pf_permille = pf_permille
        self.n = per_cycle * cycles
        self.period_us = 1000000 // (mains_hz * per_cycle)
        self.pace = pace
        self._ticks = ticks_ms
        self._last_ms = None
        self.last_ma = 0

    def current_ma(self):
        """RMS current in mA from one burst."""
        read = self.adc.read_u16
        s = s2 = 0
        t = time.ticks_us()
        for _ in range(self.n):
            x = read()
            s += x
            s2 += x * x
            if self.pace:
                t = time.ticks_add(t, self.period_us)
                while time.ticks_diff(t, time.ticks_us()) > 0:
                    pass
        n = self.n
        var_n2 = n * s2 - s * s  # n^2 x variance, exact
        rms_mcounts = isqrt(var_n2 * 1000000) // n  # RMS in milli-counts
        self.last_ma = rms_mcounts * self.ua_per_count // 1000000
        return self.last_ma

    def power_mw(self):
        return self.volts_mv * self.current_ma() // 1000 * self.pf_permille // 1000

    def read(self):
        """Energy in mJ since the previous read, at the power measured now."""
        p = self.power_mw()
        now = self._ticks()
        if self._last_ms is None:
            self._last_ms = now
            return 0
        elapsed = time.ticks_diff(now, self._last_ms)
        self._last_ms = now
        return p * elapsed // 1000

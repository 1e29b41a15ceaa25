# CT clamp: power from short bursts of whole mains cycles, taken every
# second across the interval, and energy as their sum over time.
#
# The clamp's secondary drives a burden resistor biased at mid-rail, so the
# ADC sees a sine around a DC offset. Each burst takes `cycles` whole
# cycles at `per_cycle` samples each; the mean of the burst is the DC
# offset (exact over whole cycles) and the RMS of what remains is the
# current. Samples are read with read_uv(), which applies the chip's own
# calibration; raw counts at 11 dB attenuation are neither linear nor equal
# from chip to chip. Even calibrated, the ESP32's ADC is linear only between
# about 150 and 2450 mV at 11 dB: the burden is sized so the swing stays
# inside (docs/hardware.md), and a burst that left the range is counted in
# `clipped` so that a wrong burden shows in the console.
# Integer arithmetic throughout (the ESP32 has single-precision floats
# only); calibration comes from the board settings:
#   ma_per_v      mA of primary current per volt RMS across the burden
#   volts_mv      nominal mains voltage, e.g. 230000
#   pf_permille   assumed power factor x 1000 (1000 for resistive loads)
import math
import time

LINEAR_UV = (150000, 2450000)  # the 11 dB range where read_uv is linear


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
    # The board calls tick() this often between samples: a load that runs
    # for a few seconds is seen, where one burst per sample would miss it
    # or stretch it over the whole sample.
    tick_ms = 1000

    def __init__(self, adc, ma_per_v, volts_mv=230000, pf_permille=1000, mains_hz=50,
                 per_cycle=40, cycles=2, pace=True, ticks_ms=time.ticks_ms):
        self.adc = adc
        self.ma_per_v = ma_per_v
        self.volts_mv = volts_mv
        self.pf_permille = pf_permille
        self.n = per_cycle * cycles
        self.period_us = 1000000 // (mains_hz * per_cycle)
        self.pace = pace
        self._ticks = ticks_ms
        self._last_ms = None
        self._mj = 0
        self.last_ma = 0
        self.bursts = 0
        self.clipped = 0

    def current_ma(self):
        """RMS current in mA from one burst of whole cycles."""
        read = self.adc.read_uv
        s = s2 = 0
        lo, hi = LINEAR_UV
        low = high = False
        t = time.ticks_us()
        for _ in range(self.n):
            x = read()
            s += x
            s2 += x * x
            if x < lo:
                low = True
            elif x > hi:
                high = True
            if self.pace:
                t = time.ticks_add(t, self.period_us)
                while time.ticks_diff(t, time.ticks_us()) > 0:
                    pass
        self.bursts += 1
        if low or high:
            self.clipped += 1
        n = self.n
        rms_uv = isqrt(n * s2 - s * s) // n  # sqrt(n^2 x variance) / n, exact
        self.last_ma = rms_uv * self.ma_per_v // 1000000
        return self.last_ma

    def power_mw(self):
        return self.volts_mv * self.current_ma() // 1000 * self.pf_permille // 1000

    def tick(self):
        """Measure now, and count the power measured for the time since the
        previous measurement."""
        p = self.power_mw()
        now = self._ticks()
        if self._last_ms is not None:
            self._mj += p * time.ticks_diff(now, self._last_ms) // 1000
        self._last_ms = now

    def read(self):
        """Energy in mJ since the previous read."""
        self.tick()
        mj, self._mj = self._mj, 0
        return mj

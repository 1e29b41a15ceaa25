# Synthetic CT-clamp ADC signals of known RMS current, shared by the sensor
# tests and the accuracy measurement in `make bench`.
import math


class WaveADC:
    """read_u16() of a 12-bit ADC (like the ESP32's, scaled to 16 bits)
    watching a mid-rail-biased burden resistor: a mains sine of `amps` RMS,
    an optional 3rd harmonic and deterministic pseudo-noise."""

    def __init__(self, amps, ua_per_count, mains_hz=50.0, rate_hz=2000, third=0.0,
                 noise_counts=0, offset=32768, seed=1):
        self.peak = amps * 1e6 * math.sqrt(2) / ua_per_count  # counts
        self.w = 2 * math.pi * mains_hz / rate_hz
        self.third = third
        self.noise = noise_counts
        self.offset = offset
        self.i = 0
        self.state = seed

    def true_rms_amps(self, ua_per_count):
        # RMS of fundamental plus 3rd harmonic (orthogonal): sqrt(1 + h^2)
        return self.peak * ua_per_count / 1e6 / math.sqrt(2) * math.sqrt(1 + self.third ** 2)

    def read_u16(self):
        x = self.w * self.i
        self.i += 1
        v = self.offset + self.peak * (math.sin(x) + self.third * math.sin(3 * x))
        if self.noise:
            self.state = (self.state * 1103515245 + 12345) & 0x7FFFFFFF
            v += (self.state % (2 * self.noise + 1)) - self.noise
        v = min(65535, max(0, int(v)))
        return v & 0xFFF0  # 12 bits of resolution

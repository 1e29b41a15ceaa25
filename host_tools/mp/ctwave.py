# Synthetic CT-clamp ADC signals of known RMS current, shared by the sensor
# tests and the accuracy measurement in `make bench`.
import math

STEP_UV = 806  # one 12-bit step over the ESP32's 3.3 V span at 11 dB
RANGE_UV = (150000, 2450000)  # where the real ADC is linear; it bends outside


class WaveADC:
    """read_uv() of an ESP32 ADC at 11 dB watching a burden resistor biased
    at mid-rail: a mains sine of `amps` RMS (settable between bursts), an
    optional 3rd harmonic and deterministic pseudo-noise, quantised to the
    ADC's step. Outside the linear range the reading saturates, as a real
    one flattens there."""

    def __init__(self, amps, ma_per_v, mains_hz=50.0, rate_hz=2000, third=0.0,
                 noise_uv=0, offset_uv=1650000, seed=1):
        self.ma_per_v = ma_per_v
        self.amps = amps
        self.w = 2 * math.pi * mains_hz / rate_hz
        self.third = third
        self.noise = noise_uv
        self.offset = offset_uv
        self.i = 0
        self.state = seed

    @property
    def peak_uv(self):
        return self.amps * 1e9 / self.ma_per_v * math.sqrt(2)

    def true_rms_amps(self):
        # RMS of fundamental plus 3rd harmonic (orthogonal): sqrt(1 + h^2)
        return self.amps * math.sqrt(1 + self.third ** 2)

    def read_uv(self):
        x = self.w * self.i
        self.i += 1
        v = self.offset + self.peak_uv * (math.sin(x) + self.third * math.sin(3 * x))
        if self.noise:
            self.state = (self.state * 1103515245 + 12345) & 0x7FFFFFFF
            v += (self.state % (2 * self.noise + 1)) - self.noise
        v = min(RANGE_UV[1] + 100000, max(RANGE_UV[0] - 100000, v))
        return int(v) // STEP_UV * STEP_UV

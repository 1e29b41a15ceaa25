# MicroPython script for `make bench`: the CT-clamp driver's error against
# synthetic waveforms of known RMS current; prints one table row per case.
import ctclamp
from ctwave import WaveADC

CAL = 90909  # mA per V: a 100 A : 50 mA clamp into 22 ohms, linear to about 45 A RMS


def error_pct(amps, **kw):
    adc = WaveADC(amps, CAL, **kw)
    ma = ctclamp.CTClamp(adc, CAL, pace=False).current_ma()
    truth = adc.true_rms_amps() * 1000
    return (ma - truth) * 100 / truth


for amps in (0.25, 0.5, 1, 2, 5, 10, 20, 45):
    print("CT %s %.3f %.3f %.3f" % (amps, error_pct(amps), error_pct(amps, mains_hz=50.5),
                                    error_pct(amps, third=0.2, noise_uv=2000, offset_uv=1500000)))

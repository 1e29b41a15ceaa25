# Sensor drivers through their thin hardware layer: fake pins, ADCs and
# UARTs with recorded or synthetic signals.
# mp-path: tests/firmware/fakes
import ctclamp
import p1
import pulse
from ctwave import WaveADC


def eq(a, b):
    if a != b:
        raise AssertionError("%r != %r" % (a, b))


class FakePin:
    IRQ_FALLING = 2

    def irq(self, handler=None, trigger=None):
        self.handler = handler


class FakeTicks:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def test_pulse_counter_counts_and_debounces():
    pin, ticks = FakePin(), FakeTicks()
    c = pulse.PulseCounter(pin, 1000, debounce_ms=20, ticks_ms=ticks)
    for t in (0, 3, 9, 500, 507, 1000, 1500, 1519, 1520):  # bounces 3, 9, 507, 1519
        ticks.t = t
        pin.handler(pin)
    eq(c.pulses, 5)
    eq(c.bounces, 4)
    eq(c.read(), 5 * 3600000)  # 1000 imp/kWh: 1 Wh = 3,600,000 mJ per pulse
    eq(c.read(), 0)


class _Time32:
    """ticks_diff as on an ESP32: ms that wrap at 2^30 (the 64-bit Unix
    port's wrap at 2^62)."""

    PERIOD = 1 << 30

    def ticks_diff(self, a, b):
        return (a - b + self.PERIOD // 2) % self.PERIOD - self.PERIOD // 2


def test_pulses_after_a_quiet_week_are_not_taken_for_bounce():
    pin, ticks = FakePin(), FakeTicks()
    real = pulse.time
    pulse.time = _Time32()
    try:
        c = pulse.PulseCounter(pin, 1000, debounce_ms=20, ticks_ms=ticks)
        ticks.t = 1000
        pin.handler(pin)
        for i in range(100):  # a week later (away, everything off), a pulse a second
            ticks.t = (1000 + 7 * 86400 * 1000 + i * 1000) % _Time32.PERIOD
            pin.handler(pin)
    finally:
        pulse.time = real
    eq((c.pulses, c.bounces), (101, 0))


def test_pulse_energy_exact_for_odd_constants():
    pin, ticks = FakePin(), FakeTicks()
    c = pulse.PulseCounter(pin, 7, debounce_ms=1, ticks_ms=ticks)
    got = 0
    for i in range(70):
        ticks.t = 10 * i
        pin.handler(pin)
        got += c.read()
    eq(got, 10 * 3600000000)  # 70 pulses at 7 imp/kWh = 10 kWh, no remainder lost


CAL = 90909  # mA per V: 100 A : 50 mA clamp into 22 ohms (docs/hardware.md)


def ct_error_permille(amps, **kw):
    adc = WaveADC(amps, CAL, **kw)
    ct = ctclamp.CTClamp(adc, CAL, pace=False)
    ma = ct.current_ma()
    truth = adc.true_rms_amps() * 1000
    return abs(ma - truth) * 1000 / truth


def test_ct_clamp_rms_accurate_on_whole_cycles():
    for amps in (1, 2, 10, 25, 45):
        e = ct_error_permille(amps)
        if e > 5:
            raise AssertionError("%s A: error %.2f permille" % (amps, e))


def test_ct_clamp_with_harmonic_noise_and_offset_drift():
    e = ct_error_permille(8, third=0.2, noise_uv=2000, offset_uv=1500000)
    if e > 10:
        raise AssertionError("error %.2f permille" % e)


def test_ct_energy_follows_a_load_that_runs_for_seconds():
    # A 2.3 kW kettle on for 3 s of a 10 s sample: bursts every second see
    # it; the old single burst per sample counted it for 0 s or 10 s.
    ticks = FakeTicks()
    adc = WaveADC(0, CAL)
    ct = ctclamp.CTClamp(adc, CAL, volts_mv=230000, pace=False, ticks_ms=ticks)
    eq(ct.read(), 0)  # the first measurement starts the clock
    total = 0
    for second in range(1, 21):  # two samples of 10 s
        ticks.t = second * 1000
        adc.amps = 10 if second in (4, 5, 6) else 0
        if second % 10:
            ct.tick()
        else:
            total += ct.read()
    truth = 3 * 2300 * 1000  # mJ: 2,300 W for 3 s
    if abs(total - truth) > truth // 100:
        raise AssertionError("%d mJ, truth %d" % (total, truth))
    eq(ct.bursts, 21)
    eq(ct.clipped, 0)


def test_ct_counts_bursts_outside_the_linear_range():
    ct = ctclamp.CTClamp(WaveADC(60, CAL), CAL, pace=False)  # past the 45 A the burden is for
    ct.current_ma()
    eq((ct.bursts, ct.clipped), (1, 1))
    ct.adc.amps = 40
    ct.current_ma()
    eq(ct.clipped, 1)


def test_isqrt_exact():
    for n in (0, 1, 2, 3, 4, 15, 16, 17, 10 ** 12, 10 ** 12 + 1, 2 ** 61 - 1, 10 ** 30):
        r = ctclamp.isqrt(n)
        if not (r * r <= n < (r + 1) * (r + 1)):
            raise AssertionError(n)


TELEGRAM_BODY = (b"/ISK5\\2M550T-1012\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(260101120000W)\r\n"
                 b"1-0:1.8.1(001234.567*kWh)\r\n1-0:1.8.2(000765.432*kWh)\r\n"
                 b"1-0:2.8.1(000012.001*kWh)\r\n1-0:2.8.2(000000.000*kWh)\r\n"
                 b"0-0:96.14.0(0002)\r\n1-0:1.7.0(00.512*kW)\r\n!")


def telegram(body=TELEGRAM_BODY):
    return body + b"%04X\r\n" % p1.crc16(body)


def test_p1_parse_and_crc():
    regs = p1.parse(telegram())
    eq(regs, {"1.8.1": 1234567, "1.8.2": 765432, "2.8.1": 12001, "2.8.2": 0})
    bad = bytearray(telegram())
    bad[40] ^= 0x01
    try:
        p1.parse(bytes(bad))
    except ValueError:
        return
    raise AssertionError("corrupted telegram accepted")


class FakeUART:
    def __init__(self, chunks):
        self.chunks = list(chunks)

    def read(self):
        return self.chunks.pop(0) if self.chunks else None


def test_p1_reader_streams_and_drops_corrupt_telegrams():
    t1 = telegram()
    t2 = telegram(TELEGRAM_BODY.replace(b"001234.567", b"001235.067"))
    corrupt = bytearray(telegram(TELEGRAM_BODY.replace(b"001234.567", b"001299.000")))
    corrupt[-8] ^= 0x02
    stream = b"noise" + t1 + bytes(corrupt) + t2
    r = p1.P1Reader(FakeUART([stream[i:i + 37] for i in range(0, len(stream), 37)]))
    got = 0
    for _ in range(40):
        got += r.read()
    eq((r.good, r.bad), (2, 1))
    eq(got, 500 * 3600000)  # 0.5 kWh between the two good telegrams


def test_pcnt_counts_every_pulse_behind_a_busy_cpu_and_filters_glitches():
    # 1,000 S0 pulses of 30 ms, each followed by a 5 us spike picked up on
    # the line, arriving while the CPU writes flash for 100 ms at a time.
    import machine

    counter = machine.Counter(0, None, edge=machine.Counter.FALLING, filter_ns=12000)
    hw = pulse.HardwarePulses(counter, 1000)
    # The soft pin interrupt of the same line: its handler runs only when
    # the CPU is free, so the edges it sees are stamped when it runs.
    pin, ticks = FakePin(), FakeTicks()
    soft = pulse.PulseCounter(pin, 1000, debounce_ms=20, ticks_ms=ticks)
    got = 0
    for i in range(1000):
        counter.pulse(30 * 10 ** 6)
        counter.pulse(5000)  # the spike: shorter than the filter
        ticks.t = (i // 4) * 100  # four pulses land inside each 100 ms flash write
        pin.handler(pin)
        pin.handler(pin)  # the spike, to a pin interrupt, is an edge too
        if i % 50 == 49:
            got += hw.read()
    eq(got, 1000 * 3600000)  # exactly 1 kWh
    eq(hw.pulses, 1000)
    if soft.pulses > 300:  # the soft path lost most of them as "bounce"
        raise AssertionError("soft IRQ kept %d pulses" % soft.pulses)


def test_pcnt_reinitialised_counter_does_not_go_backwards():
    import machine

    counter = machine.Counter(1, None, filter_ns=100000)
    eq(counter.filter_ns, machine.Counter.MAX_FILTER_NS)  # the hardware's longest
    hw = pulse.HardwarePulses(counter, 1000)
    for _ in range(5):
        counter.pulse(10 ** 7)
    eq(hw.read(), 5 * 3600000)
    counter.value(0)  # re-initialised under us
    counter.pulse(10 ** 7)
    eq(hw.read(), 3600000)  # the one pulse since, not a negative energy


def test_p1_polled_at_telegram_rate_never_overflows_the_uart():
    # DSMR 5: one telegram a second into a 2 KB receive buffer. Polled only
    # every 10 s, the buffer overflows and telegrams are cut; at tick_ms it
    # never holds more than one.
    class BoundedUART:
        def __init__(self):
            self.buf = b""
            self.lost = 0

        def feed(self, data):
            room = 2048 - len(self.buf)
            self.lost += max(0, len(data) - room)
            self.buf += data[:room]

        def read(self):
            data, self.buf = self.buf, b""
            return data or None

    def run(ticks):
        uart = BoundedUART()
        r = p1.P1Reader(uart)
        got = 0
        for second in range(60):
            wh = divmod(1234567 + second, 1000)
            uart.feed(telegram(TELEGRAM_BODY.replace(b"001234.567", b"%06d.%03d" % wh)))
            if ticks:
                for _ in range(1000 // p1.P1Reader.tick_ms):
                    r.tick()
            if second % 10 == 9:
                got += r.read()
        return uart.lost, r, got

    lost, r, got = run(ticks=True)
    eq((lost, r.bad, r.good), (0, 0, 60))
    eq(got, 59 * 3600000)  # 59 Wh after the first telegram
    lost, r, _ = run(ticks=False)  # read once per 10 s sample only
    if not lost or r.good + r.bad == 60:
        raise AssertionError("the slow poll lost nothing: the model proves nothing")

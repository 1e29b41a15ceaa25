# Time before and after NTP, and the ESP32 board layer on fake hardware.
# mp-path: boards/esp32 tests/firmware/fakes boards/unix
import json
import os
import time

import clock
import fsutil

TMP = os.getenv("GVTEST_TMP")


def eq(a, b):
    if a != b:
        raise AssertionError("%r != %r" % (a, b))


PERIOD = 1 << 30  # where ESP32 (and Unix-port) ticks_ms wraps


class Ticks:
    """A tick counter that wraps like the real one."""

    def __init__(self, t=1000):
        self.t = t

    def __call__(self):
        return self.t % PERIOD


class FakeRtc:
    """The real-time clock: keeps counting, whatever the ticks do."""

    def __init__(self, t=0):
        self.t = t

    def now(self):
        return self.t

    def set(self, utc):
        self.t = utc


T0 = 1767225600


def test_nothing_is_stamped_before_sync():
    rtc = FakeRtc(5)  # an RTC that never heard from NTP
    c = clock.Clock(rtc, Ticks())
    eq(c.utc(), None)
    eq(c.ntp(T0), True)
    rtc.t += 90
    eq(c.utc(), T0 + 90)


def test_time_survives_the_tick_wrap_without_ntp():
    # 6.2 days (2^29 ms) after the last NTP answer, a clock built on a tick
    # base jumped back 12.4 days. The RTC does not wrap.
    ticks, rtc = Ticks(0), FakeRtc()
    c = clock.Clock(rtc, ticks)
    c.ntp(T0)
    for day in range(1, 15):
        ticks.t += 86400 * 1000
        rtc.t += 86400
        eq(c.utc(), T0 + day * 86400)
    # A moment measured a minute ago, across the wrap, is still a minute ago.
    then = ticks()
    ticks.t += 60000
    rtc.t += 60
    eq(c.utc(then), rtc.t - 60)


def test_a_lying_ntp_server_cannot_move_the_clock_but_the_gateway_can():
    rtc = FakeRtc()
    c = clock.Clock(rtc, Ticks())
    eq(c.ntp(T0 - 86400 * 365), False)  # before 2026: not now
    eq(c.synced, False)
    eq(c.ntp(T0), True)
    eq(c.ntp(T0 + 3 * 86400), False)  # three days ahead: the utility's NTP lies
    eq(c.ntp(T0 - 3600), False)
    eq((c.utc(), c.refused), (T0, 3))
    eq(c.ntp(T0 + 30), True)  # ordinary drift is corrected
    eq(c.gateway(T0 + 60), False)  # the gateway agrees within the bound: nothing to do
    # The first NTP answer was a lie that the bound cannot catch; the
    # gateway's authenticated time corrects it.
    c2 = clock.Clock(FakeRtc(), Ticks())
    c2.ntp(T0 + 5 * 86400)
    eq(c2.gateway(T0), True)
    eq(c2.utc(), T0)
    eq(clock.Clock(FakeRtc(), Ticks()).gateway(T0), True)  # and sets a clock that has none


def test_presync_buckets_never_age_past_the_wrap():
    # NTP unreachable for 10 days: energy moves forward in time rather than
    # being stamped from a tick difference that wrapped.
    ticks = Ticks(0)
    buf = clock.PreSyncBuffer(max_buckets=5)
    for i in range(10 * 24):  # one sample an hour for 10 days
        ticks.t = i * 3600 * 1000
        buf.add(ticks(), 7)
    eq(buf.total(), 10 * 24 * 7)
    for _, end, _ in buf.buckets:
        if time.ticks_diff(ticks(), end) > clock.MAX_AGE_MS:
            raise AssertionError("a bucket is older than the bound")


def test_presync_energy_is_stamped_by_when_it_was_measured():
    ticks = Ticks(0)
    rtc = FakeRtc()
    c = clock.Clock(rtc, ticks)
    buf = clock.PreSyncBuffer()
    for i in range(30):  # 5 minutes of 10-second samples before NTP
        ticks.t = i * 10000
        buf.add(ticks.t, 100)
    ticks.t = 400000  # NTP answers 100 s after the last sample
    c.ntp(T0 + 400)  # so tick 0 was T0
    out = list(buf.drain(c))
    eq(sum(e for _, e in out), 3000)
    eq([t for t, _ in out], [1767225650, 1767225710, 1767225770, 1767225830, 1767225890])
    eq(list(buf.drain(c)), [])


def test_presync_buffer_is_bounded_and_keeps_energy():
    buf = clock.PreSyncBuffer(max_buckets=5)
    for i in range(50):
        buf.add(i * 60000, 7)
    eq(len(buf.buckets), 5)
    eq(buf.total(), 350)
    eq(buf.merged, 45)


def _esp32_dir(sensor):
    d = "%s/esp32-%s" % (TMP, sensor["type"])
    try:
        os.mkdir(d)
    except OSError:
        pass
    with open(d + "/settings.json", "w") as f:
        json.dump({"meter_id": "e1", "gateway_host": "127.0.0.1", "gateway_port": 5683,
                   "interval_s": 900, "board": {"chip": "esp32", "watchdog_ms": 60000},
                   "sensor": sensor}, f)
    with open(d + "/secrets.json", "w") as f:
        json.dump({"wifi_ssid": "home", "wifi_password": "pw"}, f)
    os.chdir(d)


class FakeNTP:
    def __init__(self, failures):
        self.failures = failures

    def time(self):
        if self.failures:
            self.failures -= 1
            raise OSError(110)
        return int(time.time())  # the Unix port's epoch is 1970


def test_esp32_board_buffers_until_ntp_then_yields_stamped_energy():
    import board as esp32_board
    import machine
    import network

    cwd = os.getcwd()
    try:
        _esp32_dir({"type": "pulse", "pin": 4, "imp_per_kwh": 1000, "sample_s": 0})
        network.WLAN.attempts_needed = 2  # Wi-Fi comes up on the second attempt
        b = esp32_board.Board(ntp=FakeNTP(failures=1))  # and NTP on the second try
        b._wifi_backoff = 0
        b.ntp_retry_ms = 0
        eq(b.sensor.counter.filter_ns, 12000)  # the PCNT's glitch filter is on
        for _ in range(3):  # 3 pulses (3 Wh) before the board knows the time
            b.sensor.counter.pulse(30 * 10 ** 6)
        gen = b.samples(None)
        utc, mj = next(gen)
        eq(b.clock.synced, True)
        eq(mj, 3 * 3600000)
        now = time.time()
        if not now - 5 <= utc <= now:
            raise AssertionError("stamped %d, now %d" % (utc, now))
        eq(next(gen)[1], 0)  # then live samples
        eq(machine.WDT.fed > 0, True)
    finally:
        os.chdir(cwd)


def test_esp32_board_updates_through_esp32_partition():
    # The board's three OTA calls, against the emulated esp32.Partition:
    # the next partition written and set to boot, a reset, the new image
    # confirmed with mark_app_valid_cancel_rollback().
    import board as esp32_board
    import machine
    import ota
    import partition
    from mptest_ota import Link, offer

    cwd = os.getcwd()
    try:
        _esp32_dir({"type": "pulse", "pin": 4, "imp_per_kwh": 1000, "sample_s": 0})
        for f in ("otadata.json", "ota_1.bin", "ota.json"):
            fsutil.remove(f)
        b = esp32_board.Board(ntp=FakeNTP(failures=0))
        blob = bytes(range(256)) * 20 + b"end"
        eq(ota.update(b, Link(blob), offer(blob), "0.1.0", b.log), True)
        d = partition.otadata()
        eq((d["boot"], d["state"]), ("ota_1", "new"))
        n = len(machine.resets)
        b.reboot()
        eq(len(machine.resets), n + 1)
        ota.confirm(b, "0.2.0")
        eq(partition.otadata()["state"], "valid")
    finally:
        os.chdir(cwd)


def test_esp32_sensor_choice_and_bad_settings():
    import board as esp32_board

    ct = esp32_board.make_sensor({"type": "ct", "pin": 34, "ma_per_v": 90909}, "esp32")
    eq(type(ct).__name__, "CTClamp")
    p1r = esp32_board.make_sensor({"type": "p1", "pin": 16}, "esp32c3")
    eq(p1r.uart.uid, 1)
    eq(type(esp32_board.make_sensor({"type": "pulse", "pin": 4, "imp_per_kwh": 800},
                                    "esp32")).__name__, "HardwarePulses")
    eq(type(esp32_board.make_sensor({"type": "pulse", "pin": 4, "imp_per_kwh": 800,
                                     "counter": "irq"}, "esp32")).__name__, "PulseCounter")
    for bad in ({"type": "ct", "pin": 25, "ma_per_v": 1}, {"type": "ct", "pin": 34},
                {"type": "laser"}):
        try:
            esp32_board.make_sensor(bad, "esp32")
        except SystemExit:
            continue
        raise AssertionError("accepted %r" % bad)


def test_esp32_telemetry_says_how_the_meter_is_but_not_what_it_measures():
    import board as esp32_board
    import machine
    import network
    from telemetry import HEAP, MERGES, REJECTS, RESET, RSSI, SEQ_LEFT, TELEGRAMS, UPTIME, Telemetry

    class Keys:
        ctx = None

    class Queue:
        merges = 2

    cwd = os.getcwd()
    try:
        _esp32_dir({"type": "pulse", "pin": 4, "imp_per_kwh": 1000, "debounce_ms": 20,
                    "counter": "irq"})
        machine.cause = machine.WDT_RESET
        network.WLAN.attempts_needed = 0
        b = esp32_board.Board(ntp=FakeNTP(failures=0))
        for _ in range(3):  # three pulses, each with one bounce 1 ms after it
            b.sensor._irq(None)
            time.sleep_ms(1)
            b.sensor._irq(None)
            time.sleep_ms(25)
        t = Telemetry(Keys(), Queue(), b)
        time.sleep_ms(1100)
        h = t()
        eq(h[RESET], machine.WDT_RESET)
        eq(h[RSSI], -67)
        eq(h[REJECTS], 500)  # 3 of 6 edges were bounce
        eq(h[MERGES], 2)
        eq(h[UPTIME], 1)
        eq(h[SEQ_LEFT], 0)  # no context yet
        eq(h[HEAP] > 0, True)
        eq(TELEGRAMS in h, False)  # a pulse meter has no telegrams
        eq(b.sensor.pulses, 3)
        # Nothing in it grows with the energy: more pulses, same values.
        for _ in range(20):
            b.sensor._irq(None)
            time.sleep_ms(21)
        h2 = t()
        eq(sorted(h2), sorted(h))
        eq(h2[REJECTS] < h[REJECTS], True)  # a share, and clean pulses lower it
        network.WLAN.rssi = -200  # a driver's nonsense stays in range
        eq(t()[RSSI], -128)
    finally:
        network.WLAN.rssi = -67
        os.chdir(cwd)


def test_esp32_board_lets_the_sensor_measure_between_samples():
    # A CT clamp measures every second, not once per 10 s sample.
    import board as esp32_board
    import network

    cwd = os.getcwd()
    try:
        _esp32_dir({"type": "ct", "pin": 34, "ma_per_v": 90909, "sample_s": 3,
                    "calibrate": True})
        network.WLAN.attempts_needed = 0
        b = esp32_board.Board(ntp=FakeNTP(failures=0))
        logs = []
        b.log = logs.append
        gen = b.samples(None)
        next(gen)
        next(gen)
        eq(b.sensor.bursts, 4)  # a burst per read, and one each second between the two
        eq([m for m in logs if m.startswith("calibrate:")],
           ["calibrate: 0 mA RMS now, 0 W over this sample"] * 2)  # the fake ADC: no current
    finally:
        os.chdir(cwd)


def test_esp32_secrets_move_into_nvs_at_first_boot():
    import board as esp32_board
    import esp32

    cwd = os.getcwd()
    try:
        esp32.store.clear()
        _esp32_dir({"type": "p1", "pin": 16})
        b = esp32_board.Board(ntp=FakeNTP(failures=0))
        eq(b.secrets["wifi_password"], "pw")
        eq(fsutil.exists("secrets.json"), False)  # gone from the filesystem
        eq(json.loads(esp32.store["gridveil"]["secrets"])["wifi_ssid"], "home")
        b2 = esp32_board.Board(ntp=FakeNTP(failures=0))  # the next boot reads NVS
        eq(b2.secrets, b.secrets)
        esp32.store.clear()  # NVS erased and no file: a clear stop, not a traceback
        try:
            esp32_board.Board(ntp=FakeNTP(failures=0))
        except SystemExit as e:
            eq("no secrets" in str(e), True)
        else:
            raise AssertionError("booted without secrets")
    finally:
        os.chdir(cwd)


def test_esp32_draws_no_oscore_nonce_before_the_radio_is_on():
    # ESP-IDF: the hardware RNG is truly random only while Wi-Fi (or BT) is
    # on; before, two boots could draw the same Request #1 nonce. The meter
    # builds its B.2 context only once the board says the radio is on.
    import board as esp32_board
    import esp32
    import network
    import rekey

    cwd = os.getcwd()
    try:
        esp32.store.clear()
        _esp32_dir({"type": "p1", "pin": 16})
        network.WLAN.attempts_needed = 1
        b = esp32_board.Board(ntp=FakeNTP(failures=0))
        b._wifi_backoff = 0
        k = rekey.Rekeying(b"s" * 16, b"salt", b"\x01", b"", random_ready=b.random_ready)
        eq(b.wlan.active(), False)
        eq(k.ctx, None)  # no nonce drawn: nothing could be sent anyway
        b.ensure_wifi()
        eq(b.wlan.active(), True)
        eq(len(k.ctx.id_context), 8)
    finally:
        os.chdir(cwd)


class _Time32:
    """The tick functions of an ESP32's time: ms that wrap at 2^30."""

    def __init__(self, t):
        self.t = t

    def ticks_ms(self):
        return self.t % PERIOD

    def ticks_add(self, a, b):
        return (a + b) % PERIOD

    def ticks_diff(self, a, b):
        return (a - b + PERIOD // 2) % PERIOD - PERIOD // 2

    def __getattr__(self, name):  # the rest of time, as it is
        return getattr(time, name)


def test_esp32_wifi_and_ntp_retry_after_a_week_up():
    # Wi-Fi up for a week, then lost: the board tries again at once (the
    # tick of its last attempt, a week old, must not read as the future).
    import board as esp32_board
    import network

    cwd = os.getcwd()
    real = esp32_board.time
    try:
        _esp32_dir({"type": "p1", "pin": 16})
        network.WLAN.attempts_needed = 1
        b = esp32_board.Board(ntp=FakeNTP(failures=0))
        esp32_board.time = t32 = _Time32(1000)
        b._next_wifi = b._next_ntp = t32.ticks_ms()
        eq(b.ensure_wifi(), False)  # the first attempt
        eq(b.ensure_wifi(), True)
        b.ensure_time()
        eq(b.clock.synced, True)
        t32.t += 7 * 86400 * 1000  # a week later the access point goes
        network.WLAN.attempts_needed = b.wlan.attempts + 2
        b.ensure_wifi()
        eq(b.wlan.attempts, network.WLAN.attempts_needed - 1)  # tried again at once
        b._ntp = FakeNTP(failures=1)  # and NTP is asked again once Wi-Fi is back
        t32.t += 61000
        b.ensure_wifi()
        eq(b.wlan.isconnected(), True)
        b.ensure_time()
        eq(b._ntp.failures, 0)
    finally:
        esp32_board.time = real
        os.chdir(cwd)


def test_esp32_ratchet_step_goes_to_nvs():
    import board as esp32_board
    import esp32

    cwd = os.getcwd()
    try:
        esp32.store.clear()
        _esp32_dir({"type": "p1", "pin": 16})
        b = esp32_board.Board(ntp=FakeNTP(failures=0))
        b.save_secret(b"\xab" * 16, 3)
        again = esp32_board.Board(ntp=FakeNTP(failures=0))  # the next boot, from NVS
        eq(again.secrets["master_secret"], "ab" * 16)
        eq(again.secrets["generation"], 3)
        eq(again.secrets["wifi_password"], "pw")
    finally:
        os.chdir(cwd)

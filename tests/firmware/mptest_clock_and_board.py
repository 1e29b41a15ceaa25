# Time before and after NTP, and the ESP32 board layer on fake hardware.
# mp-path: boards/esp32 tests/firmware/fakes
import json
import os
import time

import clock

TMP = os.getenv("GVTEST_TMP")


def eq(a, b):
    if a != b:
        raise AssertionError("%r != %r" % (a, b))


class Ticks:
    def __init__(self, t=1000):
        self.t = t

    def __call__(self):
        return self.t


def test_nothing_is_stamped_before_sync():
    ticks = Ticks()
    c = clock.Clock(ticks)
    eq(c.utc(), None)
    c.sync(1767225600)
    ticks.t += 90500
    eq(c.utc(), 1767225690)


def test_presync_energy_is_stamped_by_when_it_was_measured():
    ticks = Ticks(0)
    c = clock.Clock(ticks)
    buf = clock.PreSyncBuffer()
    for i in range(30):  # 5 minutes of 10-second samples before NTP
        ticks.t = i * 10000
        buf.add(ticks.t, 100)
    ticks.t = 400000  # NTP answers 100 s after the last sample
    c.sync(1767225600 + 400)  # so tick 0 was 1767225600
    out = buf.drain(c)
    eq(sum(e for _, e in out), 3000)
    eq([t for t, _ in out], [1767225650, 1767225710, 1767225770, 1767225830, 1767225890])
    eq(buf.drain(c), [])


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

    def settime(self):
        if self.failures:
            self.failures -= 1
            raise OSError(110)


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
        for _ in range(3):  # 3 pulses (3 Wh) before the board knows the time
            b.sensor._irq(None)
            time.sleep_ms(25)
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


def test_esp32_sensor_choice_and_bad_settings():
    import board as esp32_board

    ct = esp32_board.make_sensor({"type": "ct", "pin": 34, "ua_per_count": 2000}, "esp32")
    eq(type(ct).__name__, "CTClamp")
    p1r = esp32_board.make_sensor({"type": "p1", "pin": 16}, "esp32c3")
    eq(p1r.uart.uid, 1)
    for bad in ({"type": "ct", "pin": 25, "ua_per_count": 1}, {"type": "laser"}):
        try:
            esp32_board.make_sensor(bad, "esp32")
        except SystemExit:
            continue
        raise AssertionError("accepted %r" % bad)

# MicroPython script for `make bench`: the ESP32 board layer and the whole
# firmware on the Unix port, with fake hardware (tests/firmware/fakes) and
# a real gateway, on the paths that cost the most memory: a pre-sync buffer
# full to its bound (three hours measured before the clock was known) and
# a P1 port whose every poll finds a whole DSMR 5 telegram waiting (four
# times the real rate). The clock runs 900 times fast, so each 1 s sample
# closes a 15-minute interval and the readings go out as they would.
# usage: micropython esp32_run.py <live samples>
import gc
import sys
import time

import machine
import network

SPEED = 900
LINES = [b"/ISK5\\2M550T-1012", b"", b"1-3:0.2.8(50)", b"0-0:1.0.0(260101120000W)",
         b"0-0:96.1.1(4530303034303031353934373534343134)"]
LINES += [b"1-0:%s(000%03d.%03d*kWh)" % (k, i, i) for i, k in enumerate(
    (b"1.8.1", b"1.8.2", b"2.8.1", b"2.8.2"))]
LINES += [b"0-0:96.14.0(0002)", b"1-0:1.7.0(00.512*kW)", b"1-0:2.7.0(00.000*kW)",
          b"0-0:96.7.21(00010)", b"0-0:96.7.9(00002)", b"1-0:99.97.0()",
          b"1-0:32.32.0(00002)", b"1-0:32.36.0(00000)", b"0-0:96.13.0()",
          b"1-0:32.7.0(230.1*V)", b"1-0:31.7.0(002*A)", b"1-0:21.7.0(00.512*kW)",
          b"1-0:22.7.0(00.000*kW)", b"0-1:24.1.0(003)",
          b"0-1:96.1.0(4730303339303031363532303530323136)",
          b"0-1:24.2.1(260101120000W)(01234.567*m3)"]


class DsmrUart:
    """A P1 line with a new telegram at every read; the import register
    climbs 3 Wh each time."""
    INV_RX = machine.UART.INV_RX

    def __init__(self, uid, **kw):
        self.wh = 1234567

    def read(self):
        self.wh += 3
        body = b"\r\n".join(LINES).replace(b"1-0:1.8.1(000000.000*kWh)",
                                            b"1-0:1.8.1(%06d.%03d*kWh)" % divmod(self.wh, 1000))
        body += b"\r\n!"
        return body + b"%04X\r\n" % p1.crc16(body)


class FastRtc:
    def __init__(self):
        self.base = int(time.time())
        self.t0 = time.ticks_ms()

    def now(self):
        return self.base + time.ticks_diff(time.ticks_ms(), self.t0) * SPEED // 1000

    def set(self, utc):
        self.base, self.t0 = utc, time.ticks_ms()


class Ntp:
    def time(self):
        return int(time.time())


machine.UART = DsmrUart
network.WLAN.attempts_needed = 0  # Wi-Fi up at once
gc.collect()
# What this script and the fakes hold: C code on a real board, not heap.
print("ESP32BASE", gc.mem_alloc())

import board  # noqa: E402  (after the fakes are in place)
import meter  # noqa: E402
import p1  # noqa: E402

b = board.Board(ntp=Ntp(), rtc=FastRtc())
now = time.ticks_ms()
for i in range(b.presync.max_buckets):
    b.presync.add(time.ticks_add(now, (i - b.presync.max_buckets) * 60000), 3600000)
live = int(sys.argv[1])
samples = b.samples


def limited(after):
    n = -b.presync.max_buckets  # the buffered minutes come out first
    for s in samples(after):
        yield s
        n += 1
        if n >= live:
            return


b.samples = limited
ok = meter.run(b)
print("ESP32RUN", "ok" if ok else "queued", b.sensor.good, b.sensor.bad)
sys.exit(0 if ok else 3)

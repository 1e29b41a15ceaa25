# The ESP32 board layer: Wi-Fi, NTP time, watchdog, and the sensor chosen
# in settings.json. Everything device-specific is here; the firmware in
# firmware/ is the same on every board. Settings (settings.json) and
# secrets (secrets.json, moved into NVS at first boot: secretstore.py) are
# separate; see docs/hardware.md.
import os
import time

import clock
import fsutil
import machine
import network
import pins
import secretstore
import telemetry

HINT = "run `gridveil deploy` again"
EPOCH_TO_UNIX = -time.mktime((1970, 1, 1, 0, 0, 0, 0, 0))  # 0, or 946684800 on 2000-epoch ports


def make_sensor(cfg, chip):
    kind = cfg.get("type")
    if kind == "pulse":
        import pulse

        pin = machine.Pin(cfg["pin"], machine.Pin.IN, machine.Pin.PULL_UP)
        if cfg.get("counter", "pcnt") == "irq":  # a reed contact: bounce lasts milliseconds
            return pulse.PulseCounter(pin, cfg["imp_per_kwh"], cfg.get("debounce_ms", 20))
        if not hasattr(machine, "Counter"):
            raise SystemExit("board: this MicroPython has no machine.Counter (the PCNT); flash"
                             " v1.26 or later, or set \"counter\": \"irq\"")
        # S0 pulses last 30 ms or more (IEC 62053-31); the filter drops
        # spikes below its longest setting, about 12.8 us on the ESP32.
        c = machine.Counter(cfg.get("unit", 0), pin, edge=machine.Counter.FALLING,
                            filter_ns=cfg.get("filter_ns", 12000))
        return pulse.HardwarePulses(c, cfg["imp_per_kwh"])
    if kind == "ct":
        import ctclamp

        if cfg["pin"] not in pins.CHIPS[chip]["adc_pins"]:
            raise SystemExit("board: pin %d has no ADC1 channel on %s" % (cfg["pin"], chip))
        if "ma_per_v" not in cfg:
            raise SystemExit("board: a CT sensor needs ma_per_v (docs/hardware.md, calibration)")
        adc = machine.ADC(machine.Pin(cfg["pin"]), atten=machine.ADC.ATTN_11DB)
        return ctclamp.CTClamp(adc, cfg["ma_per_v"], cfg.get("volts_mv", 230000),
                               cfg.get("pf_permille", 1000), cfg.get("mains_hz", 50))
    if kind == "p1":
        import p1

        uart = machine.UART(cfg.get("uart", pins.CHIPS[chip]["p1_uart"]), baudrate=115200,
                            rx=cfg["pin"], invert=machine.UART.INV_RX, rxbuf=2048)
        return p1.P1Reader(uart)
    raise SystemExit("board: sensor type must be pulse, ct or p1, not %r" % kind)


class Rtc:
    """The ESP32's real-time clock in Unix seconds. It keeps counting across
    the tick counter's wrap (and across a soft reset)."""

    def __init__(self, rtc=None):
        self._rtc = rtc or machine.RTC()

    def now(self):
        return time.time() + EPOCH_TO_UNIX

    def set(self, utc):
        tm = time.gmtime(utc - EPOCH_TO_UNIX)
        self._rtc.datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))


def _waiting(deadline, longest_ms):
    """Whether a wait set at most `longest_ms` ahead is still running. A
    deadline further ahead than that is one long past whose tick difference
    wrapped (ticks_ms wraps every 2^30 ms, 12.4 days, on an ESP32): due."""
    return 0 < time.ticks_diff(deadline, time.ticks_ms()) <= longest_ms


class Board:
    name = "esp32"

    def __init__(self, wlan=None, ntp=None, rtc=None):
        self.settings = fsutil.load_json("settings.json", HINT)
        self.secrets = secretstore.load(HINT)
        b = self.settings.get("board", {})
        self.chip = b.get("chip") or pins.detect(os.uname().machine)
        self.wdt = machine.WDT(timeout=b.get("watchdog_ms", 120000))
        self.reset_cause = machine.reset_cause()
        self.clock = clock.Clock(rtc or Rtc())
        self.presync = clock.PreSyncBuffer()
        self.sensor = make_sensor(self.settings["sensor"], self.chip)
        self.wlan = wlan or network.WLAN(network.STA_IF)
        self._ntp = ntp
        self._wifi_backoff = 1000
        self.ntp_retry_ms = b.get("ntp_retry_ms", 10000)
        self._next_wifi = time.ticks_ms()
        self._next_ntp = time.ticks_ms()

    def path(self, name):
        return name

    def save_secret(self, secret, generation):
        """The ratchet's next master secret, in NVS in place of the old one."""
        from binascii import hexlify

        self.secrets["master_secret"] = hexlify(secret).decode()
        self.secrets["generation"] = generation
        secretstore.save(self.secrets)

    def random_ready(self):
        """os.urandom is the hardware RNG, but truly random only while the
        radio is on (ESP-IDF: "if the RF subsystem is not enabled, the
        hardware RNG produces pseudo-random numbers"): no OSCORE agreement
        draws its nonce before that, so no two boots can draw the same."""
        return self.wlan.active() or self.wlan.isconnected()

    def log(self, msg):
        t = self.clock.utc()
        print("[%s] %s" % ("%d" % t if t is not None else "no-time", msg))

    def idle(self):
        self.wdt.feed()

    def ensure_wifi(self):
        if self.wlan.isconnected():
            self._wifi_backoff = 1000
            return True
        now = time.ticks_ms()
        if _waiting(self._next_wifi, 60000):
            return False
        self.log("Wi-Fi: connecting to %s" % self.secrets["wifi_ssid"])
        self.wlan.active(True)
        try:
            self.wlan.connect(self.secrets["wifi_ssid"], self.secrets["wifi_password"])
        except OSError as e:
            self.log("Wi-Fi: connect failed: %s" % e)
        self._next_wifi = time.ticks_add(now, self._wifi_backoff)
        self._wifi_backoff = min(self._wifi_backoff * 2, 60000)
        return False

    def ensure_time(self):
        now = time.ticks_ms()
        if _waiting(self._next_ntp, max(6 * 3600 * 1000, self.ntp_retry_ms)) \
                or not self.wlan.isconnected():
            return
        ntp = self._ntp
        if ntp is None:
            import ntptime as ntp
        try:
            # time(), not settime(): the answer is checked before it is used.
            t = ntp.time() + EPOCH_TO_UNIX
        except (OSError, OverflowError, IndexError) as e:
            self.log("NTP failed (%s); retrying" % e)
            self._next_ntp = time.ticks_add(now, self.ntp_retry_ms)
            return
        first = not self.clock.synced
        if not self.clock.ntp(t):
            self.log("NTP answered a time %d s away from this clock's; refused"
                     % (t - (self.clock.utc() or 0)) if self.clock.synced else
                     "NTP answered a time before 2026; refused")
            self._next_ntp = time.ticks_add(now, self.ntp_retry_ms)
            return
        if first:
            self.log("clock set from NTP; %d mJ measured before are stamped now"
                     % self.presync.total())
        self._next_ntp = time.ticks_add(now, 6 * 3600 * 1000)

    def health(self, t):
        """This board's part of the telemetry (firmware/telemetry.py)."""
        t[telemetry.RESET] = self.reset_cause
        if self.wlan.isconnected():
            try:
                t[telemetry.RSSI] = max(-128, min(0, self.wlan.status("rssi")))
            except (OSError, ValueError, TypeError):
                pass  # a driver without RSSI: leave it out
        s = self.sensor
        if hasattr(s, "rejects_permille"):
            t[telemetry.REJECTS] = s.rejects_permille()
        if hasattr(s, "good"):
            t[telemetry.TELEGRAMS] = s.good + s.bad

    def gateway_time(self, t):
        """The gateway's clock, from a verified (OSCORE) response."""
        before = self.clock.utc()
        if self.clock.gateway(t):
            self.log("clock set from the gateway's authenticated time (%s s off)"
                     % ("unknown" if before is None else t - before))

    # Updates over the air (firmware/ota.py). The firmware must be built for
    # an OTA partition table with rollback on (docs/hardware.md).
    def ota_partition(self):
        import esp32

        return esp32.Partition(esp32.Partition.RUNNING).get_next_update()

    def ota_confirm(self):
        import esp32

        try:
            esp32.Partition.mark_app_valid_cancel_rollback()
        except OSError as e:  # -261: built without CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
            self.log("no rollback in this MicroPython build (%s): updates cannot be undone"
                     % e.args[0])

    def reboot(self):
        machine.reset()

    def samples(self, after):
        """(UTC seconds, mJ) every sample_s; energy from before the first
        NTP sync comes out first, stamped by the tick it was measured at."""
        step_ms = self.settings["sensor"].get("sample_s", 10) * 1000
        calibrate = self.settings["sensor"].get("calibrate", False)
        while True:
            self.wdt.feed()
            self.ensure_wifi()
            self.ensure_time()
            mj = self.sensor.read()
            t = time.ticks_ms()
            if calibrate:  # to the USB console only (docs/hardware.md, calibrating)
                self.log("calibrate: %d mA RMS now, %d W over this sample"
                         % (getattr(self.sensor, "last_ma", -1), mj // step_ms))
            if self.clock.synced:
                for utc, e in self.presync.drain(self.clock):
                    yield utc, e
                yield self.clock.utc(t), mj
            else:
                self.presync.add(t, mj)
            # Between samples the sensor gets its own pace: a CT clamp
            # measures every second, P1 is read as its telegrams arrive.
            tick = getattr(self.sensor, "tick", None)
            pace = getattr(self.sensor, "tick_ms", 1000)
            deadline = time.ticks_add(t, step_ms)
            while time.ticks_diff(deadline, time.ticks_ms()) > 0:
                self.wdt.feed()
                time.sleep_ms(min(pace, max(0, time.ticks_diff(deadline, time.ticks_ms()))))
                if tick is not None and time.ticks_diff(deadline, time.ticks_ms()) > 0:
                    tick()


def crashed(e):
    print("[crash] %s: %s; restarting" % (type(e).__name__, e))
    machine.reset()


def finish(ok):
    # A live sensor never ends; if it does, restart rather than sit idle.
    machine.reset()

# The emulator board: the MicroPython Unix port standing in for an ESP32.
# Its sensor replays a recorded file, its clock is the file's own time
# (optionally paced to a speed-up factor of real time), its flash is the
# current directory, which holds settings.json and secrets.json.
import sys
import time

import fsutil
import replay
import telemetry
import uplink

HINT = "run `gridveil provision` first"
# machine.reset_cause() values on the ESP32, which the emulator imitates: a
# start after a crash is a soft reset, any other (first run, SIGKILL as a
# power cut) a power-on.
PWRON_RESET, SOFT_RESET = 1, 5
CRASH_MARK = "crashed"
REBOOT_EXIT = 5  # the emulator's machine.reset(): run me again


class Board:
    name = "unix"

    def __init__(self):
        self.settings = fsutil.load_json("settings.json", HINT)
        self.secrets = fsutil.load_json("secrets.json", HINT)
        self.now = None
        self.reset_cause = SOFT_RESET if fsutil.exists(CRASH_MARK) else PWRON_RESET
        fsutil.remove(CRASH_MARK)

    def path(self, name):
        return name

    def save_secret(self, secret, generation):
        """The ratchet's next master secret, in place of the old one."""
        import json
        from binascii import hexlify

        self.secrets["master_secret"] = hexlify(secret).decode()
        self.secrets["generation"] = generation
        fsutil.write_atomic("secrets.json", json.dumps(self.secrets).encode())

    def log(self, msg):
        # Never called with secrets; readings' values are not logged either.
        print("[%s] %s" % (self.settings.get("meter_id", "?"), msg))

    # Network faults in the data's own time (settings "outage"; flaky.py,
    # loaded only when asked for, so that a normal run's heap holds none of it).
    def resolve(self, host, port):
        if self.settings.get("outage"):
            import flaky

            return flaky.resolve(self, host, port)
        return uplink.resolve(host, port)

    def udp_socket(self):
        if self.settings.get("outage"):
            import flaky

            return flaky.FlakySocket(uplink.udp_socket(), self)
        return uplink.udp_socket()

    # Updates over the air: two emulated partitions (partition.py) and a
    # reset that `gridveil fleet` and the tests answer by starting again.
    def ota_partition(self):
        import partition

        return partition.Partition(partition.Partition.RUNNING).get_next_update()

    def ota_confirm(self):
        import partition

        partition.Partition.mark_app_valid_cancel_rollback()

    def reboot(self):
        print("[reboot]")
        sys.exit(REBOOT_EXIT)

    def health(self, t):
        t[telemetry.RESET] = self.reset_cause  # no radio here: no RSSI

    def samples(self, after):
        r = self.settings["replay"]
        speed = r.get("speed", 0)
        t0 = None
        real0 = time.ticks_ms()
        for start, mj in replay.read(r["file"], r.get("sample_s", 60)):
            end = start + r.get("sample_s", 60)
            if after is not None and end <= after:
                continue  # already counted before a restart
            if speed:
                if t0 is None:
                    t0 = start
                due = (end - t0) * 1000 // speed
                wait = due - time.ticks_diff(time.ticks_ms(), real0)
                if wait > 0:
                    time.sleep_ms(wait)
            self.now = end
            yield end, mj


def crashed(e):
    # The emulator's "reset" is its exit: `gridveil fleet` and the tests see it.
    print("[crash] %s: %s" % (type(e).__name__, e))
    with open(CRASH_MARK, "w") as f:
        f.write("1")
    sys.exit(4)


def finish(ok):
    try:
        import micropython

        micropython.mem_info()  # heap use at the end, for the console log
    except ImportError:
        pass
    sys.stdout.flush() if hasattr(sys.stdout, "flush") else None

# The ESP32's two OTA app partitions, emulated on the Unix port: each is a
# file in the meter's folder (its flash), behind the part of
# esp32.Partition's interface that firmware/ota.py uses, with flash's own
# rules (erase sets a 4 KiB block to 0xFF; a write can only clear bits).
# otadata.json is the bootloader's record of what to boot (otaboot.py).
# ota_0 without a file is the build the meter was deployed with.
import json

import fsutil

BLOCK = 4096
BLOCKS = 384  # 1.5 MiB, as in MicroPython's ESP32 OTA partition table
OTADATA = "otadata.json"
_CHUNK = 256  # flash is read and written in small pieces: the heap is small


def otadata():
    try:
        with open(OTADATA) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"boot": "ota_0", "state": "valid", "running": "ota_0"}


def save(d):
    fsutil.write_atomic(OTADATA, json.dumps(d).encode())


class Partition:
    BOOT, RUNNING = 0, 1

    def __init__(self, which):
        if which == Partition.RUNNING:
            which = otadata().get("running", "ota_0")
        elif which == Partition.BOOT:
            which = otadata().get("boot", "ota_0")
        self.name = which
        self.file = which + ".bin"

    def get_next_update(self):
        return Partition("ota_1" if self.name == "ota_0" else "ota_0")

    def info(self):
        return (0, 0x10, 0, BLOCKS * BLOCK, self.name, False)

    def _open(self):
        if not fsutil.exists(self.file):
            open(self.file, "wb").close()
        return open(self.file, "r+b")

    def ioctl(self, op, arg):
        if op == 4:
            return BLOCKS
        if op == 5:
            return BLOCK
        if op == 6:  # erase one block
            with self._open() as f:
                f.seek(arg * BLOCK)
                ff = b"\xff" * _CHUNK
                for _ in range(BLOCK // _CHUNK):
                    f.write(ff)
            return 0
        return None

    def readblocks(self, n, buf, off=0):
        pos = n * BLOCK + off
        with self._open() as f:
            f.seek(pos)
            got = f.readinto(buf) or 0
        for i in range(got, len(buf)):
            buf[i] = 0xFF  # never written: erased flash

    def writeblocks(self, n, buf, off=None):
        if off is None:  # the simple interface erases first
            for b in range(n, n + (len(buf) + BLOCK - 1) // BLOCK):
                self.ioctl(6, b)
            off = 0
        pos = n * BLOCK + off
        if pos + len(buf) > BLOCKS * BLOCK:
            raise OSError(22)  # EINVAL: past the partition's end
        old = bytearray(len(buf))
        self.readblocks(n, old, off)
        for i in range(len(buf)):
            old[i] &= buf[i]  # NOR flash: a write clears bits, only erase sets them
        with self._open() as f:
            f.seek(pos)
            f.write(old)

    def set_boot(self):
        d = otadata()
        d.update(boot=self.name, state="new", prev=d.get("running", "ota_0"))
        save(d)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        d = otadata()
        d["state"] = "valid"
        d.pop("prev", None)
        save(d)

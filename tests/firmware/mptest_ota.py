# Updates over the air, inside MicroPython: firmware/ota.py against the Unix
# board's emulated partitions, with a link that serves blocks the way the
# gateway does (RFC 7959 Block2) and can lie or fail part-way.
# mp-path: boards/unix
import hashlib
import os

import coap
import ota
import partition
from uplink import UplinkError

TMP = os.getenv("GVTEST_TMP")
_n = [0]


def eq(a, b):
    if a != b:
        raise AssertionError("%r != %r" % (a, b))


def fresh_flash():
    _n[0] += 1
    d = "%s/ota%d" % (TMP, _n[0])
    os.mkdir(d)
    os.chdir(d)


BS = 16 << ota.SZX  # the meter's block size


def image(n):
    # Not a multiple of 256 or of 4096, so the last block and the last
    # flash block are both partial.
    return bytes((i * 7 + i // 251) & 0xFF for i in range(n))


class Link:
    """Serves `blob` block by block; `serve` may change what goes out."""

    def __init__(self, blob, fail_at=None, serve=None):
        self.blob = blob
        self.fail_at = fail_at
        self.serve = serve
        self.asked = []

    def request(self, method, path, payload, options, recv_max):
        eq((method, path), (coap.GET, "fw"))
        v = int.from_bytes(options[0][1], "big") if options[0][1] else 0
        num, szx = v >> 4, v & 7
        self.asked.append(num)
        if num == self.fail_at:
            raise UplinkError("no answer from gateway after 5 transmissions")
        size = 16 << szx
        data = self.blob[num * size:(num + 1) * size]
        more = (num + 1) * size < len(self.blob)
        if self.serve:
            data = self.serve(num, data)
        b2 = (num << 4) | (8 if more else 0) | szx
        return coap.CONTENT, [(coap.OPT_BLOCK2, b2.to_bytes(3, "big"))], data


class Board:
    def __init__(self):
        self.lines = []
        self.confirmed = 0

    def ota_partition(self):
        return partition.Partition(partition.Partition.RUNNING).get_next_update()

    def ota_confirm(self):
        self.confirmed += 1
        partition.Partition.mark_app_valid_cancel_rollback()

    def log(self, msg):
        self.lines.append(msg)


def offer(blob, version="0.2.0"):
    return [version, len(blob), hashlib.sha256(blob).digest()]


def read_back(name, n):
    buf = bytearray(n)
    partition.Partition(name).readblocks(0, buf)
    return bytes(buf)


def test_an_image_is_written_verified_and_set_to_boot():
    fresh_flash()
    blob = image(3 * 4096 + 1000)
    b = Board()
    link = Link(blob)
    eq(ota.update(b, link, offer(blob), "0.1.0", b.log), True)
    eq(link.asked, list(range((len(blob) + BS - 1) // BS)))
    eq(read_back("ota_1", len(blob)), blob)
    d = partition.otadata()
    eq((d["boot"], d["state"], d["prev"]), ("ota_1", "new", "ota_0"))
    eq(ota.load_state(), {"trial": "0.2.0"})
    # The same version again, or a version this image runs: nothing to do.
    eq(ota.update(b, Link(blob), offer(blob, "0.1.0"), "0.1.0", b.log), False)


def test_a_corrupted_image_is_refused_and_nothing_boots():
    fresh_flash()
    blob = image(5000)

    def flip(num, data):
        if num == 7:
            data = bytearray(data)
            data[3] ^= 0x40  # one bit, in the middle of the image
        return bytes(data)

    b = Board()
    eq(ota.update(b, Link(blob, serve=flip), offer(blob), "0.1.0", b.log), False)
    eq(partition.otadata()["boot"], "ota_0")  # still the running image
    eq(ota.load_state(), {"refused": "0.2.0"})
    assert "does not match the manifest" in b.lines[-1], b.lines
    # Refused for good: the next offer of that version fetches nothing.
    link = Link(blob)
    eq(ota.update(b, link, offer(blob), "0.1.0", b.log), False)
    eq(link.asked, [])


def test_blocks_that_do_not_fit_the_manifest_are_refused():
    fresh_flash()
    blob = image(3000)
    for serve in (lambda num, d: d[:-1],          # a short block in the middle
                  lambda num, d: d + b"x" if num == 11 else d):  # a longer image
        os.remove("ota.json") if "ota.json" in os.listdir() else None
        b = Board()
        eq(ota.update(b, Link(blob, serve=serve), offer(blob), "0.1.0", b.log), False)
        eq(partition.otadata()["boot"], "ota_0")
        eq(ota.load_state(), {"refused": "0.2.0"})
    # An image larger than the partition is not even fetched.
    os.remove("ota.json")
    link = Link(blob)
    big = ["0.2.0", partition.BLOCKS * partition.BLOCK + 1, bytes(32)]
    eq(ota.update(Board(), link, big, "0.1.0", print), False)
    eq(link.asked, [])


def test_an_interrupted_transfer_boots_nothing_and_completes_later():
    fresh_flash()
    blob = image(2 * 4096 + 300)
    b = Board()
    # Fill the partition with another image first: a later transfer must
    # erase before it writes (flash writes only clear bits).
    old = bytes(x ^ 0x5A for x in image(9000))
    partition.Partition("ota_1").writeblocks(0, old + b"\xff" * (3 * 4096 - len(old)))
    eq(ota.update(b, Link(blob, fail_at=5120 // BS), offer(blob), "0.1.0", b.log), False)
    assert "transfer interrupted" in b.lines[-1], b.lines
    eq(partition.otadata()["boot"], "ota_0")
    eq(ota.load_state(), {})  # not refused: the network failed, not the image
    # Stopped again, further on; then the rest. Each offer goes on where the
    # last stopped (the blocks before byte 5120 are not fetched twice).
    link = Link(blob, fail_at=7680 // BS)
    eq(ota.update(b, link, offer(blob), "0.1.0", b.log), False)
    eq(link.asked, list(range(5120 // BS, 7680 // BS + 1)))
    link = Link(blob)
    eq(ota.update(b, link, offer(blob), "0.1.0", b.log), True)
    n = (len(blob) + BS - 1) // BS
    eq(link.asked, list(range(7680 // BS, n)))
    eq(read_back("ota_1", len(blob)), blob)
    eq(partition.otadata()["boot"], "ota_1")


def test_a_stopped_transfer_of_another_image_starts_over():
    fresh_flash()
    a, c = image(6000), bytes(x ^ 0x33 for x in image(6000))
    b = Board()
    eq(ota.update(b, Link(a, fail_at=5), offer(a), "0.1.0", b.log), False)
    link = Link(c)  # the gateway now offers another image
    eq(ota.update(b, link, offer(c, "0.2.1"), "0.1.0", b.log), True)
    eq(link.asked[0], 0)
    eq(read_back("ota_1", len(c)), c)


def test_trial_confirm_and_rollback_states():
    fresh_flash()
    b = Board()
    ota.save_state({"trial": "0.2.0"})
    trial = ota.boot_check(b, "0.2.0")  # the new image, on trial
    assert trial is not None
    ota.confirm(b, "0.2.0")
    eq((b.confirmed, ota.load_state()), (1, {}))
    ota.save_state({"trial": "0.3.0"})
    eq(ota.boot_check(b, "0.2.0"), None)  # 0.3.0 was rolled back
    eq(ota.load_state(), {"refused": "0.3.0"})
    eq(ota.boot_check(b, "0.2.0"), None)  # and stays refused
    eq(ota.load_state(), {"refused": "0.3.0"})


def test_a_trial_that_never_reaches_the_gateway_resets_the_board():
    b = Board()
    b.settings = {"ota_trial_s": 600}
    resets = []
    b.reboot = lambda: resets.append(1)
    t = ota.Trial(b, "0.2.0")
    t.tick(1000)  # the first sample starts the clock
    t.tick(1600)
    eq(resets, [])
    t.tick(1601)
    eq(resets, [1])
    assert "never reached the gateway" in b.lines[-1]


def test_offers_that_are_not_well_formed_are_ignored():
    fresh_flash()
    for bad in (None, 7, ["0.2.0"], ["0.2.0", 10, b"short"], [1, 10, bytes(32)],
                ["0.2.0", 0, bytes(32)], ["0.2.0", "10", bytes(32)]):
        link = Link(b"")
        eq(ota.update(Board(), link, bad, "0.1.0", print), False)
        eq(link.asked, [])

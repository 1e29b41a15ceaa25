# Firmware updates over the air (docs/protocol.md, "Firmware updates").
# The gateway's protected 2.04 names an image: [version, size, SHA-256].
# The meter fetches it block by block with GET /fw and Block2 (RFC 7959)
# inside OSCORE, writes it to the inactive OTA partition, hashes what is
# on flash and boots it only if that matches. The new image is on trial
# until one of its requests is answered by the gateway; a reset before
# that boots the old image again (the bootloader's rollback), and the old
# image then refuses that version. Imported only when an update is offered.
import gc
import hashlib
import time

import coap
import fsutil

STATE = "ota.json"
FW_PATH = "fw"
SZX = 3  # 128-byte blocks: small enough to find room in an 80 KiB heap in use
FLASH_BLOCK = 4096  # esp32.Partition's block: the unit of erase
_ERASE = 6  # ioctl: erase one block
# At most 40 blocks a second: under the gateway's per-source rate (50/s by
# default), so a fast link is never throttled into retransmissions.
PACE_MS = 25


class UpdateError(Exception):
    """The image itself is wrong: its version is refused."""


class Interrupted(Exception):
    """The transfer stopped (the network, or the gateway withdrew the offer):
    args are (why, bytes on flash so far); the next offer goes on from there."""


def parse_offer(value):
    """Key 4 of the 2.04: [version, size, sha256] or None if malformed."""
    try:
        version, size, digest = value
    except (TypeError, ValueError):
        return None
    if isinstance(version, str) and 0 < len(version) <= 32 and isinstance(size, int) \
            and size > 0 and isinstance(digest, bytes) and len(digest) == 32:
        return version, size, digest
    return None


def load_state():
    import json

    try:
        with open(STATE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def save_state(state):
    import json

    fsutil.write_atomic(STATE, json.dumps(state).encode())


def _block2(num, more, szx):
    v = (num << 4) | (8 if more else 0) | szx
    return v.to_bytes(3 if v > 0xFFFF else 2 if v > 0xFF else 1, "big") if v else b""


def _same(a, b):
    # Constant time, though a digest is no secret: the habit is the point.
    d = len(a) ^ len(b)
    for x, y in zip(a, b):
        d |= x ^ y
    return d == 0


# Where a transfer that stopped had got to: (version, sha256, bytes on
# flash). The next offer of the same image goes on from there; the SHA-256
# over the whole partition at the end checks the joined parts. Kept in RAM
# only: after a reset the transfer starts over.
_stopped = None


def fetch(link, offer, part, log):
    """Download the offered image into `part` (an esp32.Partition) and
    check it on flash. Raises UpdateError for a bad image; UplinkError or
    Interrupted when the transfer stops."""
    global _stopped
    version, size, digest = offer
    bs = 16 << SZX
    nblocks = part.ioctl(4, 0)
    if size > nblocks * FLASH_BLOCK:
        raise UpdateError("image of %d bytes does not fit the %d-byte partition"
                          % (size, nblocks * FLASH_BLOCK))
    got = 0
    if _stopped is not None and _stopped[:2] == (version, digest):
        got = _stopped[2]
    _stopped = None
    log("fetching firmware %s (%d bytes)%s" % (version, size, " from byte %d" % got if got
                                               else ""))
    try:
        _blocks(link, size, part, got)
    except Interrupted as e:
        _stopped = (version, digest, e.args[1])
        raise
    # Hash what is on flash, not what came over the air: it is what boots.
    h = hashlib.sha256()
    buf = bytearray(bs)
    for pos in range(0, size, bs):
        part.readblocks(pos // FLASH_BLOCK, buf, pos % FLASH_BLOCK)
        h.update(buf if size - pos >= bs else buf[:size - pos])
    if not _same(h.digest(), digest):
        raise UpdateError("image on flash does not match the manifest's SHA-256")
    log("firmware %s written and verified" % version)


def _blocks(link, size, part, got):
    bs = 16 << SZX
    num = got // bs
    t = time.ticks_ms()
    while got < size:
        wait = PACE_MS - time.ticks_diff(time.ticks_ms(), t)
        if wait > 0:
            time.sleep_ms(wait)
        t = time.ticks_ms()
        # Each block's datagram, decryption and write leave garbage between
        # the live objects; collected now, it leaves room in one piece for
        # the next (without, the heap splits into blocks too small for it).
        gc.collect()
        try:
            code, options, body = link.request(coap.GET, FW_PATH, b"",
                                               [(coap.OPT_BLOCK2, _block2(num, 0, SZX))],
                                               bs + 96)
        except Exception as e:  # noqa: BLE001 -- UplinkError: the network; go on later
            raise Interrupted(str(e), got)
        if code != coap.CONTENT:
            raise Interrupted("gateway answered %s for block %d" % (coap.code_str(code), num),
                              got)
        b2 = 0
        for n, v in options:
            if n == coap.OPT_BLOCK2 and len(v) <= 3:
                b2 = int.from_bytes(v, "big")
        more = b2 & 8
        if b2 >> 4 != num or b2 & 7 != SZX or (more and len(body) != bs) \
                or got + len(body) > size or not body:
            raise UpdateError("block %d does not fit the image" % num)
        off = got % FLASH_BLOCK
        if off == 0:
            part.ioctl(_ERASE, got // FLASH_BLOCK)
        part.writeblocks(got // FLASH_BLOCK, body, off)
        got += len(body)
        num += 1
        if not more:
            break
    if got != size:
        raise UpdateError("transfer ended at %d of %d bytes" % (got, size))


class Trial:
    """A new image that has not yet reached the gateway. If it does not
    within ota_trial_s (settings.json) of its first sample, the board
    resets and the bootloader rolls it back."""

    def __init__(self, board, fw_version):
        self.board = board
        self.version = fw_version
        self.until = None

    def tick(self, now):
        if self.until is None:
            self.until = now + self.board.settings.get("ota_trial_s", 3600)
        elif now > self.until:
            self.board.log("firmware %s never reached the gateway: resetting to roll back"
                           % self.version)
            self.board.reboot()


def boot_check(board, fw_version):
    """At start: a Trial if this image is on trial. An image that was on
    trial and is not the one running now was rolled back: refuse its version."""
    trial = load_state().get("trial")
    if trial == fw_version:
        board.log("firmware %s on trial: confirmed once the gateway answers" % trial)
        return Trial(board, fw_version)
    if trial:
        board.log("firmware %s did not reach the gateway and was rolled back; staying on %s"
                  % (trial, fw_version))
        save_state({"refused": trial})
    return None


def confirm(board, fw_version):
    if hasattr(board, "ota_confirm"):
        board.ota_confirm()  # esp32: mark_app_valid_cancel_rollback()
    fsutil.remove(STATE)
    board.log("firmware %s confirmed" % fw_version)


def answered(board, sender, register, trial, now):
    """After a verified 2.04: an image on trial is good; an offered one is
    fetched, and the board resets into it once it is on flash (the open
    interval's energy saved first, to the sample). Returns the trial left:
    none."""
    from sender import FW_VERSION

    if trial:
        confirm(board, FW_VERSION)
    offer, sender.offer = sender.offer, None
    if offer and update(board, sender.link, offer, FW_VERSION, board.log):
        register.saved_at = None
        register.checkpoint(now)
        board.reboot()
    return None


def update(board, link, value, fw_version, log):
    """Act on an offer from the gateway. Returns True when the new image is
    set to boot and the board should reset; False to carry on (nothing
    offered, refused, or the transfer failed and is retried at the next
    offer)."""
    offer = parse_offer(value)
    if offer is None or offer[0] == fw_version or not hasattr(board, "ota_partition"):
        return False
    if load_state().get("refused") == offer[0]:
        return False  # rolled back once: wait for a newer version
    part = board.ota_partition()
    try:
        fetch(link, offer, part, log)
    except UpdateError as e:
        # The gateway itself serves a bad image (OSCORE rules out the
        # network): refuse the version rather than fetch it forever.
        log("firmware %s refused: %s" % (offer[0], e))
        save_state({"refused": offer[0]})
        return False
    except Exception as e:  # noqa: BLE001 -- the network, a flash error: try again later
        log("firmware %s transfer interrupted (%s); it goes on at the next offer"
            % (offer[0], e.args[0] if e.args else e))
        return False
    save_state({"trial": offer[0]})
    part.set_boot()
    log("booting firmware %s" % offer[0])
    return True

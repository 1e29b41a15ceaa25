# The meter application: a cumulative energy register, one reading per
# wall-clock interval, the queue on flash, and delivery to the gateway.
# Hardware (sensor, clock, network, storage paths) comes from the board
# object, so this file is the same on an ESP32 and on the Unix-port emulator.
import gc
import os
import time
from binascii import unhexlify

import cbor
import coap
from readingqueue import ReadingQueue
from register import Register
from rekey import Rekeying
from telemetry import Telemetry
from uplink import Uplink, UplinkError, udp_socket

FW_VERSION = "0.1.0"
PAYLOAD_VERSION = 1
READINGS_PATH = "readings"
# A request must stay under the gateway's 1024-byte limit with room for
# OSCORE and CoAP headers: a reading encodes to at most 32 bytes in CBOR
# (seq and register up to 9 bytes each, time and energy 5, span 3, array
# header 1) and the rest of the map to about 160 (telemetry at most 44), so
# 24 readings fit whatever their values (mptest_metering checks the worst
# case). Above that a batch could be refused forever.
MAX_BATCH = 24


def _rand_below(n):
    return int.from_bytes(os.urandom(4), "big") % n if n > 0 else 0


class Sender:
    """Delivers the queue. Retries back off exponentially with jitter, and
    new readings wait a random offset (fixed per boot) inside the interval,
    so a fleet that lost power together does not post in lockstep."""

    def __init__(self, link, queue, meter_id, batch=8, backoff_ms=1000,
                 max_backoff_ms=60000, log=print, spread_ms=0, on_time=None, health=None):
        if not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
            raise SystemExit("settings.json: batch must be 1 to %d readings per request, not %r"
                             % (MAX_BATCH, batch))
        self.link = link
        self.queue = queue
        self.meter_id = meter_id
        self.batch = batch
        self.min_backoff = backoff_ms
        self.max_backoff = max_backoff_ms
        self.backoff = backoff_ms
        self.offset_ms = _rand_below(spread_ms)
        self.next_try = time.ticks_ms()
        self._waiting = False  # readings queued, offset not yet elapsed
        self.failures_in_row = 0
        self.on_time = on_time  # gets the gateway's clock from each verified 2.04
        self.health = health  # telemetry.Telemetry: this meter's health for each request
        self.log = log
        self.delivered = 0
        self.failures = 0

    def queued(self):
        """A reading was queued: send it after this meter's offset, unless a
        retry is already scheduled."""
        if not self._waiting and self.failures_in_row == 0 and self.offset_ms:
            self.next_try = time.ticks_add(time.ticks_ms(), self.offset_ms)
            self._waiting = True

    def due(self):
        return self.queue.pending and time.ticks_diff(time.ticks_ms(), self.next_try) >= 0

    def _failed(self, why):
        self.failures += 1
        self.failures_in_row += 1
        # Full jitter over the upper half: spread, but never shorter than half.
        wait = self.backoff // 2 + _rand_below(self.backoff // 2 + 1)
        self.log("upload failed (%s); %d readings queued, retry in %d ms"
                 % (why, self.queue.pending, wait))
        self.next_try = time.ticks_add(time.ticks_ms(), wait)
        self.backoff = min(self.backoff * 2, self.max_backoff)

    def _payload(self):
        self._batch = batch = self.queue.oldest(self.batch)
        body = {0: PAYLOAD_VERSION, 1: self.meter_id,
                2: [list(r) if r[4] > 1 else list(r[:4]) for r in batch],
                3: self.queue.pending - len(batch), 4: FW_VERSION}
        if self.health is not None:
            body[5] = self.health()
        return cbor.dumps(body)

    def flush(self):
        """Send pending readings oldest first until the queue is empty or an
        exchange fails. Returns True when the queue is empty."""
        self._waiting = False
        while self.queue.pending:
            try:
                code, body = self.link.post(READINGS_PATH, self._payload)
            except UplinkError as e:
                self._failed(str(e))
                return False
            batch = self._batch
            if code != coap.CHANGED:
                self._failed("gateway answered %s" % coap.code_str(code))
                return False
            try:
                ack = cbor.loads(body)
                acked = ack.get(1)
                gw_time = ack.get(3)
            except (ValueError, AttributeError):
                acked = gw_time = None
            if self.on_time is not None and isinstance(gw_time, int):
                self.on_time(gw_time)
            if acked != [r[0] for r in batch]:
                self._failed("acknowledgement does not match the batch")
                return False
            self.queue.ack(batch)
            self.delivered += len(batch)
            self.backoff = self.min_backoff
            self.failures_in_row = 0
        return True


def _resync(board, register, body):
    # Response #1's payload, decoded once: {1: last_seq, 2: last_end, 3: time}.
    try:
        state = cbor.loads(body)
        gw_seq, gw_end, gw_time = int(state[1]), int(state[2]), state.get(3)
    except (ValueError, TypeError, KeyError, AttributeError):
        return
    if isinstance(gw_time, int) and hasattr(board, "gateway_time"):
        board.gateway_time(gw_time)
    shift = register.resync(gw_seq, gw_end)
    if shift:
        board.log("the gateway has readings up to a higher number (was this flash wiped?);"
                  " queued readings renumbered by %d" % shift)


def build(board):
    s = board.settings
    sec = board.secrets
    # A new context per boot (rekey.py): nothing about nonces is kept on
    # flash, so a wiped or restored flash cannot make one repeat.
    keys = Rekeying(unhexlify(sec["master_secret"]), unhexlify(sec["master_salt"]),
                    unhexlify(sec["sender_id"]), unhexlify(sec["recipient_id"]))
    queue = ReadingQueue(board.path("queue.log"))
    sensor = getattr(board, "sensor", None)
    register = Register(queue, s.get("interval_s", 900), s.get("checkpoint_s", 120),
                        getattr(sensor, "mark", None))
    if register.sensor_mark is not None and hasattr(sensor, "resume"):
        sensor.resume(register.sensor_mark)
    link = Uplink(board.udp_socket() if hasattr(board, "udp_socket") else udp_socket(),
                  s["gateway_host"], s.get("gateway_port", 5683), keys,
                  ack_timeout_ms=s.get("ack_timeout_ms", 2000),
                  max_retransmit=s.get("max_retransmit", 4), log=board.log,
                  idle=getattr(board, "idle", None), resolver=getattr(board, "resolve", None),
                  on_rekey=lambda body: _resync(board, register, body))
    sender = Sender(link, queue, s["meter_id"], s.get("batch", 8),
                    s.get("retry_ms", 1000), s.get("max_retry_ms", 60000), board.log,
                    s.get("send_spread_ms", 0), getattr(board, "gateway_time", None),
                    Telemetry(keys, queue, board))
    return register, sender


def run(board):
    """Measure, queue, deliver. Returns True if nothing is left queued when
    the sensor ends (a replay); a live sensor never ends."""
    register, sender = build(board)
    board.log("meter %s fw %s: %d readings queued from before, next seq %d"
              % (board.settings["meter_id"], FW_VERSION, sender.queue.pending, register.seq))
    if register.saved is not None:
        board.log("open interval to %d resumed from its checkpoint: %d Wh so far"
                  % (register.interval_end, register.saved[1]))
    for now, mj in board.samples(register.resume_after):
        register.add(mj)
        if register.close_due(now):
            sender.queued()
        else:
            register.checkpoint(now)
        if sender.due():
            gc.collect()  # a compact heap before the exchange's buffers
            sender.flush()
    deadline = time.ticks_add(time.ticks_ms(), board.settings.get("drain_ms", 60000))
    while sender.queue.pending and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        if sender.due():
            sender.flush()
        else:
            time.sleep_ms(50)
    board.log("sensor ended: %d readings delivered, %d still queued, %d failed exchanges"
              % (sender.delivered, sender.queue.pending, sender.failures))
    return sender.queue.pending == 0

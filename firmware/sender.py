# Delivery of the reading queue to the gateway: batches, acknowledgements,
# retries with jittered backoff, a random send offset per boot, and a busy
# gateway's Max-Age. Apart from meter.py so that each compiles on the
# device in a small heap.
import os
import time

import cbor
import coap
from uplink import UplinkError

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
        self.offer = None  # key 4 of the last 2.04: a firmware image for us (ota.py)

    def queued(self):
        """A reading was queued: send it after this meter's offset, unless a
        retry is already scheduled."""
        if not self._waiting and self.failures_in_row == 0 and self.offset_ms:
            self.next_try = time.ticks_add(time.ticks_ms(), self.offset_ms)
            self._waiting = True

    def due(self):
        if not self.queue.pending:
            return False
        if not self._waiting and self.failures_in_row == 0:
            # Nothing to wait for. (Comparing with a next_try left from boot
            # would say "not yet" for 6.2 of every 12.4 days: ticks wrap.)
            return True
        return time.ticks_diff(time.ticks_ms(), self.next_try) >= 0

    def _failed(self, why, at_least_ms=0):
        self.failures += 1
        self.failures_in_row += 1
        # Full jitter over the upper half: spread, but never shorter than half;
        # and never before a busy gateway asked us back (its 5.03's Max-Age).
        wait = max(at_least_ms, self.backoff // 2 + _rand_below(self.backoff // 2 + 1))
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
                code, _, body = self.link.request(coap.POST, READINGS_PATH, self._payload)
            except UplinkError as e:
                self._failed(str(e))
                return False
            batch = self._batch
            if code != coap.CHANGED:
                busy = code == coap.SERVICE_UNAVAILABLE and self.link.max_age
                self._failed("gateway answered %s" % coap.code_str(code),
                             self.link.max_age * 1000 if busy else 0)
                return False
            try:
                ack = cbor.loads(body)
                acked = ack.get(1)
                gw_time = ack.get(3)
                self.offer = ack.get(4)
                kept = ack.get(5)  # how far the gateway's newest backup reaches
            except (ValueError, AttributeError):
                acked = gw_time = kept = None
            if self.on_time is not None and isinstance(gw_time, int):
                self.on_time(gw_time)
            if acked != [r[0] for r in batch]:
                self._failed("acknowledgement does not match the batch")
                return False
            self.queue.ack(batch, kept if isinstance(kept, int) else None)
            self.delivered += len(batch)
            step = getattr(self.link.keys, "delivered_readings", None)
            if step is not None and step(len(batch)):
                self.log("key generation %d: a new master secret, the old one erased"
                         % self.link.keys.generation)
            self.backoff = self.min_backoff
            self.failures_in_row = 0
        return True

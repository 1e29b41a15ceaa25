# The meter application: a cumulative energy register, one reading per
# wall-clock interval, the queue on flash, and delivery to the gateway.
# Hardware (sensor, clock, network, storage paths) comes from the board
# object, so this file is the same on an ESP32 and on the Unix-port emulator.
import gc
import time
from binascii import unhexlify

import cbor
import coap
import oscore
from readingqueue import ReadingQueue
from seqno import SequenceStore
from uplink import Uplink, UplinkError, resolve, udp_socket

FW_VERSION = "0.1.0"
MJ_PER_WH = 3600000  # sensors report energy in millijoules
PAYLOAD_VERSION = 1
READINGS_PATH = "readings"


class Register:
    """Cumulative energy in whole Wh plus the sub-Wh remainder, and the
    interval that is currently open."""

    def __init__(self, queue, interval_s):
        self.queue = queue
        self.interval_s = interval_s
        # The sub-Wh energy carried past the last reading survives a restart
        # with it (energy is never dropped; docs/protocol.md).
        self.residual_mj = queue.residual_mj
        last = queue.last
        if last is None:
            self.seq, self.wh, self.interval_end = 0, 0, None
        else:
            self.seq, self.wh, self.interval_end = last[0] + 1, last[3], last[1] + interval_s
        self.wh_at_last_close = self.wh

    @property
    def resume_after(self):
        """Interval end of the last queued reading: energy before it is in."""
        return None if self.queue.last is None else self.queue.last[1]

    def add(self, mj):
        self.residual_mj += mj
        whole = self.residual_mj // MJ_PER_WH
        self.wh += whole
        self.residual_mj -= whole * MJ_PER_WH

    def close_due(self, now):
        """Close the open interval if its end has passed; returns how many
        readings were queued (0 or 1)."""
        step = self.interval_s
        if self.interval_end is None:
            # The first interval ends at the first boundary at or after now.
            self.interval_end = ((now - 1) // step + 1) * step
        if now < self.interval_end:
            return 0
        energy = self.wh - self.wh_at_last_close
        self.queue.append(self.seq, self.interval_end, energy, self.wh, self.residual_mj)
        self.seq += 1
        self.wh_at_last_close = self.wh
        # After a gap (power off) realign to the wall clock rather than
        # inventing zero readings for intervals that were not measured.
        nxt = self.interval_end + step
        self.interval_end = nxt if now < nxt else (now // step + 1) * step
        return 1


class Sender:
    def __init__(self, link, queue, meter_id, batch=8, backoff_ms=1000,
                 max_backoff_ms=60000, log=print):
        self.link = link
        self.queue = queue
        self.meter_id = meter_id
        self.batch = batch
        self.min_backoff = backoff_ms
        self.max_backoff = max_backoff_ms
        self.backoff = backoff_ms
        self.next_try = time.ticks_ms()
        self.log = log
        self.delivered = 0
        self.failures = 0

    def due(self):
        return self.queue.pending and time.ticks_diff(time.ticks_ms(), self.next_try) >= 0

    def _failed(self, why):
        self.failures += 1
        self.log("upload failed (%s); %d readings queued, retry in %d ms"
                 % (why, self.queue.pending, self.backoff))
        self.next_try = time.ticks_add(time.ticks_ms(), self.backoff)
        self.backoff = min(self.backoff * 2, self.max_backoff)

    def flush(self):
        """Send pending readings oldest first until the queue is empty or an
        exchange fails. Returns True when the queue is empty."""
        while self.queue.pending:
            batch = self.queue.oldest(self.batch)
            payload = cbor.dumps({0: PAYLOAD_VERSION, 1: self.meter_id,
                                  2: [list(r) if r[4] > 1 else list(r[:4]) for r in batch],
                                  3: self.queue.pending - len(batch), 4: FW_VERSION})
            try:
                code, body = self.link.post(READINGS_PATH, payload)
            except UplinkError as e:
                self._failed(str(e))
                return False
            if code != coap.CHANGED:
                self._failed("gateway answered %s" % coap.code_str(code))
                return False
            try:
                acked = cbor.loads(body).get(1)
            except (ValueError, AttributeError):
                acked = None
            if acked != [r[0] for r in batch]:
                self._failed("acknowledgement does not match the batch")
                return False
            self.queue.ack(batch)
            self.delivered += len(batch)
            self.backoff = self.min_backoff
        return True


def build(board):
    s = board.settings
    sec = board.secrets
    ctx = oscore.Context(unhexlify(sec["master_secret"]), unhexlify(sec["master_salt"]),
                         unhexlify(sec["sender_id"]), unhexlify(sec["recipient_id"]),
                         seqno=SequenceStore(board.path("oscore_seq"), s.get("seq_chunk", 64)))
    link = Uplink(board.udp_socket() if hasattr(board, "udp_socket") else udp_socket(),
                  resolve(s["gateway_host"], s.get("gateway_port", 5683)), ctx,
                  ack_timeout_ms=s.get("ack_timeout_ms", 2000),
                  max_retransmit=s.get("max_retransmit", 4), log=board.log,
                  idle=getattr(board, "idle", None))
    queue = ReadingQueue(board.path("queue.log"))
    register = Register(queue, s.get("interval_s", 900))
    sender = Sender(link, queue, s["meter_id"], s.get("batch", 8),
                    s.get("retry_ms", 1000), s.get("max_retry_ms", 60000), board.log)
    return register, sender


def run(board):
    """Measure, queue, deliver. Returns True if nothing is left queued when
    the sensor ends (a replay); a live sensor never ends."""
    register, sender = build(board)
    board.log("meter %s fw %s: %d readings queued from before, next seq %d"
              % (board.settings["meter_id"], FW_VERSION, sender.queue.pending, register.seq))
    for now, mj in board.samples(register.resume_after):
        register.add(mj)
        register.close_due(now)
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

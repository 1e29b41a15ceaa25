# The meter application: a cumulative energy register, one reading per
# wall-clock interval, the queue on flash, and delivery to the gateway.
# Hardware (sensor, clock, network, storage paths) comes from the board
# object, so this file is the same on an ESP32 and on the Unix-port emulator.
import gc
import time
from binascii import unhexlify

import cbor
import fsutil
from readingqueue import ReadingQueue
from register import Register
from rekey import Rekeying
from sender import FW_VERSION, Sender
from telemetry import Telemetry
from uplink import Uplink, udp_socket


def _resync(board, register, body):
    # Response #1's payload, decoded once: {1: last_seq, 2: last_end, 3: time}.
    try:
        state = cbor.loads(body)
        gw_seq, gw_end, gw_time = int(state[1]), int(state[2]), state.get(3)
    except (ValueError, TypeError, KeyError, AttributeError):
        return
    if isinstance(gw_time, int) and hasattr(board, "gateway_time"):
        board.gateway_time(gw_time)
    if gw_seq < register.queue.acked:
        from rewind import rewind

        rewind(register.queue, gw_seq, board.log)
    shift = register.resync(gw_seq, gw_end)
    if shift:
        board.log("the gateway has readings up to a higher number (was this flash wiped?);"
                  " queued readings renumbered by %d" % shift)


def build(board):
    s = board.settings
    sec = board.secrets
    # A new context per boot (rekey.py): nothing about nonces is kept on
    # flash, so a wiped or restored flash cannot make one repeat. The master
    # secret steps once a day (the ratchet), onto flash before it is used.
    gen = sec.get("generation")
    keys = Rekeying(unhexlify(sec["master_secret"]), unhexlify(sec["master_salt"]),
                    unhexlify(sec["sender_id"]), unhexlify(sec["recipient_id"]), gen,
                    getattr(board, "save_secret", None) if gen is not None else None,
                    s.get("key_step_readings", 96), getattr(board, "random_ready", None))
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
    trial = None  # an ota.Trial while a new image has not yet reached the gateway
    if fsutil.exists("ota.json"):
        import ota

        trial = ota.boot_check(board, FW_VERSION)
    board.log("meter %s fw %s: %d readings queued from before, next seq %d"
              % (board.settings["meter_id"], FW_VERSION, sender.queue.pending, register.seq))
    if register.saved is not None:
        board.log("open interval to %d resumed from its checkpoint: %d Wh so far"
                  % (register.interval_end, register.saved[1]))
    for now, mj in board.samples(register.resume_after):
        if trial:
            trial.tick(now)  # resets, to roll back, once the trial is over
        register.add(mj)
        if register.close_due(now):
            sender.queued()
        else:
            register.checkpoint(now)
        if sender.due():
            gc.collect()  # a compact heap before the exchange's buffers
            sender.flush()
            if sender.offer or (trial and sender.delivered):
                import ota

                trial = ota.answered(board, sender, register, trial, now)
    deadline = time.ticks_add(time.ticks_ms(), board.settings.get("drain_ms", 60000))
    while sender.queue.pending and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        if sender.due():
            sender.flush()
        else:
            time.sleep_ms(50)
    board.log("sensor ended: %d readings delivered, %d still queued, %d failed exchanges"
              % (sender.delivered, sender.queue.pending, sender.failures))
    return sender.queue.pending == 0

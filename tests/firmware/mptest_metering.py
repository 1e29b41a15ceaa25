# Register and interval closing, and the replay parser.
import os

import fsutil
import replay
from readingqueue import ReadingQueue
from register import MJ_PER_WH, Register

TMP = os.getenv("GVTEST_TMP")


def eq(a, b):
    if a != b:
        raise AssertionError("%r != %r" % (a, b))


def queue(name):
    p = TMP + "/" + name
    fsutil.remove(p)
    return ReadingQueue(p)


def test_intervals_close_on_wall_clock_boundaries():
    q = queue("reg1")
    r = Register(q, 900)
    t = 1767225600
    for minute in range(45):  # 1.5 Wh each minute
        r.add(MJ_PER_WH * 3 // 2)
        r.close_due(t + (minute + 1) * 60)
    eq([x[1] for x in q.oldest(10)], [t + 900, t + 1800, t + 2700])
    eq([x[2] for x in q.oldest(10)], [22, 23, 22])  # floor of 22.5, 45.0, 67.5 Wh
    eq([x[3] for x in q.oldest(10)], [22, 45, 67])
    eq([x[0] for x in q.oldest(10)], [0, 1, 2])


def test_register_resumes_after_restart():
    q = queue("reg2")
    r = Register(q, 900)
    r.add(5 * MJ_PER_WH)
    r.close_due(1767225600 + 900)
    r2 = Register(ReadingQueue(TMP + "/reg2"), 900)
    eq((r2.seq, r2.wh, r2.interval_end, r2.resume_after), (1, 5, 1767225600 + 1800, 1767225600 + 900))


def test_remainder_survives_a_restart():
    # 1.5 Wh, then a kill after the interval closed: the half Wh is not lost
    # (70 kills used to lose 38 Wh from the bills and aggregates).
    t = 1767225600
    q = queue("reg4")
    r = Register(q, 900)
    r.add(MJ_PER_WH * 3 // 2)
    r.close_due(t + 900)
    for _ in range(3):  # a restart, and another, and a compaction in between
        r = Register(ReadingQueue(TMP + "/reg4"), 900)
    eq(r.residual_mj, MJ_PER_WH // 2)
    r.add(MJ_PER_WH // 2)
    r.close_due(t + 1800)
    eq([x[2] for x in r.queue.oldest(10)], [1, 1])
    eq([x[3] for x in r.queue.oldest(10)], [1, 2])
    r.queue.ack(r.queue.oldest(10))  # all acked: compaction keeps the newest and its remainder
    r.add(MJ_PER_WH // 4)
    r.close_due(t + 2700)
    eq(Register(ReadingQueue(TMP + "/reg4"), 900).residual_mj, MJ_PER_WH // 4)


def test_gap_does_not_invent_readings():
    q = queue("reg3")
    r = Register(q, 900)
    r.close_due(1767225660)
    r.add(MJ_PER_WH)
    r.close_due(1767225600 + 900 * 10)  # powered off for two hours
    eq(len(q.oldest(10)), 1)
    eq(r.interval_end, 1767225600 + 900 * 11)


def test_replay_parses_both_layouts_without_floats():
    eq(replay.parse_line("2016-01-01 00:00:00,0.68415"), (1451606400, 684150))
    eq(replay.parse_line("2016-02-29 23:59:00,0.682983333"), (1456790340, 682983))
    eq(replay.parse_line("1767225600,684150"), (1767225600, 684150))
    eq(replay.kw_to_mw("15"), 15000000)
    for bad in ("2016-01-01,1", "x,1", "1767225600,-5"):
        try:
            replay.parse_line(bad)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % bad)


def test_open_interval_survives_a_restart():
    # 1 Wh a minute; the meter restarts 8 minutes into an interval. The
    # checkpoints (every 2 min here: minutes 1, 3, 5, 7) keep 7 Wh.
    t = 1767225600
    q = queue("reg5")
    r = Register(q, 900, checkpoint_s=120)
    r.close_due(t)
    for minute in range(1, 9):
        r.add(MJ_PER_WH)
        r.close_due(t + minute * 60)
        r.checkpoint(t + minute * 60)
    r2 = Register(ReadingQueue(TMP + "/reg5"), 900, checkpoint_s=120)
    eq((r2.wh, r2.interval_end, r2.resume_after), (7, t + 900, t + 420))  # minute 8 lost
    for _ in range(2):  # restarts and compactions keep it
        r2 = Register(ReadingQueue(TMP + "/reg5"), 900, checkpoint_s=120)
    # A replaying sensor resumes after minute 7: nothing is counted twice.
    for minute in range(8, 16):
        r2.add(MJ_PER_WH)
        r2.close_due(t + minute * 60)
    eq([x[2:4] for x in r2.queue.oldest(5)], [(0, 0), (15, 15)])  # (energy, register)
    # Once the interval closed, an old checkpoint no longer counts.
    eq(Register(ReadingQueue(TMP + "/reg5"), 900).wh, 15)


def test_checkpoints_cost_bounded_flash():
    # A day of checkpoints between readings: the file stays small.
    t = 1767225600
    q = queue("reg6")
    r = Register(q, 900, checkpoint_s=60)
    r.close_due(t)
    writes = 0
    for minute in range(1, 1441):
        r.add(MJ_PER_WH)
        if not r.close_due(t + minute * 60):
            writes += 1 if r.checkpoint(t + minute * 60) else 0
    eq(writes, 1440 - 96)  # one a minute, but the minutes a reading closes
    if os.stat(TMP + "/reg6")[6] > 2 * 8192 + 96 * 48:
        raise AssertionError("checkpoints were not compacted")
    eq(Register(ReadingQueue(TMP + "/reg6"), 900).wh, 1440)


def test_the_largest_request_fits_the_gateway_limit():
    # Every field at its widest: 24 readings with 40-bit seqs, 53-bit
    # registers and merged spans, and telemetry with every key.
    import cbor
    import oscore
    import sender as meter
    import telemetry

    class Full:
        pending = 10 ** 6
        merges = (1 << 40) - 1

        def oldest(self, n):
            return [((1 << 40) - 1 - n + i, 4102444800 + 900 * i, 10 ** 7, (1 << 53) - 1, 96 * 366)
                    for i in range(n)]

    class Keys:
        class ctx:  # noqa: N801
            class seqno:  # noqa: N801
                value = 0

    class Board:
        def health(self, t):
            t.update({telemetry.RESET: 255, telemetry.RSSI: -128, telemetry.REJECTS: 1000,
                      telemetry.TELEGRAMS: (1 << 40) - 1})

    health = telemetry.Telemetry(Keys(), Full(), Board())
    health.uptime_ms = ((1 << 40) - 1) * 1000
    s = meter.Sender(None, Full(), "m" * 64, meter.MAX_BATCH, health=health)
    body = s._payload()
    eq(len(cbor.loads(body)[2]), meter.MAX_BATCH)
    eq(cbor.loads(body)[5][telemetry.SEQ_LEFT], oscore.MAX_SEQNO)
    if len(body) > 1024:
        raise AssertionError("worst-case request is %d bytes" % len(body))


class _P1Line:
    """A P1 port that always has the meter's latest telegram, whose import
    register the test sets."""

    def __init__(self):
        self.wh = 0
        self.sent = None

    def read(self):
        import p1

        if self.sent == self.wh:
            return None
        self.sent = self.wh
        body = (b"/ISK5\\2M550T-1012\r\n\r\n1-0:1.8.1(%06d.%03d*kWh)\r\n"
                b"1-0:1.8.2(000000.000*kWh)\r\n!" % divmod(self.wh, 1000))
        return body + b"%04X\r\n" % p1.crc16(body)


def _p1_day(name, use_mark):
    # A P1 meter whose register advances 7 Wh a minute. The board restarts
    # twice, off for 20 minutes each time: once 100 s after a checkpoint,
    # once just after an interval closed.
    import p1

    line = _P1Line()
    path = TMP + "/" + name
    fsutil.remove(path)
    t0 = 1767225600
    line.wh = 5000000
    first = line.wh

    def boot():
        q = ReadingQueue(path)
        reader = p1.P1Reader(line)
        r = Register(q, 900, 120, reader.mark if use_mark else None)
        if r.sensor_mark is not None:
            reader.resume(r.sensor_mark)
        return q, reader, r

    q, reader, r = boot()
    r.add(reader.read())  # the first telegram: the meter counts from here
    t = t0
    for stop in (t0 + 2 * 3600 + 220, t0 + 5 * 3600 + 60, t0 + 9 * 3600):
        while t < stop:
            t += 60
            line.wh += 7
            r.add(reader.read())
            if not r.close_due(t):
                r.checkpoint(t)
        for _ in range(20):  # off: the meter's register keeps counting
            t += 60
            line.wh += 7
        q, reader, r = boot()
    r.add(reader.read())  # the first telegram after the last restart
    counted = sum(x[2] for x in q.oldest(1000)) + r.wh - r.wh_at_last_close
    return counted, line.wh - first


def test_p1_register_fills_the_gap_of_a_restart_exactly():
    counted, truth = _p1_day("p1gap", use_mark=True)
    eq(counted, truth)
    # Without the mark the same day loses the gaps: the test can tell.
    counted, truth = _p1_day("p1gap-nomark", use_mark=False)
    if counted >= truth:
        raise AssertionError("nothing lost without the mark: %d of %d" % (counted, truth))


def test_checkpoint_lines_from_before_marks_still_load():
    q = queue("oldO")
    q.append(0, 1767226500, 5, 5)
    with open(q.path, "a") as f:
        import binascii

        body = "O 0 1767227400 3 1200 1767226800"
        f.write("%s %08x\n" % (body, binascii.crc32(body.encode()) & 0xFFFFFFFF))
    r = Register(ReadingQueue(q.path), 900)
    eq((r.interval_end, r.wh, r.residual_mj, r.sensor_mark), (1767227400, 8, 1200, None))


def test_a_busy_gateway_is_not_asked_again_before_its_max_age():
    import time

    import sender as meter

    class Busy:
        max_age = None

        def request(self, method, path, payload):
            payload()
            return 0xA3, [], b"busy"  # 5.03

    q = queue("busy")
    q.append(0, 1767226500, 5, 5)
    link = Busy()
    s = meter.Sender(link, q, "m1", backoff_ms=1000)
    link.max_age = 7
    s.flush()
    wait = time.ticks_diff(s.next_try, time.ticks_ms())
    if not 6900 <= wait <= 7000:
        raise AssertionError("retry in %d ms, not after the 7 s Max-Age" % wait)
    link.max_age = None  # a 5.03 without Max-Age: the usual backoff (2 s, jittered)
    s.flush()
    wait = time.ticks_diff(s.next_try, time.ticks_ms())
    if not 900 <= wait <= 2000:
        raise AssertionError("retry in %d ms" % wait)
    eq(q.pending, 1)  # nothing lost


class _Ticks32:
    """time's tick functions as on an ESP32 (and the 32-bit port): ms
    that wrap at 2^30. The 64-bit Unix port's wrap at 2^62, never in a test."""

    PERIOD = 1 << 30

    def __init__(self, t):
        self.t = t

    def ticks_ms(self):
        return self.t % self.PERIOD

    def ticks_add(self, a, b):
        return (a + b) % self.PERIOD

    def ticks_diff(self, a, b):
        return (a - b + self.PERIOD // 2) % self.PERIOD - self.PERIOD // 2


def test_a_meter_up_for_a_week_still_sends_at_once():
    # With no send offset and no failure, a queued reading goes at once,
    # however long ago the meter booted: a tick from boot compared with now
    # reads as the future from day 6.2 to 12.4 of uptime.
    import sender as meter

    real = meter.time
    meter.time = ticks = _Ticks32(1000)
    try:
        q = queue("uptime")
        q.append(0, 1767226500, 5, 5)
        s = meter.Sender(None, q, "m1")
        for day in (1, 6, 7, 12, 13, 19):
            ticks.t = 1000 + day * 86400 * 1000
            if not s.due():
                raise AssertionError("a pending reading is not due on day %d of uptime" % day)
        s._failed("test")  # a failure: it waits its backoff, then is due again
        if s.due():
            raise AssertionError("due during its backoff")
        ticks.t += 60000
        if not s.due():
            raise AssertionError("not due after its backoff")
    finally:
        meter.time = real

# The meter's persistent state: the reading queue on flash.
import os

import fsutil
from readingqueue import ReadingQueue
from rewind import rewind as _rewind

TMP = os.getenv("GVTEST_TMP")
_n = [0]


def fresh(name):
    _n[0] += 1
    p = "%s/%s%d" % (TMP, name, _n[0])
    fsutil.remove(p)
    return p


def eq(a, b):
    if a != b:
        raise AssertionError("%r != %r" % (a, b))


def test_queue_survives_restart_and_keeps_order():
    p = fresh("q")
    q = ReadingQueue(p)
    for i in range(5):
        q.append(i, 900 * (i + 1), 10 + i, 100 + i)
    q2 = ReadingQueue(p)  # a reboot
    eq(q2.pending, 5)
    eq(q2.oldest(3), [(0, 900, 10, 100, 1), (1, 1800, 11, 101, 1), (2, 2700, 12, 102, 1)])
    eq(q2.last, (4, 4500, 14, 104, 1))


def test_ack_removes_only_the_acknowledged_batch():
    p = fresh("q")
    q = ReadingQueue(p)
    for i in range(6):
        q.append(i, 900 * (i + 1), 1, i + 1)
    q.ack(q.oldest(4))
    eq(q.pending, 2)
    eq([r[0] for r in q.oldest(10)], [4, 5])
    q3 = ReadingQueue(p)
    eq([r[0] for r in q3.oldest(10)], [4, 5])


def test_fully_acked_queue_remembers_last_reading():
    p = fresh("q")
    q = ReadingQueue(p)
    q.append(7, 900, 3, 42)
    q.ack(q.oldest(8))
    q2 = ReadingQueue(p)
    eq(q2.pending, 0)
    eq(q2.last, (7, 900, 3, 42, 1))
    eq(q2.oldest(8), [])


def _held(path):
    """Reading numbers in the file, acknowledged or not."""
    return [r[1] for r in ReadingQueue(path)._records() if r[0] == "R"]


def test_a_gateway_with_backups_gets_back_what_its_restore_lost():
    # The gateway's acks say how far its newest backup reaches (kept): the
    # meter keeps acknowledged readings after it, across reboots and
    # compactions, and sends them again when a restored gateway lacks them.
    p = fresh("q")
    q = ReadingQueue(p, compact_bytes=64)  # compacts at nearly every ack
    for i in range(10):
        q.append(i, 900 * (i + 1), 1, i + 1)
    q.ack(q.oldest(4), kept=-1)  # stored 0-3, no backup holds them yet
    q.ack(q.oldest(4), kept=2)  # stored 4-7, the backup holds 0-2
    eq(q.pending, 2)
    eq(_held(p), [3, 4, 5, 6, 7, 8, 9])
    q = ReadingQueue(p, compact_bytes=64)  # a reboot keeps all of it
    eq((q.acked, q.kept, q.pending), (7, 2, 2))
    eq([r[0] for r in q.oldest(10)], [8, 9])
    eq(_rewind(q, 2, print), (5, 0))  # restored from that backup: 3-7 again
    eq([r[0] for r in q.oldest(10)], [3, 4, 5, 6, 7, 8, 9])
    eq(ReadingQueue(p).pending, 7)  # and a reboot now would still send them
    q.ack(q.oldest(10), kept=9)
    eq(_held(p), [9])  # everything in a backup: only the register's reading stays


def test_without_backups_acks_free_readings_at_once_and_rewind_says_what_is_gone():
    p = fresh("q")
    q = ReadingQueue(p)
    for i in range(6):
        q.append(i, 900 * (i + 1), 1, i + 1)
    q.ack(q.oldest(5))
    eq(_held(p), [5])
    eq(_rewind(q, 9, print), (0, 0))  # a gateway ahead of us: nothing to do here
    eq(_rewind(q, 1, print), (0, 3))  # it lost 2-4, freed here; 5 was never acknowledged
    eq([r[0] for r in q.oldest(10)], [5])


def test_kept_readings_are_bounded_when_backups_stop():
    p = fresh("q")
    q = ReadingQueue(p, compact_bytes=64, max_kept=5)
    for i in range(20):
        q.append(i, 900 * (i + 1), 1, i + 1)
        q.ack([(i,)], kept=0)  # the backup never moves past 0
    eq(_held(p), [15, 16, 17, 18, 19])


def test_torn_tail_is_dropped_and_later_appends_survive():
    p = fresh("q")
    q = ReadingQueue(p)
    q.append(0, 900, 5, 5)
    q.append(1, 1800, 6, 11)
    with open(p, "a") as f:
        f.write("R 2 2700 7 1")  # power lost in the middle of a write (no span, no CRC)
    q2 = ReadingQueue(p)
    eq(q2.pending, 2)
    q2.append(2, 2700, 7, 18)
    q3 = ReadingQueue(p)
    eq([r[0] for r in q3.oldest(10)], [0, 1, 2])


def test_corrupt_line_is_not_trusted():
    p = fresh("q")
    q = ReadingQueue(p)
    q.append(0, 900, 5, 5)
    q.append(1, 1800, 6, 11)
    with open(p) as f:
        data = f.read()
    with open(p, "w") as f:
        f.write(data.replace("R 1 1800 6", "R 1 1800 9"))  # flipped digit, CRC fails
    eq([r[0] for r in ReadingQueue(p).oldest(10)], [0])


def test_renumber_after_a_wiped_flash_follows_the_gateway():
    # The flash was wiped: numbering restarted at 0, but the gateway holds
    # readings up to 41 (interval end 900). New readings move past 41, on
    # flash too, and the register continues after them.
    p = fresh("renum")
    q = ReadingQueue(p)
    for i in range(3):
        q.append(i, 1800 + 900 * i, 5, 5 * (i + 1))
    eq(q.renumber(41, 900), 42)
    eq([r[0] for r in q.oldest(10)], [42, 43, 44])
    eq(q.last[0], 44)
    q.append(45, 4500, 1, 16)
    q2 = ReadingQueue(p)
    eq([r[:2] for r in q2.oldest(10)], [(42, 1800), (43, 2700), (44, 3600), (45, 4500)])
    eq(q2.renumber(41, 900), 0)  # a second answer from the gateway changes nothing


def test_renumber_leaves_readings_whose_ack_was_lost():
    # The gateway stored 5 and 6 but its acknowledgement never arrived: they
    # stay as they are (the gateway acknowledges them as duplicates), and so
    # does 7, which is new and already numbered after the gateway's.
    p = fresh("renum2")
    q = ReadingQueue(p)
    for i in range(5, 8):
        q.append(i, 900 * i, 5, 5 * i)
    eq(q.renumber(6, 900 * 6), 0)
    eq([r[0] for r in q.oldest(10)], [5, 6, 7])


# --- power loss at every byte ------------------------------------------------

import readingqueue  # noqa: E402


def _state(path):
    q = ReadingQueue(path)
    pending = q.oldest(1 << 20)
    seqs = [r[0] for r in pending]
    if len(seqs) != len(set(seqs)):
        raise AssertionError("a reading appears twice: %r" % seqs)
    return seqs, q.last


def _prepared(name):
    p = fresh(name)
    q = ReadingQueue(p)
    for i in range(6):
        q.append(i, 900 * (i + 1), i + 1, (i + 1) * (i + 2) // 2)
    q.ack(q.oldest(2))  # 0 and 1 acknowledged, 2..5 pending
    with open(p, "rb") as f:
        return p, f.read()


def _cut_each(base, line, before, after, name):
    for k in range(len(line) + 1):
        p = fresh(name)
        with open(p, "wb") as f:
            f.write(base + line[:k])
        seqs, _ = _state(p)
        want = after if k == len(line) else before
        if seqs != want:
            raise AssertionError("cut at byte %d of %r: %r, want %r" % (k, line, seqs, want))
        # The queue stays usable: the next append lands on a clean line.
        q = ReadingQueue(p)
        q.append(100, 900 * 100, 1, 999)
        seqs2, _ = _state(p)
        if seqs2 != want + [100]:
            raise AssertionError("after cut at %d the next append was lost: %r" % (k, seqs2))


def test_power_loss_at_every_byte_of_an_append():
    p, base = _prepared("cutappend")
    line = readingqueue._reading_line((6, 6300, 7, 28, 1)).encode()
    _cut_each(base, line, [2, 3, 4, 5], [2, 3, 4, 5, 6], "cutA")


def test_power_loss_at_every_byte_of_an_ack():
    p, base = _prepared("cutack")
    line = readingqueue._line("A 4").encode()
    _cut_each(base, line, [2, 3, 4, 5], [5], "cutB")


def test_power_loss_during_compaction_keeps_the_old_log():
    p, base = _prepared("cutcompact")
    q = ReadingQueue(p)
    with open(p, "rb") as f:
        log = f.read()
    # Compaction writes <path>.tmp, then renames: cut the temporary file
    # anywhere; the log itself is untouched until the rename.
    new = b"".join(readingqueue._reading_line(r).encode() for r in q.oldest(10))
    for k in range(len(new) + 1):
        with open(p, "wb") as f:
            f.write(log)
        with open(p + ".tmp", "wb") as f:
            f.write(new[:k])
        seqs, _ = _state(p)
        eq(seqs, [2, 3, 4, 5])
        eq(fsutil.exists(p + ".tmp"), False)


def test_bounded_queue_merges_oldest_same_day_and_keeps_energy():
    p = fresh("bounded")
    q = ReadingQueue(p, max_pending=10)
    register = 0
    for i in range(30):  # 30 readings, 3 per "day" of 2700 s... use real days:
        register += i + 1
        q.append(i, 86400 * (i // 10) + 900 * (i % 10 + 1), i + 1, register)
    pending = q.oldest(100)
    eq(len(pending), 10)
    eq(sum(r[2] for r in pending), sum(range(1, 31)))  # no energy dropped
    eq(pending[-1][3], register)  # the register is exact
    eq(sum(r[4] for r in pending), 30)  # every interval still accounted for
    for r in pending:  # merged readings never straddle a day
        if r[4] > 1 and (r[1] - 1) // 86400 != (r[1] - 900 * r[4]) // 86400:
            raise AssertionError(r)
    q2 = ReadingQueue(p, max_pending=10)
    eq(q2.oldest(100), pending)

# The meter's persistent state: reading queue and OSCORE sequence numbers.
import os

import fsutil
from readingqueue import ReadingQueue
from seqno import SequenceStore, SequenceStoreError

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
    eq(q2.oldest(3), [(0, 900, 10, 100), (1, 1800, 11, 101), (2, 2700, 12, 102)])
    eq(q2.last, (4, 4500, 14, 104))


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
    eq(q2.last, (7, 900, 3, 42))
    eq(q2.oldest(8), [])


def test_torn_tail_is_dropped_and_later_appends_survive():
    p = fresh("q")
    q = ReadingQueue(p)
    q.append(0, 900, 5, 5)
    q.append(1, 1800, 6, 11)
    with open(p, "a") as f:
        f.write("R 2 2700 7 1")  # power lost in the middle of a write
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


def test_sequence_numbers_never_repeat_across_reboots():
    p = fresh("seq")
    seen = set()
    for boot in range(5):
        s = SequenceStore(p, chunk=4)
        for _ in range(boot + 3):  # some boots use part of a chunk, some more
            n = s.next()
            if n in seen:
                raise AssertionError("sequence number %d reused after reboot %d" % (n, boot))
            seen.add(n)
    with open(p) as f:
        reserved = int(f.read())
    if reserved <= max(seen):
        raise AssertionError("reserved bound not above the last number used")


def test_unreadable_sequence_file_refuses_to_guess():
    p = fresh("seq")
    with open(p, "w") as f:
        f.write("garbage")
    try:
        SequenceStore(p)
    except SequenceStoreError:
        return
    raise AssertionError("a corrupt sequence file was accepted")

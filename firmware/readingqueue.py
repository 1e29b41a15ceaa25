# The queue of closed readings on flash. A reading is appended when its
# interval closes and leaves only when the gateway acknowledges it in an
# OSCORE-protected response. It survives a restart at any moment.
#
# The file is a log of text lines, each ending with its own CRC-32:
#   R <seq> <interval end> <energy Wh> <register Wh> <crc>   a reading
#   A <seq> <crc>                                           acked up to seq
# A torn or corrupt line ends the valid log; the next start rewrites the
# file from the valid part (compaction), so later appends never land behind
# garbage. Readings are sent oldest first, so "acked up to seq" is all that
# an acknowledgement needs to record. Everything streams line by line: a
# long backlog never has to fit in RAM.
import binascii
import os

import fsutil


def _line(body):
    return "%s %08x\n" % (body, binascii.crc32(body.encode()) & 0xFFFFFFFF)


def _reading_line(r):
    return _line("R %d %d %d %d" % r)


def _parse(line):
    if not line.endswith("\n"):
        return None  # torn write
    body, _, crc = line[:-1].rpartition(" ")
    try:
        if int(crc, 16) != binascii.crc32(body.encode()) & 0xFFFFFFFF:
            return None
        parts = body.split(" ")
        if parts[0] == "R" and len(parts) == 5:
            return ("R", int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4]))
        if parts[0] == "A" and len(parts) == 2:
            return ("A", int(parts[1]))
    except ValueError:
        pass
    return None


class ReadingQueue:
    def __init__(self, path, compact_bytes=8192):
        self.path = path
        self.compact_bytes = compact_bytes
        self.last = None  # newest reading ever queued: (seq, end, energy, register)
        self.acked = -1
        self._load()
        self._compact()

    def _records(self):
        """Valid records from the start of the file up to the first bad one."""
        if not fsutil.exists(self.path):
            return
        with open(self.path) as f:
            for raw in f:
                rec = _parse(raw)
                if rec is None:
                    return
                yield rec

    def _load(self):
        for rec in self._records():
            if rec[0] == "R":
                self.last = rec[1:]
            elif rec[1] > self.acked:
                self.acked = rec[1]

    def _compact(self):
        # Rewrite with pending readings only. With nothing pending, keep the
        # newest reading and its ack: they carry the register and sequence
        # number that the meter continues from.
        tmp = self.path + ".tmp"
        pending = 0
        size = 0
        with open(tmp, "w") as out:
            for rec in self._records():
                if rec[0] == "R" and rec[1] > self.acked:
                    line = _reading_line(rec[1:])
                    out.write(line)
                    size += len(line)
                    pending += 1
            if pending == 0 and self.last is not None:
                line = _reading_line(self.last) + _line("A %d" % self.last[0])
                out.write(line)
                size += len(line)
            out.flush()
        os.rename(tmp, self.path)
        self.pending = pending
        self._size = size

    def _append(self, text):
        with open(self.path, "a") as f:
            f.write(text)
            f.flush()
        self._size += len(text)

    def append(self, seq, end, energy, register):
        if self.last is not None and seq <= self.last[0]:
            raise ValueError("reading sequence numbers must increase")
        self._append(_reading_line((seq, end, energy, register)))
        self.last = (seq, end, energy, register)
        self.pending += 1

    def oldest(self, n):
        """Up to n pending readings, oldest first."""
        out = []
        for rec in self._records():
            if rec[0] == "R" and rec[1] > self.acked:
                out.append(rec[1:])
                if len(out) >= n:
                    break
        return out

    def ack(self, batch):
        """The gateway has stored this batch, the oldest pending readings."""
        seq = batch[-1][0]
        if seq <= self.acked:
            return
        self._append(_line("A %d" % seq))
        self.acked = seq
        self.pending = max(0, self.pending - len(batch))
        if self.pending == 0 or self._size > self.compact_bytes:
            self._compact()

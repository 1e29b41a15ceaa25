# The queue of closed readings on flash. A reading is appended when its
# interval closes and leaves only when the gateway acknowledges it in an
# OSCORE-protected response. It survives a restart at any moment.
#
# The file is a log of text lines, each ending with its own CRC-32:
#   R <seq> <interval end> <energy Wh> <register Wh> <span> <crc>   a reading
#   A <seq> <crc>                                                  acked up to seq
#   K <seq> <crc>        a backup of the gateway holds everything up to seq
#   S <seq> <residual mJ> <crc>   sub-Wh energy carried past reading seq's register
#   O <after seq> <end> <Wh> <residual mJ> <at> <mark> <crc>   the open interval
#        (ending at <end>, after reading <after seq>, -1 before any) as of the
#        sample at <at>: a checkpoint, so that a restart loses at most the energy
#        since it. <mark> is the sensor's own absolute register (P1, in Wh) that
#        all energy counted so far reaches, or -1: with it a restart loses
#        nothing. A reading line voids the checkpoint before it, mark and all,
#        so a write torn between the two can never count energy twice.
# A torn or corrupt line ends the valid log; the next start rewrites the
# file from the valid part (compaction), so later appends never land behind
# garbage. Readings are sent oldest first, so "acked up to seq" is all that
# an acknowledgement needs to record. Everything streams line by line: a
# long backlog never has to fit in RAM.
#
# A gateway that keeps backups says in its acks how far its newest backup
# reaches ("kept"). Acknowledged readings stay here until then (at most
# `max_kept` of them): if the gateway is restored from that backup, they go
# again (rewind.py) and nothing it had acknowledged is lost.
# A gateway without backups never says it; its acks free readings at once.
#
# Bounded: once `max_pending` readings wait (30 days of 15-minute readings
# by default), the oldest two pending readings of the same UTC day are
# merged into one that spans both intervals (span > 1): energy and register
# stay exact, only the time resolution of that old stretch is lost, and the
# gateway counts a merged reading for its bill, never for neighbourhood
# demand. Energy is never dropped.
import binascii
import os

import fsutil


def _line(body):
    return "%s %08x\n" % (body, binascii.crc32(body.encode()) & 0xFFFFFFFF)


def _reading_line(r):
    return _line("R %d %d %d %d %d" % r)


def _open_line(after, state):
    return _line("O %d %d %d %d %d %d" % ((after,) + tuple(state)))


def _parse(line):
    if not line.endswith("\n"):
        return None  # torn write
    body, _, crc = line[:-1].rpartition(" ")
    try:
        if int(crc, 16) != binascii.crc32(body.encode()) & 0xFFFFFFFF:
            return None
        parts = body.split(" ")
        if parts[0] == "R" and len(parts) == 6:
            return ("R", int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4]),
                    int(parts[5]))
        if parts[0] in ("A", "K") and len(parts) == 2:
            return (parts[0], int(parts[1]))
        if parts[0] == "S" and len(parts) == 3:
            return ("S", int(parts[1]), int(parts[2]))
        if parts[0] == "O" and len(parts) in (6, 7):  # 6: from before marks
            return ("O",) + tuple(int(x) for x in parts[1:]) + (-1,) * (7 - len(parts))
    except ValueError:
        pass
    return None


DAY = 86400


class ReadingQueue:
    def __init__(self, path, compact_bytes=8192, max_pending=2880, max_kept=288):
        self.path = path
        self.compact_bytes = compact_bytes
        self.max_pending = max_pending
        self.max_kept = max_kept  # 3 days of 15-minute readings
        self.last = None  # newest reading ever queued: (seq, end, energy, register, span)
        # Energy below one Wh that the register carried past `last`: kept with
        # it, so that a restart does not lose up to a Wh each time.
        self.residual_mj = 0
        # The open interval's last checkpoint: (end, Wh in it, residual mJ,
        # time of the last sample counted, sensor mark or -1), or None.
        # time of the last sample counted), or None.
        self.open = None
        self.acked = -1
        self.kept = None  # None: the gateway keeps no backups (see above)
        self.merges = 0
        # A compaction cut short by a power loss left only its temporary
        # file; the log itself was never touched.
        fsutil.remove(path + ".tmp")
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

    def _after(self):
        return -1 if self.last is None else self.last[0]

    def _load(self):
        for rec in self._records():
            if rec[0] == "R":
                self.last = rec[1:]
                self.residual_mj = 0
                self.open = None
            elif rec[0] == "S":
                if self.last is not None and rec[1] == self.last[0]:
                    self.residual_mj = rec[2]
            elif rec[0] == "O":
                if rec[1] == self._after():
                    self.open = rec[2:]
            elif rec[0] == "K":
                if self.kept is None or rec[1] > self.kept:
                    self.kept = rec[1]
            elif rec[1] > self.acked:
                self.acked = rec[1]

    def _floor(self):
        """Readings at or below this number are forgotten."""
        if self.kept is None:
            return self.acked
        return max(min(self.acked, self.kept), self.acked - self.max_kept)

    def _compact(self, merge=False, shift_from=None, shift=0):
        # Rewrite with pending readings only, and the acknowledged ones that
        # no backup of the gateway holds yet. With nothing pending, keep the
        # newest reading and its ack: they carry the register and sequence
        # number that the meter continues from. With merge="day", the first
        # two consecutive pending readings of one UTC day become one; with
        # merge="any", the first two pending readings. Pending readings from
        # seq `shift_from` on get `shift` added to their numbers.
        tmp = self.path + ".tmp"
        pending = 0
        size = 0
        prev = None
        floor = self._floor()
        held = False  # acknowledged readings kept for a restored gateway
        with open(tmp, "w") as out:
            if self.kept is not None:
                line = _line("A %d" % self.acked) + _line("K %d" % self.kept)
                out.write(line)
                size += len(line)
            for rec in self._records():
                if rec[0] != "R" or rec[1] <= floor:
                    continue
                if rec[1] <= self.acked:
                    line = _reading_line(rec[1:])
                    out.write(line)
                    size += len(line)
                    held = True
                    continue
                r = rec[1:]
                if shift_from is not None and r[0] >= shift_from:
                    r = (r[0] + shift,) + r[1:]
                if merge and prev is not None and (merge == "any" or
                                                   (prev[1] - 1) // DAY == (r[1] - 1) // DAY):
                    r = (r[0], r[1], prev[2] + r[2], r[3], prev[4] + r[4])
                    prev = None
                    merge = False
                    pending -= 1
                    self.merges += 1
                if prev is not None:
                    line = _reading_line(prev)
                    out.write(line)
                    size += len(line)
                prev = r
                pending += 1
            if prev is not None:
                line = _reading_line(prev)
                out.write(line)
                size += len(line)
            if pending == 0 and not held and self.last is not None:
                line = _reading_line(self.last) + _line("A %d" % self.last[0])
                out.write(line)
                size += len(line)
            if self.last is not None and self.residual_mj:
                line = _line("S %d %d" % (self.last[0], self.residual_mj))
                out.write(line)
                size += len(line)
            if self.open is not None:
                line = _open_line(self._after(), self.open)
                out.write(line)
                size += len(line)
            out.flush()
        os.rename(tmp, self.path)
        self.pending = pending
        self._size = size
        self._stale = 0

    def renumber(self, gw_seq, gw_end):
        """Shift pending readings newer than the gateway's newest stored one
        (seq gw_seq, interval end gw_end) past gw_seq, if their numbers are
        not already above it. Returns the shift (0: nothing to do)."""
        first = None
        for rec in self._records():
            if rec[0] == "R" and rec[1] > self.acked and rec[2] > gw_end:
                first = rec[1]
                break
        if first is None or first > gw_seq:
            return 0
        shift = gw_seq + 1 - first
        if self.last is not None and self.last[0] >= first:
            self.last = (self.last[0] + shift,) + self.last[1:]
        self._compact(shift_from=first, shift=shift)
        return shift

    def _append(self, text):
        with open(self.path, "a") as f:
            f.write(text)
            f.flush()
        self._size += len(text)

    def checkpoint(self, end, wh, residual_mj, at, mark=-1):
        """The open interval so far: Wh since the last reading closed, the
        sub-Wh remainder, the time of the last sample counted and the
        sensor's mark. One short append; the next reading (or checkpoint)
        supersedes it."""
        self.open = (end, wh, residual_mj, at, mark)
        line = _open_line(self._after(), self.open)
        self._append(line)
        # Superseded checkpoints pile up between readings; rewrite the file
        # once they alone pass the compaction size, not on every one.
        self._stale += len(line)
        if self._stale > self.compact_bytes:
            self._compact()

    def append(self, seq, end, energy, register, residual_mj=0, then_open=None):
        """A closed reading; `then_open`, the next interval's first
        checkpoint (to carry a sensor mark across), in the same write."""
        if self.last is not None and seq <= self.last[0]:
            raise ValueError("reading sequence numbers must increase")
        text = _reading_line((seq, end, energy, register, 1))
        if residual_mj:  # one write: a reading and its remainder land together
            text += _line("S %d %d" % (seq, residual_mj))
        if then_open is not None:
            text += _open_line(seq, then_open)
        self._append(text)
        self.last = (seq, end, energy, register, 1)
        self.residual_mj = residual_mj
        self.open = then_open
        self.pending += 1
        if self.pending > self.max_pending:
            self._compact(merge="day")
            if self.pending > self.max_pending:  # every old day is down to one reading
                self._compact(merge="any")

    def oldest(self, n):
        """Up to n pending readings, oldest first."""
        out = []
        for rec in self._records():
            if rec[0] == "R" and rec[1] > self.acked:
                out.append(rec[1:])
                if len(out) >= n:
                    break
        return out

    def ack(self, batch, kept=None):
        """The gateway has stored this batch, the oldest pending readings;
        `kept`: how far its newest backup reaches (None: it keeps none)."""
        seq = batch[-1][0]
        if seq <= self.acked:
            return
        text = _line("A %d" % seq)
        if kept is not None and (self.kept is None or kept > self.kept):
            text += _line("K %d" % kept)
            self.kept = kept
        self._append(text)
        self.acked = seq
        self.pending = max(0, self.pending - len(batch))
        if self.pending == 0 or self._size > self.compact_bytes:
            self._compact()

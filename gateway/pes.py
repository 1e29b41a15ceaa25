"""The Privacy Enhancing System: Paillier-encrypt each interval energy and
add it homomorphically into its accumulators, in one transaction with the
dedup state.

For every reading of meter m in neighbourhood g, interval ending at t:
    demand[g, t]      <- demand[g, t] (+) E(energy)   unless (g, t) is sealed
    bill_days[m, d, b] <- bill_days[m, d, b] (+) E(energy)   d = day of t, b = band
where (+) is ciphertext multiplication mod n^2. A reading that arrives after
its interval was sealed counts for the bill only: two different releases of
one interval would let anyone subtract one household out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from phe import PaillierPublicKey

from common import paillier

from .store import Store, StoreError, now

log = logging.getLogger("gridveil.pes")

DAY = 86400


@dataclass(frozen=True)
class Reading:
    seq: int
    interval_end: int
    energy_wh: int
    register_wh: int


@dataclass
class BatchResult:
    acked: list[int]
    accepted: int = 0
    duplicates: int = 0
    late: int = 0


def day_of(interval_end: int) -> int:
    # The interval (end - length, end] belongs to the day its last second is in.
    return (interval_end - 1) // DAY


class PES:
    def __init__(self, store: Store, pub: PaillierPublicKey, interval_s: int):
        self.store = store
        self.pub = pub
        self.key_id = paillier.key_id(pub)
        self.interval_s = interval_s

    def band(self, interval_end: int) -> int:
        return 0  # flat tariff; time-of-use bands plug in here

    def encrypt(self, energy_wh: int) -> bytes:
        return paillier.to_bytes(self.pub, self.pub.encrypt(energy_wh))

    def _add(self, acc: bytes, c: bytes) -> bytes:
        total = paillier.from_bytes(self.pub, acc) + paillier.from_bytes(self.pub, c)
        return paillier.to_bytes(self.pub, total)

    def ingest(self, meter_id: str, readings: list[Reading], fw: str | None,
               backlog: int | None) -> BatchResult:
        """Store one batch from one authenticated meter. Returns the seqs to
        acknowledge: every reading in the batch, new or duplicate."""
        result = BatchResult(acked=[r.seq for r in readings])
        # Encrypt before taking the write lock: the slow part runs outside it.
        # Readings that turn out to be duplicates cost a wasted encryption,
        # which only happens when an acknowledgement was lost.
        row = self.store.db.execute("SELECT last_seq FROM meters WHERE meter_id=?",
                                    (meter_id,)).fetchone()
        if row is None:
            raise StoreError(f"meter {meter_id} has a key but is not in the database")
        fresh = [r for r in readings if r.seq > row[0]]
        ciphertexts = {r.seq: self.encrypt(r.energy_wh) for r in fresh}
        with self.store.transaction() as db:
            nbh, last_seq = db.execute("SELECT neighbourhood, last_seq FROM meters WHERE meter_id=?",
                                       (meter_id,)).fetchone()
            last_end = None
            for r in readings:
                if r.seq <= last_seq:
                    result.duplicates += 1
                    continue
                c = ciphertexts.get(r.seq) or self.encrypt(r.energy_wh)
                self._add_demand(db, nbh, r.interval_end, c, result)
                self._add_bill(db, meter_id, r.interval_end, c)
                if r.seq != last_seq + 1 and last_seq >= 0:
                    log.warning("meter %s: readings %d..%d never arrived", meter_id,
                                last_seq + 1, r.seq - 1)
                last_seq, last_end = r.seq, r.interval_end
                result.accepted += 1
            db.execute(
                "UPDATE meters SET last_seq=?, last_end=COALESCE(?, last_end), last_seen=?,"
                " fw_version=COALESCE(?, fw_version), backlog=COALESCE(?, backlog),"
                " accepted=accepted+?, duplicates=duplicates+?, late=late+? WHERE meter_id=?",
                (last_seq, last_end, now(), fw, backlog, result.accepted, result.duplicates,
                 result.late, meter_id))
        return result

    def _add_demand(self, db, nbh: str, end: int, c: bytes, result: BatchResult) -> None:
        if db.execute("SELECT 1 FROM sealed WHERE neighbourhood=? AND interval_end=?",
                      (nbh, end)).fetchone():
            result.late += 1
            return
        row = db.execute("SELECT ciphertext FROM demand WHERE neighbourhood=? AND interval_end=?",
                         (nbh, end)).fetchone()
        if row is None:
            db.execute("INSERT INTO demand VALUES (?, ?, ?, 1)", (nbh, end, c))
        else:
            db.execute("UPDATE demand SET ciphertext=?, contributors=contributors+1"
                       " WHERE neighbourhood=? AND interval_end=?",
                       (self._add(row[0], c), nbh, end))

    def _add_bill(self, db, meter_id: str, end: int, c: bytes) -> None:
        day, band = day_of(end), self.band(end)
        row = db.execute("SELECT ciphertext FROM bill_days WHERE meter_id=? AND day=? AND band=?",
                         (meter_id, day, band)).fetchone()
        if row is None:
            db.execute("INSERT INTO bill_days (meter_id, day, band, ciphertext, readings, key_id)"
                       " VALUES (?, ?, ?, ?, 1, ?)", (meter_id, day, band, c, self.key_id))
        else:
            # A change after signing makes a new version that must be re-signed.
            db.execute("UPDATE bill_days SET ciphertext=?, readings=readings+1,"
                       " version=version+(signature IS NOT NULL), signature=NULL"
                       " WHERE meter_id=? AND day=? AND band=?",
                       (self._add(row[0], c), meter_id, day, band))

"""The Privacy Enhancing System: Paillier-encrypt each interval energy and
add it homomorphically into its accumulators, in one transaction with the
dedup state and the customer's sealed copy.

For a reading of meter m (neighbourhood g) for the interval ending at t:
    demand[g, t']       <- demand[g, t'] (+) E(energy), and m joins its meters
    bill_days[m, d', b] <- bill_days[m, d', b] (+) E(energy)
    sealed copy         <- AES-GCM under m's data key for t's day, wrapped to
                           the customer's RSA key (common/customer.py)
where (+) is ciphertext multiplication mod n^2, E uses the Paillier key
epoch in force on day d' = day(t'), b is the tariff band of t', and t' = t.

Clipping: an epoch the guardian signed with a bound clip_wh > 0 (its DP
sensitivity) adds min(energy, clip_wh) to the aggregate, so one reading
moves a released sum by at most what the noise was made for; the bill
still counts the whole energy. Clipped readings are counted per gateway,
not per meter, for the operator. A meter whose readings arrive late can
have several in one aggregate: the aggregate record names it once per
reading, and the holders charge its household's budget once per reading.

Except when (g, t) is already sealed (the reading is late), or the reading
merges several intervals (a meter whose queue overflowed): then t' is the
neighbourhood's next open interval, for the aggregate *and* the bill. A
sealed interval never changes (two releases of one interval would let
anyone subtract a household out), and the bill never counts a reading that
no aggregate counts: otherwise the sum of a neighbourhood's bills minus the
sum of its aggregates would be exactly the late reading (a packet delayed
past the grace period would be enough). Every reading is in exactly one
aggregate and one bill day, of the same day, so bills and aggregates agree
on every neighbourhood and day. The energy is exact; only its time shifts
to when it arrived. The customer's own copy keeps the true interval.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common import customer, paillier

from .fastenc import DEFAULT_EXPONENT_BITS, FastEncryptor
from .store import Store, StoreError

log = logging.getLogger("gridveil.pes")

DAY = 86400


@dataclass(frozen=True)
class Reading:
    seq: int
    interval_end: int
    energy_wh: int
    register_wh: int
    span: int = 1  # intervals covered; > 1 when a full meter queue merged old readings


@dataclass
class Batch:
    """One request's readings from one authenticated meter, as parsed."""
    meter_id: str
    readings: list[Reading]
    fw_version: str | None = None
    backlog: int | None = None
    telemetry: dict[str, int] | None = None


@dataclass
class BatchResult:
    acked: list[int]
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    stale: int = 0  # a new seq for an interval the meter already reported: not counted
    clipped: int = 0  # readings above the epoch's bound: the aggregate got the bound


@dataclass(frozen=True)
class MeterInfo:
    neighbourhood: str
    tariff: object
    customer_pub: object | None


def day_of(interval_end: int) -> int:
    # The interval (end - length, end] belongs to the day its last second is in.
    return (interval_end - 1) // DAY


class PES:
    def __init__(self, store: Store, interval_s: int,
                 exponent_bits: int = DEFAULT_EXPONENT_BITS):
        self.store = store
        self.interval_s = interval_s
        self.epochs = store.key_epochs()
        if not self.epochs:
            raise StoreError("the gateway has no Paillier public key; run `gridveil gateway init`")
        self._pubs = {kid: pub for _, kid, pub, _ in self.epochs}
        self.exponent_bits = exponent_bits
        self._encryptors: dict[str, FastEncryptor] = {}
        self._clip = {kid: clip for _, kid, _, clip in self.epochs}
        self._meters: dict[str, MeterInfo] = {}
        self._registry = store.registry_version()
        self._day_keys: dict[tuple[str, int], tuple[int, bytes]] = {}

    @property
    def key_id(self) -> str:
        return self.epochs[-1][1]

    def key_for(self, day: int):
        """(key_id, public key) of the epoch in force on this day."""
        for from_day, kid, pub, _ in reversed(self.epochs):
            if day >= from_day:
                return kid, pub
        return self.epochs[0][1], self.epochs[0][2]

    def meter(self, meter_id: str) -> MeterInfo:
        if meter_id not in self._meters:
            row = self.store.meter_registration(meter_id)
            if row is None:
                raise StoreError(f"meter {meter_id} has a key but is not in the database")
            tariffs = self.store.tariffs()
            self._meters[meter_id] = MeterInfo(
                row[0], tariffs[row[1]], customer.public_key(row[2]) if row[2] else None)
        return self._meters[meter_id]

    def encryptor(self, kid: str, h_s: int | None = None) -> FastEncryptor:
        """phe-compatible ciphertexts, ~25x faster (gateway/fastenc.py); its
        table (22 MiB at 2048 bits) is made when an epoch is first used, with
        the base h_s if given (a randomness pool's), else a fresh one."""
        if kid not in self._encryptors:
            self._encryptors[kid] = FastEncryptor(self._pubs[kid], self.exponent_bits, h_s)
        return self._encryptors[kid]

    def encrypt(self, day: int, energy_wh: int) -> tuple[str, bytes]:
        kid, pub = self.key_for(day)
        return kid, paillier.to_bytes(pub, self.encryptor(kid).encrypt(energy_wh))

    def _add(self, kid: str, acc: bytes, c: bytes) -> bytes:
        pub = self._pubs[kid]
        return paillier.to_bytes(pub, paillier.from_bytes(pub, acc) + paillier.from_bytes(pub, c))

    def ingest(self, meter_id: str, readings: list[Reading], fw: str | None,
               backlog: int | None, telemetry: dict[str, int] | None = None) -> BatchResult:
        """Store one batch from one authenticated meter. Returns the seqs to
        acknowledge: every reading in the batch, new or duplicate."""
        (result,) = self.ingest_group([Batch(meter_id, readings, fw, backlog, telemetry)])
        if isinstance(result, Exception):
            raise result
        return result

    def ingest_group(self, batches: list[Batch]) -> list[BatchResult | Exception]:
        """Several meters' batches in one transaction, so one commit (and one
        fsync) for all: a result per batch, or the exception that refused it
        (its own writes rolled back to a savepoint; the others stand). Once
        this returns, everything in a BatchResult is on disk. If the commit
        itself fails, it raises and nothing of the group was stored."""
        version = self.store.registry_version()
        if version != self._registry:  # a household's key or consent changed
            self._meters.clear()
            self._registry = version
        # Encrypt before taking the write lock: the slow part runs outside it.
        encs: list[dict | Exception] = []
        for b in batches:
            try:
                self.meter(b.meter_id)  # an unregistered meter is refused here
                last_seq = self.store.last_seq(b.meter_id)
                encs.append({r.seq: self.encrypt(day_of(r.interval_end), r.energy_wh)
                             for r in b.readings if r.seq > last_seq})
            except StoreError as e:
                encs.append(e)
        results: list[BatchResult | Exception] = []
        group_keys: dict[tuple[str, int], tuple[int, bytes]] = {}
        with self.store.transaction():
            for i, (b, enc) in enumerate(zip(batches, encs, strict=True)):
                if isinstance(enc, Exception):
                    results.append(enc)
                    continue
                new_keys = {d: k for (m, d), k in group_keys.items() if m == b.meter_id}
                try:
                    with self.store.savepoint(f"batch{i}"):
                        results.append(self._apply(b, enc, new_keys))
                except Exception as e:  # noqa: BLE001 -- refused alone; the server answers it
                    results.append(e)
                    continue
                group_keys.update({(b.meter_id, d): k for d, k in new_keys.items()})
        # Only keys whose wrapped copy is committed may be reused later.
        self._day_keys.update(group_keys)
        return results

    def _apply(self, b: Batch, enc: dict, new_keys: dict) -> BatchResult:
        meter_id, readings = b.meter_id, b.readings
        info = self.meter(meter_id)
        result = BatchResult(acked=[r.seq for r in readings])
        store = self.store
        last_seq = store.last_seq(meter_id)
        last_end = None
        newest = store.last_end(meter_id) or 0
        for r in readings:
            if r.seq <= last_seq:
                result.duplicates += 1
                continue
            if r.interval_end <= newest:
                # Only strictly newer intervals count, across batches: the
                # same interval sent again under fresh seqs must not count
                # one household as several contributors.
                result.stale += 1
                last_seq = r.seq
                continue
            newest = r.interval_end
            target = self._target(info.neighbourhood, r)
            if target != r.interval_end or r.span != 1:
                result.late += 1
            day = day_of(target)
            kid, c = enc.get(r.seq) if day == day_of(r.interval_end) and r.seq in enc \
                else self.encrypt(day, r.energy_wh)
            clip = self._clip[kid]
            if clip and r.energy_wh > clip:
                result.clipped += 1
                self._add_demand(info.neighbourhood, target, kid,
                                 self.encrypt(day, clip)[1], meter_id, r.seq)
            else:
                self._add_demand(info.neighbourhood, target, kid, c, meter_id, r.seq)
            self._add_bill(meter_id, day, info.tariff.band(target - self.interval_s), kid, c,
                           target)
            if info.customer_pub is not None:
                self._seal_copy(meter_id, r, day_of(r.interval_end), info.customer_pub,
                                new_keys)
            if r.seq != last_seq + 1 and last_seq >= 0:
                log.warning("meter %s: readings %d..%d never arrived", meter_id,
                            last_seq + 1, r.seq - 1)
            last_seq, last_end = r.seq, r.interval_end
            result.accepted += 1
        store.finish_batch(meter_id, last_seq, last_end, b.fw_version, b.backlog,
                           result.accepted, result.duplicates, result.late, b.telemetry)
        if result.clipped:
            store.count("clipped", result.clipped)
        return result

    def _target(self, nbh: str, r: Reading) -> int:
        """The interval a reading is counted in: its own, unless that is sealed
        already (then the next open one)."""
        t = r.interval_end
        if self.store.is_sealed(nbh, t):
            t = max(t, self.store.last_sealed_end(nbh)) + self.interval_s
            while self.store.is_sealed(nbh, t):
                t += self.interval_s
        return t

    def _add_demand(self, nbh: str, end: int, kid: str, c: bytes, meter_id: str,
                    seq: int) -> None:
        # The meter is counted once per reading: the holders charge privacy
        # budget per reading.
        row = self.store.demand(nbh, end)
        if row is None:
            self.store.put_demand(nbh, end, kid, c, meter_id, seq, new=True)
        else:
            self.store.put_demand(nbh, end, kid, self._add(kid, row[1], c), meter_id, seq,
                                  new=False)

    def _add_bill(self, meter_id: str, day: int, band: int, kid: str, c: bytes,
                  interval_end: int) -> None:
        old = self.store.bill_band(meter_id, day, band)
        self.store.put_bill_band(meter_id, day, band, kid,
                                 c if old is None else self._add(kid, old, c), new=old is None,
                                 interval_end=interval_end)

    def _seal_copy(self, meter_id: str, r: Reading, day: int, pub, new_keys) -> None:
        k = self._day_keys.get((meter_id, day)) or new_keys.get(day)
        if k is None:
            # A fresh data key for this day (also after a gateway restart: the
            # old one was never stored, only its copy wrapped to the customer).
            n = self.store.next_day_key_no(meter_id, day)
            key, wrapped = customer.new_day_key(pub)
            self.store.add_day_key(meter_id, day, n, wrapped)
            k = new_keys[day] = (n, key)
        nonce, ct = customer.seal_reading(k[1], meter_id, r.seq, r.interval_end, r.energy_wh,
                                          r.register_wh)
        self.store.add_sealed_copy(meter_id, r.seq, day, k[0], nonce, ct)

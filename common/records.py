"""Signed records that leave a gateway: sealed neighbourhood aggregates
and per-meter day accumulators for bills.

A record is a CBOR array with a type tag first and the id of the gateway
that made it; that gateway's Ed25519 signature covers exactly those bytes.
The MDMS and every key holder look the signing key up by that id and
verify the signature before they store or decrypt anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

AGGREGATE_TAG = "gridveil-aggregate-v3"
BILL_DAY_TAG_V4 = "gridveil-billday-v4"  # before the chain: a bill needs every day
BILL_DAY_TAG = "gridveil-billday-v5"
NO_DAY = -1  # prev_day of a meter's first day


@dataclass(frozen=True)
class AggregateRecord:
    gateway_id: str
    neighbourhood: str
    interval_start: int  # Unix seconds, UTC
    interval_end: int
    contributors: int  # distinct meters; the key holders count enrolled households themselves
    ciphertext: bytes
    key_id: str
    # The meters whose readings are in the sum, sorted, once per reading (a
    # meter whose late readings were moved here appears more than once).
    meters: tuple[str, ...] = ()

    def signed_bytes(self) -> bytes:
        return cbor2.dumps([AGGREGATE_TAG, self.gateway_id, self.neighbourhood, self.interval_start,
                            self.interval_end, self.contributors, self.ciphertext, self.key_id,
                            list(self.meters)])


@dataclass(frozen=True)
class BillDayRecord:
    """Everything one meter used in one UTC day, per band of its tariff."""

    gateway_id: str
    meter_id: str
    day: int  # days since 1970-01-01, UTC
    readings: int
    version: int  # grows when a late reading changes the day after signing
    bands: tuple[tuple[int, bytes], ...]  # (band, ciphertext), sorted by band
    key_id: str
    tariff: str = "flat@1"  # id@version the bands belong to; prices come from the holders
    # Ends of the aggregate intervals this day's readings were counted in: a
    # bill may count only what released aggregates count (docs/privacy.md).
    intervals: tuple[int, ...] = ()
    # The meter's previous day with readings (NO_DAY: none). The days of a
    # meter form a chain, so a bill cannot leave one of them out; None: a
    # record from before the chain (v4), whose bills need every day.
    prev_day: int | None = None

    def signed_bytes(self) -> bytes:
        fields = [self.gateway_id, self.meter_id, self.day, self.readings, self.version,
                  [[b, c] for b, c in self.bands], self.key_id, self.tariff,
                  list(self.intervals)]
        if self.prev_day is None:
            return cbor2.dumps([BILL_DAY_TAG_V4, *fields])
        return cbor2.dumps([BILL_DAY_TAG, *fields, self.prev_day])


def parse(data: bytes):
    """Rebuild a record from its signed bytes (the wire form to the key
    authority); raises ValueError on anything malformed."""
    try:
        a = cbor2.loads(data)
        if a[0] == AGGREGATE_TAG and len(a) == 9:
            rec = AggregateRecord(*a[1:8], tuple(str(m) for m in a[8]))
        elif (a[0], len(a)) in ((BILL_DAY_TAG_V4, 10), (BILL_DAY_TAG, 11)):
            rec = BillDayRecord(a[1], a[2], a[3], a[4], a[5],
                                tuple((int(b), bytes(c)) for b, c in a[6]), a[7], a[8],
                                tuple(int(t) for t in a[9]), int(a[10]) if len(a) == 11 else None)
        else:
            raise ValueError("unknown record type")
    except ValueError:
        raise
    except Exception as e:  # cbor2 and unpacking raise many types
        raise ValueError(f"malformed record: {e!r}") from None
    if rec.signed_bytes() != bytes(data):
        raise ValueError("record is not in canonical form")
    return rec


def record_id(rec) -> str:
    """A stable name for idempotent storage: one per sealed aggregate, one
    per version of a bill day."""
    if isinstance(rec, AggregateRecord):
        return f"agg:{rec.gateway_id}:{rec.neighbourhood}:{rec.interval_end}"
    return f"billday:{rec.gateway_id}:{rec.meter_id}:{rec.day}:{rec.version}"


def sign(key: Ed25519PrivateKey, record) -> bytes:
    return key.sign(record.signed_bytes())


def verify(pub: Ed25519PublicKey, record, signature: bytes) -> bool:
    try:
        pub.verify(signature, record.signed_bytes())
        return True
    except InvalidSignature:
        return False

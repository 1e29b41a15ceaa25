"""Signed records that leave the gateway: sealed neighbourhood aggregates
and per-meter day accumulators for bills.

A record is a CBOR array with a type tag first; the gateway's Ed25519
signature covers exactly those bytes. The key authority verifies the
signature against the gateway's public key before it decrypts anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

AGGREGATE_TAG = "gridveil-aggregate-v1"
BILL_DAY_TAG = "gridveil-billday-v1"


@dataclass(frozen=True)
class AggregateRecord:
    neighbourhood: str
    interval_start: int  # Unix seconds, UTC
    interval_end: int
    contributors: int
    ciphertext: bytes
    key_id: str

    def signed_bytes(self) -> bytes:
        return cbor2.dumps([AGGREGATE_TAG, self.neighbourhood, self.interval_start,
                            self.interval_end, self.contributors, self.ciphertext, self.key_id])


@dataclass(frozen=True)
class BillDayRecord:
    meter_id: str
    day: int  # days since 1970-01-01, UTC
    band: int  # tariff band; 0 is the flat tariff
    readings: int
    version: int  # grows when a late reading changes the accumulator
    ciphertext: bytes
    key_id: str

    def signed_bytes(self) -> bytes:
        return cbor2.dumps([BILL_DAY_TAG, self.meter_id, self.day, self.band, self.readings,
                            self.version, self.ciphertext, self.key_id])


def sign(key: Ed25519PrivateKey, record) -> bytes:
    return key.sign(record.signed_bytes())


def verify(pub: Ed25519PublicKey, record, signature: bytes) -> bool:
    try:
        pub.verify(signature, record.signed_bytes())
        return True
    except InvalidSignature:
        return False

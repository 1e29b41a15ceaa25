"""Hostile CoAP traffic, for the fuzz test and `gridveil flood`: random
bytes, captured requests with bytes flipped or cut, replays of captured
requests, forgeries under a real key id, options that do not decode
(non-UTF-8 Uri-Host/Path/Query), cut-short OSCORE options, ID-context and
group flags, Block1 uploads, oversize datagrams and stray responses.

`real` are datagrams a real meter sent and the gateway accepted (as anyone
on the network can capture them); `forged` are well-formed OSCORE requests
under a real key id but the wrong key."""

from __future__ import annotations

import random
from collections.abc import Iterator

import aiocoap

from .oscore_peer import RawPeer, context_for, readings_payload

END = 1767225600 + 900  # the first interval of 2026-01-01


def capture(secrets: dict[str, dict], port: int, per_meter: int = 20) -> list[bytes]:
    """Real meters' traffic, as anyone on the network sees it: requests these
    meters sent and the gateway accepted (their copies are replays, their
    mutants forgeries; a request never sent would be news, not a replay)."""
    out = []
    for m, s in secrets.items():
        peer = RawPeer(context_for(s), port)
        try:
            for i in range(per_meter):
                inner, datagram = peer.post(readings_payload(m, [[i, END + 900 * i, 5, 5]]))
                if inner.code != aiocoap.CHANGED:
                    raise RuntimeError(f"meter {m}'s reading was not accepted: {inner.code}")
                out.append(datagram)
        finally:
            peer.close()
    return out


def forgeries(victim: str, victim_secrets: dict, other_secrets: dict, port: int,
              n: int = 20) -> tuple[list[bytes], bytes]:
    """Well-formed OSCORE requests under the victim's real key id but another
    meter's key; returns them and the key id."""
    kid = bytes.fromhex(victim_secrets["sender_id"])
    peer = RawPeer(context_for({**other_secrets, "sender_id": kid.hex()}), port)
    try:
        return [peer.protect(readings_payload(victim, [[950 + i, END, 5, 5]]))[0]
                for i in range(n)], kid
    finally:
        peer.close()


def datagrams(rng: random.Random, real: list[bytes], forged: list[bytes], kid: bytes,
              n: int) -> Iterator[bytes]:
    def header(t=0, code=2, tkl=2):
        return bytes([0x40 | t << 4 | tkl, code]) + rng.randbytes(2) + rng.randbytes(tkl)

    def mutate(d: bytes) -> bytes:
        d = bytearray(d)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.5 and d:
                d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
            elif op < 0.7:
                del d[rng.randrange(len(d) + 1):]
            elif op < 0.85 and d:
                d[rng.randrange(len(d))] = rng.randrange(256)
            else:
                at = rng.randrange(len(d) + 1)
                d[at:at] = rng.randbytes(rng.randint(1, 8))
        return bytes(d)

    def new_mid(d: bytes) -> bytes:  # the same request as a new message: a replay
        return d[:2] + rng.randbytes(2) + d[4:]

    kinds = [
        lambda: rng.randbytes(rng.randint(0, 1400)),
        lambda: mutate(rng.choice(real)),
        lambda: mutate(rng.choice(real)),
        lambda: new_mid(rng.choice(forged)),
        lambda: new_mid(rng.choice(real)),
        # non-UTF-8 Uri-Host (3) or Uri-Path (11); Uri-Query (15) after a good Uri-Path
        lambda: header(rng.choice([0, 1])) + bytes([rng.choice([0x32, 0xB2]), 0xFF, 0xFE]),
        lambda: header() + b"\xb8readings" + bytes([0x42, 0xC3, 0x28]),
        # OSCORE flags promising a kid context or PIV that is not there
        lambda: header(rng.choice([0, 1])) + bytes([0x91, rng.choice([0x10, 0x13, 0x18, 0x09])])
        + b"\xff" + rng.randbytes(12),
        # group flag, and a kid context, on a real kid
        lambda: header() + bytes([0x90 + 2 + len(kid), 0x29, 0x01]) + kid + b"\xff"
        + rng.randbytes(16),
        lambda: header() + bytes([0x90 + 4 + len(kid), 0x19, 0x01, 0x01, 0x07]) + kid
        + b"\xff" + rng.randbytes(16),
        # Block1 (27) on /readings, without OSCORE
        lambda: header() + b"\xb8readings" + bytes([0xD1, 27 - 11 - 13, 0x0E]) + b"\xff"
        + rng.randbytes(1024),
        lambda: header() + b"\xff" + rng.randbytes(rng.randint(1200, 1400)),  # oversize
        lambda: header(code=rng.randint(64, 255)) + rng.randbytes(rng.randint(0, 30)),
    ]
    for _ in range(n):
        yield rng.choice(kinds)()

"""Many released values in one decryption: slots.

A holder's costly step is its exponentiation (a partial decryption: an
exponent as long as n^2, or a full one in single mode). Values it grants
in one request are packed, up to `slots(n)` of them, into one ciphertext:

    C = prod_j (c_j * (1+n)^OFFSET) ^ (2^(64 j))      (mod n^2)

which decrypts to sum_j (v_j + OFFSET) 2^(64 j): each value in its own
64-bit slot, lifted by OFFSET so that a negative noise never borrows from
the slot above. Built by Horner's rule (64 squarings per slot, against
thousands for a decryption), from ciphertexts the gateways signed, the
same bytes at both holders. Each holder adds its own noise per slot
(threshold.partial's (1+n)^eta with eta = sum_j eta_j 2^(64 j)), and only
slots of values it granted are in a pack: a packed decryption reveals
exactly the values granted, each with the noise it would have had alone.

Sums of readings, bills in micro-cents and noise all stay far below 2^62,
so slots never overflow. The exponentiations run in a pool of worker
processes, one per core; the secret reaches them through the pool's
initializer (a pipe on this host) and nowhere else.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

from common.slots import pack, packed_noise, slots

from . import threshold


@dataclass
class Pack:
    key_id: str
    ciphertexts: list[int] = field(default_factory=list)
    noises: list[int] = field(default_factory=list)


class Packer:
    """Packs granted values in the order they come: one open pack per key
    epoch, a new one when it is full. `keys` is the holder's KeyDir."""

    def __init__(self, keys):
        self.keys = keys
        self.packs: list[Pack] = []
        self._open: dict[str, int] = {}

    def add(self, key_id: str, ciphertext: int, noise: int) -> tuple[int, int]:
        """(pack number, slot number) of the value."""
        i = self._open.get(key_id)
        if i is None or len(self.packs[i].ciphertexts) == slots(self.keys.public(key_id).n):
            i = self._open[key_id] = len(self.packs)
            self.packs.append(Pack(key_id))
        p = self.packs[i]
        p.ciphertexts.append(ciphertext)
        p.noises.append(noise)
        return i, len(p.ciphertexts) - 1
    number: int = 0  # the partial decryption (or, single, the plaintext), once opened


_WORKER: dict = {}


def _init(role: str, secrets: dict) -> None:
    _WORKER.update(role=role, secrets=secrets)


def _open(role: str, secret, key_id: str, ciphertexts: list[int], noises: list[int]) -> int:
    if role == "single":
        n = secret.public_key.n
        m = secret.raw_decrypt(pack(n, ciphertexts))
        return (m + packed_noise(noises)) % n
    return threshold.partial(secret, pack(secret.n, ciphertexts), packed_noise(noises))


def _open_in_worker(job) -> int:
    key_id, ciphertexts, noises = job
    return _open(_WORKER["role"], _WORKER["secrets"][key_id], key_id, ciphertexts, noises)


class Opener:
    """Opens packs with this holder's secrets, on every core when there is
    more than one pack (one pack is opened here: no process to start)."""

    def __init__(self, role: str, secrets: dict):
        self.role = role
        self._secrets = secrets
        self._pool: ProcessPoolExecutor | None = None

    def open(self, packs: list[Pack]) -> None:
        jobs = [(p.key_id, p.ciphertexts, p.noises) for p in packs]
        if len(jobs) <= 1:
            numbers = [_open(self.role, self._secrets[k], k, c, e) for k, c, e in jobs]
        else:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    os.cpu_count() or 1, mp_context=get_context("spawn"), initializer=_init,
                    initargs=(self.role, self._secrets))
            numbers = list(self._pool.map(_open_in_worker, jobs))
        for p, number in zip(packs, numbers, strict=True):
            p.number = number

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

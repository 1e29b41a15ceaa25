"""Many Paillier plaintexts in one: slots of 64 bits, each lifted by
OFFSET so that a negative noise never borrows from the slot above. The
arithmetic both sides share: the holders pack and open
(authority/packing.py), whoever combines the partial decryptions unpacks.

    C = prod_j (c_j * (1+n)^OFFSET) ^ (2^(64 j))      (mod n^2)

decrypts to sum_j (v_j + OFFSET) 2^(64 j). Built by Horner's rule: 64
squarings per slot, against thousands for one decryption.
"""

from __future__ import annotations

import gmpy2

SLOT_BITS = 64
OFFSET = 1 << 62
MASK = (1 << SLOT_BITS) - 1


def slots(n: int) -> int:
    """Values per pack under a modulus n: the packed plaintext stays below n."""
    return max(1, (n.bit_length() - 1) // SLOT_BITS)


def pack(n: int, ciphertexts: list[int]) -> int:
    """The packed ciphertext of `ciphertexts` (integers mod n^2)."""
    n2 = n * n
    lift = (1 + OFFSET * n) % n2  # (1+n)^OFFSET: an encryption of OFFSET with r = 1
    acc = gmpy2.mpz(1)
    for c in reversed(ciphertexts):
        acc = gmpy2.powmod(acc, 1 << SLOT_BITS, n2) * c % n2 * lift % n2
    return int(acc)


def packed_noise(noises: list[int]) -> int:
    return sum(eta << (SLOT_BITS * j) for j, eta in enumerate(noises))


def unpack(m: int, count: int) -> list[int]:
    """The values of a decrypted pack (its plaintext mod n, noise in)."""
    return [((m >> (SLOT_BITS * j)) & MASK) - OFFSET for j in range(count)]

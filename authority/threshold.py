"""Two-of-two threshold Paillier decryption.

At key generation a trusted dealer turns the private key into two shares
and forgets it. With lambda = lcm(p-1, q-1), pick d with

    d = 0 (mod lambda)  and  d = 1 (mod n)        (CRT; gcd(n, lambda) = 1)

and split it additively: d1 uniform in [0, n*lambda), d2 = d - d1 mod
n*lambda. Each share alone is a uniformly random number and says nothing
about d. For a ciphertext c = (1+n)^m r^n mod n^2:

    partial_i = c^(d_i) mod n^2
    partial_1 * partial_2 = c^d = (1+n)^(m d) r^(n d) = (1+n)^m   (mod n^2)

since r^(n lambda) = 1 and (1+n) has order n; m = (c^d - 1) / n.

A holder can add its own noise eta to what it returns: partial * (1+n)^eta
moves the combined plaintext by eta and cannot be undone by the combiner.
That is how each holder applies differential privacy on its own.

Combining is public arithmetic (common/paillier.combine_partials): the
MDMS does it with the public key alone.

Holders are honest-but-curious here: a partial carries no proof of
correctness, so a holder could spoil (never reveal) a result. Holders only
partially decrypt ciphertexts that the gateway signed, so nobody can use
them as an oracle on crafted ciphertexts.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import gmpy2
from phe import PaillierPrivateKey


@dataclass(frozen=True)
class Share:
    key_id: str
    index: int  # 1 or 2
    n: int
    d_i: int


def split(priv: PaillierPrivateKey, key_id: str) -> tuple[Share, Share]:
    p, q, n = priv.p, priv.q, priv.public_key.n
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    # d = lam * (lam^-1 mod n): divisible by lam and = 1 mod n
    d = lam * int(gmpy2.invert(lam, n))
    modulus = n * lam
    d1 = secrets.randbelow(modulus)
    d2 = (d - d1) % modulus
    return Share(key_id, 1, n, d1), Share(key_id, 2, n, d2)


def partial(share: Share, c: int, noise: int = 0) -> int:
    n2 = share.n * share.n
    part = gmpy2.powmod(c, share.d_i, n2)
    if noise:
        # (1+n)^noise = 1 + noise*n (mod n^2), also for negative noise
        part = part * ((1 + (noise % share.n) * share.n) % n2) % n2
    return int(part)

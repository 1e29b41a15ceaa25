"""The gateway's fast Paillier encryption (gateway/fastenc.py): the same
ciphertexts as phe's for every consumer, checked by decrypting with phe's
private key and with the two threshold shares, for random and edge
values; the pool's values are used once each and it refills after a burst."""

from __future__ import annotations

import secrets
import time

import pytest
from phe import paillier as phe_paillier

from authority import threshold
from common import paillier
from gateway.fastenc import FastEncryptor, RandomnessPool


@pytest.fixture(scope="module")
def keys():
    pub, priv = phe_paillier.generate_paillier_keypair(n_length=1024)
    return pub, priv


def test_phe_and_the_shares_decrypt_fast_ciphertexts(keys):
    pub, priv = keys
    enc = FastEncryptor(pub)
    u, g = threshold.split(priv, paillier.key_id(pub))
    values = [0, 1, 2, pub.max_int - 1, pub.max_int] + [secrets.randbelow(10**7)
                                                       for _ in range(20)]
    for m in values:
        c = enc.encrypt(m)
        assert priv.decrypt(c) == m
        raw = c.ciphertext(be_secure=False)
        assert paillier.combine_partials(pub, [threshold.partial(u, raw),
                                               threshold.partial(g, raw)]) == m
    # Sums, as the accumulators make them, decrypt to the plaintext sum.
    total = enc.encrypt(0)
    for m in values[5:]:
        total = total + enc.encrypt(m)
    assert priv.decrypt(total) == sum(values[5:])
    for bad in (-1, pub.max_int + 1):
        with pytest.raises(ValueError):
            enc.encrypt(bad)
    with pytest.raises(ValueError):
        FastEncryptor(pub, exponent_bits=128)  # too short an exponent is refused


def test_two_encryptions_of_one_value_differ(keys):
    pub, _ = keys
    enc = FastEncryptor(pub)
    cs = {enc.encrypt(7).ciphertext(be_secure=False) for _ in range(200)}
    assert len(cs) == 200


def drain(pool, n: int) -> list[int]:
    """n values; take() may say None for an instant while a value is in transit."""
    out, deadline = [], time.monotonic() + 30
    while len(out) < n and time.monotonic() < deadline:
        v = pool.take()
        if v is not None:
            out.append(v)
    return out


def test_pool_values_are_used_once_and_the_pool_refills(keys):
    pub, priv = keys
    enc = FastEncryptor(pub)
    pool = RandomnessPool(workers=2, size=300)
    pool.start(enc.h_s, pub.nsquare, enc.exponent_bits)
    try:
        deadline = time.monotonic() + 60
        while pool.queue.qsize() < 300 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pool.queue.qsize() == 300
        taken = drain(pool, 300)  # a burst drains it
        assert len(set(taken)) == 300  # no value twice
        enc.pool = pool
        burst = [enc.encrypt(i) for i in range(400)]  # dry: encrypted inline, still right
        assert [priv.decrypt(c) for c in burst] == list(range(400))
        assert pool.dry > 0
        deadline = time.monotonic() + 60
        while pool.queue.qsize() < 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pool.queue.qsize() >= 200  # refilled while idle
        more = set(drain(pool, 200))
        assert len(more) == 200 and not more & set(taken)
    finally:
        pool.close()
    assert all(not p.is_alive() for p in pool.procs)

"""Paillier key files and ciphertext encoding on top of `phe`.

Everything the project encrypts is a `phe.EncryptedNumber` with exponent 0
(whole numbers only), so anything here decrypts with plain `phe`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from phe import EncryptedNumber, PaillierPrivateKey, PaillierPublicKey, paillier

from .files import ConfigError, read_json, write_json

# NIST SP 800-57: a 2048-bit modulus gives about 112 bits of security,
# 3072 bits about 128. Tests use smaller keys for speed only.
DEFAULT_BITS = 2048
MIN_BITS = 512


def key_id(pub: PaillierPublicKey) -> str:
    """Short fingerprint naming a key epoch in records and logs."""
    nbytes = pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")
    return hashlib.sha256(b"gridveil-paillier\0" + nbytes).hexdigest()[:16]


def generate(bits: int = DEFAULT_BITS) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    if bits < MIN_BITS or bits % 8:
        raise ValueError(f"Paillier key size must be a multiple of 8 and at least {MIN_BITS} bits")
    return paillier.generate_paillier_keypair(n_length=bits)


def save_public(path: Path, pub: PaillierPublicKey) -> None:
    write_json(path, {"kind": "gridveil-paillier-public", "n": str(pub.n), "key_id": key_id(pub)})


def load_public(path: Path) -> PaillierPublicKey:
    d = read_json(path, "Paillier public key")
    try:
        if d.get("kind") != "gridveil-paillier-public":
            raise ValueError("not a GridVeil Paillier public key")
        return PaillierPublicKey(int(d["n"]))
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"Paillier public key {path} is malformed: {e}") from None


def ciphertext_len(pub: PaillierPublicKey) -> int:
    return (pub.nsquare.bit_length() + 7) // 8


def to_bytes(pub: PaillierPublicKey, c: EncryptedNumber) -> bytes:
    if c.exponent != 0:
        raise ValueError("only whole-number ciphertexts are stored")
    return c.ciphertext(be_secure=False).to_bytes(ciphertext_len(pub), "big")


def from_bytes(pub: PaillierPublicKey, data: bytes) -> EncryptedNumber:
    if len(data) != ciphertext_len(pub):
        raise ValueError("ciphertext has the wrong length for this key")
    c = int.from_bytes(data, "big")
    if not 0 < c < pub.nsquare:
        raise ValueError("ciphertext out of range")
    return EncryptedNumber(pub, c, 0)


def epoch_statement(pub: PaillierPublicKey, clip_wh: int) -> bytes:
    """What the privacy guardian signs to let gateways encrypt under a key:
    its id, size and modulus, and the most energy one reading may add to
    an aggregate under it (the guardian's DP sensitivity; 0: no clipping)."""
    return f"gridveil-epoch-v2|{key_id(pub)}|{pub.n.bit_length()}|{pub.n}|{clip_wh}".encode()


def check_epoch(guardian_pub, pub: PaillierPublicKey, signature_file: Path) -> int:
    """Refuse a key epoch that the guardian did not sign: otherwise whoever
    runs the gateway could switch it to a Paillier key of their own.
    Returns the clipping bound the guardian signed with it."""
    import base64

    from cryptography.exceptions import InvalidSignature

    d = read_json(signature_file, "key epoch signature")
    try:
        if d.get("key_id") != key_id(pub):
            raise ValueError(f"it is for key {d.get('key_id')}, not {key_id(pub)}")
        clip = d.get("clip_wh")
        if type(clip) is not int or clip < 0:
            raise ValueError("it has no clipping bound (clip_wh); sign it again")
        guardian_pub.verify(base64.b64decode(d["signature"], validate=True),
                            epoch_statement(pub, clip))
    except (InvalidSignature, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{signature_file} is not the guardian's signature on key"
                          f" {key_id(pub)}: {str(e) or 'bad signature'}") from None
    return clip


def combine_partials(pub: PaillierPublicKey, partials: list[int]) -> int:
    """The plaintext from the holders' partial decryptions c^(d_i) mod n^2
    (authority/threshold.py), decoded as phe would (negative above max_int).
    It needs only the public key: whoever combines learns the released
    value and nothing else."""
    m = combine_raw(pub, partials)
    return m - pub.n if m > pub.max_int else m


def combine_raw(pub: PaillierPublicKey, partials: list[int]) -> int:
    """The plaintext, mod n, from the holders' partial decryptions (for
    packed values, authority/packing.py, which are unsigned)."""
    n2 = pub.nsquare
    acc = 1
    for p in partials:
        acc = acc * p % n2
    if (acc - 1) % pub.n:
        raise ValueError("partial decryptions do not combine (wrong share or ciphertext)")
    return (acc - 1) // pub.n % pub.n


def public_from_n(n: int, expected_key_id: str | None = None) -> PaillierPublicKey:
    """A public key received over the network, checked against the key id
    the records name, so nobody can slip in a key of their own."""
    pub = PaillierPublicKey(int(n))
    if expected_key_id is not None and key_id(pub) != expected_key_id:
        raise ConfigError(f"public key does not match key id {expected_key_id}")
    return pub

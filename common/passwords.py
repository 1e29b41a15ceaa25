"""Slow hashes of passwords and login verifiers, for whoever checks a
login: scrypt (n = 2^14, r = 8, p = 1: 16 MiB per hash, memory-hard),
compared in constant time. The MDMS's staff and customer logins and the
guardian's desk at its key holder use the same."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_secret(secret: bytes) -> str:
    salt = secrets.token_bytes(16)
    h = hashlib.scrypt(secret, salt=salt, dklen=32, **SCRYPT)
    return (f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}$"
            f"{base64.b64encode(salt).decode()}${base64.b64encode(h).decode()}")


def check_secret(secret: bytes, stored: str) -> bool:
    try:
        _, n, r, p, salt, h = stored.split("$")
        got = hashlib.scrypt(secret, salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(h))

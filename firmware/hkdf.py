# HMAC-SHA-256 (RFC 2104) and HKDF-SHA-256 (RFC 5869) on MicroPython's
# hashlib, which has sha256 but no hmac module. Only used to derive OSCORE
# keys once per boot, so clarity wins over speed here.
try:
    import hashlib
except ImportError:  # pragma: no cover - very old MicroPython
    import uhashlib as hashlib

_BLOCK = 64


def _xor_const(data, byte):
    return bytes(b ^ byte for b in data)


def hmac_sha256(key, msg):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (_BLOCK - len(key))
    inner = hashlib.sha256(_xor_const(key, 0x36))
    inner.update(msg)
    outer = hashlib.sha256(_xor_const(key, 0x5C))
    outer.update(inner.digest())
    return outer.digest()


def hkdf_extract(salt, ikm):
    # RFC 5869 2.2: an absent salt is HashLen zero bytes.
    return hmac_sha256(salt if salt else b"\x00" * 32, ikm)


def hkdf_expand(prk, info, length):
    if length > 255 * 32:
        raise ValueError("HKDF output too long")
    out = b""
    block = b""
    i = 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes((i,)))
        out += block
        i += 1
    return out[:length]


def hkdf(salt, ikm, info, length):
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)

# AES-CCM (RFC 3610, NIST SP 800-38C) with L = 2 and any even tag length,
# built on the raw AES block cipher that MicroPython's cryptolib offers.
# OSCORE's mandatory algorithm AES-CCM-16-64-128 is this with a 16-byte key,
# a 13-byte nonce and an 8-byte tag.
#
# The CBC-MAC is the last block of an AES-CBC encryption with a zero IV, so
# both passes run inside cryptolib's C code rather than in Python loops.
try:
    import cryptolib
except ImportError:  # pragma: no cover - older MicroPython
    import ucryptolib as cryptolib

_ECB = 1
_CBC = 2
_L = 2
_ZERO_IV = bytes(16)


class AuthenticationError(ValueError):
    pass


def _xor(a, b):
    # XOR of equal-length byte strings through one big-integer operation:
    # much faster than a per-byte loop in MicroPython.
    n = len(a)
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(n, "big")


def _pad16(data):
    r = len(data) % 16
    return data if r == 0 else data + bytes(16 - r)


def equal_constant_time(a, b):
    """Compare two MACs without an early exit that would leak timing."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


class AESCCM:
    def __init__(self, key, tag_len=8):
        if len(key) not in (16, 24, 32):
            raise ValueError("AES key must be 16, 24 or 32 bytes")
        if tag_len not in (4, 6, 8, 10, 12, 14, 16):
            raise ValueError("invalid CCM tag length")
        self._key = bytes(key)
        self._ecb = cryptolib.aes(self._key, _ECB)
        self.tag_len = tag_len

    def _check(self, nonce, n):
        if len(nonce) != 15 - _L:
            raise ValueError("CCM nonce must be 13 bytes")
        if n >= 1 << (8 * _L):
            raise ValueError("message too long for CCM with L=2")

    def _mac(self, nonce, aad, msg):
        flags = (0x40 if aad else 0) | (((self.tag_len - 2) // 2) << 3) | (_L - 1)
        b0 = bytes((flags,)) + nonce + len(msg).to_bytes(_L, "big")
        blocks = [b0]
        if aad:
            if len(aad) >= 0xFF00:
                raise ValueError("associated data too long")
            blocks.append(_pad16(len(aad).to_bytes(2, "big") + aad))
        blocks.append(_pad16(msg))
        cbc = cryptolib.aes(self._key, _CBC, _ZERO_IV)
        return cbc.encrypt(b"".join(blocks))[-16:][: self.tag_len]

    def _keystream(self, nonce, nblocks):
        # Counter blocks A_0 .. A_nblocks; S_0 masks the tag, the rest the text.
        prefix = bytes((_L - 1,)) + nonce
        ctr = b"".join(prefix + i.to_bytes(_L, "big") for i in range(nblocks + 1))
        return self._ecb.encrypt(ctr)

    def encrypt(self, nonce, plaintext, aad):
        self._check(nonce, len(plaintext))
        tag = self._mac(nonce, aad, plaintext)
        s = self._keystream(nonce, (len(plaintext) + 15) // 16)
        ct = _xor(plaintext, s[16:16 + len(plaintext)]) if plaintext else b""
        return ct + _xor(tag, s[: self.tag_len])

    def decrypt(self, nonce, data, aad):
        if len(data) < self.tag_len:
            raise AuthenticationError("ciphertext shorter than the tag")
        n = len(data) - self.tag_len
        self._check(nonce, n)
        s = self._keystream(nonce, (n + 15) // 16)
        pt = _xor(data[:n], s[16:16 + n]) if n else b""
        expected = _xor(self._mac(nonce, aad, pt), s[: self.tag_len])
        if not equal_constant_time(expected, data[n:]):
            raise AuthenticationError("CCM tag mismatch")
        return pt

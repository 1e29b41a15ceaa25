# OSCORE (RFC 8613) client side for the meter: derive the security context,
# protect requests and verify the gateway's responses. AES-CCM-16-64-128 and
# HKDF-SHA-256 only, which is the algorithm pair every OSCORE peer must have.
#
# The meter never keeps one context across boots: rekey.py derives a fresh
# one per boot with the gateway (RFC 8613 Appendix B.2), so its sequence
# numbers may start at 0 each time without ever repeating a nonce.
import cbor
import coap
from ccm import AESCCM
from hkdf import hkdf

ALG_AES_CCM_16_64_128 = 10
KEY_LEN = 16
NONCE_LEN = 13
TAG_LEN = 8
MAX_ID_LEN = NONCE_LEN - 6
MAX_SEQNO = (1 << 40) - 1


class OscoreError(ValueError):
    pass


class Counter:
    """In-memory sequence numbers. Safe only for a context that is new in
    this boot (rekey.py) or, in tests, for published vectors."""

    def __init__(self, start=0):
        self.value = start

    def next(self):
        n = self.value
        self.value += 1
        return n


def _piv(seq):
    if seq > MAX_SEQNO:
        raise OscoreError("sequence numbers exhausted; re-provision the meter")
    # Shortest big-endian form; zero is one zero byte (RFC 8613 6.1).
    return seq.to_bytes(5, "big").lstrip(b"\x00") or b"\x00"


class Context:
    def __init__(self, secret, salt, sender_id, recipient_id, id_context=None, seqno=None):
        if len(sender_id) > MAX_ID_LEN or len(recipient_id) > MAX_ID_LEN:
            raise OscoreError("sender or recipient id longer than 7 bytes")
        self.sender_id = bytes(sender_id)
        self.recipient_id = bytes(recipient_id)
        self.id_context = id_context
        self.sender_key = self._derive(salt, secret, self.sender_id, "Key", KEY_LEN)
        self.recipient_key = self._derive(salt, secret, self.recipient_id, "Key", KEY_LEN)
        self.common_iv = self._derive(salt, secret, b"", "IV", NONCE_LEN)
        self._seal = AESCCM(self.sender_key, TAG_LEN)
        self._open = AESCCM(self.recipient_key, TAG_LEN)
        self.seqno = seqno if seqno is not None else Counter()

    def _derive(self, salt, secret, ident, kind, length):
        info = cbor.dumps([ident, self.id_context, ALG_AES_CCM_16_64_128, kind, length])
        return hkdf(salt, secret, info, length)

    def nonce(self, piv, id_piv):
        parts = (bytes((len(id_piv),)) + bytes(NONCE_LEN - 6 - len(id_piv)) + id_piv
                 + bytes(5 - len(piv)) + piv)
        return bytes(a ^ b for a, b in zip(parts, self.common_iv))

    @staticmethod
    def _aad(request_kid, request_piv):
        external = cbor.dumps([1, [ALG_AES_CCM_16_64_128], request_kid, request_piv, b""])
        return cbor.dumps(["Encrypt0", b"", external])

    @staticmethod
    def _plaintext(code, inner_options, payload):
        body = bytes((code,)) + coap.encode_options(inner_options)
        if payload:
            body += b"\xff" + payload
        return body

    def protect_request(self, code, inner_options, payload):
        """Returns (OSCORE option value, ciphertext, binding); the binding is
        what unprotect_response needs to match the response to this request."""
        piv = _piv(self.seqno.next())
        flags = len(piv) | 0x08
        value = bytes((flags,)) + piv
        if self.id_context is not None:
            flags |= 0x10
            value = bytes((flags,)) + piv + bytes((len(self.id_context),)) + self.id_context
        value += self.sender_id
        nonce = self.nonce(piv, self.sender_id)
        ct = self._seal.encrypt(nonce, self._plaintext(code, inner_options, payload),
                                self._aad(self.sender_id, piv))
        # The binding is the request's Partial IV: a response without its
        # own reuses the request's nonce, recomputed in whichever context
        # verifies it (B.2's Response #1 comes in a new one).
        return value, ct, piv

    def unprotect_response(self, option_value, ciphertext, binding):
        """Verify and decrypt a response; returns (code, inner options, payload)."""
        req_piv = binding
        if option_value is None:
            raise OscoreError("response is not OSCORE-protected")
        piv, _ = response_option(option_value)
        nonce = self.nonce(piv, self.recipient_id) if piv else self.nonce(req_piv, self.sender_id)
        try:
            pt = self._open.decrypt(nonce, ciphertext, self._aad(self.sender_id, req_piv))
        except ValueError:
            raise OscoreError("response failed authentication")
        if not pt:
            raise OscoreError("empty OSCORE plaintext")
        try:
            options, payload = coap.decode_options(pt, 1)
        except ValueError:
            raise OscoreError("malformed inner options in response")
        return pt[0], options, payload


def response_option(value):
    """(Partial IV, kid context or None) of a response's OSCORE option.
    Our gateway never sends a kid; a kid context only in B.2's Response #1."""
    if not value:
        return b"", None
    flags = value[0]
    n = flags & 0x07
    if flags & 0xE8 or n > 5:
        raise OscoreError("unexpected OSCORE option flags in response")
    piv = bytes(value[1:1 + n])
    kid_context = None
    rest = 1 + n
    if flags & 0x10:
        if len(value) < rest + 1:
            raise OscoreError("malformed OSCORE option in response")
        s = value[rest]
        kid_context = bytes(value[rest + 1:rest + 1 + s])
        rest += 1 + s
        if len(kid_context) != s:
            raise OscoreError("malformed OSCORE option in response")
    if len(value) != rest or len(piv) != n:
        raise OscoreError("malformed OSCORE option in response")
    return piv, kid_context

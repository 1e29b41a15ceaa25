# Published test vectors for the meter's crypto, run in the MicroPython Unix
# port: RFC 3610 (AES-CCM), RFC 5869 (HKDF-SHA-256), RFC 8613 Appendix C
# (OSCORE key derivation, requests and responses).
from binascii import unhexlify as h

import coap
import oscore
from ccm import AESCCM, AuthenticationError
from hkdf import hkdf

SECRET = h("0102030405060708090a0b0c0d0e0f10")
SALT = h("9e7ca92223786340")
ID_CTX = h("37cbf3210017a2d3")

CCM_KEY = h("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf")
# RFC 3610 packet vectors 1, 2 and 3 (M = 8, L = 2): nonce, aad, msg, output.
CCM_VECTORS = [
    ("00000003020100a0a1a2a3a4a5", "0001020304050607",
     "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e",
     "588c979a61c663d2f066d0c2c0f989806d5f6b61dac38417e8d12cfdf926e0"),
    ("00000004030201a0a1a2a3a4a5", "0001020304050607",
     "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
     "72c91a36e135f8cf291ca894085c87e3cc15c439c9e43a3ba091d56e10400916"),
    ("00000005040302a0a1a2a3a4a5", "0001020304050607",
     "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
     "51b1e5f44a197d1da46b0f8e2d282ae871e838bb64da8596574adaa76fbd9fb0c5"),
]


def eq(a, b):
    if a != b:
        raise AssertionError("%r != %r" % (a, b))


def test_ccm_rfc3610_encrypt():
    ccm = AESCCM(CCM_KEY, 8)
    for nonce, aad, msg, out in CCM_VECTORS:
        eq(ccm.encrypt(h(nonce), h(msg), h(aad)), h(out))


def test_ccm_rfc3610_decrypt_and_reject_tamper():
    ccm = AESCCM(CCM_KEY, 8)
    for nonce, aad, msg, out in CCM_VECTORS:
        eq(ccm.decrypt(h(nonce), h(out), h(aad)), h(msg))
        for i in (0, len(h(out)) - 1):
            bad = bytearray(h(out))
            bad[i] ^= 1
            try:
                ccm.decrypt(h(nonce), bytes(bad), h(aad))
            except AuthenticationError:
                pass
            else:
                raise AssertionError("tampered byte %d accepted" % i)
        try:
            ccm.decrypt(h(nonce), h(out), h(aad) + b"x")
        except AuthenticationError:
            pass
        else:
            raise AssertionError("changed AAD accepted")


def test_hkdf_rfc5869_case1():
    okm = hkdf(h("000102030405060708090a0b0c"), b"\x0b" * 22, h("f0f1f2f3f4f5f6f7f8f9"), 42)
    eq(okm, h("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
              "34007208d5b887185865"))


def test_hkdf_rfc5869_case3_no_salt_no_info():
    okm = hkdf(b"", b"\x0b" * 22, b"", 42)
    eq(okm, h("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
              "9d201395faa4b61a96c8"))


def test_oscore_c1_derivation_with_salt():
    c = oscore.Context(SECRET, SALT, b"", b"\x01")
    eq(c.sender_key, h("f0910ed7295e6ad4b54fc793154302ff"))
    eq(c.recipient_key, h("ffb14e093c94c9cac9471648b4f98710"))
    eq(c.common_iv, h("4622d4dd6d944168eefb54987c"))
    eq(c.nonce(b"\x00", c.sender_id), h("4622d4dd6d944168eefb54987c"))
    eq(c.nonce(b"\x00", c.recipient_id), h("4722d4dd6d944169eefb54987c"))


def test_oscore_c2_derivation_without_salt():
    c = oscore.Context(SECRET, b"", b"\x00", b"\x01")
    eq(c.sender_key, h("321b26943253c7ffb6003b0b64d74041"))
    eq(c.recipient_key, h("e57b5635815177cd679ab4bcec9d7dda"))
    eq(c.common_iv, h("be35ae297d2dace910c52e99f9"))
    eq(c.nonce(b"\x00", c.sender_id), h("bf35ae297d2dace910c52e99f9"))
    eq(c.nonce(b"\x00", c.recipient_id), h("bf35ae297d2dace810c52e99f9"))


def test_oscore_c3_derivation_with_id_context():
    c = oscore.Context(SECRET, SALT, b"", b"\x01", id_context=ID_CTX)
    eq(c.sender_key, h("af2a1300a5e95788b356336eeecd2b92"))
    eq(c.recipient_key, h("e39a0c7c77b43f03b4b39ab9a268699f"))
    eq(c.common_iv, h("2ca58fb85ff1b81c0b7181b85e"))


def _protect_vector(ctx, unprotected_hex, expected_hex):
    # Re-encode the appendix's plain request through our message layer and
    # OSCORE: Uri-Host stays outer (class U), Uri-Path goes inner (class E).
    plain = coap.decode(h(unprotected_hex))
    outer = [o for o in plain.options if o[0] == 3]
    inner = [o for o in plain.options if o[0] != 3]
    value, ct, _ = ctx.protect_request(plain.code, inner, plain.payload)
    msg = coap.Message(plain.mtype, coap.POST, plain.mid, plain.token,
                       outer + [(coap.OPT_OSCORE, value)], ct)
    eq(coap.encode(msg), h(expected_hex))


def test_oscore_c4_request_client():
    ctx = oscore.Context(SECRET, SALT, b"", b"\x01", seqno=oscore.Counter(20))
    _protect_vector(ctx, "44015d1f00003974396c6f63616c686f737483747631",
                    "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e")


def test_oscore_c5_request_client_with_kid():
    ctx = oscore.Context(SECRET, b"", b"\x00", b"\x01", seqno=oscore.Counter(20))
    _protect_vector(ctx, "440171c30000b932396c6f63616c686f737483747631",
                    "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0")


def test_oscore_c6_request_with_id_context():
    ctx = oscore.Context(SECRET, SALT, b"", b"\x01", id_context=ID_CTX, seqno=oscore.Counter(20))
    _protect_vector(ctx, "44012f8eef9bbf7a396c6f63616c686f737483747631",
                    "44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3"
                    "ff72cd7273fd331ac45cffbe55c3")


def _client_c4():
    ctx = oscore.Context(SECRET, SALT, b"", b"\x01", seqno=oscore.Counter(20))
    _, _, binding = ctx.protect_request(coap.POST, [(coap.OPT_URI_PATH, b"tv1")], b"")
    return ctx, binding


def test_oscore_c7_response_verified_by_client():
    ctx, binding = _client_c4()
    resp = coap.decode(h("64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106"))
    code, options, payload = ctx.unprotect_response(resp.option(coap.OPT_OSCORE),
                                                    resp.payload, binding)
    eq(code, 0x45)
    eq(options, [])
    eq(payload, b"Hello World!")


def test_oscore_c8_response_with_partial_iv():
    ctx, binding = _client_c4()
    resp = coap.decode(h("64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e"))
    code, _, payload = ctx.unprotect_response(resp.option(coap.OPT_OSCORE), resp.payload, binding)
    eq(code, 0x45)
    eq(payload, b"Hello World!")


def test_oscore_response_to_other_request_rejected():
    ctx, _ = _client_c4()
    _, _, other = ctx.protect_request(coap.POST, [(coap.OPT_URI_PATH, b"tv1")], b"")
    resp = coap.decode(h("64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106"))
    try:
        ctx.unprotect_response(resp.option(coap.OPT_OSCORE), resp.payload, other)
    except oscore.OscoreError:
        return
    raise AssertionError("response bound to another request was accepted")

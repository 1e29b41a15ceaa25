# CBOR and CoAP codecs: round trips and strict rejection of malformed input.
import cbor
import coap


def eq(a, b):
    if a != b:
        raise AssertionError("%r != %r" % (a, b))


def raises(fn, *args):
    try:
        fn(*args)
    except ValueError:
        return
    raise AssertionError("no ValueError for %r" % (args,))


def test_cbor_known_encodings():
    # RFC 8949 Appendix A examples
    eq(cbor.dumps(0), b"\x00")
    eq(cbor.dumps(23), b"\x17")
    eq(cbor.dumps(24), b"\x18\x18")
    eq(cbor.dumps(1000000), b"\x1a\x00\x0f\x42\x40")
    eq(cbor.dumps(1000000000000), b"\x1b\x00\x00\x00\xe8\xd4\xa5\x10\x00")
    eq(cbor.dumps(-1000), b"\x39\x03\xe7")
    eq(cbor.dumps("IETF"), b"\x64IETF")
    eq(cbor.dumps([1, [2, 3]]), b"\x82\x01\x82\x02\x03")
    eq(cbor.dumps(None), b"\xf6")


def test_cbor_round_trip():
    obj = {0: 1, 1: "m01", 2: [[5, 1767226500, 123, 4567], [6, 1767227400, 0, 4567]],
           3: 0, 4: "0.1.0", -3: b"\x00\xff", 9: [True, False, None]}
    eq(cbor.loads(cbor.dumps(obj)), obj)


def test_cbor_rejects_malformed():
    for bad in (b"", b"\x18", b"\x1a\x00\x00", b"\x62a", b"\x82\x01", b"\x01\x02",
                b"\xf9\x00\x00", b"\x5f", b"\xc1\x00", b"\x63\xff\xfe\xfd",
                b"\x81" * 20 + b"\x00", b"\x9a\xff\xff\xff\xff"):
        raises(cbor.loads, bad)


def test_coap_round_trip():
    m = coap.Message(coap.CON, coap.POST, 0x1234, b"\x01\x02\x03\x04",
                     [(coap.OPT_OSCORE, b"\x09\x14"), (coap.OPT_URI_PATH, b"readings"),
                      (coap.OPT_ECHO, b"e" * 8), (2000, b"x" * 300)], b"payload")
    d = coap.decode(coap.encode(m))
    eq((d.mtype, d.code, d.mid, d.token, d.payload), (m.mtype, m.code, m.mid, m.token, m.payload))
    eq(d.options, sorted(m.options))


def test_coap_rejects_malformed():
    for bad in (b"", b"\x40\x01\x00", b"\x80\x01\x00\x01", b"\x49\x01\x00\x01abc",
                b"\x40\x01\x00\x01\xff", b"\x40\x01\x00\x01\xd1", b"\x40\x01\x00\x01\x35ab",
                b"\x40\x01\x00\x01\xf0"):
        raises(coap.decode, bad)

# Minimal CBOR (RFC 8949) for the meter: the subset that OSCORE and the
# GridVeil payload use. Integers, byte and text strings, arrays, maps, false,
# true and null. No floats (the ESP32 has only single precision), no tags,
# no indefinite lengths. Decoding is strict and bounded: anything else raises
# ValueError, never crashes.

_MAX_ITEMS = 256  # a reading batch holds far fewer; bounds memory on bad input
_MAX_DEPTH = 8


def _head(out, major, n):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(n.to_bytes(4, "big"))
    elif n < 0x10000000000000000:
        out.append(mt | 27)
        out.extend(n.to_bytes(8, "big"))
    else:
        raise ValueError("integer too large for CBOR")


def _enc(obj, out):
    # Into one bytearray: a list of small pieces cost a heap object per
    # item, and its growth was the allocation that failed first at 80K.
    if obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(out, 0, obj)
        else:
            _head(out, 1, -1 - obj)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(out, 2, len(obj))
        out.extend(obj)
    elif isinstance(obj, str):
        b = obj.encode()
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(obj, (list, tuple)):
        _head(out, 4, len(obj))
        for item in obj:
            _enc(item, out)
    elif isinstance(obj, dict):
        _head(out, 5, len(obj))
        for k, v in obj.items():
            _enc(k, out)
            _enc(v, out)
    else:
        raise ValueError("cannot encode type in CBOR")


def dumps(obj):
    out = bytearray()
    _enc(obj, out)
    return bytes(out)


def _need(data, pos, n):
    if pos + n > len(data):
        raise ValueError("truncated CBOR")


def _dec(data, pos, depth):
    if depth > _MAX_DEPTH:
        raise ValueError("CBOR nested too deeply")
    _need(data, pos, 1)
    ib = data[pos]
    pos += 1
    major = ib >> 5
    info = ib & 0x1F
    if major == 7:
        if info == 20:
            return False, pos
        if info == 21:
            return True, pos
        if info == 22:
            return None, pos
        raise ValueError("unsupported CBOR simple value")
    if info < 24:
        n = info
    elif info <= 27:
        size = 1 << (info - 24)
        _need(data, pos, size)
        n = int.from_bytes(data[pos:pos + size], "big")
        pos += size
    else:
        raise ValueError("unsupported CBOR length")
    if major == 0:
        return n, pos
    if major == 1:
        return -1 - n, pos
    if major == 2 or major == 3:
        _need(data, pos, n)
        s = bytes(data[pos:pos + n])
        pos += n
        if major == 3:
            try:
                s = s.decode()
            except Exception:
                raise ValueError("invalid UTF-8 in CBOR text")
        return s, pos
    if n > _MAX_ITEMS:
        raise ValueError("CBOR container too large")
    if major == 4:
        items = []
        for _ in range(n):
            item, pos = _dec(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        m = {}
        for _ in range(n):
            k, pos = _dec(data, pos, depth + 1)
            if isinstance(k, (list, dict)):
                raise ValueError("unhashable CBOR map key")
            v, pos = _dec(data, pos, depth + 1)
            m[k] = v
        return m, pos
    raise ValueError("unsupported CBOR major type")


def loads(data):
    """Decode exactly one CBOR item; trailing bytes are an error."""
    obj, pos = _dec(data, 0, 0)
    if pos != len(data):
        raise ValueError("trailing bytes after CBOR item")
    return obj

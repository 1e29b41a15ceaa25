# CoAP message layer (RFC 7252): encode and strictly decode one datagram.
# Options are kept as a list of (number, value-bytes) pairs in wire order.

CON = 0
NON = 1
ACK = 2
RST = 3

EMPTY = 0x00
GET = 0x01
POST = 0x02
CHANGED = 0x44  # 2.04
CONTENT = 0x45  # 2.05
BAD_REQUEST = 0x80  # 4.00
UNAUTHORIZED = 0x81  # 4.01
SERVICE_UNAVAILABLE = 0xA3  # 5.03

OPT_OSCORE = 9
OPT_URI_PATH = 11
OPT_CONTENT_FORMAT = 12
OPT_MAX_AGE = 14
OPT_BLOCK2 = 23  # RFC 7959
OPT_ECHO = 252

CF_CBOR = 60


def code_str(code):
    return "%d.%02d" % (code >> 5, code & 0x1F)


class Message:
    def __init__(self, mtype=CON, code=EMPTY, mid=0, token=b"", options=None, payload=b""):
        self.mtype = mtype
        self.code = code
        self.mid = mid
        self.token = token
        self.options = options or []
        self.payload = payload

    def option(self, number):
        """The value of the first option with this number, or None."""
        for num, val in self.options:
            if num == number:
                return val
        return None


def _ext(n):
    # Option delta/length nibble and extension bytes.
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes((n - 13,))
    return 14, (n - 269).to_bytes(2, "big")


def encode_options(options):
    out = []
    last = 0
    for num, val in sorted(options, key=lambda o: o[0]):
        d, dext = _ext(num - last)
        ln, lext = _ext(len(val))
        out.append(bytes(((d << 4) | ln,)) + dext + lext + val)
        last = num
    return b"".join(out)


def _read_ext(nib, data, pos):
    if nib < 13:
        return nib, pos
    if nib == 13:
        if pos + 1 > len(data):
            raise ValueError("truncated option")
        return data[pos] + 13, pos + 1
    if nib == 14:
        if pos + 2 > len(data):
            raise ValueError("truncated option")
        return int.from_bytes(data[pos:pos + 2], "big") + 269, pos + 2
    raise ValueError("reserved option nibble 15")


def decode_options(data, pos=0):
    """Returns (options, payload); payload follows an 0xFF marker."""
    options = []
    num = 0
    n = len(data)
    while pos < n:
        b = data[pos]
        pos += 1
        if b == 0xFF:
            if pos == n:
                raise ValueError("payload marker without payload")
            return options, bytes(data[pos:])
        delta, pos = _read_ext(b >> 4, data, pos)
        length, pos = _read_ext(b & 0x0F, data, pos)
        if pos + length > n:
            raise ValueError("truncated option value")
        num += delta
        options.append((num, bytes(data[pos:pos + length])))
        pos += length
    return options, b""


def encode(msg):
    tkl = len(msg.token)
    if tkl > 8:
        raise ValueError("token too long")
    head = bytes(((1 << 6) | (msg.mtype << 4) | tkl, msg.code)) + msg.mid.to_bytes(2, "big")
    body = encode_options(msg.options)
    if msg.payload:
        body += b"\xff" + msg.payload
    return head + msg.token + body


def decode(data):
    if len(data) < 4:
        raise ValueError("datagram shorter than a CoAP header")
    if data[0] >> 6 != 1:
        raise ValueError("not CoAP version 1")
    tkl = data[0] & 0x0F
    if tkl > 8 or 4 + tkl > len(data):
        raise ValueError("bad token length")
    msg = Message((data[0] >> 4) & 3, data[1], int.from_bytes(data[2:4], "big"),
                  bytes(data[4:4 + tkl]))
    msg.options, msg.payload = decode_options(data, 4 + tkl)
    return msg

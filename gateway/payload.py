"""The CBOR payload of POST /readings and its response (docs/protocol.md).

Request:  {0: 1, 1: meter_id, 2: [[seq, interval_end, energy_wh, register_wh(, span)], ...],
           3: backlog (optional), 4: firmware version (optional),
           5: telemetry (optional): {key: integer}, keys in TELEMETRY}
Response: {0: 1, 1: [acknowledged seq, ...], 3: gateway time,
           4: firmware offered (optional): [version, size, sha256]}

Parsing is strict: anything unexpected is a PayloadError with a message the
meter's operator can act on. Nothing from a payload is ever logged.
"""

from __future__ import annotations

import cbor2

from .pes import Batch, Reading

VERSION = 1
MAX_PAYLOAD = 1024  # one CoAP datagram; batches never need blockwise
MAX_BATCH = 64
MAX_ENERGY_WH = 10_000_000  # 10 MWh in one interval: no household gets near
MAX_SEQ = (1 << 40) - 1
MAX_SPAN = 96 * 366  # a merged reading covers at most a year of 15-minute intervals
# The meter's health (firmware/telemetry.py): CBOR key -> (name, lowest, highest).
# None of these follows consumption; they reach the utility in the clear.
TELEMETRY = {
    0: ("reset_cause", 0, 255),         # machine.reset_cause() of the last boot
    1: ("uptime_s", 0, MAX_SEQ),
    2: ("free_heap", 0, 1 << 32),
    3: ("rssi_dbm", -128, 0),           # Wi-Fi signal; absent on the emulator
    4: ("seq_reserve", 0, MAX_SEQ),     # OSCORE sequence numbers left in this context
    5: ("sensor_rejects_permille", 0, 1000),
    6: ("p1_telegrams", 0, MAX_SEQ),
    7: ("merges", 0, MAX_SEQ),          # queued readings merged for lack of room
}


class PayloadError(ValueError):
    pass


def _uint(v, what: str, limit: int) -> int:
    if type(v) is not int or not 0 <= v <= limit:
        raise PayloadError(f"{what} must be an integer in 0..{limit}")
    return v


def parse(data: bytes, interval_s: int) -> Batch:
    if len(data) > MAX_PAYLOAD:
        raise PayloadError(f"payload larger than {MAX_PAYLOAD} bytes")
    try:
        obj = cbor2.loads(data)
    except Exception:  # cbor2 raises several types on malformed input
        raise PayloadError("payload is not valid CBOR") from None
    if not isinstance(obj, dict):
        raise PayloadError("payload must be a CBOR map")
    if obj.get(0) != VERSION:
        raise PayloadError(f"unsupported payload version (expected {VERSION})")
    unknown = set(obj) - {0, 1, 2, 3, 4, 5}
    if unknown:
        raise PayloadError("unknown keys in payload")
    meter_id = obj.get(1)
    if not isinstance(meter_id, str) or not 0 < len(meter_id) <= 64:
        raise PayloadError("meter id (key 1) must be a short text string")
    items = obj.get(2)
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        raise PayloadError(f"readings (key 2) must be a list of 1..{MAX_BATCH}")
    readings = []
    for item in items:
        if not isinstance(item, list) or len(item) not in (4, 5):
            raise PayloadError("each reading must be [seq, interval_end, energy_wh, register_wh]"
                               " with an optional span")
        seq = _uint(item[0], "seq", MAX_SEQ)
        end = _uint(item[1], "interval_end", MAX_SEQ)
        energy = _uint(item[2], "energy_wh", MAX_ENERGY_WH)
        register = _uint(item[3], "register_wh", (1 << 53) - 1)
        span = _uint(item[4], "span", MAX_SPAN) if len(item) == 5 else 1
        if span < 1:
            raise PayloadError("span must be at least 1")
        if end % interval_s:
            raise PayloadError(f"interval_end is not on a {interval_s} s boundary")
        if readings and (seq <= readings[-1].seq or end <= readings[-1].interval_end):
            raise PayloadError("readings must be in increasing seq and time order")
        readings.append(Reading(seq, end, energy, register, span))
    backlog = obj.get(3)
    if backlog is not None:
        backlog = _uint(backlog, "backlog", MAX_SEQ)
    fw = obj.get(4)
    if fw is not None and (not isinstance(fw, str) or len(fw) > 32):
        raise PayloadError("firmware version (key 4) must be a short text string")
    return Batch(meter_id, readings, fw_version=fw, backlog=backlog,
                 telemetry=_telemetry(obj.get(5)))


def _telemetry(t) -> dict[str, int] | None:
    if t is None:
        return None
    if not isinstance(t, dict) or not set(t) <= set(TELEMETRY):
        raise PayloadError(f"telemetry (key 5) must be a map with keys in 0..{len(TELEMETRY) - 1}")
    out = {}
    for k, v in t.items():
        name, low, high = TELEMETRY[k]
        if type(v) is not int or not low <= v <= high:
            raise PayloadError(f"telemetry {name} must be an integer in {low}..{high}")
        out[name] = v
    return out


def ack(seqs: list[int], now: int, offer: list | None = None, kept: int | None = None) -> bytes:
    """2.04: the seqs stored (or already held), the gateway's clock, which
    a meter may compare with its own, a firmware image offered to it:
    [version, size, sha256] (gateway/updates.py), and how far the newest
    backup holds this meter's readings (gateway/backup.py; only once there
    is one): the meter keeps acknowledged readings until then."""
    body = {0: VERSION, 1: seqs, 3: now}
    if offer is not None:
        body[4] = offer
    if kept is not None:
        body[5] = kept
    return cbor2.dumps(body)


def position(last_seq: int, last_end: int | None, now: int, kept: int | None = None) -> bytes:
    """B.2 Response #1 (4.01): where this meter's readings stand here, so
    that a meter whose flash was wiped continues numbering after them, and
    one that this gateway (restored from a backup) lacks readings of sends
    them again."""
    body = {0: VERSION, 1: last_seq, 2: last_end or 0, 3: now}
    if kept is not None:
        body[5] = kept
    return cbor2.dumps(body)

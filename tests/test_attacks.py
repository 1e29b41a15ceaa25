"""Threats from docs/protocol.md, each against the real gateway process:
tampered, replayed, unknown-key-id, cross-meter and malformed messages are
rejected, counted, and change nothing; the gateway keeps serving."""

from __future__ import annotations

import time

import aiocoap
import cbor2
import pytest
from helpers.system import System

from host_tools.oscore_peer import RawPeer, context_for, readings_payload

END = 1767225600 + 900  # first interval of 2026-01-01


@pytest.fixture(scope="module")
def system(tmp_path_factory, sample_files):
    s = System(tmp_path_factory.mktemp("attacks") / "gv", sample_files[:5])
    s.start_gateway()
    yield s
    s.close()


def peer(system, meter_id):
    return RawPeer(context_for(system.meter_secrets(meter_id)), system.port)


def rejects(system):
    time.sleep(1.5)  # the gateway flushes its counters every second
    return system.rejects()


def test_valid_reading_accepted_and_acknowledged(system):
    p = peer(system, "m01")
    before = int(time.time())
    inner, _ = p.post(readings_payload("m01", [[0, END, 123, 123]]))
    assert inner.code == aiocoap.CHANGED
    ack = cbor2.loads(inner.payload)
    assert {k: ack[k] for k in (0, 1)} == {0: 1, 1: [0]}
    assert before <= ack[3] <= time.time() + 1  # the gateway's clock, for the meter to compare
    assert system.accepted("m01") == 1


def test_one_meter_cannot_count_as_several_contributors(system):
    """The utility's own meter (or a compromised one) sends the same interval
    in four separate batches under fresh sequence numbers, hoping to count
    as four households in that interval's aggregate."""
    p = peer(system, "m01")
    before = system.accepted("m01")
    for seq in range(10, 14):
        inner, _ = p.post(readings_payload("m01", [[seq, END + 900, 77, 77 * seq]]))
        assert inner.code == aiocoap.CHANGED  # acknowledged, so an honest retry ends
    assert system.accepted("m01") == before + 1
    assert rejects(system).get(("m01", "stale_interval"), 0) == 3
    st = system.store(readonly=True)
    try:
        meters = st.demand_meters("north", END + 900)
    finally:
        st.close()
    assert meters == ["m01"]  # one meter, once


def test_replayed_request_rejected_and_counted(system):
    p = peer(system, "m02")
    inner, datagram = p.post(readings_payload("m02", [[0, END, 50, 50]]))
    assert inner.code == aiocoap.CHANGED
    before = system.accepted("m02")
    # The same protected bytes again, as a new CoAP message (new message id,
    # so it is not a mere retransmission).
    replay = bytearray(datagram)
    replay[2] ^= 0xFF
    resp = p.send_raw(bytes(replay))
    assert resp.code == aiocoap.UNAUTHORIZED
    assert system.accepted("m02") == before
    assert rejects(system).get(("m02", "replay"), 0) >= 1


def test_tampered_ciphertext_rejected_and_counted(system):
    p = peer(system, "m03")
    p.post(readings_payload("m03", [[0, END, 10, 10]]))  # completes the Echo handshake
    datagram, _ = p.protect(readings_payload("m03", [[1, END + 900, 77, 87]]))
    tampered = bytearray(datagram)
    tampered[-3] ^= 0x01
    resp = p.send_raw(bytes(tampered))
    assert resp.code == aiocoap.BAD_REQUEST
    assert resp.opt.oscore is None
    assert system.accepted("m03") == 1
    assert rejects(system).get(("m03", "forged"), 0) >= 1


def test_unknown_key_id_rejected_and_counted(system):
    secrets = dict(system.meter_secrets("m04"), sender_id="7e7e7e")
    p = RawPeer(context_for(secrets), system.port)
    before = rejects(system).get(("", "unknown_kid"), 0)
    resp = p.send_raw(p.protect(readings_payload("m04", [[0, END, 1, 1]]))[0])
    assert resp.code == aiocoap.UNAUTHORIZED
    assert rejects(system).get(("", "unknown_kid"), 0) == before + 1


def test_meter_cannot_claim_another_meters_readings(system):
    p = peer(system, "m05")
    inner, _ = p.post(readings_payload("m04", [[0, END, 999, 999]]))
    assert inner.code == aiocoap.FORBIDDEN
    assert system.accepted("m04") == 0
    assert rejects(system).get(("m05", "wrong_meter"), 0) == 1


@pytest.mark.parametrize("payload", [
    b"\xff\x00garbage",
    cbor2.dumps([1, 2, 3]),
    cbor2.dumps({0: 2, 1: "m05", 2: [[0, END, 1, 1]]}),
    cbor2.dumps({0: 1, 1: "m05", 2: []}),
    cbor2.dumps({0: 1, 1: "m05", 2: [[0, END + 1, 1, 1]]}),
    cbor2.dumps({0: 1, 1: "m05", 2: [[0, END, -1, 1]]}),
    cbor2.dumps({0: 1, 1: "m05", 2: [[0, END, 1.5, 1]]}),
    cbor2.dumps({0: 1, 1: "m05", 2: [[1, END, 1, 1], [0, END + 900, 1, 1]]}),
    cbor2.dumps({0: 1, 1: "m05", 2: [[0, END, 1, 1]] * 65}),
    cbor2.dumps({0: 1, 1: "m05", 2: [[0, END, 1, 1]], 9: "x"}),
    # telemetry (key 5): not a map, an unknown key, a value out of range or not an integer
    cbor2.dumps({0: 1, 1: "m05", 2: [[0, END, 1, 1]], 5: [1]}),
    cbor2.dumps({0: 1, 1: "m05", 2: [[0, END, 1, 1]], 5: {99: 1}}),
    cbor2.dumps({0: 1, 1: "m05", 2: [[0, END, 1, 1]], 5: {3: 5}}),
    cbor2.dumps({0: 1, 1: "m05", 2: [[0, END, 1, 1]], 5: {2: "lots"}}),
])
def test_malformed_payloads_rejected_inside_oscore(system, payload):
    p = peer(system, "m05")
    inner, _ = p.post(payload)
    assert inner.code == aiocoap.BAD_REQUEST
    assert inner.payload  # a diagnostic the operator can act on
    assert system.accepted("m05") == 0


@pytest.mark.parametrize("datagram", [
    b"", b"\x40", b"\xff" * 40, bytes(range(256)) * 4,
    b"\x42\x02\x00\x01\x00",  # token longer than the datagram
    b"\x40\x02\x00\x01\x92\x09",  # OSCORE option cut short
    b"\x40\x02\x00\x01\x91\x09\xff\x00",  # OSCORE flags without kid
])
def test_garbage_datagrams_do_not_hurt_the_gateway(system, datagram):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(datagram, ("127.0.0.1", system.port))
    # The gateway is still alive and serving.
    inner, _ = peer(system, "m01").post(readings_payload("m01", [[0, END, 123, 123]]))
    assert inner.code == aiocoap.CHANGED  # a duplicate of an earlier test's reading
    assert system.gw.proc.poll() is None
    assert "Traceback" not in system.gateway_log()


def _ask(system, datagram: bytes, wait: float = 1.0):
    """Send one datagram from a fresh source; the answer, or None."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        s.sendto(datagram, ("127.0.0.1", system.port))
        try:
            return aiocoap.Message.decode(s.recv(2048))
        except TimeoutError:
            return None


CON, NON = b"\x42\x02\x12\x34\xab\xcd", b"\x52\x02\x12\x35\xab\xce"  # POST, token abcd/abce


@pytest.mark.parametrize("name, tail, code", [
    ("Uri-Path not UTF-8", b"\xb2\xff\xfe", "4.02"),
    ("Uri-Host not UTF-8", b"\x32\xc3\x28", "4.02"),
    ("Uri-Query not UTF-8", b"\xb8readings\x42\xc3\x28", "4.02"),
    ("OSCORE flags promise a kid context that is not there", b"\x91\x10\xff" + b"x" * 12, "4.02"),
    ("OSCORE flags promise a PIV that is not there", b"\x91\x03\xff" + b"x" * 12, "4.02"),
    ("OSCORE group flag", b"\x94\x29\x01\x00\x01\xff" + b"x" * 12, "4.02"),
    ("Block1 on /readings", b"\xb8readings\xd1\x03\x0e\xff" + b"a" * 1024, "4.13"),
    ("larger than one batch", b"\xff" + b"a" * 1300, "4.13"),
    ("no OSCORE", b"\xb8readings\xff" + b"a" * 20, "4.01"),
    ("an unknown key id", b"\x93\x09\x01\x7f\xff" + b"x" * 12, "4.01"),
])
def test_each_malformed_request_gets_its_own_4xx_and_no_traceback(system, name, tail, code):
    """CON requests get the right 4.xx from the gateway; the same as NON get
    nothing (RFC 7252: no error answers to NON). Neither leaves a
    traceback, nor a 5.00."""
    answer = _ask(system, CON + tail)
    assert answer is not None and str(answer.code).startswith(code), (name, answer)
    assert answer.token == bytes.fromhex("abcd") and answer.mtype == aiocoap.ACK
    assert _ask(system, NON + tail, wait=0.5) is None, name
    assert "Traceback" not in system.gateway_log()


def test_block1_inside_oscore_is_refused_too(system):
    """A meter (or whoever holds its key) sending an inner Block1: no
    reassembly buffer is made, the answer is 4.13."""
    from aiocoap import optiontypes
    from aiocoap.numbers.codes import Code

    p = peer(system, "m04")
    for attempt in range(2):  # the first exchange after a gateway start may be an Echo challenge
        # (a new message id each time: the same one would be a duplicate)
        msg = aiocoap.Message(code=Code.POST, uri_path=("readings",), payload=b"a" * 512)
        msg.opt.block1 = optiontypes.BlockOption.BlockwiseTuple(0, True, 5)
        if p.echo is not None:
            msg.opt.echo = p.echo
        outer, rid = p.ctx.protect(msg)
        outer.mtype, outer.mid, outer.token = aiocoap.CON, 0x4321 + attempt, b"\x01\x02"
        inner = p.unprotect(p.send_raw(outer.encode()), rid)
        if inner.code == aiocoap.UNAUTHORIZED and inner.opt.echo:
            p.echo = inner.opt.echo
            continue
        break
    assert inner.code == aiocoap.REQUEST_ENTITY_TOO_LARGE and inner.opt.size1 == 1024


@pytest.mark.parametrize("path", [("readingz",), ("readings", "x"), ()])
def test_a_meter_asking_for_another_path_gets_not_found(system, path):
    """The gateway's root looks its two paths up itself (not aiocoap's
    Site): a meter's protected POST anywhere else is 4.04 and stores
    nothing, while the right path still works."""
    p = peer(system, "m03")
    before = system.accepted("m03")
    for _ in range(2):  # the first exchange after a gateway start may be an Echo challenge
        datagram, rid = p.protect(readings_payload("m03", [[40, END, 9, 9]]), path=path)
        inner = p.unprotect(p.send_raw(datagram), rid)
        if inner.code == aiocoap.UNAUTHORIZED and inner.opt.echo:
            p.echo = inner.opt.echo
            continue
        break
    assert inner.code == aiocoap.NOT_FOUND, (path, inner)
    assert system.accepted("m03") == before
    k = 41 + before  # a new seq and a newer interval at each run
    inner, _ = p.post(readings_payload("m03", [[k, END + 900 * k, 9, 9]]))
    assert inner.code == aiocoap.CHANGED
    assert system.accepted("m03") == before + 1
    assert "Traceback" not in system.gateway_log()

"""Interoperability both ways with aiocoap's independent OSCORE:
aiocoap-client (as a meter) -> GridVeil gateway, and the firmware's client
(in the MicroPython Unix port) -> a stock aiocoap OSCORE server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
from helpers.system import System

from host_tools import fleet
from host_tools.site import free_port

HERE = Path(__file__).parent
END = 1767225600 + 900


def aiocoap_bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.fixture
def system(tmp_path, sample_files):
    s = System(tmp_path / "gv", sample_files[:5])
    s.start_gateway()
    yield s
    s.close()


def test_aiocoap_client_posts_reading_that_gateway_accepts(system, tmp_path):
    sec = system.meter_secrets("m02")
    ctxdir = tmp_path / "client-ctx"
    ctxdir.mkdir()
    (ctxdir / "settings.json").write_text(json.dumps({
        "sender-id_hex": sec["sender_id"], "recipient-id_hex": sec["recipient_id"],
        "secret_hex": sec["master_secret"], "salt_hex": sec["master_salt"],
        "algorithm": "AES-CCM-16-64-128"}))
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({f"coap://127.0.0.1:{system.port}/*":
                                 {"oscore": {"basedir": str(ctxdir) + "/"}}}))
    payload = tmp_path / "reading.cbor"
    payload.write_bytes(cbor2.dumps({0: 1, 1: "m02", 2: [[0, END, 321, 321], [1, END + 900, 4, 325]]}))
    out = subprocess.run([aiocoap_bin("aiocoap-client"), "-m", "POST", "--credentials", str(creds),
                          "--content-format", "application/cbor", "--payload", f"@{payload}",
                          "--no-pretty-print", f"coap://127.0.0.1:{system.port}/readings"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    st = system.store(readonly=True)
    m02 = {m["meter_id"]: m for m in st.meters()}["m02"]
    st.close()
    assert m02["accepted"] == 2 and m02["last_seq"] == 1


def _start_peer(ctxdir: Path, port: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(HERE / "helpers" / "aiocoap_peer.py"), str(ctxdir),
                          str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"READY", p.stderr.read().decode()
    return p


def _probe_against_peer(ctxdir: Path, port: int, *probe_args) -> str:
    """Start the aiocoap peer, run the firmware probe against it, stop it."""
    peer = _start_peer(ctxdir, port)
    try:
        return _probe(port, *probe_args)
    finally:
        peer.terminate()
        peer.wait()


def _probe(port: int, secret: str, salt: str, sender: str, recipient: str, count: int,
           first_seq: int, *extra: str) -> str:
    # Compiled from sources here, which needs more heap than the .mpy build
    # and not monotonically so (make bench measures the heap; this is about
    # interoperability): the fleet's heap, not a tight one.
    out = subprocess.run([fleet.micropython(), "-X", f"heapsize={fleet.HEAP}",
                          str(HERE / "firmware" / "uplink_probe.py"), str(port), secret, salt,
                          sender, recipient, str(count), str(first_seq), *extra],
                         env=fleet.mp_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_firmware_client_exchanges_with_aiocoap_oscore_server(tmp_path):
    secret, salt, client_id, server_id = "00112233445566778899aabbccddeeff", "a1b2c3d4", "0c", "05"
    ctxdir = tmp_path / "server-ctx"
    ctxdir.mkdir()
    (ctxdir / "settings.json").write_text(json.dumps({
        "sender-id_hex": server_id, "recipient-id_hex": client_id, "secret_hex": secret,
        "salt_hex": salt, "algorithm": "AES-CCM-16-64-128"}))
    port = free_port(socket.SOCK_DGRAM)
    out = _probe_against_peer(ctxdir, port, secret, salt, client_id, server_id, 3, 0, "42")
    # aiocoap's 5.03 with Max-Age, read from inside OSCORE (a meter then waits that long).
    assert "BUSY 163 42" in out, out
    results = [line for line in out.splitlines() if line.startswith("RESULT")]
    assert results == [f"RESULT 68 {{'oscore': True, 'got': {{'n': {i}}}}}" for i in range(3)], out
    assert "Echo" not in out  # a fresh aiocoap context starts with an empty window

    # aiocoap restarts without its replay window: it challenges with Echo,
    # which the firmware answers; the client continues at higher numbers.
    out = _probe_against_peer(ctxdir, port, secret, salt, client_id, server_id, 1, 100)
    assert "asked for Echo" in out
    (result,) = [line for line in out.splitlines() if line.startswith("RESULT")]
    assert "'got': {'n': 0}" in result, out
    # Resent with the request's own Content-Format and one Echo (libcoap
    # drops a request with two; the firmware once sent the 4.01's options).
    assert "'echo': [60, 1]" in result, out

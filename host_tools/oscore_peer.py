"""A meter impersonated in Python with aiocoap's own OSCORE implementation,
sending raw UDP datagrams: the load generator of `gridveil bench`, and the
tool with which tests replay, tamper with and forge messages byte by byte."""

from __future__ import annotations

import itertools
import os
import socket
import time

import aiocoap
import cbor2
from aiocoap import oscore
from aiocoap.numbers.codes import Code


class ClientContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):
    def __init__(self, secret: bytes, salt: bytes, sender_id: bytes, recipient_id: bytes,
                 seq: int = 1_000_000):
        self.alg_aead = oscore.algorithms["AES-CCM-16-64-128"]
        self.hashfun = oscore.hashfunctions["sha256"]
        self.id_context = None
        self.sender_id = sender_id
        self.recipient_id = recipient_id
        self.derive_keys(salt, secret)
        self.sender_sequence_number = seq
        self.recipient_replay_window = oscore.ReplayWindow(32, lambda: None)
        self.recipient_replay_window.initialize_empty()
        self.echo_recovery = None

    def post_seqnoincrease(self):
        pass


_next_seq = itertools.count(1_000_000, 1000)


def context_for(secrets: dict, **kw) -> ClientContext:
    """Each peer starts at fresh sequence numbers, as a real meter would."""
    kw.setdefault("seq", next(_next_seq))
    return ClientContext(bytes.fromhex(secrets["master_secret"]),
                         bytes.fromhex(secrets["master_salt"]),
                         bytes.fromhex(secrets["sender_id"]),
                         bytes.fromhex(secrets["recipient_id"]), **kw)


def readings_payload(meter_id: str, readings: list[list[int]], **extra) -> bytes:
    obj = {0: 1, 1: meter_id, 2: readings}
    obj.update(extra)
    return cbor2.dumps(obj)


class Requests:
    """One meter's protected confirmable POSTs: its context, the Echo value
    it was last challenged with, and consecutive message ids (a random one
    per request can repeat within the server's deduplication lifetime, and
    the repeat is then answered as a duplicate: about 1 in 1,000 meters
    with a day's backlog hit it)."""

    def __init__(self, ctx: ClientContext):
        self.ctx = ctx
        self.echo = None
        self.mid = int.from_bytes(os.urandom(2), "big")

    def protect_message(self, payload: bytes, path=("readings",)):
        """(outer CON message, request id) for one POST."""
        msg = aiocoap.Message(code=Code.POST, uri_path=path, payload=payload, content_format=60)
        if self.echo is not None:
            msg.opt.echo = self.echo
        outer, request_id = self.ctx.protect(msg)
        outer.mtype = aiocoap.CON
        self.mid = (self.mid + 1) & 0xFFFF
        outer.mid = self.mid
        outer.token = os.urandom(4)
        return outer, request_id

    def protect(self, payload: bytes, path=("readings",)):
        outer, request_id = self.protect_message(payload, path)
        return outer.encode(), request_id


class RawPeer(Requests):
    def __init__(self, ctx: ClientContext, port: int):
        super().__init__(ctx)
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)

    def close(self):
        self.sock.close()

    def send_raw(self, datagram: bytes, retransmit: int = 4) -> aiocoap.Message:
        """Send one request; return its response, piggybacked or separate.
        Unanswered, the very same datagram goes again, as a CoAP client
        retransmits a CON (RFC 7252 4.2: 2 s, doubling, 4 times); the
        gateway answers a duplicate from its cache."""
        request = aiocoap.Message.decode(datagram)
        wait = 2.0
        for attempt in range(retransmit + 1):
            self.sock.sendto(datagram, self.addr)
            deadline = time.monotonic() + wait
            try:
                while True:
                    self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                    data, _ = self.sock.recvfrom(2048)
                    msg = aiocoap.Message.decode(data)
                    if msg.mtype == aiocoap.ACK and msg.code == aiocoap.EMPTY:
                        continue  # the gateway is busy: a separate response follows
                    if msg.mtype == aiocoap.CON:
                        ack = aiocoap.Message(mtype=aiocoap.ACK, mid=msg.mid, code=aiocoap.EMPTY)
                        self.sock.sendto(ack.encode(), self.addr)
                    if msg.token == request.token or msg.mtype == aiocoap.RST:
                        return msg
            except TimeoutError:
                if attempt == retransmit:
                    raise
                wait *= 2
        raise AssertionError("unreachable")

    def unprotect(self, resp: aiocoap.Message, request_id):
        plain, _ = self.ctx.unprotect(resp, request_id)
        return plain

    def post(self, payload: bytes):
        """A well-behaved exchange (answers an Echo challenge once).
        Returns (inner response, the datagram that was accepted)."""
        for _ in range(2):
            datagram, rid = self.protect(payload)
            resp = self.send_raw(datagram)
            if resp.opt.oscore is None:
                return resp, datagram
            inner = self.unprotect(resp, rid)
            if inner.code == aiocoap.UNAUTHORIZED and inner.opt.echo and self.echo is None:
                self.echo = inner.opt.echo
                continue
            return inner, datagram
        raise AssertionError("gateway kept asking for Echo")

# Confirmable CoAP POST over UDP, protected with OSCORE: RFC 7252
# retransmission with exponential backoff, piggybacked and separate
# responses, and the Echo challenge (RFC 9175) that a gateway sends when it
# has restarted and lost its replay window.
import os
import time

try:
    import socket
except ImportError:  # pragma: no cover
    import usocket as socket

import coap
import oscore

# Our gateway's largest response, the 2.04 for a batch of 24 readings with
# 5-byte sequence numbers, is about 170 bytes; a bigger datagram is cut
# short, fails to decode and is ignored. In a 64K heap a 512-byte buffer
# per wait was the allocation that failed first.
RECV_MAX = 256
_TIMEOUTS = (11, 110)  # EAGAIN, ETIMEDOUT: what a socket timeout raises
CBOR = ((coap.OPT_CONTENT_FORMAT, bytes((coap.CF_CBOR,))),)  # a POST's inner options


class UplinkError(Exception):
    """The exchange did not complete; the readings stay queued."""


class Uplink:
    """`keys` holds the current context (rekey.Rekeying on a meter). The
    gateway's address is resolved when first needed and again after a
    failure, so a meter that booted before Wi-Fi or DNS was up, or whose
    gateway moved, finds it without a restart."""

    def __init__(self, sock, host, port, keys, ack_timeout_ms=2000, max_retransmit=4,
                 response_timeout_ms=30000, log=print, idle=None, resolver=None, on_rekey=None):
        self.sock = sock
        self.host = host
        self.port = port
        self.addr = None
        self.resolver = resolver or resolve
        self.keys = keys
        self.ack_timeout_ms = ack_timeout_ms
        self.max_retransmit = max_retransmit
        self.response_timeout_ms = response_timeout_ms
        self.log = log
        self.idle = idle  # called at least once a second while waiting (watchdog)
        self.on_rekey = on_rekey  # gets Response #1's payload: the gateway's position
        self.max_age = None  # Max-Age of the last verified response, in seconds
        self._mid = int.from_bytes(os.urandom(2), "big")

    def _next_mid(self):
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    def _address(self):
        if self.addr is None:
            try:
                self.addr = self.resolver(self.host, self.port)
            except (OSError, IndexError) as e:
                raise UplinkError("cannot resolve %s: %s" % (self.host, _oserr(e)))
        return self.addr

    def request(self, method, path, payload=b"", options=CBOR, recv_max=RECV_MAX):
        """One protected exchange; returns (code, inner options, payload) of
        the verified inner response. `options` go inside OSCORE (Content-
        Format, Block2 of RFC 7959); `recv_max` is the largest response
        datagram to expect. `payload` may be a function that builds the
        bytes: it is called again after a new context was agreed, because
        the gateway's answer can renumber what is queued."""
        echo = None
        for _ in range(3):
            body_out = payload() if callable(payload) else payload
            ctx = self.keys.ctx
            if ctx is None:
                raise UplinkError("no true randomness yet (the radio is off)")
            inner = [(coap.OPT_URI_PATH, seg.encode()) for seg in path.split("/") if seg]
            inner.extend(options)
            if echo is not None:
                inner.append((coap.OPT_ECHO, echo))
            try:
                value, ct, binding = ctx.protect_request(method, inner, body_out)
            except oscore.OscoreError as e:  # sequence numbers used up
                if not hasattr(self.keys, "restart"):
                    raise UplinkError(str(e))
                self.keys.restart()
                continue
            # OSCORE's outer code is POST for every method (RFC 8613 4.2).
            req = coap.Message(coap.CON, coap.POST, self._next_mid(), os.urandom(4),
                               [(coap.OPT_OSCORE, value)], ct)
            resp = self._exchange(req, recv_max)
            oscore_opt = resp.option(coap.OPT_OSCORE)
            if oscore_opt is None:
                # An unprotected error (e.g. 4.01 "context not found"): it
                # proves nothing, so it is only reported.
                raise UplinkError("unprotected %s response from gateway" % coap.code_str(resp.code))
            try:
                _, r2 = oscore.response_option(oscore_opt)
                if r2 is not None and not hasattr(self.keys, "advance"):
                    raise oscore.OscoreError("kid context from a peer that cannot rekey")
                vctx = ctx if r2 is None else self.keys.response_context(r2)
                code, got, body = vctx.unprotect_response(oscore_opt, resp.payload, binding)
            except oscore.OscoreError as e:
                raise UplinkError("bad response: %s" % e)
            if r2 is not None:
                # B.2 Response #1: the request was verified, not processed.
                if code != coap.UNAUTHORIZED:
                    raise UplinkError("gateway sent a kid context with %s" % coap.code_str(code))
                ctx = vctx = resp = None  # let advance() free both old contexts first
                self.keys.advance(r2)
                self.log("new security context agreed with the gateway")
                if self.on_rekey is not None:
                    self.on_rekey(body)
                continue
            # Max-Age of a 5.03: when the gateway wants to hear from us again.
            self.max_age = None
            # `got`, not `options`: the next try sends the request's own again.
            for n, v in got:
                if n == coap.OPT_MAX_AGE and len(v) <= 4:
                    self.max_age = int.from_bytes(v, "big")
            echo_opts = [v for n, v in got if n == coap.OPT_ECHO]
            if code == coap.UNAUTHORIZED and echo_opts and echo is None:
                echo = echo_opts[0]
                self.log("gateway asked for Echo; resending with it")
                continue
            return code, got, body
        raise UplinkError("gateway did not settle on a security context")

    def _send(self, msg):
        self._sendto(coap.encode(msg))

    def _sendto(self, data):
        try:
            self.sock.sendto(data, self._address())
        except OSError as e:  # Wi-Fi down, no route: the readings stay queued
            self.addr = None
            raise UplinkError("cannot send: %s" % _oserr(e))

    def _recv(self, deadline, recv_max=RECV_MAX):
        """The next datagram as a Message; False for garbage; None once the
        deadline has passed."""
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return None
            if self.idle is not None:
                self.idle()
            self.sock.settimeout(min(left, 1000) / 1000)
            try:
                data, _ = self.sock.recvfrom(recv_max)
            except OSError as e:
                if e.args and e.args[0] not in _TIMEOUTS:
                    time.sleep_ms(100)  # a network error, not a timeout: do not spin
                continue  # check the deadline, feed the watchdog
            try:
                return coap.decode(data)
            except ValueError:
                return False  # garbage: ignore and keep waiting

    def _exchange(self, req, recv_max=RECV_MAX):
        data = coap.encode(req)
        # Initial timeout randomised in [ACK_TIMEOUT, 1.5 * ACK_TIMEOUT].
        timeout = self.ack_timeout_ms + (os.urandom(1)[0] * self.ack_timeout_ms) // 510
        acked = False
        for _ in range(self.max_retransmit + 1):
            self._sendto(data)
            deadline = time.ticks_add(time.ticks_ms(), timeout)
            while True:
                msg = self._recv(deadline, recv_max)
                if msg is None:
                    break
                if msg is False:
                    continue
                if msg.mtype in (coap.ACK, coap.RST) and msg.mid == req.mid:
                    if msg.mtype == coap.RST:
                        raise UplinkError("gateway reset the exchange")
                    if msg.code == coap.EMPTY:
                        acked = True  # separate response follows
                        break
                    if msg.token == req.token:
                        return msg
                elif msg.token == req.token and msg.mtype in (coap.CON, coap.NON):
                    if msg.mtype == coap.CON:
                        self._send(coap.Message(coap.ACK, coap.EMPTY, msg.mid))
                    return msg
            if acked:
                return self._await_separate(req, recv_max)
            timeout *= 2
        self.addr = None  # resolve again next time: the gateway may have moved
        raise UplinkError("no answer from gateway after %d transmissions" % (self.max_retransmit + 1))

    def _await_separate(self, req, recv_max):
        deadline = time.ticks_add(time.ticks_ms(), self.response_timeout_ms)
        while True:
            msg = self._recv(deadline, recv_max)
            if msg is None:
                raise UplinkError("separate response did not arrive")
            if msg is False:
                continue
            if msg.token == req.token and msg.mtype in (coap.CON, coap.NON) and msg.code:
                if msg.mtype == coap.CON:
                    self._send(coap.Message(coap.ACK, coap.EMPTY, msg.mid))
                return msg


def udp_socket():
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def resolve(host, port):
    return socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]


def _oserr(e):
    # MicroPython's OSError carries only an errno; say which one.
    return "errno %s" % e.args[0] if e.args and isinstance(e.args[0], int) else str(e)

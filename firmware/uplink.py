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

# Our gateway's responses are well under this; a bigger datagram is cut
# short, fails to decode and is ignored. Small buffers matter in a 64K heap.
RECV_MAX = 512


class UplinkError(Exception):
    """The exchange did not complete; the readings stay queued."""


class Uplink:
    def __init__(self, sock, addr, ctx, ack_timeout_ms=2000, max_retransmit=4,
                 response_timeout_ms=30000, log=print, idle=None):
        self.sock = sock
        self.addr = addr
        self.ctx = ctx
        self.ack_timeout_ms = ack_timeout_ms
        self.max_retransmit = max_retransmit
        self.response_timeout_ms = response_timeout_ms
        self.log = log
        self.idle = idle  # called at least once a second while waiting (watchdog)
        self._mid = int.from_bytes(os.urandom(2), "big")

    def _next_mid(self):
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    def post(self, path, payload):
        """POST payload (CBOR) to path; returns (code, payload) of the
        verified inner response. An Echo challenge is answered once."""
        echo = None
        for _ in range(2):
            inner = [(coap.OPT_URI_PATH, seg.encode()) for seg in path.split("/") if seg]
            inner.append((coap.OPT_CONTENT_FORMAT, bytes((coap.CF_CBOR,))))
            if echo is not None:
                inner.append((coap.OPT_ECHO, echo))
            value, ct, binding = self.ctx.protect_request(coap.POST, inner, payload)
            req = coap.Message(coap.CON, coap.POST, self._next_mid(), os.urandom(4),
                               [(coap.OPT_OSCORE, value)], ct)
            resp = self._exchange(req)
            oscore_opt = resp.option(coap.OPT_OSCORE)
            if oscore_opt is None:
                # An unprotected error (e.g. 4.01 "context not found"): it
                # proves nothing, so it is only reported.
                raise UplinkError("unprotected %s response from gateway" % coap.code_str(resp.code))
            try:
                code, options, body = self.ctx.unprotect_response(oscore_opt, resp.payload, binding)
            except oscore.OscoreError as e:
                raise UplinkError("bad response: %s" % e)
            echo_opts = [v for n, v in options if n == coap.OPT_ECHO]
            if code == coap.UNAUTHORIZED and echo_opts and echo is None:
                echo = echo_opts[0]
                self.log("gateway asked for Echo; resending with it")
                continue
            return code, body
        raise UplinkError("gateway repeated its Echo challenge")

    def _send(self, msg):
        self.sock.sendto(coap.encode(msg), self.addr)

    def _recv(self, deadline):
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
                data, _ = self.sock.recvfrom(RECV_MAX)
            except OSError:
                continue  # timeout: check the deadline, feed the watchdog
            try:
                return coap.decode(data)
            except ValueError:
                return False  # garbage: ignore and keep waiting

    def _exchange(self, req):
        data = coap.encode(req)
        # Initial timeout randomised in [ACK_TIMEOUT, 1.5 * ACK_TIMEOUT].
        timeout = self.ack_timeout_ms + (os.urandom(1)[0] * self.ack_timeout_ms) // 510
        acked = False
        for _ in range(self.max_retransmit + 1):
            self.sock.sendto(data, self.addr)
            deadline = time.ticks_add(time.ticks_ms(), timeout)
            while True:
                msg = self._recv(deadline)
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
                return self._await_separate(req)
            timeout *= 2
        raise UplinkError("no answer from gateway after %d transmissions" % (self.max_retransmit + 1))

    def _await_separate(self, req):
        deadline = time.ticks_add(time.ticks_ms(), self.response_timeout_ms)
        while True:
            msg = self._recv(deadline)
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

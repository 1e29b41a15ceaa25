"""The gateway's first look at every datagram, before aiocoap's.

aiocoap answers some hostile input badly: a Uri-Path that is not UTF-8
raises inside its decoder (no answer, and a traceback per datagram in the
log: aiocoap issues #176 and #417), a cut-short OSCORE option raises
inside its OSCORE code (5.00), Block1 uploads are reassembled without a
size limit, and every answered datagram stays in its duplicate cache for
EXCHANGE_LIFETIME (247 s). So before aiocoap sees a datagram, the guard:

- drops it quietly if its source (address and port) is over its rate;
- drops it quietly if it is not a CoAP message, or not a request, or a
  NON request that would only get an error (RFC 7252: no answer to NON);
- answers a CON request itself, without keeping any state, with
  4.13 if it is larger than one batch or uses Block1 (no reassembly),
  4.02 if an option does not decode (RFC 7252 5.4.1: a malformed
  recognised option is treated as an unrecognised one; these are
  critical) or its OSCORE option does not parse or asks for a mode the
  gateway does not speak (group), 4.01 if it is not
  OSCORE-protected or names a key id the gateway does not know;
- passes everything else, i.e. OSCORE requests for a known meter, to
  aiocoap, whose duplicate cache is bounded here too.

Every drop and answer is counted (the operator sees the counts) and
logged at most once per reason per minute (gateway/ratelog.py).

The guard wraps the udp6 message interface's receive method on the
instance; the installed package is not changed.
"""

from __future__ import annotations

import functools
import logging
import socket
import sys
import time
from collections import Counter, OrderedDict

import aiocoap
from aiocoap import oscore
from aiocoap.numbers.codes import Code

from .payload import MAX_PAYLOAD
from .ratelog import RateLog

log = logging.getLogger("gridveil.guard")

# The largest request a meter sends: its payload, OSCORE's tag and flags,
# the CoAP header, token and options.
MAX_DATAGRAM = MAX_PAYLOAD + 128
# A kid context is how a meter agrees a fresh context per boot (RFC 8613 B.2).
ALLOWED_UNPROTECTED = {oscore.COSE_KID, oscore.COSE_PIV, oscore.COSE_KID_CONTEXT}
# Linux's SO_RCVBUFFORCE (Python's socket module does not name it)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform == "linux" else None)
OPT_BLOCK1 = 27
OPT_SIZE1 = 60


class BoundedDuplicates(dict):
    """aiocoap's duplicate cache ((remote, mid) -> stored response), capped:
    past the cap the oldest entries go. A retransmission of an evicted
    request is then processed again, and OSCORE's replay window refuses
    it; under a flood that costs a meter a retry, never a reading.

    aiocoap expires each entry with its own timer (EXCHANGE_LIFETIME,
    247 s): under a flood, hundreds of thousands of timers. Here entries
    expire by time instead, oldest first, when new ones arrive
    (`LoopWithoutDedupTimers` takes those timers away); pop is lenient."""

    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap
        self.evicted = 0
        self._expiry: dict = {}

    def expire_in(self, key, delay: float) -> None:
        self._expiry[key] = time.monotonic() + delay

    def __setitem__(self, key, value):
        if key not in self:
            self.purge(room=1)
        super().__setitem__(key, value)

    def purge(self, room: int = 0) -> None:
        """Drop expired entries from the front (they are in expiry order),
        and the oldest ones while fewer than `room` places are free."""
        now = time.monotonic()
        while self:
            old = next(iter(self))
            if len(self) + room > self.cap:
                self.evicted += 1
            elif self._expiry.get(old, now + 1) > now:
                break
            self.pop(old)

    def pop(self, key, default=None):
        self._expiry.pop(key, None)
        return super().pop(key, default)


class LoopWithoutDedupTimers:
    """The event loop as aiocoap's message manager sees it: the same, except
    that the timer it sets to expire a duplicate-cache entry becomes an
    expiry time in the cache (BoundedDuplicates)."""

    def __init__(self, loop, cache: BoundedDuplicates):
        self._loop = loop
        self._cache = cache

    def call_later(self, delay, callback, *args, **kw):
        if isinstance(callback, functools.partial) and \
                getattr(callback.func, "__self__", None) is self._cache and callback.args:
            self._cache.expire_in(callback.args[0], delay)
            return None  # (aiocoap keeps no handle for these)
        return self._loop.call_later(delay, callback, *args, **kw)

    def __getattr__(self, name):
        return getattr(self._loop, name)


class TokenBuckets:
    """Per-source rate limits, for at most `max_sources` sources (the least
    recently seen one is forgotten first), so the state is bounded too."""

    def __init__(self, rate: float, burst: float, max_sources: int):
        self.rate, self.burst, self.max_sources = rate, burst, max_sources
        self._buckets: OrderedDict = OrderedDict()

    def allow(self, source, now: float) -> bool:
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_sources:
            self._buckets.popitem(last=False)
        ok = tokens >= 1
        self._buckets[source] = (tokens - 1 if ok else tokens, now)
        return ok

    def __len__(self):
        return len(self._buckets)


class Guard:
    def __init__(self, known_kid, rejects: Counter, rate: float = 50, burst: float = 200,
                 max_sources: int = 10_000, duplicates_cap: int = 20_000):
        self.known_kid = known_kid  # kid -> bool
        self.rejects = rejects
        self.buckets = TokenBuckets(rate, burst, max_sources)
        self.duplicates_cap = duplicates_cap
        self.ratelog = RateLog(log)
        self.duplicates: list[BoundedDuplicates] = []

    def install(self, context: aiocoap.Context) -> int:
        """Wrap every UDP message interface of a server context."""
        n = 0
        for ri in context.request_interfaces:
            manager = getattr(ri, "token_interface", None)
            iface = getattr(manager, "message_interface", None)
            if iface is None or not hasattr(iface, "datagram_msg_received"):
                continue
            if hasattr(manager, "_recent_messages") and hasattr(manager, "loop"):
                cache = BoundedDuplicates(self.duplicates_cap)
                cache.update(manager._recent_messages)
                manager._recent_messages = cache
                manager.loop = LoopWithoutDedupTimers(manager.loop, cache)
                self.duplicates.append(cache)
            iface.datagram_msg_received = self._wrap(iface, iface.datagram_msg_received)
            n += 1
        return n

    @staticmethod
    def size_receive_buffer(context: aiocoap.Context, nbytes: int) -> int:
        """A receive buffer for a fleet's burst (after an outage, every meter
        at once): the kernel default (~208 KiB) overflows at about a
        thousand datagrams. SO_RCVBUFFORCE passes net.core.rmem_max where
        the process may (root, CAP_NET_ADMIN); else the kernel caps it.
        Returns what the kernel granted (it reports twice the request)."""
        granted = 0
        for ri in context.request_interfaces:
            iface = getattr(getattr(ri, "token_interface", None), "message_interface", None)
            sock = iface.transport.get_extra_info("socket") if iface is not None else None
            if sock is None:
                continue
            for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
                if opt is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, nbytes)
                    break
                except OSError:
                    continue
            granted = max(granted, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        return granted

    def _wrap(self, iface, received):
        def guarded(data, ancdata, flags, address):
            try:
                answer = self.inspect(data, address)
            except Exception as e:  # never let one datagram take the receive path down
                self.drop("guard_error", address, "%s", type(e).__name__)
                return
            if answer is None:
                received(data, ancdata, flags, address)
            elif answer:
                pktinfo = [(lvl, typ, d) for lvl, typ, d in ancdata
                           if lvl == socket.IPPROTO_IPV6 and typ == socket.IPV6_PKTINFO]
                try:
                    iface.transport.sendmsg(answer, pktinfo, 0, address)
                except OSError as e:
                    self.ratelog.warning("send_failed", "cannot answer %s: %s", address[0], e)
        return guarded

    def drop(self, reason: str, address, detail: str = "", *args) -> bytes:
        self.rejects[("", reason)] += 1
        self.ratelog.warning(reason, "datagram from %s refused (%s)" + (": " + detail if detail
                                                                          else ""),
                             address[0], reason, *args)
        return b""

    def inspect(self, data: bytes, address) -> bytes | None:
        """None: pass to aiocoap. b"": drop. Else the bytes of the answer."""
        if not self.buckets.allow(address[:2], time.monotonic()):
            self.rejects[("", "rate_limited")] += 1
            self.ratelog.warning("rate_limited", "source %s over its rate; dropping its"
                                                 " datagrams", address[0])
            return b""
        if len(data) < 4 or data[0] >> 6 != 1 or data[0] & 0x0F > 8 \
                or len(data) < 4 + (data[0] & 0x0F):  # (aiocoap accepts a cut-short token)
            return self.drop("unparsable", address)
        mtype, code = (data[0] >> 4) & 3, data[1]
        if code == 0:  # empty: an ACK or RST for the gateway's own messages, or a ping
            if len(data) != 4:  # RFC 7252 4.1: no token, nothing after the message id
                return self.drop("unparsable", address)
            return None
        if not 1 <= code <= 31:  # a response: the gateway asks nobody anything
            return self.drop("not_a_request", address)
        if mtype not in (0, 1):  # a request code in an ACK or RST
            return self.drop("unparsable", address)
        con = mtype == 0  # a CON request gets an answer, a NON one never an error

        def answer(reason: str, response_code: Code, text: bytes, size1: int | None = None):
            self.drop(reason, address)
            if not con:
                return b""
            tkl = data[0] & 0x0F
            out = bytearray([0x60 | tkl, int(response_code)]) + data[2:4] + data[4:4 + tkl]
            if size1 is not None:  # option 60 (Size1): delta 13 + ext 47, length 2
                out += bytes([0xD2, OPT_SIZE1 - 13]) + size1.to_bytes(2, "big")
            return bytes(out + b"\xff" + text)

        if len(data) > MAX_DATAGRAM:
            return answer("too_large", Code.REQUEST_ENTITY_TOO_LARGE,
                          b"one request carries at most one batch", MAX_PAYLOAD)
        try:
            msg = aiocoap.Message.decode(data)
        except aiocoap.error.UnparsableMessage:
            return self.drop("unparsable", address)
        except Exception:  # an option value that does not decode (e.g. not UTF-8)
            return answer("bad_option", Code.BAD_OPTION, b"malformed option")
        if any(o.number == OPT_BLOCK1 for o in msg.opt.option_list()):
            return answer("blockwise", Code.REQUEST_ENTITY_TOO_LARGE,
                          b"no block-wise transfer: one request carries one batch", MAX_PAYLOAD)
        if msg.opt.oscore is None:
            return answer("unprotected", Code.UNAUTHORIZED, b"OSCORE required")
        try:
            unprotected = oscore.verify_start(msg)
        except Exception:  # aiocoap raises IndexError and others on cut-short options
            return answer("bad_oscore_option", Code.BAD_OPTION, b"malformed OSCORE option")
        if set(unprotected) - ALLOWED_UNPROTECTED:
            return answer("unsupported_oscore", Code.BAD_OPTION,
                          b"OSCORE group mode is not used here")
        if not self.known_kid(unprotected.get(oscore.COSE_KID)):
            return answer("unknown_kid", Code.UNAUTHORIZED, b"unknown key id")
        return None

    def tick(self) -> None:
        """Every second or so: close log windows, expire old duplicates (also
        when no new traffic comes to push them out)."""
        self.ratelog.flush()
        for cache in self.duplicates:
            cache.purge()

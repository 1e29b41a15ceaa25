"""A fleet of meters in one Python process: the load generator of `gridveil
bench`. Each meter has its own UDP socket and OSCORE context (aiocoap's
OSCORE, host_tools/oscore_peer.py) and behaves as the firmware does: one
confirmable exchange at a time, RFC 7252 retransmission (ACK timeout 2 s
times a random factor up to 1.5, 4 retransmissions), up to 30 s for a
separate response after an empty ACK, an Echo challenge answered once,
and a 5.03's Max-Age honoured. It records each exchange's latency and
every retransmission, timeout and refusal, so a run shows whether the
gateway served the fleet or made it churn.

All meters run on one event loop; `ceiling()` measures what this process
can drive against a no-op OSCORE server (host_tools/noop_server.py), so a
figure for the gateway is known not to be the generator's own limit.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import aiocoap

from .oscore_peer import ClientContext, Requests

ACK_TIMEOUT = 2.0
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4
SEPARATE_TIMEOUT = 30.0  # what the firmware waits after an empty ACK


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # s, request sent to 2.04
    retransmits: int = 0
    timeouts: int = 0  # exchanges given up (a real meter would retry them): no answer at all
    late: int = 0  # of them: an empty ACK came, the response not within 30 s
    busy: int = 0  # 5.03 answers
    other: int = 0  # anything else that was not a 2.04
    first_datagrams: int = 0
    first_retransmitted: int = 0  # of each meter's first request: retransmitted at least once
    separate: int = 0  # exchanges answered by an empty ACK first, the response later

    def percentile(self, p: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


class _Exchange:
    """One confirmable request in flight, driven by callbacks: sent again on
    a timer until it is answered or acknowledged (RFC 7252 4.2), then
    waiting up to SEPARATE_TIMEOUT for a separate response. One future and
    one timer handle per exchange, no tasks: on a machine it shares with
    the server, the generator's own CPU is taken from the server's."""

    def __init__(self, transport, datagram: bytes, stats: Stats, first: bool):
        self.transport, self.datagram, self.stats, self.first = transport, datagram, stats, first
        self.loop = asyncio.get_running_loop()
        self.response = self.loop.create_future()  # the response, or None: given up
        self.timeout = ACK_TIMEOUT * random.uniform(1, ACK_RANDOM_FACTOR)
        self.attempt = 0
        self.acked = False
        self.timer = None

    def send(self) -> None:
        self.transport.sendto(self.datagram)
        self.timer = self.loop.call_later(self.timeout, self._expired)

    def _expired(self) -> None:
        if self.response.done():
            return
        if self.acked:  # the separate response did not come in time
            self.stats.late += 1
            self.response.set_result(None)
        elif self.attempt == MAX_RETRANSMIT:
            self.response.set_result(None)
        else:
            self.attempt += 1
            self.stats.retransmits += 1
            if self.first and self.attempt == 1:
                self.stats.first_retransmitted += 1
            self.timeout *= 2
            self.send()

    def empty_ack(self) -> None:
        if self.acked or self.response.done():
            return
        self.acked = True
        self.stats.separate += 1
        self.timer.cancel()
        self.timer = self.loop.call_later(SEPARATE_TIMEOUT, self._expired)

    def answer(self, msg: aiocoap.Message) -> None:
        if not self.response.done():
            self.response.set_result(msg)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self):
        self.transport = None
        self.by_token: dict[bytes, _Exchange] = {}
        self.by_mid: dict[int, _Exchange] = {}

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            msg = aiocoap.Message.decode(data)
        except Exception:  # noqa: BLE001 -- a datagram we cannot read is ignored, as by a meter
            return
        if msg.mtype == aiocoap.ACK and msg.code == aiocoap.EMPTY:
            ex = self.by_mid.get(msg.mid)
            if ex is not None:
                ex.empty_ack()
            return
        if msg.mtype == aiocoap.CON:  # a separate response: acknowledge it
            self.transport.sendto(bytes([0x60, 0]) + msg.mid.to_bytes(2, "big"))  # empty ACK
        ex = self.by_token.get(msg.token)
        if ex is not None:
            ex.answer(msg)


class Meter(Requests):
    def __init__(self, meter_id: str, ctx: ClientContext, port: int, stats: Stats):
        super().__init__(ctx)
        self.meter_id = meter_id
        self.port = port
        self.stats = stats
        self.ep: _Endpoint | None = None
        self.first = True

    async def open(self):
        loop = asyncio.get_running_loop()
        _, self.ep = await loop.create_datagram_endpoint(_Endpoint,
                                                         remote_addr=("127.0.0.1", self.port))

    def close(self):
        if self.ep and self.ep.transport:
            self.ep.transport.close()

    async def _exchange(self, payload: bytes):
        """One CON request with retransmission; (inner response or None, request id)."""
        outer, rid = self.protect_message(payload)
        first, self.first = self.first, False
        if first:
            self.stats.first_datagrams += 1
        ex = _Exchange(self.ep.transport, outer.encode(), self.stats, first)
        self.ep.by_token[outer.token] = self.ep.by_mid[outer.mid] = ex
        try:
            ex.send()
            return await ex.response, rid
        finally:
            ex.close()
            self.ep.by_token.pop(outer.token, None)
            self.ep.by_mid.pop(outer.mid, None)

    async def post(self, payload: bytes) -> bool:
        """Deliver one batch as a meter would: until a 2.04, within reason."""
        for _ in range(50):
            t0 = time.perf_counter()
            resp, rid = await self._exchange(payload)
            if resp is None:
                self.stats.timeouts += 1
                await asyncio.sleep(random.uniform(1, 2))
                continue
            if resp.opt.oscore is None:
                self.stats.other += 1
                await asyncio.sleep(1)
                continue
            inner, _ = self.ctx.unprotect(resp, rid)
            if inner.code == aiocoap.UNAUTHORIZED and inner.opt.echo:
                self.echo = inner.opt.echo
                continue
            if inner.code == aiocoap.SERVICE_UNAVAILABLE:
                self.stats.busy += 1
                await asyncio.sleep(inner.opt.max_age if inner.opt.max_age is not None else 5)
                continue
            if inner.code != aiocoap.CHANGED:
                self.stats.other += 1
                return False
            self.stats.latencies.append(time.perf_counter() - t0)
            return True
        return False


async def run_fleet(meters: list[tuple[str, ClientContext, list[bytes]]], port: int,
                    stats: Stats, start_spread_s: float = 0.0) -> float:
    """Every meter delivers its payloads in order, all meters at once (or
    spread over start_spread_s). Returns the wall time until the last
    batch was acknowledged."""
    fleet = [Meter(mid, ctx, port, stats) for mid, ctx, _ in meters]
    for m in fleet:
        await m.open()

    async def one(m: Meter, payloads: list[bytes]):
        if start_spread_s:
            await asyncio.sleep(random.uniform(0, start_spread_s))
        for p in payloads:
            if not await m.post(p):
                raise RuntimeError(f"{m.meter_id}: a batch was refused")

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(m, p) for m, (_, _, p) in zip(fleet, meters, strict=True)))
    finally:
        for m in fleet:
            m.close()
    return time.perf_counter() - t0

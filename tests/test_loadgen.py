"""The bench's load generator behaves as a meter's CoAP stack does, against
a real UDP peer on loopback: it retransmits an unanswered request, stops
retransmitting at an empty ACK and waits for the separate response (which
it acknowledges), and gives up after MAX_RETRANSMIT; each counted once."""

from __future__ import annotations

import asyncio

import aiocoap

from host_tools import loadgen


def _raw(mtype: int, code: int, mid: int, token: bytes = b"") -> bytes:
    """A CoAP header, built by hand: aiocoap leaves message ids and types to
    its own stack."""
    return bytes([0x40 | mtype << 4 | len(token), code]) + mid.to_bytes(2, "big") + token


class _Peer(asyncio.DatagramProtocol):
    """Answers the n-th copy of each request as `script` says."""

    def __init__(self, script):
        self.script, self.seen, self.acks = script, [], []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        msg = aiocoap.Message.decode(data)
        if msg.mtype == aiocoap.ACK:
            self.acks.append(msg.mid)
            return
        self.seen.append(msg.mid)
        action = self.script(len(self.seen))
        if action == "piggyback":
            self.transport.sendto(_raw(2, 68, msg.mid, msg.token), addr)  # ACK 2.04
        elif action == "separate":
            self.transport.sendto(_raw(2, 0, msg.mid), addr)  # empty ACK
            asyncio.get_running_loop().call_later(  # then CON 2.04
                0.2, self.transport.sendto, _raw(0, 68, 0x7777, msg.token), addr)


async def _exchange(script, monkeypatch):
    monkeypatch.setattr(loadgen, "ACK_TIMEOUT", 0.05)
    loop = asyncio.get_running_loop()
    peer_t, peer = await loop.create_datagram_endpoint(lambda: _Peer(script),
                                                       local_addr=("127.0.0.1", 0))
    port = peer_t.get_extra_info("sockname")[1]
    _, ep = await loop.create_datagram_endpoint(loadgen._Endpoint,
                                                remote_addr=("127.0.0.1", port))
    stats = loadgen.Stats()
    ex = loadgen._Exchange(ep.transport, _raw(0, 2, 0x1234, b"\x01\x02"), stats, first=True)
    ep.by_token[b"\x01\x02"] = ep.by_mid[0x1234] = ex
    ex.send()
    response = await ex.response
    ex.close()
    await asyncio.sleep(0.05)  # the ACK of a separate response arrives
    ep.transport.close()
    peer_t.close()
    return response, stats, peer


def test_unanswered_requests_are_sent_again_until_answered(monkeypatch):
    response, stats, peer = asyncio.run(_exchange(
        lambda n: "piggyback" if n == 3 else None, monkeypatch))
    assert response.code == aiocoap.CHANGED
    assert peer.seen == [0x1234] * 3
    assert (stats.retransmits, stats.first_retransmitted, stats.separate) == (2, 1, 0)


def test_an_empty_ack_stops_retransmission_and_the_separate_response_is_acknowledged(
        monkeypatch):
    response, stats, peer = asyncio.run(_exchange(lambda n: "separate", monkeypatch))
    assert response.code == aiocoap.CHANGED and response.mtype == aiocoap.CON
    # 0.2 s until the response is four ACK timeouts: no copy was sent after the empty ACK
    assert peer.seen == [0x1234] and stats.retransmits == 0 and stats.separate == 1
    assert peer.acks == [0x7777]


def test_a_peer_that_never_answers_is_given_up_after_max_retransmit(monkeypatch):
    monkeypatch.setattr(loadgen, "ACK_RANDOM_FACTOR", 1.0)
    monkeypatch.setattr(loadgen, "MAX_RETRANSMIT", 2)
    response, stats, peer = asyncio.run(_exchange(lambda n: None, monkeypatch))
    assert response is None
    assert len(peer.seen) == 3 and stats.retransmits == 2

"""The gateway under hostile traffic, from outside, as a stranger on the
network would send it: 100,000 datagrams (random bytes, real OSCORE
requests with bytes flipped or cut, replays, other meters' key ids, bad
and non-UTF-8 options, cut-short OSCORE options, ID-context and group
flags, Block1, oversize) from many source ports, and one source flooding.

It asserts: the gateway is alive; no answer is a 5.xx; no traceback in
its log, and the log grows by lines, not by datagrams; its memory stays
bounded; nothing reached the database; and a real meter's readings are
delivered throughout. GRIDVEIL_FUZZ_N sets the count (default 100,000)."""

from __future__ import annotations

import os
import random
import select
import socket
import time

import aiocoap
import pytest
from helpers.system import System

from host_tools import hostile
from host_tools.oscore_peer import RawPeer, context_for, readings_payload

N = int(os.environ.get("GRIDVEIL_FUZZ_N", "100000"))
END = hostile.END
SOURCES = 256  # source ports: each stays under the per-source rate


@pytest.fixture(scope="module")
def system(tmp_path_factory, sample_files):
    s = System(tmp_path_factory.mktemp("fuzz") / "gv", sample_files[:5])
    s.start_gateway()
    yield s
    s.close()


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def snapshot(system) -> dict:
    st = system.store(readonly=True)
    try:
        db = st.db
        return {"meters": db.execute("SELECT meter_id, last_seq, accepted FROM meters"
                                     " ORDER BY meter_id").fetchall(),
                "demand": sorted((nbh, end, st.demand_meters(nbh, end))
                                 for nbh, end, _, _ in st.open_demand()),
                "bills": db.execute("SELECT COUNT(*) FROM bill_days").fetchone()}
    finally:
        st.close()


def test_a_hundred_thousand_hostile_datagrams(system):
    pid = system.gw.proc.pid
    meter = RawPeer(context_for(system.meter_secrets("m01")), system.port)
    inner, captured = meter.post(readings_payload("m01", [[0, END, 7, 7]]))
    assert inner.code == aiocoap.CHANGED
    real = hostile.capture({m: system.meter_secrets(m) for m in ("m02", "m03", "m04")},
                           system.port) + [captured]
    time.sleep(1.5)
    before = snapshot(system)
    rss0 = rss_kib(pid)
    log0 = len(system.gateway_log().splitlines())
    rng = random.Random(20261129)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SOURCES)]
    for s in socks:
        s.setblocking(False)
    answers, delivered, rss_peak, seq = [], 0, rss0, 1
    start = time.monotonic()

    def drain():
        ready, _, _ = select.select(socks, [], [], 0)
        for s in ready:
            while True:
                try:
                    answers.append(s.recv(2048))
                except BlockingIOError:
                    break

    try:
        for i, d in enumerate(hostile.datagrams(rng, real, *hostile.forgeries(
                "m02", system.meter_secrets("m02"), system.meter_secrets("m03"), system.port), N)):
            socks[i % SOURCES].sendto(d, ("127.0.0.1", system.port))
            if i % 500 == 499:
                drain()
                time.sleep(0.08)  # about 5,000 a second: the gateway reads them, not the kernel
            if i % 10_000 == 9_999:  # the real meter, in the middle of it all
                inner, _ = meter.post(readings_payload("m01", [[seq, END + 900 * seq, 7, 7]]))
                assert inner.code == aiocoap.CHANGED, inner
                delivered, seq = delivered + 1, seq + 1
                rss_peak = max(rss_peak, rss_kib(pid))
        # And one source flooding as fast as it can: dropped unread past its rate.
        for _ in range(5000):
            try:
                socks[0].sendto(rng.randbytes(40), ("127.0.0.1", system.port))
            except BlockingIOError:
                pass
        time.sleep(2)
        drain()
    finally:
        for s in socks:
            s.close()
    took = time.monotonic() - start
    inner, _ = meter.post(readings_payload("m01", [[seq, END + 900 * seq, 7, 7]]))
    assert inner.code == aiocoap.CHANGED
    delivered += 1
    time.sleep(1.5)

    assert system.gw.proc.poll() is None
    codes = [aiocoap.Message.decode(a).code for a in answers]
    assert codes and not [c for c in codes if int(c) >> 5 == 5], "a 5.xx answer"
    log = system.gateway_log()
    assert "Traceback" not in log and "Exception in callback" not in log
    new_lines = len(log.splitlines()) - log0
    assert new_lines < 400, f"{new_lines} log lines for {N} datagrams"
    rss_peak = max(rss_peak, rss_kib(pid))
    assert rss_peak - rss0 < 100 * 1024, f"gateway grew by {(rss_peak - rss0) // 1024} MiB"
    after = snapshot(system)
    # Only the real meter's readings arrived; nothing from the flood.
    def others(rows):  # the accumulators without the real meter m01
        out = {(n, e): [x for x in meters if x != "m01"]
               for n, e, meters in rows}
        return {k: v for k, v in out.items() if v}

    assert others(after["demand"]) == others(before["demand"])
    got = {m: (s, a) for m, s, a in after["meters"]}
    was = {m: (s, a) for m, s, a in before["meters"]}
    assert got["m01"] == (seq, was["m01"][1] + delivered)
    assert {m: v for m, v in got.items() if m != "m01"} == \
        {m: v for m, v in was.items() if m != "m01"}
    rejects = system.rejects()
    for reason in ("bad_option", "bad_oscore_option", "unsupported_oscore", "blockwise",
                   "too_large", "unknown_kid", "unparsable", "rate_limited"):
        assert rejects.get(("", reason), 0) > 0, reason
    assert rejects.get(("m02", "forged"), 0) > 0 and rejects.get(("m03", "replay"), 0) > 0
    print(f"\nfuzz: {N} datagrams in {took:.0f} s, {len(answers)} answers, 0 5.xx,"
          f" {new_lines} log lines, RSS {rss0 // 1024} -> peak {rss_peak // 1024} MiB")

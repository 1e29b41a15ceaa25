"""The whole path on real parts, each party its own process: MicroPython
meters (64K heap) -> OSCORE over CoAP on loopback -> aiocoap gateways ->
Paillier accumulators in SQLite -> signed seal -> outbox pushed over HTTPS to
the MDMS -> both key holders over HTTPS -> released values equal to ground
truth."""

from __future__ import annotations

import json
import re
import time

import pytest
from helpers.system import System

from host_tools import fleet


@pytest.fixture
def sample_system(tmp_path, sample_files):
    s = System(tmp_path / "gv", sample_files, gateways=2)
    yield s
    s.close()


def test_sample_day_matches_ground_truth(sample_system):
    s = sample_system
    s.start_gateway()
    runs = s.run_meters()
    s.stop_gateway()
    for r in runs:
        assert r.returncode == 0, r.output
        assert "96 readings delivered, 0 still queued" in r.output
    # The gateways log what they stored as a summary every few seconds, not
    # a line per request; together the summaries count every reading once.
    logs = "".join((s.logs / f"{g.name}.log").read_text() for g in s.gateways.values())
    summaries = re.findall(r"s: (\d+) readings stored from \d+ meters in \d+ requests", logs)
    assert sum(map(int, summaries)) == 96 * len(runs) and " stored, " not in logs
    s.seal_all()
    for gid in s.gateways:
        store = s.store(readonly=True, gateway=gid)
        # The data clock sealed as the meters went; nothing arrived after its seal.
        # Each gateway sealed its own part of every (neighbourhood, interval).
        assert len(store.sealed_rows()) == 192
        assert store.open_demand() == []
        assert sum(m["late"] for m in store.meters()) == 0
        assert store.outbox_count() == 0  # all pushed
        for m in store.meters():  # each meter's health came with its readings
            t = json.loads(m["telemetry"])
            # The emulator has no radio and a replay no sensor counters; and
            # nothing that follows the energy is among these keys.
            assert set(t) == {"reset_cause", "uptime_s", "free_heap", "seq_reserve", "merges"}, t
            assert t["reset_cause"] == 1 and t["merges"] == 0  # a first start is a power-on
            assert 0 < t["free_heap"] < 80 * 1024 and t["seq_reserve"] > 2 ** 39
        store.close()
    released = s.release()
    ok, line = s.cross_check(released)
    assert ok, line
    # k = 5 per neighbourhood holds only with both gateways' parts combined.
    assert len(released.aggregates) == 192
    # Every meter agreed a fresh security context (RFC 8613 B.2) on its
    # first exchange, and needed no Echo: nothing old verifies under it.
    assert all("new security context agreed" in r.output for r in runs)
    assert not any("Echo" in r.output for r in runs)
    assert s.rejects() == {}


def test_gateway_sigkill_mid_replay_loses_nothing_and_counts_nothing_twice(tmp_path,
                                                                          sample_files):
    # One day in about 12 s of real time, so the kill lands mid-replay.
    s = System(tmp_path / "gv", sample_files, speed=86400 // 12,
               settings={"ack_timeout_ms": 300, "max_retransmit": 2, "retry_ms": 300,
                         "max_retry_ms": 1000})
    s.start_gateway()
    meters = s.start_meters()
    try:
        time.sleep(4)
        s.kill_gateway()
        time.sleep(3)  # meters queue readings while the gateway is down
        s.start_gateway()
        outputs = [p.communicate(timeout=120)[0].decode() for p in meters]
    finally:
        for p in meters:
            if p.poll() is None:
                p.kill()
        s.stop_gateway()
        s.close()
    for p, out in zip(meters, outputs, strict=True):
        assert p.returncode == 0, out
        assert "0 still queued" in out
    assert any("upload failed" in out for out in outputs), "the kill did not interrupt anyone"
    s.seal_all()
    released = s.release()
    ok, line = s.cross_check(released)
    assert ok, line
    assert len(released.aggregates) == 192
    s.close()


def test_meters_sigkilled_mid_interval_resume_from_their_checkpoint(tmp_path, sample_files):
    """Every meter is killed mid-replay and started again: each resumes its
    open interval from the flash checkpoint and replays only what came
    after it, so the day still matches the ground truth exactly (a sample
    counted twice, or lost, would show in every bill and aggregate)."""
    s = System(tmp_path / "gv", sample_files, speed=86400 // 12,
               settings={"checkpoint_s": 120})
    s.start_gateway()
    try:
        meters = s.start_meters()
        time.sleep(4)
        for p in meters:
            p.kill()
            p.wait()
        outputs = [p.communicate(timeout=120)[0].decode() for p in s.start_meters()]
    finally:
        s.stop_gateway()
    assert sum("resumed from its checkpoint" in out for out in outputs) >= len(outputs) // 2, \
        outputs[0][-800:]
    s.seal_all()
    released = s.release()
    ok, line = s.cross_check(released)
    s.close()
    assert ok, line


def test_heap_limit_is_real(tmp_path, sample_files):
    """The 64K runs above mean something: the same firmware cannot even
    start in a quarter of that heap."""
    s = System(tmp_path / "gv", sample_files[:1], tls=False)
    p = fleet.start_meter(s.meter_dirs()[0], heap="16K")
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode != 0
    assert "MemoryError" in out

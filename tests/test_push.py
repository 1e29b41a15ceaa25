"""The gateway's push to the MDMS carries the fleet's health only when it
is due (gateway.json health_every_s), not with every push: a thousand
meters' health is about 300 KB, and a meter reports once an interval.
Against a real HTTP server on loopback that records what arrives."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_pes import pes  # noqa: F401 -- the fixture

from gateway.push import Pusher, next_wait


@contextmanager
def serving(answer, raw=None):
    """A real HTTP intake on loopback: answer(body) is each POST's status;
    or raw(body bytes, headers) gives (status, answer bytes)."""

    def plain(data: bytes, headers) -> tuple[int, bytes]:
        status = answer(json.loads(data))
        return status, b'{"stored": 0}' if status == 200 else b'{"error": "down"}'

    class Intake(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 -- http.server's name
            status, out = (raw or plain)(self.rfile.read(int(self.headers["Content-Length"])),
                                         self.headers)
            self.send_response(status)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Intake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def intake():
    bodies: list[dict] = []
    with serving(lambda body: bodies.append(body) or 200) as url:
        yield url, bodies


def test_health_goes_with_a_push_only_when_due(pes, intake):  # noqa: F811
    pes, _ = pes
    url, bodies = intake
    waiting = pes.store.outbox_count()
    assert waiting > 0  # the two meters' registrations
    pusher = Pusher(pes.store, Ed25519PrivateKey.generate(), "gw", url, health_every_s=0.5)
    assert pusher.drain() == waiting
    assert bodies[0]["health"] is not None  # the first push carries it
    assert sorted(m["meter_id"] for m in bodies[0]["health"]["meters"]) == ["m1", "m2"]
    assert all(b["health"] is None for b in bodies[1:])
    sent = len(bodies)
    assert pusher.drain() == 0 and len(bodies) == sent  # nothing waiting, health not due: quiet
    time.sleep(0.6)
    assert pusher.drain() == 0 and len(bodies) == sent + 1  # due: health alone
    assert bodies[-1]["items"] == [] and bodies[-1]["health"] is not None
    # `gridveil gateway push` makes a new Pusher: its push always carries it.
    Pusher(pes.store, Ed25519PrivateKey.generate(), "gw", url, health_every_s=3600).drain()
    assert bodies[-1]["health"] is not None and len(bodies) == sent + 2


def test_while_the_mdms_is_away_the_gateway_tries_less_and_less_often(pes, tmp_path):  # noqa: F811
    """Each attempt reads, encodes and signs a whole batch: against an MDMS
    that answers 503, the daemon's push loop doubles its wait after each
    failure; once the MDMS answers, everything waiting goes."""
    import asyncio

    from gateway.server import Gateway

    pes, _ = pes
    waiting = pes.store.outbox_count()
    attempts: list[float] = []
    healthy_at = time.monotonic() + 1.2

    def answer(body: dict) -> int:
        attempts.append(time.monotonic())
        return 200 if time.monotonic() >= healthy_at else 503

    async def run(gw):
        loop = asyncio.create_task(gw._push_loop())
        await asyncio.sleep(3.0)
        loop.cancel()

    with serving(answer) as url:
        home = tmp_path / "gateway"
        cfg = json.loads((home / "gateway.json").read_text())
        (home / "gateway.json").write_text(json.dumps({
            **cfg, "mdms_url": url, "push_every_s": 0.05, "encryption_workers": 0}))
        gw = Gateway(home, passphrase="x" * 12)
        try:
            asyncio.run(run(gw))
        finally:
            gw.push_executor.shutdown(wait=True)
            gw.executor.shutdown(wait=True)
    failed = [t for t in attempts if t < healthy_at]
    gaps = [b - a for a, b in zip(failed, failed[1:], strict=False)]
    # 0.05 s apart without the backoff: some 24 attempts in 1.2 s
    assert 3 <= len(failed) <= 8, gaps
    # Each wait is drawn between the last one and twice it (the growth's
    # arithmetic is test_gateways_cut_off_together_come_back_apart's): never
    # sooner, up to the scheduler's noise.
    assert all(b > 0.9 * a for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert pes.store.outbox_count() == 0 and waiting > 0  # then everything went


def test_gateways_cut_off_together_come_back_apart():
    """The back-off is jittered: a thousand gateways that lost the MDMS at
    the same moment spread their retries over the upper half of each wait
    instead of arriving in one wave; each one's waits never shrink and
    stop growing at the cap."""
    import random

    rng = random.Random(7)
    waits = [0.5] * 1000
    for _ in range(4):
        waits = [next_wait(w, 0.5, 60.0, rng) for w in waits]
    assert 0.5 <= min(waits) and max(waits) <= 0.5 * 16  # x1 to x2 per failure
    buckets = {int(w * 4) for w in waits}  # 0.25 s bins
    assert len(buckets) >= 20, sorted(buckets)  # spread, not in step
    w = 0.5
    for _ in range(30):
        nxt = next_wait(w, 0.5, 60.0, rng)
        assert (30.0 <= nxt <= 60.0) if w >= 30.0 else (w <= nxt <= 2 * w)
        w = nxt
    assert 30.0 <= w <= 60.0


def test_a_batch_the_mdms_commits_after_the_gateway_gave_up_is_stored_once(pes, tmp_path):  # noqa: F811
    """The MDMS commits a push but answers after the gateway's client
    timeout: the gateway keeps the items and sends them again, and the
    MDMS's intake (the real one, on SQLite) stores each of them once."""
    from test_pes import DAY0

    from common import signing
    from gateway import seal
    from gateway.pes import Reading
    from gateway.push import PushError
    from mdms.intake import intake
    from mdms.store import MdmsStore

    pes, _ = pes
    for m in ("m1", "m2"):
        pes.ingest(m, [Reading(i, DAY0 + 900 * (i + 1), 10 + i, 10 + i) for i in range(8)],
                   None, None)
    key = Ed25519PrivateKey.generate()
    assert seal.seal(pes.store, key, "gw", 900, 0, seal_all=True).aggregates == 8
    mdms = MdmsStore(f"sqlite:///{tmp_path / 'mdms.db'}")
    mdms.trust_gateway("gw", signing.public_pem(key.public_key()).decode())
    slow = [True]
    lock = threading.Lock()

    def answer(body: bytes, headers) -> tuple[int, bytes]:
        with lock:  # the real intake, committed before the answer
            n = intake(mdms, body, headers["X-GridVeil-Gateway"],
                       headers["X-GridVeil-Signature"])
        if slow[0]:
            time.sleep(1.0)  # committed, but the answer comes too late
        return 200, json.dumps({"stored": n}).encode()

    try:
        with serving(None, raw=answer) as url:
            waiting = pes.store.outbox_count()
            pusher = Pusher(pes.store, key, "gw", url, timeout=0.3)
            with pytest.raises(PushError):
                pusher.drain()
            assert pes.store.outbox_count() == waiting  # given up on: nothing deleted
            first = mdms.counts()
            assert first["aggregate_parts"] == 8 and first["bill_days"] == 2  # yet committed
            slow[0] = False
            assert pusher.drain() == waiting
            assert pes.store.outbox_count() == 0
            assert mdms.counts() == first  # the resent batch changed nothing
    finally:
        mdms.close()

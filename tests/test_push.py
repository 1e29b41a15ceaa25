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

from gateway.push import Pusher


@contextmanager
def serving(answer):
    """A real HTTP intake on loopback: answer(body) is each POST's status."""

    class Intake(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 -- http.server's name
            status = answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            out = b'{"stored": 0}' if status == 200 else b'{"error": "down"}'
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
    assert 3 <= len(failed) <= 6, gaps
    assert all(b > 1.6 * a for a, b in zip(gaps, gaps[1:], strict=False)), gaps  # each wait about doubles
    assert pes.store.outbox_count() == 0 and waiting > 0  # then everything went

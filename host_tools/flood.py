"""`gridveil flood`: the gateway's memory under a flood of invalid datagrams
(host_tools/hostile.py) at a steady rate, and after it, with a real meter's
readings delivered throughout. Writes its table into docs/benchmarks.md
(between markers, so `make bench` keeps it) when given --out."""

from __future__ import annotations

import json
import random
import socket
import time
from pathlib import Path

import aiocoap

from . import hostile, mdsection
from .oscore_peer import RawPeer, context_for, readings_payload
from .site import Site

END = hostile.END


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run(home: Path, files: list[Path], seconds: float = 300, rate: int = 1000,
        after: float = 60, sources: int = 64, out=print) -> dict:
    site = Site(home, gateways=1, bits=1024)
    site.setup(files[:5])
    site.start_services()
    try:
        gw = site.gateways["gw1"]
        pid = gw.proc.pid
        port = gw.port
        secrets = {m: json.loads((site.meters_dir / m / "secrets.json").read_text())
                   for m in ("m01", "m02", "m03")}
        meter = RawPeer(context_for(secrets["m01"]), port)
        seq = 0
        real = hostile.capture({m: secrets[m] for m in ("m02", "m03")}, port, per_meter=10)
        forged, kid = hostile.forgeries("m02", secrets["m02"], secrets["m03"], port)
        time.sleep(2)
        idle = rss_mib(pid)
        out(f"gateway idle: {idle:.0f} MiB; flooding {rate} datagrams/s for {seconds:.0f} s")
        rng = random.Random(1)
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sources)]
        gen = hostile.datagrams(rng, real, forged, kid, 10**12)
        peak, delivered, failed = idle, 0, 0
        t0 = time.monotonic()
        sent = 0
        next_sample = t0
        while (now := time.monotonic()) - t0 < seconds:
            due = int((now - t0) * rate)
            while sent < due:
                try:
                    socks[sent % sources].sendto(next(gen), ("127.0.0.1", port))
                except OSError:
                    pass
                sent += 1
            if now >= next_sample:
                peak = max(peak, rss_mib(pid))
                try:
                    inner, _ = meter.post(readings_payload("m01", [[seq, END + 900 * seq, 7, 7]]))
                    delivered += inner.code == aiocoap.CHANGED
                    seq += 1
                except (OSError, TimeoutError):
                    failed += 1
                next_sample = now + 5
                if int(now - t0) % 60 < 5:
                    out(f"  {now - t0:.0f} s: RSS {rss_mib(pid):.0f} MiB (peak {peak:.0f})")
            time.sleep(0.005)
        for s in socks:
            s.close()
        end_rss = rss_mib(pid)
        time.sleep(after)
        settled = rss_mib(pid)
        alive = gw.proc.poll() is None
        res = {"rate": rate, "seconds": seconds, "sent": sent, "idle": idle, "peak": peak,
               "end": end_rss, "after": after, "settled": settled, "delivered": delivered,
               "failed": failed, "alive": alive}
        out(f"flood: {sent} datagrams; RSS idle {idle:.0f} MiB, peak {peak:.0f} MiB, at the end"
            f" {end_rss:.0f} MiB, {after:.0f} s later {settled:.0f} MiB; a real meter's"
            f" readings: {delivered} delivered, {failed} not; gateway alive: {alive}")
        return res
    finally:
        site.stop_all()


def markdown(r: dict) -> str:
    return f"""## Gateway memory under a flood

Measured by `gridveil flood` ({r['rate']} invalid datagrams a second for
{r['seconds']:.0f} s from 64 source ports: the mix of `host_tools/hostile.py`,
including forgeries under a real key id that aiocoap answers and keeps in
its duplicate cache). A real meter posted a reading every 5 s throughout.

| | RSS (MiB) |
| --- | ---: |
| idle, before | {r['idle']:.0f} |
| peak during the flood | {r['peak']:.0f} |
| at its end | {r['end']:.0f} |
| {r['after']:.0f} s later | {r['settled']:.0f} |

{r['sent']} datagrams sent; the real meter's readings: {r['delivered']} delivered,
{r['failed']} not. Bounded by the guard (`gateway/guard.py`): malformed and
unauthenticated datagrams are answered or dropped before aiocoap keeps any
state, each source is rate-limited, and aiocoap's duplicate cache is capped
at 20,000 entries, each kept 247 s (CoAP's EXCHANGE_LIFETIME). So the RSS
levels off within about four minutes whatever the flood's length; after it,
Python keeps most of the freed memory for reuse rather than returning it to
the system.
"""


def write(path: Path, r: dict) -> None:
    mdsection.write(path, "flood", markdown(r))

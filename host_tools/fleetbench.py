"""`make bench`, the fleet part: many meters at once against the real
gateway, driven by host_tools/loadgen.py, and the same generator against a
no-op OSCORE server (host_tools/noop_server.py) for aiocoap's ceiling.

Meters f0001... are provisioned in the bench's own gateway (in process:
a thousand `gridveil provision` commands would take minutes), each with a
day of readings from the sample households' quarter hours.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import groundtruth, loadgen, provision
from .oscore_peer import context_for, readings_payload
from .site import INTERVAL_S, Site, descendants, free_port

FLEET_NEIGHBOURHOOD = "fleet"


def provision_fleet(site: Site, n: int, per_neighbourhood: int | None = None,
                    customers: list[str] | None = None) -> list[tuple[str, dict]]:
    """Meters f0001...; all in one neighbourhood, or `per_neighbourhood` in
    each; with `customers`, dealt round-robin to them (the gateway then
    seals a copy of every reading)."""
    gw = site.gateways["gw1"]
    out = []
    with provision.Provisioner(gw.home, gw.env["GRIDVEIL_GATEWAY_PASSPHRASE"]) as p:
        for i in range(1, n + 1):
            mid = f"f{i:04d}"
            d = site.meters_dir / mid
            nbh = FLEET_NEIGHBOURHOOD if per_neighbourhood is None else \
                f"{FLEET_NEIGHBOURHOOD}{(i - 1) // per_neighbourhood:02d}"
            if not (d / "secrets.json").exists():
                p.meter(mid, nbh, d, customers[(i - 1) % len(customers)] if customers else None)
            out.append((mid, json.loads((d / "secrets.json").read_text())))
    return out


@functools.lru_cache(maxsize=32)
def _intervals(path: Path) -> dict[int, int]:
    # A thousand meters share ten sample files: read each once, not per call.
    return groundtruth.interval_energy(path, INTERVAL_S)


def day_payloads(files: list[Path], meter_no: int, batch: int, day: int = 0,
                 readings: int = 96) -> list[bytes]:
    """The first `readings` quarter hours of one meter's day `day` (after
    the sample's first), from sample household meter_no % len(files), in
    batches. Reading numbers are 96 a day, so days never overlap."""
    iv = _intervals(files[meter_no % len(files)])
    ends = sorted(iv)[:readings]
    register = 0
    rows = []
    for k, end in enumerate(ends):
        register += iv[end]
        rows.append([day * 96 + k, end + 86400 * day, iv[end], register])
    mid = f"f{meter_no + 1:04d}"
    return [readings_payload(mid, rows[i:i + batch]) for i in range(0, len(rows), batch)]


def run(meters: list[tuple[str, dict]], payloads: list[list[bytes]], port: int,
        spread_s: float = 0.0) -> tuple[float, loadgen.Stats, float]:
    """(wall seconds, stats, CPU seconds this process used)."""
    stats = loadgen.Stats()
    fleet = [(mid, context_for(sec), p) for (mid, sec), p in zip(meters, payloads, strict=True)]
    cpu0 = time.process_time()
    wall = asyncio.run(loadgen.run_fleet(fleet, port, stats, spread_s))
    return wall, stats, time.process_time() - cpu0


def ceiling(site: Site, meters: list[tuple[str, dict]], payloads: list[list[bytes]]):
    """The same requests against the no-op server: (wall, stats, CPU, the
    server's CPU)."""
    port = free_port(socket.SOCK_DGRAM)
    p = subprocess.Popen([sys.executable, "-m", "host_tools.noop_server", str(site.meters_dir),
                          str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=Path(__file__).resolve().parents[1])
    try:
        if p.stdout.readline().strip() != b"READY":
            raise RuntimeError(f"no-op server did not start: {p.stderr.read().decode()[-500:]}")
        cpu0 = tree_cpu_s(p.pid)
        result = run(meters, payloads, port)
        return (*result, tree_cpu_s(p.pid) - cpu0)
    finally:
        p.terminate()
        p.wait()


def vm_hwm_mib(pid: int) -> float:
    """Peak resident memory of a running server (Linux), in MiB: the sum
    of each of its processes' peaks (the gateway's event loop, PES and pool
    workers), an upper bound, as the peaks need not coincide."""
    total = 0.0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass  # it ended meanwhile
    return total or float("nan")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds a server has used so far, with its live children (the
    gateway's randomness workers; a confinement wrapper's child) (Linux)."""
    total = 0
    for p in descendants(pid):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime, stime in clock ticks
        except (OSError, IndexError, ValueError):
            pass  # it ended meanwhile
    return total / os.sysconf("SC_CLK_TCK")


def _figures(wall: float, stats: loadgen.Stats, cpu: float, requests: int, batch: int,
             server_cpu: float | None = None) -> dict:
    return {"server_cpu_ms_per_request": None if server_cpu is None
            else server_cpu * 1000 / requests, "wall_s": wall, "requests_per_s": requests / wall,
            "readings_per_s": requests * batch / wall, "p50_ms": stats.percentile(50) * 1000,
            "p99_ms": stats.percentile(99) * 1000, "retransmits": stats.retransmits,
            "separate": stats.separate,
            "first_retransmitted": stats.first_retransmitted,
            "first_datagrams": stats.first_datagrams, "timeouts": stats.timeouts,
            "late": stats.late,
            "busy": stats.busy, "other": stats.other, "generator_cpu": cpu / wall}


def bench(site: Site, files: list[Path], n: int = 1000, burst_meters: int = 250,
          sustained_days: int = 3, idle_s: float = 20.0, progress=print) -> dict:
    """The fleet figures of `make bench`; the gateway gw1 must be stopped.
    Days of readings never overlap between the runs: day 0 is the backlog,
    days 1.. the sustained run, then the burst, then one reading a request.
    The no-op ceiling runs right after that last run, with the same
    requests, once the gateway has stopped: on a machine with neighbours
    the speed drifts over minutes, and the ratio should not."""
    gw = site.gateways["gw1"]
    progress(f"fleet: provisioning {n} meters ...")
    meters = provision_fleet(site, n)
    out = {"meters": n}
    burst_day, one_day = 1 + sustained_days, 2 + sustained_days
    one = [day_payloads(files, i, 1, day=one_day, readings=4) for i in range(n)]

    backlog = [day_payloads(files, i, 8) for i in range(n)]
    requests = sum(len(p) for p in backlog)
    progress(f"fleet: {n} meters deliver a day's backlog each, all at once ({requests} requests"
             " of 8), to a gateway just started (its pool empty) ...")
    site.start(gw, "gateway", "run")
    try:
        out["backlog"] = _figures(*run(meters, backlog, gw.port), requests, 8)
        more = [[p for d in range(1, 1 + sustained_days) for p in day_payloads(files, i, 8, day=d)]
                for i in range(n)]
        requests = sum(len(p) for p in more)
        progress(f"fleet: at once again, {sustained_days} more days each ({requests} requests),"
                 " the pool kept dry by the load ...")
        out["sustained"] = _figures(*run(meters, more, gw.port), requests, 8)
        progress(f"fleet: the gateway idles {idle_s:.0f} s (its pool fills), then"
                 f" {burst_meters} meters send 8 readings each ...")
        time.sleep(idle_s)
        burst = [day_payloads(files, i, 8, day=burst_day)[:1] for i in range(burst_meters)]
        out["burst"] = _figures(*run(meters[:burst_meters], burst, gw.port), burst_meters, 8)
        progress(f"fleet: {n} meters, 4 requests of 1 reading each ...")
        cpu0 = tree_cpu_s(gw.proc.pid)
        wall, stats, gen_cpu = run(meters, one, gw.port)
        out["batch1"] = _figures(wall, stats, gen_cpu, sum(len(p) for p in one), 1,
                                 tree_cpu_s(gw.proc.pid) - cpu0)
        out["gateway_peak_rss_mib"] = vm_hwm_mib(gw.proc.pid)
    finally:
        site.stop(gw)
    requests = sum(len(p) for p in one)
    progress(f"fleet: the same {requests} requests of 1 reading to a no-op OSCORE server"
             " (the ceiling) ...")
    wall, stats, gen_cpu, server_cpu = ceiling(site, meters, one)
    out["ceiling"] = _figures(wall, stats, gen_cpu, requests, 1, server_cpu)
    return out

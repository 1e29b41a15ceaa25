"""`gridveil soak`: the whole deployment under crashes. Emulated meters
replay a day of the sample data, compressed into a few minutes, while the
gateway is SIGKILLed and restarted at random (every other time only its
PES process, which the gateway starts again by itself) and meters are
SIGKILLed and restarted at random. A killed gateway must leave no process
behind. At the end everything is sealed and released, and
the readings stored, the released aggregates and the released bills are
compared with ground truth recomputed from the data files: nothing lost,
nothing counted twice, not a Wh short. It ends by itself."""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.tariff import FLAT

from . import demo, fleet, groundtruth
from .site import INTERVAL_S, Site, descendants, process_name

# Meters retry fast: the soak's day lasts minutes, not hours.
FAST_METER = {"ack_timeout_ms": 300, "max_retransmit": 2, "retry_ms": 300,
              "max_retry_ms": 1000}


@dataclass
class SoakResult:
    seconds: float = 0.0
    gateway_kills: int = 0
    pes_kills: int = 0
    meter_kills: int = 0
    readings_expected: int = 0
    readings_stored: int = 0
    wh_truth: int = 0
    wh_released: int = 0
    cross_check: str = ""
    ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return max(0, self.readings_expected - self.readings_stored)

    @property
    def double(self) -> int:
        return max(0, self.readings_stored - self.readings_expected)

    def summary(self) -> str:
        return (f"soak: {self.seconds:.0f} s, gateway killed {self.gateway_kills} times, its PES"
                f" process {self.pes_kills} times, meters killed {self.meter_kills} times; readings"
                f" {self.readings_stored} stored of"
                f" {self.readings_expected}: {self.lost} lost, {self.double} double;"
                f" energy released {self.wh_released} Wh of {self.wh_truth} Wh:"
                f" {self.wh_truth - self.wh_released} Wh short")


def run(home: Path, files: list[Path], seconds: float = 180, seed: int | None = None,
        bits: int = 1024, out=print) -> SoakResult:
    rng = random.Random(seed)
    res = SoakResult()
    site = Site(home, gateways=1, bits=bits)
    # Pace the day so that the replay ends with a fifth of the time left to drain.
    speed = max(1, int(86400 / (seconds * 0.8)))
    out(f"setting up {len(files)} meters, one gateway, two key holders and the MDMS under"
        f" {home} (a day replayed at {speed}x)")
    try:
        site.setup(files, meter_settings=FAST_METER, speed=speed)
        site.start_services()
        gw = site.gateways["gw1"]
        build = fleet.unix_build()
        logs = site.logs
        meters, log_files = {}, []

        def start(d: Path):
            log_files.append(open(logs / f"meter-{d.name}.log", "ab"))
            meters[d] = fleet.start_meter(d, build=build, wrap=site.wrap, log=log_files[-1])

        for d in site.meter_dirs():
            start(d)
        t0 = time.monotonic()
        deadline = t0 + seconds * 3  # a stuck meter must not hold the soak forever
        next_gw = t0 + rng.uniform(3, 12)
        next_meter = t0 + rng.uniform(1, 5)
        last_note = t0
        while any(p.poll() is None for p in meters.values()):
            now = time.monotonic()
            if now > deadline:
                res.problems.append("meters did not finish in time")
                break
            running = [d for d, p in meters.items() if p.poll() is None]
            if now >= next_gw and now - t0 < seconds * 0.9:
                if res.gateway_kills > res.pes_kills and kill_pes(gw.proc.pid):
                    res.pes_kills += 1
                else:
                    helpers = descendants(gw.proc.pid)
                    site.stop(gw, kill=True)
                    time.sleep(rng.uniform(0.2, 2.5))  # meters queue while it is down
                    left = outlived(helpers, by=time.monotonic() + 5)
                    if left:
                        res.problems.append(f"the killed gateway left {left} running")
                    site.start(gw, "gateway", "run")
                    res.gateway_kills += 1
                next_gw = time.monotonic() + rng.uniform(3, 12)
            if now >= next_meter and running and now - t0 < seconds * 0.9:
                d = rng.choice(running)
                meters[d].send_signal(signal.SIGKILL)
                meters[d].wait()
                time.sleep(rng.uniform(0, 1))
                start(d)
                res.meter_kills += 1
                next_meter = time.monotonic() + rng.uniform(1, 5)
            if now - last_note > 15:
                out(f"  {now - t0:.0f} s: {len(running)} meters running, gateway killed"
                    f" {res.gateway_kills} times, meters {res.meter_kills} times")
                last_note = now
            time.sleep(0.2)
        for d, p in meters.items():
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.returncode != 0:
                res.problems.append(f"meter {d.name} exited with {p.returncode}; see"
                                    f" {logs / f'meter-{d.name}.log'}")
        for f in log_files:
            f.close()
        res.seconds = time.monotonic() - t0
        site.seal_and_push()
        released = site.release()
        truth = {m: groundtruth.interval_energy(f, INTERVAL_S)
                 for m, f in zip(site.assignment, files, strict=True)}
        res.readings_expected = sum(len(t) for t in truth.values())
        res.wh_truth = sum(sum(t.values()) for t in truth.values())
        res.readings_stored = stored_readings(site)
        res.wh_released = sum(v for _, _, v in released["aggregates"])
        ok, line = demo.cross_check(files, site.assignment, released,
                                    {m: FLAT for m in site.assignment})
        res.cross_check = line
        res.ok = ok and not res.problems and res.lost == res.double == 0 \
            and res.wh_released == res.wh_truth
        return res
    finally:
        site.stop_all()


def kill_pes(gateway_pid: int) -> bool:
    """SIGKILL the gateway's PES process (gateway/pesprocess.py), if it has one now."""
    for pid in descendants(gateway_pid):
        if process_name(pid) == "gridveil-pes":
            os.kill(pid, signal.SIGKILL)
            return True
    return False


def outlived(pids: list[int], by: float) -> list[str]:
    """The names of those processes still running at monotonic time `by`."""
    while True:
        left = [n for n in map(process_name, pids) if n is not None]
        if not left or time.monotonic() > by:
            return left
        time.sleep(0.1)


def stored_readings(site: Site) -> int:
    from gateway.store import Store

    total = 0
    for g in site.gateways.values():
        st = Store(g.home / "gateway.db", readonly=True)
        try:
            total += sum(m["accepted"] for m in st.meters())
        finally:
            st.close()
    return total

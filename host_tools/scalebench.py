"""`gridveil bench --scaling` (`make bench-scaling`): how one gateway and the
release path grow with the fleet. For 10, 100 and 1,000 meters (in
neighbourhoods of 50), each a fresh deployment with a 2048-bit key: a day
of readings from every meter at once, then six more days, over OSCORE from
host_tools/loadgen.py into the real gateway; the database's bytes per
meter-day after one and after seven days; `gridveil gateway seal --all`'s
time per sealed neighbourhood-interval; the release of the first day by
both key holders (each value needs both partial decryptions) per value;
and the gateway's peak memory. Sealing is held back during ingest
(seal_every_s) so that each step is timed alone; the gateway pushes to the
MDMS as it goes (a copy of every reading, sealed for its customer, leaves
through the outbox), as it would in service.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from . import demo, fleetbench
from .site import Site

SIZES = (10, 100, 1000)
PER_NEIGHBOURHOOD = 50
DAYS = 7


def _db_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in home.glob("gateway.db*"))


def _timed(site: Site, party, *args: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = site.gridveil(party, *args)
    return time.perf_counter() - t, out


def _signed(said: str) -> int:
    """Records that `gateway seal` signed: "sealed A aggregates, signed B bill days"."""
    w = said.split()
    return int(w[1]) + int(w[4])


def one_size(base: Path, files: list[Path], n: int, bits: int, progress=print) -> dict:
    site = Site(base / f"n{n}", gateways=1, tls=False, bits=bits, empty_ack_delay_s=None)
    progress(f"scaling: {n} meters: setting up ({bits}-bit key, holders, MDMS, gateway) ...")
    site.setup(files)  # with the sample households as customers
    gw = site.gateways["gw1"]
    cfg = gw.home / "gateway.json"
    c = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**c, "seal_every_s": 10**6}))
    customers = sorted(site.customers.values())
    meters = fleetbench.provision_fleet(site, n, PER_NEIGHBOURHOOD, customers=customers)
    out = {"meters": n, "neighbourhoods": (n + PER_NEIGHBOURHOOD - 1) // PER_NEIGHBOURHOOD}
    start = _timed(site, site.mdms, "--help")[0]  # a process start, to subtract
    try:
        for h in site.holders.values():
            site.start(h, "holder", "serve", "--port", str(h.port))
        site.start(site.mdms, "mdms", "serve", "--port", str(site.mdms.port))
        site.activate_households()
        # The fleet's meters belong to the sample households, dealt round-robin
        # as provision_fleet deals them: each household consents to its own.
        site.enroll_more({m: customers[i % len(customers)] for i, (m, _) in enumerate(meters)})
        progress(f"scaling: {n} meters: one day each, all at once ...")
        day = [fleetbench.day_payloads(files, i, 8) for i in range(n)]
        site.start(gw, "gateway", "run")
        wall, stats, _ = fleetbench.run(meters, day, gw.port)
        out["day1_readings_per_s"] = 96 * n / wall
        out["day1_timeouts"] = stats.timeouts
        site.stop(gw)
        day1_bytes = _db_bytes(gw.home)
        out["bytes_per_meter_day_1"] = day1_bytes / n

        progress(f"scaling: {n} meters: seal, push and release the first day ...")
        t, said = _timed(site, gw, "gateway", "seal", "--all")
        out["sealed_day1"] = sealed = _signed(said)
        out["seal_ms_per_aggregate"] = (t - start) * 1000 / max(1, sealed)
        t, _ = _timed(site, gw, "gateway", "push")
        out["push_s_day1"] = t - start
        released = site.exchange / f"released-{n}.json"
        t, _ = _timed(site, site.mdms, "mdms", "release", "--json", str(released))
        r = json.loads(released.read_text())
        values = len(r.get("aggregates", [])) + len(r.get("bills", []))
        out["released_aggregates"] = len(r.get("aggregates", []))
        out["released_bills"] = len(r.get("bills", []))
        out["release_ms_per_value"] = (t - start) * 1000 / max(1, values)

        progress(f"scaling: {n} meters: {DAYS - 1} more days each, all at once ...")
        more = [[p for d in range(1, DAYS) for p in fleetbench.day_payloads(files, i, 8, day=d)]
                for i in range(n)]
        site.start(gw, "gateway", "run")
        wall, stats, _ = fleetbench.run(meters, more, gw.port)
        out["week_readings_per_s"] = 96 * (DAYS - 1) * n / wall
        out["week_timeouts"] = stats.timeouts
        out["gateway_peak_rss_mib"] = fleetbench.vm_hwm_mib(gw.proc.pid)
        site.stop(gw)
        # What each further meter-day adds: the first day's size holds the
        # fixed part (schema, keys, the sample meters' rows).
        out["bytes_per_meter_day_7"] = (_db_bytes(gw.home) - day1_bytes) / (n * (DAYS - 1))
        t, said = _timed(site, gw, "gateway", "seal", "--all")
        sealed = _signed(said)
        out["seal_ms_per_aggregate_week"] = (t - start) * 1000 / max(1, sealed)
    finally:
        site.stop_all()
    return out


def table(rows: list[dict]) -> str:
    head = ("| meters | neighbourhoods | ingest, day 1 (readings/s) | ingest, days 2–7"
            " (readings/s) | DB bytes per meter-day (day 1 with the fixed part / each further"
            " day) | seal per"
            " signed record: neighbourhood-interval or bill day (ms, day 1 / days 2–7) |"
            " release per value, both holders (ms) | released (aggregates + bills) |"
            " gateway peak RSS, its processes added up (MiB) |\n"
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    return head + "".join(
        f"| {r['meters']} | {r['neighbourhoods']} | {r['day1_readings_per_s']:.0f} |"
        f" {r['week_readings_per_s']:.0f} | {r['bytes_per_meter_day_1']:,.0f} /"
        f" {r['bytes_per_meter_day_7']:,.0f} | {r['seal_ms_per_aggregate']:.1f} /"
        f" {r['seal_ms_per_aggregate_week']:.1f} | {r['release_ms_per_value']:.1f} |"
        f" {r['released_aggregates']} + {r['released_bills']} |"
        f" {r['gateway_peak_rss_mib']:.0f} |\n" for r in rows)


RPI4 = """A Raspberry Pi 4 gateway, estimated (not measured): the gateway's ingest
is bound by one core (aiocoap's event loop; the PES and the randomness
workers run in processes of their own on the other cores), so it scales
with single-core speed. sysbench 1.0.20 `cpu --threads=1` gives
{here:.0f} events/s on this machine's core and 1,478 on a Pi 4's Cortex-A72
(published by leoncode.co.uk, "Raspberry Pi CPU Benchmarks"): a factor of
{factor:.1f}. So about {pi_ingest:.0f} readings/s for a Pi 4 at 8 readings per
request, a day's backlog of 1,000 meters in about {pi_backlog:.0f} s, and
sealing at about {pi_seal:.1f} ms per record; memory and bytes per meter-day
do not depend on the CPU. In service 1,000 meters send about one reading a
second. The estimate rests on prime sieving as a stand-in for GMP's
modular arithmetic (both are integer multiply-and-divide work); take it as
good to a factor of two. Releases run on the key holders, not on the gateway."""


def sysbench_events_per_s() -> float | None:
    """One core's sysbench cpu score, if sysbench is installed."""
    try:
        out = subprocess.run(["sysbench", "cpu", "--threads=1", "--time=10", "run"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if "events per second" in line:
            return float(line.split(":")[1])
    return None


def markdown(rows: list[dict], here: float | None) -> str:
    text = ("## Scaling\n\nOne gateway, fresh for each fleet size, with a 2048-bit key;"
            " meters in neighbourhoods of 50, each dealt to one of the ten sample"
            " customers (so every reading is also sealed for its customer); the load"
            " generator's meters send a day each at once, then six more days"
            " (`make bench-scaling`, about 10 minutes). Bytes per meter-day: the"
            " gateway's database after the first day, divided by the meters (it holds the"
            " fixed part too), and what each further day added, all of it still unsealed"
            " (the gateway seals only between the steps here): that includes the open"
            " intervals' bookkeeping, a row per reading naming its meter, which a"
            " gateway deletes as it seals. Sealing is"
            " `gridveil gateway seal --all` (process start subtracted) per signed record;"
            " release is `gridveil mdms release` of the first day, both holders' partial"
            " decryptions per value.\n\n" + table(rows))
    big = max(rows, key=lambda r: r["meters"])
    if here:
        factor = here / 1478
        text += "\n" + RPI4.format(here=here, factor=factor,
                                   pi_ingest=big["week_readings_per_s"] / factor,
                                   pi_backlog=96 * 1000 * factor / big["day1_readings_per_s"],
                                   pi_seal=big["seal_ms_per_aggregate_week"] * factor) + "\n"
    return text


def main(bits: int = 2048, sizes=SIZES, out: Path | None = None) -> list[dict]:
    files = sorted(demo.SAMPLE_DIR.glob("household*.csv"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="gridveil-scaling-") as t:
        for n in sizes:
            rows.append(one_size(Path(t), files, n, bits))
            print(json.dumps(rows[-1]), flush=True)
    text = markdown(rows, sysbench_events_per_s())
    print(text)
    if out:
        from . import mdsection

        mdsection.write(out, "scaling", text)
        print(f"results written to {out}")
    return rows

"""`make demo`: the whole system on one machine, end to end, then checked.

1. a key authority, a gateway, and 10 meters in 2 neighbourhoods of 5,
   replaying the project's own sample data (data/sample/);
2. the gateway (aiocoap, OSCORE) and 10 firmware processes on the
   MicroPython Unix port, one day at one-minute samples, 15-minute readings;
3. seal, release through the key authority, print hourly demand and bills;
4. recompute everything from the data files as plaintext ground truth.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from authority.service import Authority
from gateway.config import GatewayConfig, GatewayHome
from gateway.seal import seal
from gateway.signing import load_private
from gateway.store import Store

from . import fleet, groundtruth, provision, report

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "sample"
NEIGHBOURHOODS = ("north", "south")
FLAT_PRICE_CT_PER_KWH = 25  # 25 ct/kWh
INTERVAL_S = 900


class DemoError(Exception):
    pass


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(home: Path, files: list[Path], bits: int, k: int = 5, speed: int = 0,
          clock: str = "data", port: int | None = None) -> dict[str, str]:
    """Fresh authority, gateway and meters; returns {meter_id: neighbourhood}.
    Meters are split evenly over the neighbourhoods, or all go into the
    first one when there are too few for k in each."""
    provision.init_authority(home / "authority", bits, k)
    cfg = GatewayConfig(port=port or free_udp_port(), interval_s=INTERVAL_S, grace_s=0,
                        bill_grace_s=0, clock=clock, seal_every_s=2.0)
    provision.init_gateway(home / "gateway", home / "authority" / "paillier.pub.json", cfg)
    provision.trust_gateway(home / "authority", home / "gateway")
    groups = NEIGHBOURHOODS if len(files) >= k * len(NEIGHBOURHOODS) else NEIGHBOURHOODS[:1]
    per = max(1, len(files) // len(groups))
    assignment = {}
    for i, f in enumerate(files):
        meter_id = f"m{i + 1:02d}"
        nbh = groups[min(i // per, len(groups) - 1)]
        provision.provision_meter(
            home / "gateway", meter_id, nbh, home / "meters" / meter_id, customer=f"c{i + 1:02d}",
            extra={"replay": {"file": str(Path(f).resolve()), "speed": speed},
                   "ack_timeout_ms": 1000, "max_retransmit": 4, "retry_ms": 500,
                   "max_retry_ms": 4000, "drain_ms": 120000})
        assignment[meter_id] = nbh
    return assignment


def start_gateway(home: Path, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    p = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "--home", str(home),
                          "gateway", "run"], stdout=subprocess.PIPE, stderr=log, cwd=REPO)
    line = p.stdout.readline().decode()
    if not line.startswith("READY"):
        p.kill()
        raise DemoError(f"gateway did not start; see {log_path}")
    return p


def stop_gateway(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def cross_check(files: list[Path], assignment: dict[str, str], released: report.Released,
                price_uct_per_wh: int) -> tuple[bool, str]:
    per_meter = {m: groundtruth.interval_energy(f, INTERVAL_S)
                 for m, f in zip(assignment, files, strict=True)}
    truth_aggs = groundtruth.aggregates(per_meter, assignment)
    truth_bills = {(m, day): wh * price_uct_per_wh
                   for m, iv in per_meter.items()
                   for day, wh in groundtruth.day_energy(iv).items()}
    problems = []
    if released.refusals:
        problems.append(f"{len(released.refusals)} refusals, first: {released.refusals[0]}")
    for key in sorted(set(truth_aggs) | set(released.aggregates)):
        if truth_aggs.get(key) != released.aggregates.get(key):
            problems.append(f"aggregate {key}: released {released.aggregates.get(key)},"
                            f" truth {truth_aggs.get(key)}")
    for key in sorted(set(truth_bills) | set(released.bills)):
        if truth_bills.get(key) != released.bills.get(key):
            problems.append(f"bill {key}: released {released.bills.get(key)},"
                            f" truth {truth_bills.get(key)}")
    if problems:
        return False, (f"CROSS-CHECK FAILED: {len(problems)} mismatches; first: {problems[0]}")
    return True, (f"CROSS-CHECK OK: {len(truth_bills)} bills and {len(truth_aggs)} aggregates"
                  " match ground truth exactly")


def run(home: Path, bits: int = 2048, files: list[Path] | None = None, heap: str = "64K",
        out=print) -> bool:
    files = files or sorted(SAMPLE_DIR.glob("household*.csv"))
    if not files:
        raise DemoError(f"no sample data in {SAMPLE_DIR}; run `gridveil sample-data`")
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    t0 = time.monotonic()
    out(f"setting up a key authority ({bits}-bit Paillier key), a gateway and"
        f" {len(files)} meters in {home}")
    assignment = setup(home, files, bits)
    gw = start_gateway(home, home / "gateway" / "gateway.log")
    try:
        out(f"gateway up; running {len(files)} meters on the MicroPython Unix port"
            f" (heap {heap}), replaying {files[0].parent}")
        runs = fleet.run_fleet(sorted((home / "meters").iterdir()), heap=heap,
                               progress=lambda d, n: out(f"  meters finished: {d}/{n}"))
    finally:
        stop_gateway(gw)
    for r in runs:
        (r.meter_dir / "console.log").write_text(r.output)
        if r.returncode != 0:
            raise DemoError(f"meter {r.meter_dir.name} exited with {r.returncode};"
                            f" see {r.meter_dir / 'console.log'}")
    gh = GatewayHome(home / "gateway")
    store = Store(gh.db)
    sealed = seal(store, load_private(gh.signing_key), INTERVAL_S, 0, seal_all=True)
    out(f"sealed {sealed.aggregates} aggregates, signed {sealed.bill_days} bill days")
    authority = Authority(home / "authority")
    price = FLAT_PRICE_CT_PER_KWH * 1000  # micro-cents per Wh
    released = report.release_all(store, authority, price)
    out("\nHourly neighbourhood demand released by the key authority:")
    out(report.format_demand(released.aggregates))
    out(f"\nDay bills at a flat {FLAT_PRICE_CT_PER_KWH} ct/kWh:")
    out(report.format_bills(released.bills))
    ok, line = cross_check(files, assignment, released, price)
    authority.close()
    store.close()
    out(f"\n(finished in {time.monotonic() - t0:.1f} s; state kept in {home})")
    out(line)
    return ok

"""`make demo`: the whole system on one machine, end to end, then checked.

1. a key authority split between the utility and the privacy guardian, a
   gateway, and 10 meters with their customers in 2 neighbourhoods of 5,
   replaying the project's own sample data (data/sample/);
2. the gateway (aiocoap, OSCORE) and 10 firmware processes on the
   MicroPython Unix port, one day at one-minute samples, 15-minute readings;
3. seal, release through both key holders, print hourly demand and bills;
4. recompute everything from the data files as plaintext ground truth, and
   let each customer decrypt their own sealed copies;
5. set up the web dashboard and portal on the result (`--serve` keeps
   them running).
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from authority import setup as authority_setup
from authority.client import Authority
from common.tariff import FLAT
from gateway.config import GatewayConfig, GatewayHome
from gateway.seal import seal
from gateway.signing import load_private
from gateway.store import Store

from . import customer_export, fleet, groundtruth, provision, report

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "sample"
NEIGHBOURHOODS = ("north", "south")
INTERVAL_S = 900
# Customers' passwords in the demo only; real ones are chosen by customers.
DEMO_PASSWORD = "demo-password-not-secret"
DEMO_PBKDF2_ITERATIONS = 100_000


class DemoError(Exception):
    pass


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(home: Path, files: list[Path], bits: int, k: int = 5, speed: int = 0,
          clock: str = "data", port: int | None = None, tariff_file: Path | None = None,
          customers: bool = False) -> dict[str, str]:
    """Fresh authority, gateway and meters; returns {meter_id: neighbourhood}.
    Meters are split evenly over the neighbourhoods, or all go into the
    first one when there are too few for k in each."""
    provision.init_authority(home / "authority", bits, k, threshold=True)
    cfg = GatewayConfig(port=port or free_udp_port(), interval_s=INTERVAL_S, grace_s=0,
                        bill_grace_s=0, clock=clock, seal_every_s=2.0)
    provision.init_gateway(home / "gateway", authority_setup.public_key_file(home / "authority"),
                           cfg)
    provision.trust_gateway(home / "authority", home / "gateway")
    tariff_id = provision.add_tariff(home / "gateway", tariff_file) if tariff_file else "flat"
    groups = NEIGHBOURHOODS if len(files) >= k * len(NEIGHBOURHOODS) else NEIGHBOURHOODS[:1]
    per = max(1, len(files) // len(groups))
    assignment = {}
    for i, f in enumerate(files):
        meter_id = f"m{i + 1:02d}"
        nbh = groups[min(i // per, len(groups) - 1)]
        customer_id = None
        if customers:
            customer_id = f"c{i + 1:02d}"
            provision.create_customer(home, home / "gateway", customer_id, DEMO_PASSWORD,
                                      iterations=DEMO_PBKDF2_ITERATIONS)
        provision.provision_meter(
            home / "gateway", meter_id, nbh, home / "meters" / meter_id, customer_id=customer_id,
            tariff_id=tariff_id,
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
                tariffs: dict, period_days: int = 1) -> tuple[bool, str]:
    """Compare what the authority released with plaintext ground truth
    recomputed from the data files. `tariffs` maps meter id to Tariff."""
    per_meter = {m: groundtruth.interval_energy(f, INTERVAL_S)
                 for m, f in zip(assignment, files, strict=True)}
    truth_aggs = groundtruth.aggregates(per_meter, assignment)
    truth_bills = groundtruth.bills(per_meter, tariffs, INTERVAL_S, period_days)
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


def check_customer_copies(home: Path, store: Store, files: list[Path],
                          assignment: dict[str, str]) -> tuple[bool, str]:
    """Each customer opens their sealed copies with their password, and gets
    exactly the readings of their meter."""
    total = 0
    for i, (meter_id, f) in enumerate(zip(assignment, files, strict=True)):
        rows = customer_export.readings(home, store, f"c{i + 1:02d}", DEMO_PASSWORD)
        truth = groundtruth.interval_energy(f, INTERVAL_S)
        got = {int(dt.datetime.strptime(r[2], "%Y-%m-%dT%H:%MZ").replace(
            tzinfo=dt.timezone.utc).timestamp()): r[3] for r in rows if r[0] == meter_id}
        if got != truth:
            return False, f"customer copies: c{i + 1:02d}'s decrypted readings differ from the data"
        total += len(rows)
    return True, (f"customer copies: {len(assignment)} customers decrypted their own {total}"
                  " readings with their passwords; all equal the data")


WEB_ROLES = ("admin", "operator", "analyst", "billing", "auditor", "guardian")


def setup_web(home: Path, released: report.Released) -> Path:
    """Dashboard accounts for the demo (passwords in an owner-only file) and
    the released values for the dashboard to show."""
    import secrets

    from mdms.pages import add_user
    from mdms.store import MdmsStore

    class _W:
        store = MdmsStore(home / "mdms" / "mdms.db")

    lines = []
    for role in WEB_ROLES:
        pw = secrets.token_urlsafe(12)
        add_user(_W, role, role, pw)
        lines.append(f"{role:<9} user {role:<9} password {pw}")
    lines.append(f"customers c01..c10 password {DEMO_PASSWORD}")
    _W.store.save_released(released)
    _W.store.close()
    accounts = home / "web-accounts.txt"
    from common.files import write_atomic

    write_atomic(accounts, ("\n".join(lines) + "\n").encode(), secret=True)
    return accounts


def serve_web(home: Path, port: int) -> None:
    import uvicorn

    from mdms.app import create_app
    from mdms.web import WebConfig

    uvicorn.run(create_app(WebConfig(home)), host="127.0.0.1", port=port, log_level="warning")


def run(home: Path, bits: int = 2048, files: list[Path] | None = None, heap: str = "64K",
        out=print, serve: bool = False, web_port: int = 8080) -> bool:
    files = files or sorted(SAMPLE_DIR.glob("household*.csv"))
    if not files:
        raise DemoError(f"no sample data in {SAMPLE_DIR}; run `gridveil sample-data`")
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    t0 = time.monotonic()
    out(f"setting up a key authority (two holders, {bits}-bit Paillier key in shares),"
        f" a gateway and {len(files)} meters with their customers in {home}")
    assignment = setup(home, files, bits, customers=True)
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
    authority = Authority.local(home / "authority")
    released = report.release_all(store, authority)
    out("\nHourly neighbourhood demand, released by the utility's and the privacy guardian's"
        " key shares together:")
    out(report.format_demand(released.aggregates))
    out(f"\nDay bills at a flat {FLAT.prices[0] / 1000:g} ct/kWh, computed on ciphertexts:")
    out(report.format_bills(released.bills))
    ok, line = cross_check(files, assignment, released, {m: FLAT for m in assignment})
    copies_ok, copies_line = check_customer_copies(home, store, files, assignment)
    out(copies_line)
    if not copies_ok:
        ok, line = False, line.replace("CROSS-CHECK OK", "CROSS-CHECK FAILED (customer copies)")
    authority.close()
    store.close()
    accounts = setup_web(home, released)
    web_cmd = f"gridveil --home {home} web --port {web_port}"
    out(f"\nweb: `{web_cmd}` serves the dashboard at http://127.0.0.1:{web_port}/ and the"
        f" customer portal at http://127.0.0.1:{web_port}/portal (accounts in {accounts});"
        " `make demo-serve` runs the demo and keeps them up")
    out(f"(finished in {time.monotonic() - t0:.1f} s; state kept in {home})")
    out(line)
    if serve and ok:
        out(f"serving on http://127.0.0.1:{web_port}/ until Ctrl-C")
        serve_web(home, web_port)
    return ok

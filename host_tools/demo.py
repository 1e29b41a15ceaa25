"""`make demo`: the whole system on one machine, each party its own process
in its own home (host_tools/site.py), end to end, then checked.

1. two key holders (the utility's and the privacy guardian's), a dealer
   that gives each a share of a 2048-bit Paillier key, the MDMS, two
   gateways, and 10 meters with their customers in 2 neighbourhoods of 5,
   dealt over both gateways, replaying the project's own sample data;
2. every HTTP link (gateway -> MDMS, MDMS -> holders) over TLS with pinned
   certificates; each process confined to its own home where the kernel
   allows (a mount namespace hides the other homes);
3. the meters run the firmware on the MicroPython Unix port, one day at
   one-minute samples, 15-minute readings; the gateways seal and push to
   the MDMS, which combines both gateways' parts and releases through both
   holders;
4. everything is recomputed from the data files as plaintext ground truth,
   and each customer decrypts their own copies through the portal API;
5. the dashboard and the portal stay up with `--serve`.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.tariff import FLAT
from mdms import report

from . import customer_export, fleet, groundtruth
from .site import DEMO_PASSWORD, INTERVAL_S, Site, SiteError

REPO = Path(__file__).resolve().parents[1]
CENT = 1_000_000  # µct
SAMPLE_DIR = REPO / "data" / "sample"
WEB_ROLES = ("admin", "operator", "analyst", "billing", "auditor", "guardian")


class DemoError(SiteError):
    pass


def released_dicts(d: dict) -> tuple[dict, dict, list]:
    """The JSON `gridveil mdms release --json` writes, as dicts."""
    return ({(n, e): wh for n, e, wh in d["aggregates"]},
            {(m, day): a for m, day, a in d["bills"]}, d["refusals"])


def cross_check(files: list[Path], assignment: dict[str, str], released: dict,
                tariffs: dict, period_days: int = 1) -> tuple[bool, str]:
    """Compare what the holders released with plaintext ground truth
    recomputed from the data files. `tariffs` maps meter id to Tariff."""
    aggs, bills, refusals = released_dicts(released)
    per_meter = {m: groundtruth.interval_energy(f, INTERVAL_S)
                 for m, f in zip(assignment, files, strict=True)}
    truth_aggs = groundtruth.aggregates(per_meter, assignment)
    truth_bills = groundtruth.bills(per_meter, tariffs, INTERVAL_S, period_days)
    problems = []
    if refusals:
        problems.append(f"{len(refusals)} refusals, first: {refusals[0]}")
    for key in sorted(set(truth_aggs) | set(aggs)):
        if truth_aggs.get(key) != aggs.get(key):
            problems.append(f"aggregate {key}: released {aggs.get(key)}, truth {truth_aggs.get(key)}")
    for key in sorted(set(truth_bills) | set(bills)):
        # A bill is released in whole cents, rounded at random by the key
        # holders' dither: the exact amount's cent below or above.
        exact, got = truth_bills.get(key), bills.get(key)
        if exact is None or got not in (exact // CENT * CENT, -(-exact // CENT) * CENT):
            problems.append(f"bill {key}: released {got}, truth {exact} µct")
    if problems:
        return False, f"CROSS-CHECK FAILED: {len(problems)} mismatches; first: {problems[0]}"
    return True, (f"CROSS-CHECK OK: {len(truth_bills)} bills to the cent and {len(truth_aggs)}"
                  " aggregates to the Wh match ground truth")


def check_customer_copies(site: Site, files: list[Path]) -> tuple[bool, str]:
    """Each customer logs in to the portal API with their password, as the
    browser does, and decrypts exactly the readings of their meter."""
    def one(item):
        meter_id, f = item
        rows = customer_export.readings(site.mdms_url(), site.mdms_ca(),
                                        site.customers[meter_id], DEMO_PASSWORD)
        got = {int(dt.datetime.strptime(r[2], "%Y-%m-%dT%H:%MZ").replace(
            tzinfo=dt.timezone.utc).timestamp()): r[3] for r in rows if r[0] == meter_id}
        return meter_id, got == groundtruth.interval_energy(f, INTERVAL_S), len(rows)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, zip(site.assignment, files, strict=True)))
    bad = [m for m, ok, _ in results if not ok]
    if bad:
        return False, f"customer copies: {site.customers[bad[0]]}'s decrypted readings differ"
    return True, (f"customer copies: {len(results)} customers decrypted their own"
                  f" {sum(n for _, _, n in results)} readings through the portal with their"
                  " passwords; all equal the data")


def setup_web(site: Site) -> Path:
    """Dashboard accounts for the demo, passwords in an owner-only file."""
    from common.files import write_atomic

    lines = []
    for role in WEB_ROLES:
        pw = secrets.token_urlsafe(12)
        site.gridveil(site.mdms, "mdms", "user-add", role, "--role", role,
                      env={"GRIDVEIL_WEB_PASSWORD": pw})
        lines.append(f"{role:<9} user {role:<9} password {pw}")
    # The guardian decides at its own holder's desk, not in the MDMS.
    pw = secrets.token_urlsafe(12)
    g = site.holders["guardian"]
    site.gridveil(g, "holder", "desk-password", env={"GRIDVEIL_DESK_PASSWORD": pw})
    lines.append(f"guardian-desk at {g.url}/desk password {pw}")
    lines.append(f"customers c01..c10 password {DEMO_PASSWORD}")
    lines += [f"recovery code of {cid}: {code}" for cid, code in sorted(site.recovery_codes.items())]
    accounts = site.base / "web-accounts.txt"
    write_atomic(accounts, ("\n".join(lines) + "\n").encode(), secret=True)
    return accounts


def describe(site: Site) -> list[str]:
    rows = [f"  {'party':<16}{'pid':>8}  {'listens on':<28} home"]
    for p in site.parties():
        where = p.url or (f"coap://127.0.0.1:{p.port}" if p.port else "-")
        rows.append(f"  {p.name:<16}{p.proc.pid if p.proc else '-':>8}  {where:<28} {p.home}")
    metrics = [f"http://127.0.0.1:{p.metrics_port}/metrics" if p.metrics_port else
               f"{p.url}/metrics" for p in site.parties() if p.url or p.metrics_port]
    rows.append("  figures for Prometheus (and /healthz beside each): " + " ".join(metrics))
    return rows


def run(home: Path, bits: int = 2048, files: list[Path] | None = None, heap: str = fleet.HEAP,
        out=print, serve: bool = False, web_port: int = 8080, then=None) -> bool:
    """The whole demo; `then(site, accounts file)`, if given, runs while
    every party is still up (`gridveil pageweight` measures the web then)."""
    files = files or sorted(SAMPLE_DIR.glob("household*.csv"))
    if not files:
        raise DemoError(f"no sample data in {SAMPLE_DIR}; run `gridveil sample-data`")
    t0 = time.monotonic()
    site = Site(home, gateways=2, bits=bits, mdms_port=web_port if serve else 0)
    out(f"setting up every party in its own home under {home}: two key holders ({bits}-bit"
        f" Paillier key in shares from a dealer), the MDMS, two gateways, {len(files)} meters"
        " and their customers")
    try:
        site.setup(files)
        site.start_services()
        out("parties running, each its own process" +
            (", each confined to its own home (mount namespace):" if site.confined else
             " (this kernel cannot confine them to their homes):"))
        for line in describe(site):
            out(line)
        out(f"running {len(files)} meters on the MicroPython Unix port (heap {heap}),"
            f" replaying {files[0].parent}")
        site.run_meters(heap=heap, progress=lambda d, n: out(f"  meters finished: {d}/{n}"))
        site.seal_and_push()
        out("gateways sealed, signed and pushed everything to the MDMS")
        released = site.release()
        aggs, bills, _ = released_dicts(released)
        out("\nHourly neighbourhood demand: both gateways' parts combined by the MDMS, released"
            " by the utility's and the privacy guardian's key holders together:")
        out(report.format_demand(aggs))
        out(f"\nDay bills at a flat {FLAT.prices[0] / 1000:g} ct/kWh, computed on ciphertexts (this"
            " demo's holders bill single days; their default is whole calendar months):")
        out(report.format_bills(bills))
        ok, line = cross_check(files, site.assignment, released,
                               {m: FLAT for m in site.assignment})
        copies_ok, copies_line = check_customer_copies(site, files)
        out(copies_line)
        if not copies_ok:
            ok, line = False, line.replace("CROSS-CHECK OK", "CROSS-CHECK FAILED (customer copies)")
        accounts = setup_web(site)
        out(f"\nweb: the MDMS serves the dashboard at {site.mdms_url()}/ and the customer"
            f" portal at {site.mdms_url()}/portal (certificate: {site.mdms_ca()}; accounts in"
            f" {accounts}); `make demo-serve` keeps them up")
        out(f"(finished in {time.monotonic() - t0:.1f} s; every party's home and log kept in"
            f" {home})")
        out(line)
        if then is not None and ok:
            then(site, accounts)
        if serve and ok:
            for g in site.gateways.values():  # up again, for their /metrics and /healthz
                site.start(g, "gateway", "run")
            for line in describe(site)[-1:]:
                out(line)
            out(f"serving on {site.mdms_url()}/ until Ctrl-C")
            try:
                site.mdms.proc.wait()
            except KeyboardInterrupt:
                pass
        return ok
    finally:
        site.stop_all()

"""`make bench-scale` (`gridveil bench --scale`): the MDMS and both key
holders at a fleet's scale, day after day, on a real 3-node Citus cluster.

No meter processes: for N synthetic meters (50 to a neighbourhood, each
its own household, enrolled at both holders and consented to at the
guardian's) the bench signs with a real gateway's key what that gateway
would push for a day: each meter's 96 readings sealed for its household
(AES-GCM, the day key RSA-wrapped), its bill day, and every neighbourhood's
96 aggregates (Paillier under the holders' key, the values from the sample
households). Then per day, each stage timed on its own:

    intake    the day's pushes into `mdms serve` over HTTP (two at a time)
    release   `mdms release`: that day's aggregates and bills through both
              holders, cross-checked against the sums computed here

and printed as `scale-intake: ...` and `scale-release: ...` lines, with the
cluster's bytes per meter-day, each party's peak memory, and on the first
and the last day the holders' start-up and full log check (restarted with
all the history behind them: start-up must not grow with it).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from common import consent, customer, paillier, records, signing
from common.files import ConfigError
from gateway.config import GatewayHome
from gateway.fastenc import FastEncryptor

from . import demo, groundtruth
from .fleetbench import vm_hwm_mib
from .pgcluster import CitusCluster, PostgresUnavailable
from .site import INTERVAL_S, REPO, Site, activation_codes

PER_NEIGHBOURHOOD = 50
DAY = 86400
DAY0 = 1767225600  # 2026-01-01, UTC: the sample's day
PUSH_ITEMS = 4000  # items per push, about 1.5 MB: under the MDMS's 8 MiB limit
PUSHERS = 2


class Fleet:
    """N synthetic meters and what their gateway pushes, day by day."""

    def __init__(self, site: Site, n: int, files: list[Path]):
        self.site, self.n = site, n
        self.gw = "gw1"
        g = site.gateways[self.gw]
        self.key = signing.load_private(GatewayHome(g.home).signing_key,
                                        g.env["GRIDVEIL_GATEWAY_PASSPHRASE"])
        self.pub = paillier.load_public(site.exchange / "keys" / f"{site.key_id}.pub.json")
        self.kid = paillier.key_id(self.pub)
        self.fast = FastEncryptor(self.pub)
        self.meters = [f"s{i:07d}" for i in range(n)]
        self.nbh = {m: f"z{i // PER_NEIGHBOURHOOD:05d}" for i, m in enumerate(self.meters)}
        days = [groundtruth.interval_energy(f, INTERVAL_S) for f in files]
        self.values = {m: [v for _, v in sorted(days[i % len(days)].items())][:96]
                       for i, m in enumerate(self.meters)}
        self.seal_key = customer.create("bench", secrets.token_urlsafe(12)).seal_key.public_key()

    def enroll_and_consent(self) -> None:
        """Every meter its own household: enrolled at both holders (the
        guardian's codes go to the households), then each household's
        consent, relayed to the guardian's holder as the MDMS relays it."""
        from mdms import config

        f = self.site.exchange / "bench-enrollment.json"
        f.write_text(json.dumps({m: "h" + m[1:] for m in self.meters}))
        codes = {}
        for role, h in self.site.holders.items():
            out = self.site.gridveil(h, "holder", "enroll", "--file", str(f))
            if role == "guardian":
                codes = activation_codes(out)
        guardian = config.authority(self.site.mdms.home).guardian
        sign_key = ec.generate_private_key(ec.SECP256R1())  # one for all: a bench
        seal_pub = consent.spki(self.seal_key)

        def activate(m: str) -> None:
            h = "h" + m[1:]
            guardian.activate(consent.sign(sign_key, h, [m], seal_pub, codes[h]))

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(activate, self.meters))

    def day_items(self, d: int) -> tuple[list[dict], dict[tuple[str, int], int]]:
        """The gateway's items for day d (0-based) and each aggregate's
        plaintext sum (the ground truth)."""
        day = DAY0 // DAY + d
        items: list[dict] = []
        if d == 0:
            items += [{"kind": "meter", "meter_id": m, "neighbourhood": self.nbh[m],
                       "customer": "h" + m[1:], "tariff": "flat"} for m in self.meters]
        ends = [DAY0 + d * DAY + INTERVAL_S * (k + 1) for k in range(96)]
        for m in self.meters:
            key = secrets.token_bytes(16)
            items.append({"kind": "daykey", "meter_id": m, "day": day, "key_no": 0,
                          "wrapped": _b64(self.seal_key.encrypt(key, customer.OAEP))})
            register = 0
            for k, v in enumerate(self.values[m]):
                register += v
                nonce, ct = customer.seal_reading(key, m, d * 96 + k, ends[k], v, register)
                items.append({"kind": "copy", "meter_id": m, "seq": d * 96 + k, "day": day,
                              "key_no": 0, "nonce": _b64(nonce), "ct": _b64(ct)})
            rec = records.BillDayRecord(self.gw, m, day, 96, 0,
                                        ((0, self._enc(sum(self.values[m]))),), self.kid,
                                        "flat@1", tuple(ends),
                                        day - 1 if d else records.NO_DAY)
            items.append(self._signed("billday", rec))
        truth = {}
        by_nbh: dict[str, list[str]] = {}
        for m in self.meters:
            by_nbh.setdefault(self.nbh[m], []).append(m)
        for nbh, ms in sorted(by_nbh.items()):
            for k, end in enumerate(ends):
                total = sum(self.values[m][k] for m in ms)
                rec = records.AggregateRecord(self.gw, nbh, end - INTERVAL_S, end, len(ms),
                                              self._enc(total), self.kid, tuple(sorted(ms)))
                items.append(self._signed("aggregate", rec))
                truth[(nbh, end)] = total
            items.append({"kind": "sealed_through", "neighbourhood": nbh, "through": ends[-1]})
        return items, truth

    def _enc(self, v: int) -> bytes:
        return paillier.to_bytes(self.pub, self.fast.encrypt(v))

    def _signed(self, kind: str, rec) -> dict:
        return {"kind": kind, "record": _b64(rec.signed_bytes()),
                "signature": _b64(records.sign(self.key, rec))}

    def push(self, url: str, items: list[dict]) -> None:
        """The day's items in pushes of PUSH_ITEMS, PUSHERS at a time (the
        meters first, every other kind after, as a gateway's outbox would)."""
        first = [i for i in items if i["kind"] == "meter"]
        rest = [i for i in items if i["kind"] != "meter"]
        bodies = [first] if first else []
        bodies += [rest[i:i + PUSH_ITEMS] for i in range(0, len(rest), PUSH_ITEMS)]

        def send(batch: list[dict]) -> None:
            body = json.dumps({"gateway": self.gw, "items": batch, "health": None}).encode()
            req = urllib.request.Request(url + "/v1/intake", data=body, method="POST", headers={
                "Content-Type": "application/json", "X-GridVeil-Gateway": self.gw,
                "X-GridVeil-Signature": signing.sign_b64(self.key, body)})
            with urllib.request.urlopen(req, timeout=600) as r:
                r.read()

        if first:
            send(bodies.pop(0))
        with ThreadPoolExecutor(PUSHERS) as pool:
            list(pool.map(send, bodies))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _cluster_bytes(cluster: CitusCluster, db: str) -> int:
    import psycopg

    name = db.rsplit("/", 1)[-1]
    total = 0
    for node in range(len(cluster.NODES)):
        with psycopg.connect(cluster.url(name, node)) as con:
            total += con.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return total


def _peak_while(proc: subprocess.Popen, box: dict) -> threading.Thread:
    """Follow a running process's peak memory (VmHWM) until it ends."""
    def follow():
        while proc.poll() is None:
            box["peak"] = max(box.get("peak", 0.0), vm_hwm_mib(proc.pid) or 0.0)
            time.sleep(0.2)
    t = threading.Thread(target=follow, daemon=True)
    t.start()
    return t


def _restart_holders(site: Site, row: dict) -> None:
    """Restart both holders: their start-up (to READY) and their full log
    check, which starts in the background at once and must end before the
    release is timed (in service it runs once a day, niced)."""
    for h in site.holders.values():
        log = site.logs / f"{h.name}.log"
        checks = log.read_text().count("decision log verified") if log.exists() else 0
        site.stop(h)
        t = time.perf_counter()
        site.start(h, "holder", "serve", "--port", str(h.port))
        row[f"{h.name}_start_s"] = time.perf_counter() - t
        while log.read_text().count("decision log verified") <= checks:
            if time.perf_counter() - t > 900:
                raise RuntimeError(f"{h.name}: no full log check within 15 minutes")
            time.sleep(0.2)
        row[f"{h.name}_check_s"] = time.perf_counter() - t


def run(n: int, days: int, base: Path, progress=print) -> list[dict]:
    files = sorted(demo.SAMPLE_DIR.glob("household*.csv"))
    try:
        cluster = CitusCluster(shards=8)
    except PostgresUnavailable as e:
        raise ConfigError(f"bench-scale needs a Citus cluster: {e}") from None
    rows, site = [], None
    try:
        db = cluster.new_database()
        site = Site(base, gateways=1, tls=False, db_url=db, bits=2048)
        progress(f"scale: {n} meters: setting up the holders, the MDMS on Citus, a gateway ...")
        site.setup(files, customers=False)
        fleet = Fleet(site, n, files)
        for h in site.holders.values():
            site.start(h, "holder", "serve", "--port", str(h.port))
        progress(f"scale: {n} households enroll and consent ...")
        fleet.enroll_and_consent()
        site.start(site.mdms, "mdms", "serve", "--port", str(site.mdms.port))
        before = _cluster_bytes(cluster, db)
        for d in range(days):
            items, truth = fleet.day_items(d)
            t = time.perf_counter()
            fleet.push(site.mdms.url, items)
            intake_s = time.perf_counter() - t
            after = _cluster_bytes(cluster, db)
            row = {"meters": n, "day": d + 1, "items": len(items), "intake_s": intake_s,
                   "records_per_s": len(items) / intake_s,
                   "bytes_per_meter_day": (after - before) / n}
            before = after
            if d in (0, days - 1):
                _restart_holders(site, row)
            out = site.exchange / f"released-{d}.json"
            t = time.perf_counter()
            proc = subprocess.Popen(site.wrap(site.mdms.home, [
                sys.executable, "-m", "host_tools.cli", "--home", str(site.mdms.home), "mdms",
                "release", "--json", str(out)]), stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, cwd=REPO, env={**os.environ, **site.mdms.env})
            box: dict = {}
            follower = _peak_while(proc, box)
            err = proc.communicate()[1].decode()
            follower.join()
            release_s = time.perf_counter() - t
            if proc.returncode:
                raise RuntimeError(f"mdms release failed: {err[-500:]}")
            r = json.loads(out.read_text())
            got = {(a[0], a[1]): a[2] for a in r.get("aggregates", [])}
            wrong = sum(got.get(k) != v for k, v in truth.items())
            row.update(aggregates_s=r["seconds"]["aggregates"], bills_s=r["seconds"]["bills"])
            row.update(values=len(got) + len(r.get("bills", [])), aggregates=len(got),
                       bills=len(r.get("bills", [])), wrong=wrong, release_s=release_s,
                       values_per_s=(len(got) + len(r.get("bills", []))) / release_s,
                       release_peak_mib=box.get("peak", float("nan")),
                       mdms_peak_mib=vm_hwm_mib(site.mdms.proc.pid),
                       **{f"{h.name}_peak_mib": vm_hwm_mib(h.proc.pid)
                          for h in site.holders.values()})
            rows.append(row)
            progress(line(row))
    finally:
        try:
            if site is not None:
                site.stop_all()
        finally:
            cluster.stop()
    return rows


def line(r: dict) -> str:
    return (f"scale-intake: {r['meters']} meters, day {r['day']}: {r['items']} records in"
            f" {r['intake_s']:.1f} s = {r['records_per_s']:.0f} records/s,"
            f" {r['bytes_per_meter_day']:.0f} bytes per meter-day on the cluster,"
            f" MDMS peak {r['mdms_peak_mib']:.0f} MiB\n"
            f"scale-release: {r['meters']} meters, day {r['day']}: {r['aggregates']} aggregates"
            f" + {r['bills']} bills in {r['release_s']:.1f} s = {r['values_per_s']:.0f} values/s"
            f" (aggregates {r['aggregates_s']:.1f} s, bills {r['bills_s']:.1f} s)"
            f" ({r['wrong']} differ from the plaintext sums), release job peak"
            f" {r['release_peak_mib']:.0f} MiB, holders' peaks"
            f" {r['holder-guardian_peak_mib']:.0f} / {r['holder-utility_peak_mib']:.0f} MiB"
            + (f", restarted: start-up {r['holder-guardian_start_s']:.1f} /"
               f" {r['holder-utility_start_s']:.1f} s, full log check {r['holder-guardian_check_s']:.1f}"
               f" / {r['holder-utility_check_s']:.1f} s" if "holder-guardian_start_s" in r else ""))


def main(sizes=(10_000,), days: int = 2, out: Path | None = None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="gv-scale-") as t:
        os.chmod(t, 0o755)  # the database servers run as another user
        for n in sizes:
            rows += run(n, days, Path(t) / f"n{n}")
    if out:
        from . import mdsection

        mdsection.write(out, "scale", INTRO + markdown(rows))
    return rows


INTRO = """## Scale

`make bench-scale` (host_tools/benchscale.py): the MDMS on a 3-node Citus
cluster on this machine's loopback and both key holders, synthetic meters
whose gateway's signed pushes go through the MDMS's intake each day, then
`gridveil mdms release` through both holders, every aggregate checked
against the plaintext sums ("wrong"). Everything shares this machine's
cores: each rate is all-in. docs/scale.md turns the figures into a sizing.

"""


def markdown(rows: list[dict]) -> str:
    head = ("| meters | day | records | intake (records/s) | bytes per meter-day |"
            " values released (aggregates + bills) | release (values/s) | wrong |"
            " peak MiB: MDMS / release job / holders | holders restarted: start-up, full check (s) |\n"
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    return head + "".join(
        f"| {r['meters']} | {r['day']} | {r['items']} | {r['records_per_s']:.0f} |"
        f" {r['bytes_per_meter_day']:.0f} | {r['aggregates']} + {r['bills']} |"
        f" {r['values_per_s']:.0f} | {r['wrong']} | {r['mdms_peak_mib']:.0f} /"
        f" {r['release_peak_mib']:.0f} / {r['holder-guardian_peak_mib']:.0f},"
        f" {r['holder-utility_peak_mib']:.0f} | {_restarts(r)} |\n" for r in rows)


def _restarts(r: dict) -> str:
    if "holder-guardian_start_s" not in r:
        return "–"
    return (f"{r['holder-guardian_start_s']:.1f} / {r['holder-utility_start_s']:.1f},"
            f" {r['holder-guardian_check_s']:.1f} / {r['holder-utility_check_s']:.1f}")

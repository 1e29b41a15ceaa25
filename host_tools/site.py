"""A whole GridVeil deployment on one machine, each party its own process
with its own home, as `make demo` and the tests run it:

    <base>/holder-utility/   <base>/holder-guardian/   key holders (HTTP API)
    <base>/mdms/                                       MDMS: intake, web, portal (HTTP API)
    <base>/gateway-1/  <base>/gateway-2/               gateways (CoAP/OSCORE in, HTTP out)
    <base>/meters/m01 ...                              meters (MicroPython Unix port)
    <base>/exchange/                                   what the installer hands between
                                                       parties: public keys, certificates,
                                                       sealed key shares, token hashes
    <base>/logs/                                       each service's stderr

This module is the installer, not a party: it runs `gridveil` commands as
each party (confined to that party's home where the kernel allows,
host_tools/confine.py), moves only files from exchange/, and talks to the
services over the network. Holder passphrases live only in its memory and
in the environment of the one holder process each belongs to.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common.files import write_atomic

from . import confine, fleet

REPO = Path(__file__).resolve().parents[1]
NEIGHBOURHOODS = ("north", "south")
INTERVAL_S = 900
# Customers' passwords in the demo and tests only; real ones are chosen by customers.
DEMO_PASSWORD = "demo-password-not-secret"


class SiteError(Exception):
    pass


_given: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port(kind=socket.SOCK_STREAM) -> int:
    """A free port for a service that starts later. Not one from bind(0):
    that is an ephemeral port, which the kernel may hand to any outgoing
    connection before the service binds it ("Address already in use"). A
    port below the ephemeral range is only ever taken on purpose."""
    lo, hi = _ephemeral_range()
    span = range(20000, lo) if lo > 21000 else range(hi + 1, 65536)
    for _ in range(500):
        port = random.choice(span) if len(span) > 1000 else 0
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        _given.add(port)
        return port
    raise SiteError("no free port found for a service")


def descendants(pid: int) -> list[int]:
    """A process and all its live descendants, by /proc (Linux): a party's
    process tree (the gateway's PES and pool processes, a confinement
    wrapper's child)."""
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def process_name(pid: int) -> str | None:
    """What the kernel calls a process (gateway/procname.py names the
    gateway's helpers), or None once it has ended."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


@dataclass
class Party:
    name: str
    home: Path
    env: dict = field(default_factory=dict)
    port: int = 0
    url: str = ""
    proc: subprocess.Popen | None = None
    metrics_port: int = 0  # a gateway's /metrics (the others serve it on their own port)


def activation_codes(enroll_output: str) -> dict[str, str]:
    """household -> code, from what `gridveil holder enroll` printed (the
    guardian's letters)."""
    return dict(re.findall(r"^activation code for household (\S+): (\S+)", enroll_output,
                           re.M))


class Site:
    def __init__(self, base: Path, gateways: int = 2, tls: bool = True, confined: bool = True,
                 db_url: str | None = None, bits: int = 2048, k: int = 5, mdms_port: int = 0,
                 empty_ack_delay_s: float | None = 0.5, standing: bool = True):
        self.base = Path(base)
        self.standing = standing  # the guardian approves routine releases ahead of time
        # The emulated meters below wait 1 s for an ACK (ack_timeout_ms), so
        # the gateway sends its empty ACK sooner than its 1 s default; None
        # keeps the default (the bench's load generator waits 2 s, as the
        # firmware does by default).
        self.empty_ack_delay_s = empty_ack_delay_s
        self.tls = tls
        self.confined = confined and confine.available()
        self.db_url = db_url
        self.bits = bits
        self.k = k
        self.exchange = self.base / "exchange"
        self.logs = self.base / "logs"
        # The guardian's holder first: the utility's takes its signing key,
        # which every release decision must carry.
        self.holders = {role: Party(f"holder-{role}", self.base / f"holder-{role}",
                                    {"GRIDVEIL_HOLDER_PASSPHRASE": secrets.token_urlsafe(24)})
                        for role in ("guardian", "utility")}
        self.mdms = Party("mdms", self.base / "mdms", port=mdms_port)
        self.gateways = {f"gw{i}": Party(f"gateway-{i}", self.base / f"gateway-{i}",
                                         {"GRIDVEIL_GATEWAY_PASSPHRASE":
                                          secrets.token_urlsafe(24)})
                         for i in range(1, gateways + 1)}
        self.meters_dir = self.base / "meters"
        self.meter_gateway: dict[str, str] = {}
        self.assignment: dict[str, str] = {}  # meter -> neighbourhood
        self.recovery_codes: dict[str, str] = {}  # customer -> code, as `customer activate` showed it
        self.customers: dict[str, str] = {}  # meter -> customer (sealed copies)
        self.households: dict[str, str] = {}  # meter -> household (enrolled)
        self.letters = self.base / "letters"  # the guardian's codes, sent apart from the utility
        self.activated = False
        self.key_id = ""

    # --- running commands as a party -----------------------------------------
    def parties(self) -> list[Party]:
        return [*self.holders.values(), self.mdms, *self.gateways.values()]

    def homes(self) -> list[Path]:
        # The letters are the households' (the guardian's codes): no party sees them.
        return [p.home for p in self.parties()] + [self.meters_dir, self.letters]

    def wrap(self, own: Path, cmd: list[str]) -> list[str]:
        if not self.confined:
            return cmd
        own = Path(own).resolve()
        hide = [h for h in self.homes() if h.resolve() != own and not own.is_relative_to(h)]
        if own.is_relative_to(self.meters_dir.resolve()):  # a meter sees only its own folder
            hide += [d for d in self.meters_dir.iterdir() if d.resolve() != own]
        return confine.command(cmd, hide)

    def gridveil(self, party: Party | None, *args: str, env: dict | None = None,
                 home: Path | None = None) -> str:
        """Run one `gridveil` command as `party` (None: a party of its own,
        seeing no home, like the dealer or a customer); returns stdout."""
        own = party.home if party else (home or self.exchange)
        cmd = [sys.executable, "-m", "host_tools.cli", "--home", str(own), *args]
        r = subprocess.run(self.wrap(own, cmd), capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, **(party.env if party else {}), **(env or {})},
                           timeout=600)
        if r.returncode != 0:
            who = party.name if party else "installer"
            raise SiteError(f"`gridveil {' '.join(args[:3])}` as {who} failed:"
                            f" {(r.stderr.strip() or r.stdout.strip())[-2000:]}")
        return r.stdout

    def start(self, party: Party, *args: str) -> None:
        """Start a service; returns once it printed READY <url>."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{party.name}.log", "ab")
        cmd = [sys.executable, "-m", "host_tools.cli", "--home", str(party.home), *args]
        p = subprocess.Popen(self.wrap(party.home, cmd), stdout=subprocess.PIPE, stderr=log,
                             cwd=REPO, env={**os.environ, **party.env})
        line = p.stdout.readline().decode()
        if not line.startswith("READY"):
            p.kill()
            p.wait()
            raise SiteError(f"{party.name} did not start; see {self.logs / party.name}.log")
        party.proc = p
        party.url = line.split()[1] if len(line.split()) > 1 else ""

    def stop(self, party: Party, kill: bool = False) -> None:
        p = party.proc
        if p is None:
            return
        if kill:
            p.kill()
        else:
            p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        party.proc = None

    def stop_all(self) -> None:
        for p in self.parties():
            self.stop(p)

    # --- set-up ---------------------------------------------------------------
    def tls_args(self, party: Party) -> list[str]:
        return ["--tls-host", "127.0.0.1", "--export-cert",
                str(self.exchange / f"{party.name}.cert.pem")] if self.tls else []

    def ca(self, party: Party) -> list[str]:
        return ["--ca", str(self.exchange / f"{party.name}.cert.pem")] if self.tls else []

    def setup(self, files: list[Path], tariff_file: Path | None = None, customers: bool = True,
              meter_settings: dict | None = None, clock: str = "data", speed: int = 0) -> None:
        if self.base.exists():
            shutil.rmtree(self.base)
        for d in [self.exchange, self.logs, *self.homes()]:
            d.mkdir(parents=True)
            d.chmod(0o700 if d not in (self.exchange, self.logs) else 0o755)
        scheme = "https" if self.tls else "http"
        # 1. key holders, then the dealer's key ceremony, then each holder imports its share
        # The demo's policy bills single days, so that one replayed day gives
        # bills (the default is whole calendar months), and adds no noise, so
        # that the cross-check can be exact (the default is noise on).
        tariffs = [REPO / "data" / "tariffs" / "flat.json"] + ([tariff_file] if tariff_file else [])
        guardian_key = self.exchange / "holder-guardian.signing.pub"
        for role, h in self.holders.items():
            h.port = free_port()
            self.gridveil(h, "holder", "init", "--role", role, "--k", str(self.k), "--billing",
                          "days", "--dp", "off", "--min-key-bits", str(min(self.bits, 2048)),
                          "--export",
                          str(self.exchange / f"{h.name}.transport.json"), "--export-signing-key",
                          str(self.exchange / f"{h.name}.signing.pub"), *self.tls_args(h),
                          *(["--guardian-key", str(guardian_key)] if role == "utility" else []))
            self.gridveil(h, "holder", "tariff-approve", *map(str, tariffs))
        out = self.gridveil(None, "keygen", "--bits", str(self.bits), "--out",
                            str(self.exchange / "keys"),
                            *[a for role, h in self.holders.items() for a in
                              (f"--{role}", str(self.exchange / f"{h.name}.transport.json"))])
        self.key_id = out.split()[-1]
        pub = self.exchange / "keys" / f"{self.key_id}.pub.json"
        for role, h in self.holders.items():
            self.gridveil(h, "holder", "import-key", str(self.exchange / "keys" /
                                                         f"{self.key_id}.{role}.sealed.json"),
                          "--pub", str(pub))
        # the guardian lets gateways use the key: they take no other
        epoch_sig = self.exchange / "keys" / f"{self.key_id}.epoch.json"
        self.gridveil(self.holders["guardian"], "holder", "sign-epoch", "--key-id", self.key_id,
                      "--out", str(epoch_sig))
        if self.standing:
            # The demo's guardian approves every routine release ahead of time,
            # at its own holder; a real one decides its own policy (deploy.md).
            for what in ("aggregates", "bills"):
                self.gridveil(self.holders["guardian"], "holder", "standing", what, "--from",
                              "2000-01-01", "--to", "2100-01-01", "--reason",
                              "the demo: every routine release")
        # 2. the MDMS, with a token for each holder that only the MDMS knows
        self.mdms.port = self.mdms.port or free_port()
        self.gridveil(self.mdms, "mdms", "init", *(["--db", self.db_url] if self.db_url else []),
                      *self.tls_args(self.mdms))
        for role, h in self.holders.items():
            digest = self.exchange / f"mdms-token-for-{role}.sha256"
            self.gridveil(self.mdms, "mdms", "holder-add", role, "--url",
                          f"{scheme}://127.0.0.1:{h.port}", *self.ca(h), "--token-hash-out",
                          str(digest))
            self.gridveil(h, "holder", "allow", "mdms", "--token-hash-file", str(digest))
        # 3. gateways, trusted by both holders and the MDMS
        for gid, g in self.gateways.items():
            g.port = free_port(socket.SOCK_DGRAM)
            g.metrics_port = free_port()
            key = self.exchange / f"{gid}.signing.pub"
            self.gridveil(g, "gateway", "init", "--id", gid, "--port", str(g.port),
                          "--paillier-pub", str(pub), "--epoch-signature", str(epoch_sig),
                          "--guardian-key", str(self.exchange / "holder-guardian.signing.pub"),
                          "--clock", clock, "--grace", "0",
                          "--bill-grace", "0", "--seal-every", "2", "--push-every", "1",
                          "--metrics-port", str(g.metrics_port),
                          "--mdms-url", f"{scheme}://127.0.0.1:{self.mdms.port}",
                          *(["--mdms-ca", str(self.exchange / "mdms.cert.pem")] if self.tls
                            else []), "--export-key", str(key))
            if self.empty_ack_delay_s is not None:
                cfg = g.home / "gateway.json"
                cfg.write_text(json.dumps({**json.loads(cfg.read_text()),
                                           "empty_ack_delay_s": self.empty_ack_delay_s}))
            for h in [*self.holders.values(), self.mdms]:
                self.gridveil(h, *(["holder"] if h is not self.mdms else ["mdms"]),
                              "trust-gateway", gid, str(key))
            if tariff_file:
                self.gridveil(g, "tariff", "add", str(tariff_file))
        self._provision(files, tariff_file, customers, meter_settings or {}, speed)

    def _provision(self, files, tariff_file, customers: bool, meter_settings: dict,
                   speed: int) -> None:
        """Meters split evenly over the neighbourhoods (all in the first when
        too few for k in each), and dealt round-robin over the gateways, so a
        neighbourhood spans gateways and only their combined parts reach k."""
        groups = NEIGHBOURHOODS if len(files) >= self.k * len(NEIGHBOURHOODS) \
            else NEIGHBOURHOODS[:1]
        per = max(1, len(files) // len(groups))
        gids = list(self.gateways)
        plan: dict[str, list] = {gid: [] for gid in gids}
        tariff_id = json.loads(Path(tariff_file).read_text())["id"] if tariff_file else "flat"
        for i, f in enumerate(files):
            meter_id = f"m{i + 1:02d}"
            gid = gids[i % len(gids)]
            spec = {"meter_id": meter_id, "neighbourhood": groups[min(i // per, len(groups) - 1)],
                    "tariff": tariff_id, "out": str(self.exchange / "meters" / meter_id),
                    "settings": {"replay": {"file": str(Path(f).resolve()), "speed": speed},
                                 "ack_timeout_ms": 1000, "max_retransmit": 4, "retry_ms": 500,
                                 "max_retry_ms": 4000, "drain_ms": 120000, **meter_settings}}
            if customers:
                spec["customer"] = self.customers[meter_id] = f"c{i + 1:02d}"
            plan[gid].append(spec)
            self.meter_gateway[meter_id] = gid
            self.assignment[meter_id] = spec["neighbourhood"]
        # The guardian (and the utility's holder too) enrolls every meter,
        # bound to its household; a household counts toward k once it has
        # consented (activate_households). The guardian's codes go to each
        # household apart from the utility: here, a letter in exchange/letters/.
        self.households = {m: f"c{m[1:]}" for m in self.assignment}
        enrollment = self.exchange / "enrollment.json"
        enrollment.write_text(json.dumps(self.households))
        for h in self.holders.values():
            self._letters(self.gridveil(h, "holder", "enroll", "--file", str(enrollment)))
        for gid, specs in plan.items():
            g = self.gateways[gid]
            batch = self.exchange / f"{gid}.meters.json"
            batch.write_text(json.dumps(specs))
            self.gridveil(g, "provision", "--batch", str(batch))
            for s in specs:  # "flashing": the device files move to the meter
                os.rename(s["out"], self.meters_dir / s["meter_id"])

    def activate_households(self) -> None:
        """Each household activates through the portal (the MDMS and the
        guardian's holder must serve): its keys made on its side, its consent
        signed there, the letter's code proven; then every gateway takes the
        guardian's signed bindings (the households' sealing keys). Once."""
        if not self.activated:
            self._consent(self.households)
            self.activated = True

    def enroll_more(self, meters: dict[str, str]) -> None:
        """Meters provisioned after set-up (the benches' fleets), each for its
        household: enrolled at both holders, then consented to by their
        households through the portal, as activate_households does."""
        enrollment = self.exchange / "more-enrollment.json"
        enrollment.write_text(json.dumps(meters))
        for h in self.holders.values():
            self._letters(self.gridveil(h, "holder", "enroll", "--file", str(enrollment)))
        self.households.update(meters)
        self._consent(meters)

    def _letters(self, enroll_output: str) -> None:
        for household, code in activation_codes(enroll_output).items():
            write_atomic(self.letters / f"{household}.txt", (code + "\n").encode(), secret=True)

    def _consent(self, meters: dict[str, str]) -> None:
        """Each household of `meters` consents to its meters in them: a new
        one activates with its letter's code (and its recovery code is kept,
        as it would write it down), one that has already confirms."""
        mine: dict[str, list[str]] = {}
        for m, h in meters.items():
            mine.setdefault(h, []).append(m)
        ca = ["--ca", str(self.mdms_ca())] if self.tls else []

        def consent(household: str):
            new = household not in self.recovery_codes
            out = self.gridveil(None, "customer", "activate" if new else "confirm", household,
                                "--mdms", self.mdms.url, *ca, "--meters",
                                ",".join(mine[household]),
                                *(["--code-file", str(self.letters / f"{household}.txt")]
                                  if new else []),
                                env={"GRIDVEIL_CUSTOMER_PASSWORD": DEMO_PASSWORD},
                                home=self.letters)
            code = re.search(r"^recovery code for \S+: (\S+)", out, re.M)
            return household, code.group(1) if code else self.recovery_codes[household]

        with ThreadPoolExecutor(4) as pool:  # each new one makes an RSA key: side by side
            self.recovery_codes.update(pool.map(consent, sorted(mine)))
        bindings = self.exchange / "bindings"
        self.gridveil(self.mdms, "mdms", "bindings", "--out", str(bindings))
        for g in self.gateways.values():
            self.gridveil(g, "gateway", "customer-add", *sorted(map(str, bindings.iterdir())))

    # --- running ----------------------------------------------------------------
    def start_services(self) -> None:
        for h in self.holders.values():
            self.start(h, "holder", "serve", "--port", str(h.port))
        self.start(self.mdms, "mdms", "serve", "--port", str(self.mdms.port))
        self.activate_households()
        for g in self.gateways.values():
            self.start(g, "gateway", "run")

    def meter_dirs(self) -> list[Path]:
        return sorted(self.meters_dir.iterdir())

    def run_meters(self, heap: str = fleet.HEAP, timeout: float = 600, progress=None):
        runs = fleet.run_fleet(self.meter_dirs(), heap=heap, timeout=timeout, progress=progress,
                               wrap=self.wrap)
        for r in runs:
            if r.returncode != 0:
                raise SiteError(f"meter {r.meter_dir.name} exited with {r.returncode}:"
                                f" {r.output[-1500:]}")
        return runs

    def seal_and_push(self) -> None:
        """Stop the gateways, seal everything still open and push it all."""
        for g in self.gateways.values():
            self.stop(g)
            self.gridveil(g, "gateway", "seal", "--all")
            self.gridveil(g, "gateway", "push")

    def release(self, period_days: int = 1) -> dict:
        """`gridveil mdms release` as the MDMS; returns what it published."""
        out = self.exchange / f"released-{time.monotonic_ns()}.json"
        self.gridveil(self.mdms, "mdms", "release", "--period-days", str(period_days),
                      "--json", str(out))
        return json.loads(out.read_text())

    def mdms_url(self) -> str:
        return self.mdms.url

    def mdms_ca(self) -> Path | None:
        return self.exchange / "mdms.cert.pem" if self.tls else None

"""Key holders for the policy tests: each a real `gridveil holder serve`
process in its own home, its share from the dealer's ceremony, reached
over its HTTP API like the MDMS does; and a gateway store fed in process.
No process here ever holds both shares: the test talks HTTP only."""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authority.client import Authority, HolderClient, token_hash
from common import consent, records, signing
from common.files import read_json, write_json
from gateway import seal as seal_mod
from gateway.config import GatewayConfig, GatewayHome
from gateway.store import Store
from host_tools import provision
from host_tools.site import activation_codes

REPO = Path(__file__).resolve().parents[2]
PASS_ENV = "GRIDVEIL_HOLDER_PASSPHRASE"
PASSPHRASE = "a gateway passphrase"  # the in-process test gateway's


def gridveil(home: Path, *args: str, env: dict | None = None, check: bool = True):
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "--home", str(home), *args],
                       capture_output=True, text=True, cwd=REPO, timeout=300,
                       env={**os.environ, **(env or {})})
    if check:
        assert r.returncode == 0, r.stderr + r.stdout
    return r


@functools.cache
def seal_pub() -> bytes:
    """One sealing key for every test household (RSA-3072 takes a second to make)."""
    return consent.spki(rsa.generate_private_key(public_exponent=65537,
                                                 key_size=3072).public_key())


_TEMPLATES: dict[tuple, tuple[Path, dict, str, list]] = {}


class Holders:
    """Two key holders (or a single one) as the tests need them. Making them
    is a dozen `gridveil` commands and a key ceremony; each test gets a
    copy of ones made once per configuration in this test process."""

    def __init__(self, base: Path, single: bool = False, k: int = 5, bits: int = 512,
                 billing: str = "days", dp: str | dict = "off", standing: bool = True):
        self.base = Path(base)
        # The guardian's first: the utility's holder takes its signing key.
        self.roles = ("single",) if single else ("guardian", "utility")
        self.bits = bits
        self.homes = {r: self.base / f"holder-{r}" for r in self.roles}
        self.exchange = self.base / "exchange"
        self.procs: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {}
        self.codes: dict[str, str] = {}  # household -> the activation code the guardian printed
        self.to_consent: dict[str, str] = {}  # meter -> household, consent to come
        self.household_keys: dict[str, object] = {}  # household -> its consent key
        config = (single, k, bits, billing, json.dumps(dp, sort_keys=True), standing)
        if config not in _TEMPLATES:
            made = Holders.__new__(Holders)
            made.__dict__.update(self.__dict__)
            made._make(Path(tempfile.mkdtemp(prefix="holders-")), k, billing, dp, standing)
            _TEMPLATES[config] = (made.base, made.env, made.token, made.key_ids)
        template, env, self.token, key_ids = _TEMPLATES[config]
        self.env = {r: dict(v) for r, v in env.items()}
        self.key_ids = list(key_ids)
        shutil.copytree(template, self.base, dirs_exist_ok=True)

    def _make(self, base: Path, k: int, billing: str, dp, standing: bool) -> None:
        self.base = base
        self.homes = {r: base / f"holder-{r}" for r in self.roles}
        self.exchange = base / "exchange"
        self.env = {r: {PASS_ENV: secrets.token_urlsafe(16)} for r in self.roles}
        self.token = secrets.token_urlsafe(24)
        for r in self.roles:
            gridveil(self.homes[r], "holder", "init", "--role", r, "--k", str(k), "--billing",
                     billing, "--dp", dp if isinstance(dp, str) else dp.get(r, "off"),
                     "--min-key-bits", "512", "--export",
                     str(self.exchange / f"{r}.transport.json"),
                     *(["--guardian-key", str(self.homes["guardian"] / "signing.pub")]
                       if r == "utility" else []), env=self.env[r])
            gridveil(self.homes[r], "holder", "tariff-approve",
                     str(REPO / "data" / "tariffs" / "flat.json"))
            gridveil(self.homes[r], "holder", "allow", "mdms", "--token-hash",
                     token_hash(self.token))
        self.key_ids = [self.new_epoch()]
        if standing:  # the guardian approves every release ahead of time, at its own holder
            for what in ("aggregates", "bills"):
                self.desk("standing", what, "--from", "2000-01-01", "--to", "2100-01-01")

    def desk(self, *args: str, check: bool = True):
        """A command at the guardian's desk (its holder; the single one)."""
        return gridveil(self.homes[self.signer], "holder", *args, env=self.env[self.signer],
                        check=check)

    def new_epoch(self) -> str:
        out = gridveil(self.exchange, "keygen", "--bits", str(self.bits), "--out",
                       str(self.exchange / "keys"),
                       *[a for r in self.roles for a in (f"--{r}",
                                                         str(self.exchange / f"{r}.transport.json"))])
        kid = out.stdout.split()[-1]
        for r in self.roles:
            gridveil(self.homes[r], "holder", "import-key",
                     str(self.exchange / "keys" / f"{kid}.{r}.sealed.json"), "--pub",
                     str(self.pub_file(kid)), env=self.env[r])
        gridveil(self.homes[self.signer], "holder", "sign-epoch", "--key-id", kid, "--out",
                 str(self.epoch_file(kid)), env=self.env[self.signer])
        return kid

    @property
    def signer(self) -> str:
        """The holder whose signature gateways need on a key epoch."""
        return self.roles[0]  # the guardian (or the single holder)

    def epoch_file(self, kid: str | None = None) -> Path:
        return self.exchange / "keys" / f"{kid or self.key_ids[-1]}.epoch.json"

    def pub_file(self, kid: str | None = None) -> Path:
        return self.exchange / "keys" / f"{kid or self.key_ids[-1]}.pub.json"

    def set_policy(self, role: str, **changes) -> None:
        p = self.homes[role] / "policy.json"
        write_json(p, {**read_json(p, "policy"), **changes})

    def enroll(self, meters: dict[str, str], roles=None, consent: bool = True) -> None:
        """Meters, each bound to a household, at these holders (default all);
        with `consent`, each household then activates (or consents) at the
        guardian's holder, as its own device would, once the holders serve."""
        f = self.exchange / "enroll.json"
        f.write_text(json.dumps(meters))
        for r in roles or self.roles:
            out = gridveil(self.homes[r], "holder", "enroll", "--file", str(f)).stdout
            if r == self.signer:
                self.codes.update(activation_codes(out))
                if consent:
                    self.to_consent.update(meters)
        if self.procs:
            self.consent_all()

    def consent_all(self) -> None:
        """Each household's device consents to its waiting meters."""
        by_house: dict[str, list[str]] = {}
        for m, h in self.to_consent.items():
            by_house.setdefault(h, []).append(m)
        client = self.client(self.signer)
        for h, ms in by_house.items():
            key = self.household_keys.setdefault(h, ec.generate_private_key(ec.SECP256R1()))
            if h in self.codes:
                client.activate(consent.sign(key, h, ms, seal_pub(), self.codes.pop(h)))
            else:
                client.consent(consent.sign(key, h, ms, seal_pub()))
        self.to_consent.clear()

    def trust(self, gateway_id: str, pub: Path) -> None:
        for r in self.roles:
            gridveil(self.homes[r], "holder", "trust-gateway", gateway_id, str(pub))

    def start(self) -> Authority:
        self.stop()
        for r in self.roles:
            p = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "--home",
                                  str(self.homes[r]), "holder", "serve", "--port", "0"],
                                 stdout=subprocess.PIPE, stderr=open(self.base / f"{r}.log", "ab"),
                                 cwd=REPO, env={**os.environ, **self.env[r]})
            line = p.stdout.readline().decode()
            assert line.startswith("READY"), (self.base / f"{r}.log").read_text()
            self.procs[r], self.urls[r] = p, line.split()[1]
        self.consent_all()
        return self.authority()

    def client(self, role: str) -> HolderClient:
        cert = self.homes[role] / "tls" / "cert.pem"
        return HolderClient(role, self.urls[role], self.token, cert if cert.exists() else None)

    def authority(self) -> Authority:
        return Authority({r: self.client(r) for r in self.roles})

    def log(self, role: str) -> list[tuple[int, str]]:
        """(granted, "granted" or the refusal's code) of each release decision
        (the guardian's decisions and the enrollments left out)."""
        return [(e["granted"], "granted" if e["granted"] else e["reason"].split(":")[0])
                for e in self.client(role).log() if e["kind"] in ("aggregate", "bill")]

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
            p.wait(timeout=20)
        self.procs.clear()


class Gateway:
    """A gateway's store and signing key, in the test process."""

    def __init__(self, base: Path, holders: Holders, gateway_id: str = "gw1",
                 meters: dict[str, str] | None = None, enroll: bool = True):
        self.id = gateway_id
        self.home = GatewayHome(base / f"gateway-{gateway_id}")
        provision.init_gateway(self.home.path, holders.pub_file(),
                               GatewayConfig(gateway_id=gateway_id, port=5999, grace_s=0,
                                             bill_grace_s=0), holders.epoch_file(),
                               holders.homes[holders.signer] / "signing.pub", PASSPHRASE)
        for m, nbh in (meters or {}).items():
            provision.provision_meter(self.home.path, m, nbh, base / "meters" / gateway_id / m,
                                      passphrase=PASSPHRASE)
        if enroll and meters:  # each meter its own household
            holders.enroll({m: f"house-{m}" for m in meters})
        holders.trust(gateway_id, self.home.signing_pub)
        self.key = signing.load_private(self.home.signing_key, PASSPHRASE)
        self.store = Store(self.home.db)

    def seal(self):
        return seal_mod.seal(self.store, self.key, self.id, 900, 0, seal_all=True)

    def agg(self, nbh: str, end: int):
        for n, e, start, c, meters, kid, sig in self.store.sealed_rows():
            if (n, e) == (nbh, end):
                names = tuple(meters.split(","))
                return records.AggregateRecord(self.id, n, start, e, len(set(names)), c, kid,
                                               names), sig
        raise KeyError((nbh, end))

    def bill_days(self, meter_id: str) -> list[tuple]:
        rows = self.store.db.execute("SELECT day, version, signature FROM bill_signed WHERE"
                                     " meter_id=? AND signature IS NOT NULL ORDER BY day",
                                     (meter_id,)).fetchall()
        return [(seal_mod.bill_record(self.store, self.id, meter_id, d, v), sig)
                for d, v, sig in rows]


CENT = 1_000_000  # µct


def cents(exact_uct: int) -> set[int]:
    """What a released bill can be: the exact amount rounded down or up to
    a whole cent, at random (the holders' dither)."""
    return {exact_uct // CENT * CENT, -(-exact_uct // CENT) * CENT}


def group(gateways, meters, start: int, end: int, tariff: str = "flat@1",
          replace: dict | None = None) -> list[tuple]:
    """[(meter, tariff, signed day records in [start, end))] for a bill
    group; `replace` gives some meter other (meter, tariff, days)."""
    gateways = gateways if isinstance(gateways, list | tuple) else [gateways]
    out = []
    for m in meters:
        if replace and m in replace:
            out.append(replace[m])
            continue
        days = [d for gw in gateways for d in gw.bill_days(m)
                if start // 86400 <= d[0].day < end // 86400]
        out.append((m, tariff, days))
    return out

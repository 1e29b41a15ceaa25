"""A whole GridVeil deployment in a temporary directory for the tests: key
holders, the MDMS and the gateways as real processes, each in its own home
(confined to it where the kernel allows), talking HTTPS and CoAP/OSCORE on
loopback, and meters as real MicroPython processes (host_tools/site.py).

The test itself plays auditor: it may read any party's files to check what
they hold; the parties never do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from common.tariff import FLAT
from gateway.store import Store
from host_tools import demo, fleet
from host_tools.site import Site

REPO = Path(__file__).resolve().parents[2]
TEST_BITS = 1024  # speed only; docs/privacy.md states 2048 bits for deployments


@dataclass
class Released:
    aggregates: dict
    bills: dict
    refusals: list


class System(Site):
    def __init__(self, home: Path, files: list[Path], bits: int = TEST_BITS, speed: int = 0,
                 k: int = 5, settings: dict | None = None, tariff=FLAT,
                 customers: bool = False, gateways: int = 1, tls: bool = True,
                 db_url: str | None = None):
        super().__init__(home, gateways=gateways, tls=tls, db_url=db_url, bits=bits, k=k)
        self.files = files
        self.tariff = tariff
        tariff_file = None
        if tariff is not FLAT:
            tariff_file = Path(home).parent / f"{tariff.id}.json"
            tariff_file.write_text(json.dumps(tariff.to_json()))
        self.setup(files, tariff_file=tariff_file, customers=customers, meter_settings=settings,
                   speed=speed)
        self.gw = self.gateways["gw1"]
        self.gw_home = self.gw.home
        self.port = self.gw.port

    # --- services ---
    def ensure_services(self) -> None:
        for h in self.holders.values():
            if h.proc is None:
                self.start(h, "holder", "serve", "--port", str(h.port))
        if self.mdms.proc is None:
            self.start(self.mdms, "mdms", "serve", "--port", str(self.mdms.port))
        self.activate_households()

    def start_gateway(self) -> None:
        self.ensure_services()
        for g in self.gateways.values():
            if g.proc is None:
                self.start(g, "gateway", "run")

    def stop_gateway(self) -> None:
        for g in self.gateways.values():
            self.stop(g)

    def kill_gateway(self) -> None:
        self.gw.proc.send_signal(signal.SIGKILL)
        self.gw.proc.wait()
        self.gw.proc = None

    def gateway_log(self) -> str:
        p = self.logs / f"{self.gw.name}.log"
        return p.read_text() if p.exists() else ""

    # --- meters ---
    def meter_secrets(self, meter_id: str) -> dict:
        return json.loads((self.meters_dir / meter_id / "secrets.json").read_text())

    def start_meters(self, heap: str = fleet.HEAP) -> list[subprocess.Popen]:
        b = fleet.unix_build()
        return [fleet.start_meter(d, heap, build=b, wrap=self.wrap) for d in self.meter_dirs()]

    def run_meters(self, heap: str = fleet.HEAP, timeout: float = 300) -> list[fleet.MeterRun]:
        return fleet.run_fleet(self.meter_dirs(), heap=heap, timeout=timeout, wrap=self.wrap)

    # --- sealing and release ---
    def store(self, readonly: bool = False, gateway: str = "gw1") -> Store:
        return Store(self.gateways[gateway].home / "gateway.db", readonly=readonly)

    def seal_all(self) -> None:
        self.ensure_services()
        self.seal_and_push()

    def release(self, period_days: int = 1) -> Released:
        self.ensure_services()
        return Released(*demo.released_dicts(super().release(period_days)))

    def cross_check(self, released: Released, period_days: int = 1) -> tuple[bool, str]:
        as_json = {"aggregates": [[n, e, v] for (n, e), v in released.aggregates.items()],
                   "bills": [[m, d, v] for (m, d), v in released.bills.items()],
                   "refusals": released.refusals}
        return demo.cross_check(self.files, self.assignment, as_json,
                                {m: self.tariff for m in self.assignment}, period_days)

    def meter_rows(self, gateway: str = "gw1") -> list[dict]:
        """The gateway's per-meter dedup state (accepted, last_seq, ...)."""
        s = self.store(readonly=True, gateway=gateway)
        try:
            return s.meters()
        finally:
            s.close()

    def accepted(self, meter_id: str) -> int:
        """Readings the gateway has stored for this meter."""
        s = self.store(readonly=True, gateway=self.meter_gateway[meter_id])
        try:
            return {m["meter_id"]: m for m in s.meters()}[meter_id]["accepted"]
        finally:
            s.close()

    def rejects(self) -> dict:
        s = self.store(readonly=True)
        try:
            return s.rejects()
        finally:
            s.close()

    def authority(self):
        """The key holders as the MDMS reaches them (its own settings and tokens)."""
        from mdms import config

        return config.authority(self.mdms.home)

    def mdms_store(self):
        from mdms.config import MdmsHome
        from mdms.store import MdmsStore

        return MdmsStore(MdmsHome(self.mdms.home).db_url())

    def cli(self, party, *args, check=True) -> subprocess.CompletedProcess:
        """`gridveil` as a party (its home), like an operator on its host."""
        home = party.home if hasattr(party, "home") else Path(party)
        return subprocess.run([sys.executable, "-m", "host_tools.cli", "--home", str(home),
                               *args], capture_output=True, text=True, cwd=REPO, check=check,
                              env={**os.environ, **getattr(party, "env", {})})

    def close(self) -> None:
        self.stop_all()

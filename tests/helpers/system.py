"""A whole GridVeil installation in a temporary directory, with the gateway
as a real subprocess on loopback and meters as real MicroPython processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from authority.client import Authority
from common.tariff import FLAT
from gateway.config import GatewayHome
from gateway.seal import seal
from gateway.signing import load_private
from gateway.store import Store
from host_tools import demo, fleet, report

REPO = Path(__file__).resolve().parents[2]
TEST_BITS = 1024  # speed only; docs/privacy.md states 2048 bits for deployments


class System:
    def __init__(self, home: Path, files: list[Path], bits: int = TEST_BITS, speed: int = 0,
                 k: int = 5, settings: dict | None = None, tariff=FLAT,
                 customers: bool = False):
        self.home = home
        self.files = files
        self.tariff = tariff
        tariff_file = None
        if tariff is not FLAT:
            tariff_file = home.parent / f"{tariff.id}.json"
            tariff_file.write_text(json.dumps(tariff.to_json()))
        self.assignment = demo.setup(home, files, bits, k=k, speed=speed,
                                     tariff_file=tariff_file, customers=customers)
        self.gw_home = GatewayHome(home / "gateway")
        self.port = self.gw_home.load_config().port
        self.gateway: subprocess.Popen | None = None
        if settings:
            for d in self.meter_dirs():
                p = d / "settings.json"
                s = json.loads(p.read_text())
                s.update(settings)
                p.write_text(json.dumps(s))

    def meter_dirs(self) -> list[Path]:
        return sorted((self.home / "meters").iterdir())

    def meter_secrets(self, meter_id: str) -> dict:
        return json.loads((self.home / "meters" / meter_id / "secrets.json").read_text())

    # --- gateway process ---
    def start_gateway(self) -> None:
        self.gateway = demo.start_gateway(self.home, self.home / "gateway" / "gateway.log")

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            demo.stop_gateway(self.gateway)
            self.gateway = None

    def kill_gateway(self) -> None:
        self.gateway.send_signal(signal.SIGKILL)
        self.gateway.wait()
        self.gateway = None

    def gateway_log(self) -> str:
        p = self.home / "gateway" / "gateway.log"
        return p.read_text() if p.exists() else ""

    # --- meters ---
    def start_meters(self, heap: str = "64K") -> list[subprocess.Popen]:
        return [fleet.start_meter(d, heap) for d in self.meter_dirs()]

    def run_meters(self, heap: str = "64K", timeout: float = 300) -> list[fleet.MeterRun]:
        return fleet.run_fleet(self.meter_dirs(), heap=heap, timeout=timeout)

    # --- sealing and release ---
    def store(self, readonly: bool = False) -> Store:
        return Store(self.gw_home.db, readonly=readonly)

    def seal_all(self):
        s = self.store()
        try:
            return seal(s, load_private(self.gw_home.signing_key), demo.INTERVAL_S, 0,
                        seal_all=True)
        finally:
            s.close()

    def authority(self) -> Authority:
        return Authority.local(self.home / "authority")

    def release(self, period_days: int = 1, with_dp: bool = False) -> report.Released:
        s = self.store()
        a = self.authority()
        try:
            return report.release_all(s, a, period_days, with_dp)
        finally:
            a.close()
            s.close()

    def cross_check(self, released: report.Released, period_days: int = 1) -> tuple[bool, str]:
        return demo.cross_check(self.files, self.assignment, released,
                                {m: self.tariff for m in self.assignment}, period_days)

    def accepted(self, meter_id: str) -> int:
        """Readings the gateway has stored for this meter."""
        s = self.store(readonly=True)
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

    def cli(self, *args, check=True) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "host_tools.cli", "--home", str(self.home),
                               *args], capture_output=True, text=True, cwd=REPO, check=check,
                              env=dict(os.environ))

"""Each party its own service: the whole system (two gateways, two key
holders, the MDMS on a real PostgreSQL server, ten meters) runs with every
process confined to its own home (a mount namespace in which every other
party's home is an empty, read-only tmpfs), and the demo's cross-check
still passes. The test reads each running service's own view of the file
system (/proc/PID/root) to show what it can and cannot open."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers.system import System

from host_tools import confine, demo


def view(pid: int, path: Path) -> list[str]:
    """What process `pid` sees in `path`."""
    return sorted(os.listdir(Path(f"/proc/{pid}/root") / Path(path).resolve().relative_to("/")))


def test_every_party_runs_confined_to_its_own_home(tmp_path, sample_files, postgres):
    if not confine.available():
        pytest.skip("this kernel allows no mount namespace (unshare -m or -U -r -m)")
    s = System(tmp_path / "gv", sample_files, customers=True, gateways=2,
               db_url=postgres.new_database())
    try:
        assert s.confined
        for p in s.parties():
            assert p.home.stat().st_mode & 0o077 == 0  # and owner-only on disk
        gw, mdms = s.gateways["gw1"], s.mdms
        utility, guardian = s.holders["utility"], s.holders["guardian"]
        share = next((guardian.home / "keys").glob("*.share.json"))

        def run_as(party, *cmd):
            return subprocess.run(s.wrap(party.home, list(cmd)), capture_output=True).returncode

        # The mechanism: a party reads its own files and nothing of the others'.
        assert run_as(gw, "cat", str(gw.home / "gateway.json")) == 0
        assert run_as(gw, "cat", str(mdms.home / "mdms.json")) != 0
        assert run_as(mdms, "cat", str(gw.home / "gateway.db")) != 0
        assert run_as(mdms, "cat", str(share)) != 0
        assert run_as(utility, "cat", str(share)) != 0  # never both shares in one process
        assert run_as(guardian, "cat", str(share)) == 0

        s.start_gateway()
        # Every running service sees its own home and an empty place for each other.
        for p in s.parties():
            for q in s.parties():
                seen = view(p.proc.pid, q.home)
                assert (seen != []) == (p is q), (p.name, q.name, seen)
            assert view(p.proc.pid, s.meters_dir) == []
        runs = s.run_meters()
        assert all(r.returncode == 0 for r in runs), [r.output[-500:] for r in runs]
        s.seal_all()
        released = s.release()
        ok, line = s.cross_check(released)
        assert ok, line
        assert len(released.aggregates) == 192 and len(released.bills) == 10
        ok, line = demo.check_customer_copies(s, s.files)
        assert ok, line
        for log in s.logs.iterdir():
            assert "Traceback" not in log.read_text(), log
    finally:
        s.close()

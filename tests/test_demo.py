"""`gridveil demo` end to end (with a smaller key for speed): it ends by
itself with its CROSS-CHECK line, prints the web address, and can run again
straight away: it starts from a clean folder whatever an earlier run left."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_over_an_old_run_and_cross_checks(tmp_path):
    # What an earlier run (or a crash of one) leaves behind: a party's home
    # with files in it. A second full run would cost a minute of CI.
    stale = tmp_path / "demo" / "holder-guardian" / "ledger.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an earlier run")
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "demo", "--dir",
                        str(tmp_path / "demo"), "--bits", "1024"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == ("CROSS-CHECK OK: 10 bills to the cent and 192 aggregates to the Wh"
                         " match ground truth")
    assert re.search(r"customer portal at https://127\.0\.0\.1:\d+/portal", r.stdout)
    assert (tmp_path / "demo" / "web-accounts.txt").stat().st_mode & 0o077 == 0
    # Every party its own process, with its own pid and home.
    pids = {}
    for party in ("holder-utility", "holder-guardian", "mdms", "gateway-1", "gateway-2"):
        m = re.search(rf"^  {party}\s+(\d+)\s+(\S+)\s+(\S+)$", r.stdout, re.M)
        assert m, f"{party} not listed:\n{r.stdout[:3000]}"
        pids[party] = m.group(1)
        assert m.group(3) == str(tmp_path / "demo" / party)
    assert len(set(pids.values())) == 5
    assert "each confined to its own home" in r.stdout
    assert not stale.exists() or stale.read_bytes() != b"left by an earlier run"

"""Gateway -> MDMS under crashes: the push of a whole day (aggregate parts,
bill days, 960 customers' sealed copies) is SIGKILLed again and again, on
the gateway's side and on the MDMS's, at random moments. Afterwards the
MDMS holds every item exactly once, and the release is exact to the Wh and
the micro-cent. Runs on SQLite and on a real 3-node Citus cluster."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from helpers.system import REPO, System

from gateway.store import Store
from mdms.store import MdmsStore


def outbox(s: System) -> int:
    st = Store(s.gw.home / "gateway.db", readonly=True)
    try:
        return st.outbox_count()
    finally:
        st.close()


# The Citus cluster only: SQLite and plain PostgreSQL run the same SQL
# (tests/test_mdms_store.py covers all three), and each run takes a minute.
@pytest.mark.parametrize("mdms_db", ["citus"], indirect=True)
def test_push_survives_sigkill_of_either_side(tmp_path, sample_files, mdms_db):
    s = System(tmp_path / "gv", sample_files, customers=True, db_url=mdms_db)
    try:
        cfg = s.gw.home / "gateway.json"
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "push_batch": 25}))
        s.ensure_services()
        s.stop(s.mdms)  # the MDMS is down while the meters report: the outbox fills
        s.start(s.gw, "gateway", "run")
        runs = s.run_meters()
        assert all(r.returncode == 0 for r in runs)
        s.stop(s.gw)
        s.gridveil(s.gw, "gateway", "seal", "--all")
        waiting = outbox(s)
        assert waiting > 1100  # 960 copies, 192 parts, bill days, day keys, registrations

        rng = random.Random(2026)
        kills = {"gateway": 0, "mdms": 0}
        progress = []
        for _ in range(30):
            s.start(s.mdms, "mdms", "serve", "--port", str(s.mdms.port))
            push = subprocess.Popen(s.wrap(s.gw.home, [
                sys.executable, "-m", "host_tools.cli", "--home", str(s.gw.home), "gateway",
                "push"]), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env={**os.environ, **s.gw.env})
            # Once it is sending (a process starts slowly on a loaded
            # machine), a random moment into the push.
            left, started = progress[-1] if progress else waiting, time.monotonic()
            while push.poll() is None and outbox(s) >= left and time.monotonic() - started < 20:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))
            if push.poll() is None:
                victim = rng.choice(["gateway", "mdms"])
                kills[victim] += 1
                if victim == "gateway":
                    push.send_signal(signal.SIGKILL)
                else:
                    s.mdms.proc.send_signal(signal.SIGKILL)
            err = push.communicate(timeout=60)[1].decode()
            assert "Traceback" not in err
            s.stop(s.mdms, kill=True)
            progress.append(outbox(s))
            if progress[-1] == 0:
                break
        assert kills["gateway"] >= 2 and kills["mdms"] >= 2, kills
        assert any(0 < n < waiting for n in progress), "no kill landed mid-push"
        s.ensure_services()
        s.gridveil(s.gw, "gateway", "push")  # whatever is left
        assert outbox(s) == 0

        gw = Store(s.gw.home / "gateway.db", readonly=True)
        day_keys = gw.db.execute("SELECT COUNT(*) FROM customer_day_keys").fetchone()[0]
        gw.close()
        mdms = MdmsStore(mdms_db)  # the test, as auditor, reads the MDMS's database
        counts = mdms.counts()
        mdms.close()
        assert counts["sealed_readings"] == 960  # every copy, none twice
        assert counts["customer_day_keys"] == day_keys
        assert counts["aggregate_parts"] == 192 and counts["bill_days"] == 10
        assert counts["meters"] == 10
        released = s.release()
        ok, line = s.cross_check(released)
        assert ok, line
    finally:
        s.close()

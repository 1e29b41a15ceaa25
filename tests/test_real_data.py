"""The real UMass Smart* apartment week (../shared/data): 10 meters,
15-minute intervals, 7 days, through the whole system, with a time-of-use
tariff and weekly bills, checked exactly against ground truth recomputed
from the CSV files."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.system import System

from common import tariff

REPO = Path(__file__).resolve().parents[1]


def test_umass_week_matches_ground_truth(tmp_path, umass_files):
    tou = tariff.parse(json.loads((REPO / "data" / "tariffs" / "tou-3band.json").read_text()))
    s = System(tmp_path / "gv", umass_files, tariff=tou)
    s.start_gateway()
    try:
        runs = s.run_meters(timeout=900)
    finally:
        s.stop_gateway()
    for r in runs:
        assert r.returncode == 0, r.output[-2000:]
        assert "672 readings delivered, 0 still queued" in r.output
    s.seal_all()
    released = s.release(period_days=7)
    assert len(released.aggregates) == 2 * 7 * 96
    assert len(released.bills) == 10  # one ciphertext, one decryption per meter and week
    ok, line = s.cross_check(released, period_days=7)
    assert ok, line
    s.close()

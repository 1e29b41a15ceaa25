"""The real UMass Smart* apartment week (../shared/data): 10 meters,
15-minute intervals, 7 days, through the whole system, checked exactly
against ground truth recomputed from the CSV files."""

from __future__ import annotations

from helpers.system import System


def test_umass_week_matches_ground_truth(tmp_path, umass_files):
    s = System(tmp_path / "gv", umass_files)
    s.start_gateway()
    try:
        runs = s.run_meters(timeout=900)
    finally:
        s.stop_gateway()
    for r in runs:
        assert r.returncode == 0, r.output[-2000:]
        assert "672 readings delivered, 0 still queued" in r.output
    s.seal_all()
    released = s.release()
    assert len(released.aggregates) == 2 * 7 * 96
    assert len(released.bills) == 10 * 7
    ok, line = s.cross_check(released)
    assert ok, line

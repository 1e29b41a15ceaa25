"""The short form of `make soak`: meters, the gateway and the gateway's PES
process SIGKILLed at random while a day is replayed; then readings, aggregates and bills are compared
with ground truth recomputed from the data files, to the Wh."""

from __future__ import annotations

from host_tools import soak


def test_kills_lose_nothing_and_count_nothing_twice(tmp_path, sample_files):
    res = soak.run(tmp_path / "soak", sample_files, seconds=40, seed=20261129,
                   out=lambda line: None)
    print("\n" + res.summary())
    assert res.gateway_kills >= 2 and res.pes_kills >= 1 and res.meter_kills >= 5, res.summary()
    assert not res.problems, res.problems
    assert res.readings_stored == res.readings_expected == 960  # none lost, none twice
    assert res.wh_released == res.wh_truth  # not a Wh short
    assert res.cross_check.startswith("CROSS-CHECK OK"), res.cross_check
    assert res.ok

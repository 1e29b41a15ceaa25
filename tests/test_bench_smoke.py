"""`make bench` must keep working; this runs its two ingest paths on a tiny
load (figures are printed by the benchmark, never asserted here)."""

from __future__ import annotations

from host_tools import bench


def test_bench_paths_run(tmp_path, sample_files):
    site = bench.setup_site(tmp_path, sample_files, 512, customers=False)
    data = bench._readings(sample_files, 8)
    assert bench.bench_ingest(site, data) > 0
    assert bench.bench_naive(site, data) > 0
    # The full path really stored everything it acknowledged.
    from gateway.store import Store

    st = Store(site.gateways["gw1"].home / "gateway.db", readonly=True)
    assert sum(m["accepted"] for m in st.meters()) == 80
    st.close()

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


def test_esp32_board_path_delivers_with_fake_hardware(tmp_path, sample_files):
    """The ESP32 board layer, run by `make bench` for its heap figure: P1
    telegrams through a fake UART, a full pre-sync buffer, a real gateway.
    Its readings arrive, with the board's own telemetry."""
    import json

    from gateway.store import Store
    from host_tools import build

    site = bench.setup_site(tmp_path, sample_files[:1], 512, customers=False)
    lib = build.build("esp32", tmp_path / "esp32")
    assert lib
    gw = site.gateways["gw1"]
    site.start(gw, "gateway", "run")
    try:
        ok, fakes = bench._run_esp32(site, "1M", tmp_path / "esp32" / "lib")
    finally:
        site.stop(gw)
    assert ok and fakes > 0
    st = Store(gw.home / "gateway.db", readonly=True)
    (m,) = st.meters()
    st.close()
    # 180 buffered minutes (12 intervals) and two live samples, 15 min apart.
    assert m["accepted"] >= 12
    t = json.loads(m["telemetry"])
    assert t["rssi_dbm"] == -67 and t["p1_telegrams"] > 0 and t["sensor_rejects_permille"] == 0
    assert t["reset_cause"] == 3  # the fake machine's reset cause: the watchdog


def test_fleet_generator_delivers_everything_and_measures_the_ceiling(tmp_path, sample_files):
    """`make bench`'s load generator: 20 meters at once, two batches each,
    every reading stored exactly once; the same requests to the no-op
    OSCORE server all answered."""
    from gateway.store import Store
    from host_tools import fleetbench

    site = bench.setup_site(tmp_path, sample_files[:2], 512, customers=False)
    meters = fleetbench.provision_fleet(site, 20)
    payloads = [fleetbench.day_payloads(sample_files, i, 8, readings=16) for i in range(20)]
    wall, stats, _, _ = fleetbench.ceiling(site, meters, payloads)
    assert len(stats.latencies) == 40 and stats.timeouts == 0
    gw = site.gateways["gw1"]
    site.start(gw, "gateway", "run")
    try:
        wall, stats, _ = fleetbench.run(meters, payloads, gw.port)
    finally:
        site.stop(gw)
    assert len(stats.latencies) == 40 and stats.timeouts == 0 and wall > 0
    st = Store(gw.home / "gateway.db", readonly=True)
    accepted = {m["meter_id"]: m["accepted"] for m in st.meters()}
    st.close()
    assert all(accepted[f"f{i:04d}"] == 16 for i in range(1, 21))


def test_scaling_bench_seals_and_releases_what_the_fleet_sent(tmp_path, sample_files):
    """`gridveil bench --scaling` for 10 meters: one neighbourhood, so day 1
    is 96 neighbourhood-intervals and 10 bill days, all released by both
    holders; the week's other six days are sealed too (counts known in
    advance, independent of the code under test)."""
    from host_tools import scalebench

    r = scalebench.one_size(tmp_path, sample_files, 10, 512, progress=lambda _: None)
    assert (r["neighbourhoods"], r["released_aggregates"], r["released_bills"]) == (1, 96, 10)
    assert r["sealed_day1"] == 96 + 10
    assert r["day1_timeouts"] == r["week_timeouts"] == 0
    assert r["bytes_per_meter_day_7"] > 0 and r["gateway_peak_rss_mib"] > 0

"""`make bench`: gateway ingest throughput against a naive baseline, and the
firmware's footprint. Measured here, never asserted in tests.

Full ingest path: 10 meters (Python OSCORE peers on aiocoap's OSCORE, one
thread each) POST batches of 8 readings over UDP loopback to the real
gateway process: OSCORE verification, CBOR parsing, dedup, one Paillier
encryption per reading, two homomorphic additions, the customer's sealed
copy (AES-GCM, an RSA-OAEP key wrap per meter and day), one SQLite
transaction (synchronous=FULL) per batch, then the authenticated
acknowledgement.

Naive path, same readings, same process count: `phe` encrypt per reading
and a plain INSERT of the ciphertext, one autocommit per reading.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import resource
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import aiocoap

from common import paillier

from . import build, demo, fleet, groundtruth
from .oscore_peer import RawPeer, context_for, readings_payload
from .site import INTERVAL_S, Site

BATCH = 8


def _readings(files: list[Path], per_meter: int) -> dict[str, list[list[int]]]:
    out = {}
    for i, f in enumerate(files):
        iv = groundtruth.interval_energy(f, INTERVAL_S)
        ends = sorted(iv)
        register, rows = 0, []
        for seq in range(per_meter):
            end = ends[seq % len(ends)] + 86400 * (seq // len(ends))
            register += iv[ends[seq % len(ends)]]
            rows.append([seq, end, iv[ends[seq % len(ends)]], register])
        out[f"m{i + 1:02d}"] = rows
    return out


def setup_site(home: Path, files: list[Path], bits: int, customers: bool = True) -> Site:
    """One gateway and its meters; no MDMS or holders run (their pushes wait
    in the gateway's outbox, as they would during an MDMS outage)."""
    site = Site(home / "site", gateways=1, tls=False, bits=bits)
    site.setup(files, customers=customers)
    return site


def bench_ingest(site: Site, readings: dict[str, list[list[int]]]) -> float:
    gw = site.gateways["gw1"]
    site.start(gw, "gateway", "run")
    port = gw.port
    errors: list[str] = []

    def meter(meter_id: str, rows: list[list[int]]) -> None:
        import json

        secrets = json.loads((site.meters_dir / meter_id / "secrets.json").read_text())
        peer = RawPeer(context_for(secrets), port)
        try:
            for k in range(0, len(rows), BATCH):
                inner, _ = peer.post(readings_payload(meter_id, rows[k:k + BATCH]))
                if inner.code != aiocoap.CHANGED:
                    errors.append(f"{meter_id}: {inner.code}")
                    return
        finally:
            peer.close()

    try:
        threads = [threading.Thread(target=meter, args=item) for item in readings.items()]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
    finally:
        site.stop(gw)
    if errors:
        raise RuntimeError(f"ingest failed: {errors[0]}")
    return sum(len(r) for r in readings.values()) / elapsed


def bench_naive(site: Site, readings: dict[str, list[list[int]]]) -> float:
    pub = paillier.load_public(site.exchange / "keys" / f"{site.key_id}.pub.json")
    db = sqlite3.connect(site.base / "naive.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE r (meter TEXT, seq INTEGER, interval_end INTEGER, c BLOB)")
    t0 = time.perf_counter()
    for meter_id, rows in readings.items():
        for seq, end, wh, _ in rows:
            c = paillier.to_bytes(pub, pub.encrypt(wh))
            db.execute("INSERT INTO r VALUES (?, ?, ?, ?)", (meter_id, seq, end, c))
    elapsed = time.perf_counter() - t0
    db.close()
    return sum(len(r) for r in readings.values()) / elapsed


def bench_encryption(site: Site, n: int = 200) -> tuple[float, float]:
    """Encryptions a second, side by side: phe's, and the gateway's
    fixed-base one (gateway/fastenc.py, no pool: what a dry pool costs)."""
    from gateway.fastenc import FastEncryptor

    pub = paillier.load_public(site.exchange / "keys" / f"{site.key_id}.pub.json")
    fast = FastEncryptor(pub)
    t0 = time.perf_counter()
    for i in range(n):
        pub.encrypt(i)
    slow = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(n):
        fast.encrypt(i)
    return slow, n / (time.perf_counter() - t0)


def _run_meter(site: Site, heap: str, mpy_lib: Path | None = None) -> tuple[bool, float]:
    """Replay household01's day on one meter; (ok, CPU seconds). With
    mpy_lib, the firmware is loaded from that folder of .mpy files."""
    d = site.meters_dir / "m01"
    # Replay the day again from the start; the OSCORE sequence numbers carry
    # on (the gateway would rightly refuse reused ones) and the gateway
    # acknowledges the readings it already has as duplicates.
    (d / "queue.log").unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    if mpy_lib is None:  # from sources, compiled on the device at import
        p = subprocess.Popen([fleet.micropython(), "-X", f"heapsize={heap}",
                              str(fleet.FIRMWARE / "main.py")], cwd=d, env=fleet.mp_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    else:
        env = dict(fleet.mp_env(), MICROPYPATH=f"{mpy_lib}:{mpy_lib.parent}:.frozen")
        p = subprocess.Popen([fleet.micropython(), "-X", f"heapsize={heap}", "-c", "import main"],
                             cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.communicate(timeout=300)[0].decode()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return p.returncode == 0 and "96 readings delivered" in out, cpu


def _smallest_heap(site: Site, mpy_lib: Path | None) -> int:
    lo, hi = 8, 64  # KiB: lo fails, hi works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _run_meter(site, f"{mid}K", mpy_lib)[0]:
            hi = mid
        else:
            lo = mid
    return hi


def ct_accuracy() -> list[tuple[float, float, float, float]]:
    out = subprocess.run([fleet.micropython(), str(fleet.REPO / "host_tools" / "mp" / "ct_accuracy.py")],
                         env=fleet.mp_env([fleet.REPO / "host_tools" / "mp"]), capture_output=True,
                         text=True, check=True).stdout
    return [tuple(float(x) for x in line.split()[1:]) for line in out.splitlines()
            if line.startswith("CT ")]


def bench_firmware(site: Site) -> dict:
    """Smallest heap that completes a day (1 KiB steps) from sources and
    from an mpy-cross build, CPU per reading, .mpy sizes, CT accuracy."""
    with tempfile.TemporaryDirectory() as t:
        files = build.build("esp32", Path(t) / "esp32")
        sizes = {Path(f).stem: (Path(t) / "esp32" / f).stat().st_size
                 for f in files if f.endswith(".mpy")}
        build.build("unix", Path(t) / "unix")
        gw = site.gateways["gw1"]
        site.start(gw, "gateway", "run")
        try:
            ok, cpu = _run_meter(site, fleet.HEAP)
            if not ok:
                raise RuntimeError(f"the firmware failed at {fleet.HEAP}")
            # Side by side: the same day without the open interval's checkpoints.
            settings = site.meters_dir / "m01" / "settings.json"
            kept = settings.read_text()
            settings.write_text(json.dumps({**json.loads(kept), "checkpoint_s": 10**9}))
            try:
                cpu_no_checkpoints = _run_meter(site, fleet.HEAP)[1]
            finally:
                settings.write_text(kept)
            heap_src = _smallest_heap(site, None)
            heap_mpy = _smallest_heap(site, Path(t) / "unix" / "lib")
        finally:
            site.stop(gw)
    return {"min_heap_kib": heap_src, "min_heap_mpy_kib": heap_mpy,
            "cpu_ms_per_reading": cpu * 1000 / 96,
            "cpu_ms_no_checkpoints": cpu_no_checkpoints * 1000 / 96, "mpy": sizes,
            "ct": ct_accuracy()}


def main(readings: int = 400, bits: int = 2048, out: Path | None = None) -> None:
    files = sorted(demo.SAMPLE_DIR.glob("household*.csv"))
    per_meter = max(BATCH, readings // len(files))
    with tempfile.TemporaryDirectory(prefix="gridveil-bench-") as t:
        home = Path(t)
        print(f"setting up ({bits}-bit Paillier key, {len(files)} meters, {per_meter} readings each)")
        site = setup_site(home, files, bits)
        data = _readings(files, per_meter)
        n = per_meter * len(files)
        print(f"full ingest path: {n} readings over OSCORE/CoAP to the gateway ...")
        ingest = bench_ingest(site, data)
        print(f"naive path: {n} readings, phe encrypt + plain insert ...")
        naive = bench_naive(site, data)
        print("Paillier encryption alone: phe against the fixed-base encryptor ...")
        enc_phe, enc_fast = bench_encryption(site)
        print("firmware: smallest heap, CPU per reading, .mpy sizes ...")
        fw = bench_firmware(site)
    rows = [("full ingest (OSCORE, CoAP, PES, 2 accumulators, customer copy, commit, ack)",
             ingest),
            ("naive (phe encrypt + plain insert)", naive),
            ("Paillier encryption alone: phe", enc_phe),
            ("Paillier encryption alone: fixed base, 448-bit exponent, no pool", enc_fast)]
    print()
    for name, rate in rows:
        print(f"  {name:<62} {rate:8.1f} readings/s")
    mpy_total = sum(fw["mpy"].values())
    print(f"  firmware: runs a day in {fw['min_heap_kib']} KiB of heap from sources,"
          f" {fw['min_heap_mpy_kib']} KiB from .mpy (emulated meters get {fleet.HEAP});"
          f" {fw['cpu_ms_per_reading']:.2f} ms CPU per reading on the Unix port;"
          f" {mpy_total} bytes of .mpy")
    worst = max(abs(row[1]) for row in fw["ct"] if row[0] >= 1)
    print(f"  CT clamp: RMS error at most {worst:.2f} % from 1 A up (synthetic waveforms)")
    summary = (f"ingest: {ingest:.1f} readings/s; naive: {naive:.1f} readings/s; ratio"
               f" {ingest / naive:.2f}; encryption alone: fixed base {enc_fast / enc_phe:.1f}x phe")
    if out:
        write_markdown(out, bits, n, rows, fw, summary)
        print(f"results written to {out}")
    print(summary)


def write_markdown(path: Path, bits: int, n: int, rows, fw: dict, summary: str) -> None:
    mpy = "\n".join(f"| `{k}.mpy` | {v} |" for k, v in fw["mpy"].items())
    ct = "\n".join(f"| {a:g} | {e1:+.3f} | {e2:+.3f} | {e3:+.3f} |" for a, e1, e2, e3 in fw["ct"])
    cpu = platform.processor() or platform.machine()
    text = f"""# Benchmarks

Produced by `make bench` (`gridveil bench`, then `gridveil pageweight`); re-run it after any change on
a hot path. Figures are from one run; the throughput varies by a few percent
between runs.

- date: {dt.date.today()}; machine: {cpu}, Python {platform.python_version()}
- Paillier key: {bits} bits (with gmpy2); {n} readings from the sample data,
  10 meters, batches of {BATCH}

## Gateway ingest

| path | readings/s |
| --- | ---: |
""" + "\n".join(f"| {name} | {rate:.1f} |" for name, rate in rows) + f"""

`{summary}`

The full path includes everything the naive one does (one Paillier
encryption per reading, a database write) plus OSCORE verification, CBOR
parsing, dedup, two homomorphic additions per reading, the customer's
sealed copy and the network round trip, with one SQLite transaction per
batch instead of one per reading. The naive path encrypts with `phe`
(a 2048-bit exponentiation modulo n^2 per reading); the gateway encrypts
with `gateway/fastenc.py`: randomness h_s^x from a fixed-base table with a
448-bit x, made ahead by worker processes on the other cores (the same
ciphertexts for phe and the key holders; docs/privacy.md states the
assumption). Both encryption rows are measured in the same process, one
after the other.

## Firmware (MicroPython Unix port)

- smallest heap that completes one day (96 readings, the per-boot
  context agreement included): **{fw['min_heap_kib']} KiB** from `.py` sources,
  **{fw['min_heap_mpy_kib']} KiB** from the `gridveil build` `.mpy` files
  (the fleet, the demo and the tests run the `.mpy` build at {fleet.HEAP})
- CPU time per reading, whole firmware run from sources (replay parsing, register, queue on
  file, OSCORE, CoAP): **{fw['cpu_ms_per_reading']:.2f} ms**; the same day with the open
  interval's checkpoints off: {fw['cpu_ms_no_checkpoints']:.2f} ms, measured right after.
  A checkpoint every 120 s is 7.5 short appends to flash per 15-minute reading; the
  replay makes them as fast as it reads the samples, a live meter over the quarter hour.
- `gridveil build --target esp32` output: {sum(fw['mpy'].values())} bytes of `.mpy` in total

| module | bytes |
| --- | ---: |
{mpy}

## CT clamp accuracy

The driver (`firmware/ctclamp.py`) against synthetic ADC signals of known
RMS current (`host_tools/mp/ctwave.py`): `read_uv()` of a burden resistor
biased at mid-rail, in 806 µV steps (12 bits over 3.3 V), a 100 A : 50 mA
clamp into 22 Ω (90,909 mA per V), one burst of 40 samples per cycle over
2 cycles (the driver takes one every second). Error of the measured RMS
current, in percent; "distorted" adds a 20 % third harmonic, ±2 mV of
noise and a bias 150 mV below mid-rail:

| current (A) | 50 Hz sine | 50.5 Hz sine (not whole cycles) | distorted, noisy, off mid-rail |
| ---: | ---: | ---: | ---: |
{ct}
"""
    from . import mdsection

    kept = mdsection.kept(path, "flood", "pageweight")  # measured by their own commands
    Path(path).write_text(text + ("\n" + kept if kept else ""))

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
import os
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

from . import build, demo, fleet, fleetbench, groundtruth
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
    site = Site(home / "site", gateways=1, tls=False, bits=bits, empty_ack_delay_s=None)
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


def bench_encryption(site: Site, n: int = 200) -> tuple[float, float, float]:
    """Encryptions a second, side by side: phe's; the gateway's fixed-base
    one (gateway/fastenc.py) with no pool, what it sustains when the pool
    is dry; and the online part alone, with the randomness made ahead."""
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
    table = n / (time.perf_counter() - t0)

    class Ready:  # a pool whose values are already made, as between quarter hours
        values = [fast.table.randomness() for _ in range(n)]

        def take(self):
            return self.values.pop()

    fast.pool = Ready()
    t0 = time.perf_counter()
    for i in range(n):
        fast.encrypt(i)
    return slow, table, n / (time.perf_counter() - t0)


def _run_meter(site: Site, heap: str, mpy_lib: Path | None = None,
               readings: int = 96) -> tuple[bool, float]:
    """Replay household01's day (or its first `readings` quarter hours) on
    one meter; (ok, CPU seconds). With mpy_lib, the firmware is loaded
    from that folder of .mpy files."""
    d = site.meters_dir / "m01"
    if readings != 96:
        settings = json.loads((d / "settings.json").read_text())
        day = Path(settings["replay"]["file"])
        part = site.base / f"part-{readings}-{day.name}"
        lines = day.read_text().splitlines(keepends=True)
        head = [ln for ln in lines if ln.startswith("#")]
        part.write_text("".join(head + [ln for ln in lines if not ln.startswith("#")]
                                [:readings * 15]))
        d = site.base / f"m01-{readings}"
        d.mkdir(exist_ok=True)
        (d / "secrets.json").write_bytes((site.meters_dir / "m01" / "secrets.json").read_bytes())
        settings["replay"]["file"] = str(part)
        (d / "settings.json").write_text(json.dumps(settings))
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
    return p.returncode == 0 and f"{readings} readings delivered" in out, cpu


ESP32_LIVE_SAMPLES = 2
# The scan's top for the ESP32 path: on this 64-bit port its objects are
# about twice their ESP32 size, and 64 KiB is not enough here.
ESP32_TOP_KIB = 128
UNIX_TOP_KIB = 96


def _esp32_dir(site: Site) -> Path:
    """A board folder for the ESP32 path: meter m01's settings with a P1
    sensor and 1 s samples, and its secrets with Wi-Fi added (the board
    moves them into its fake NVS at boot, so each run writes them again)."""
    d = site.base / "esp32-m01"
    d.mkdir(exist_ok=True)
    src = site.meters_dir / "m01"
    settings = json.loads((src / "settings.json").read_text())
    settings.pop("replay", None)
    settings.update(board={"chip": "esp32", "watchdog_ms": 120000}, drain_ms=20000,
                    sensor={"type": "p1", "pin": 16, "sample_s": 1})
    (d / "settings.json").write_text(json.dumps(settings))
    return d


def _run_esp32(site: Site, heap: str, mpy_lib: Path | None = None) -> tuple[bool, int]:
    """The ESP32 board code on the Unix port with fakes (host_tools/mp/esp32_run.py);
    (ok, bytes that the fakes and the script hold)."""
    d = _esp32_dir(site)
    secrets = json.loads((site.meters_dir / "m01" / "secrets.json").read_text())
    (d / "secrets.json").write_text(json.dumps({**secrets, "wifi_ssid": "bench",
                                                "wifi_password": "bench"}))
    (d / "queue.log").unlink(missing_ok=True)
    code = [fleet.REPO / "boards" / "esp32", fleet.FIRMWARE] if mpy_lib is None else [mpy_lib]
    env = dict(fleet.mp_env(), MICROPYPATH=":".join(str(p) for p in [
        *code, fleet.REPO / "tests" / "firmware" / "fakes", ".frozen"]))
    p = subprocess.run([fleet.micropython(), "-X", f"heapsize={heap}",
                        str(fleet.REPO / "host_tools" / "mp" / "esp32_run.py"),
                        str(ESP32_LIVE_SAMPLES)], cwd=d, env=env, capture_output=True,
                       text=True, timeout=120)
    base = [int(ln.split()[1]) for ln in p.stdout.splitlines() if ln.startswith("ESP32BASE ")]
    return p.returncode == 0 and "ESP32RUN ok" in p.stdout, base[0] if base else 0


def _smallest_heap(run, top: int = 64) -> int | None:
    """The smallest heap (KiB) from which every larger one up to `top` also
    runs: from sources the need is not monotone (compiling can fail at a
    size between two that work), so a bisection could report either side.
    None if `top` itself fails."""
    if not run(f"{top}K"):
        return None
    kib = top
    while kib > 8 and run(f"{kib - 1}K"):
        kib -= 1
    return kib


def ct_accuracy() -> list[tuple[float, float, float, float]]:
    out = subprocess.run([fleet.micropython(), str(fleet.REPO / "host_tools" / "mp" / "ct_accuracy.py")],
                         env=fleet.mp_env([fleet.REPO / "host_tools" / "mp"]), capture_output=True,
                         text=True, check=True).stdout
    return [tuple(float(x) for x in line.split()[1:]) for line in out.splitlines()
            if line.startswith("CT ")]


def bench_firmware(site: Site) -> dict:
    """Smallest heap that completes a day, scanned down from 64 KiB in 1 KiB
    steps (from sources and from an mpy-cross build, on the Unix board's
    replay and on the ESP32 board's P1 path with fakes), CPU per reading
    as the marginal cost between a half and a whole day, .mpy sizes, CT
    accuracy."""
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
            cpu_half = _run_meter(site, fleet.HEAP, readings=48)[1]
            # Side by side: the same day without the open interval's checkpoints.
            settings = site.meters_dir / "m01" / "settings.json"
            kept = settings.read_text()
            settings.write_text(json.dumps({**json.loads(kept), "checkpoint_s": 10**9}))
            try:
                cpu_no_checkpoints = _run_meter(site, fleet.HEAP)[1]
            finally:
                settings.write_text(kept)
            unix_mpy, esp32_mpy = Path(t) / "unix" / "lib", Path(t) / "esp32" / "lib"
            ok, fakes = _run_esp32(site, "1M", esp32_mpy)
            if not ok:
                raise RuntimeError("the ESP32 board path failed even in 1M of heap")
            heap = {"unix_src": _smallest_heap(lambda h: _run_meter(site, h)[0], UNIX_TOP_KIB),
                    "unix_mpy": _smallest_heap(lambda h: _run_meter(site, h, unix_mpy)[0],
                                               UNIX_TOP_KIB),
                    "esp32_mpy": _smallest_heap(lambda h: _run_esp32(site, h, esp32_mpy)[0],
                                                ESP32_TOP_KIB),
                    "esp32_fakes_kib": fakes / 1024}
        finally:
            site.stop(gw)
    return {"heap": heap, "cpu_ms_per_reading": (cpu - cpu_half) * 1000 / 48,
            "cpu_ms_whole_run": cpu * 1000 / 96,
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
        enc_phe, enc_fast, enc_online = bench_encryption(site)
        print("firmware: smallest heap, CPU per reading, .mpy sizes ...")
        fw = bench_firmware(site)
        fl = fleetbench.bench(site, files)
    rows = [("full ingest (OSCORE, CoAP, PES, 2 accumulators, customer copy, commit, ack)",
             ingest),
            ("naive (phe encrypt + plain insert)", naive),
            ("Paillier encryption alone: phe", enc_phe),
            ("Paillier encryption alone: fixed base, 448-bit exponent, no pool", enc_fast),
            ("Paillier encryption alone: online part, randomness from the pool", enc_online)]
    print()
    for name, rate in rows:
        print(f"  {name:<62} {rate:8.1f} readings/s")
    mpy_total = sum(fw["mpy"].values())
    h = fw["heap"]
    print(f"  firmware heap (smallest from which every larger one works): Unix replay"
          f" {_kib(h['unix_src'], UNIX_TOP_KIB)} from sources,"
          f" {_kib(h['unix_mpy'], UNIX_TOP_KIB)} from .mpy; ESP32 board"
          f" path (P1, full pre-sync buffer, fakes) {_kib(h['esp32_mpy'], ESP32_TOP_KIB)} from"
          f" .mpy, of which the fakes hold {h['esp32_fakes_kib']:.1f} KiB;"
          f" margin at 64 KiB: {_margin(h['unix_mpy'])} (Unix), {_margin(h['esp32_mpy'])}"
          f" (ESP32)")
    print(f"  firmware CPU: {fw['cpu_ms_per_reading']:.2f} ms per reading (marginal, half a day"
          f" against a day); {mpy_total} bytes of .mpy")
    worst = max(abs(row[1]) for row in fw["ct"] if row[0] >= 1)
    print(f"  CT clamp: RMS error at most {worst:.2f} % from 1 A up (synthetic waveforms)")
    summary = "\n".join(_summary(naive, enc_phe, enc_fast, enc_online, fl))
    if out:
        write_markdown(out, bits, n, rows, fw, summary, fl)
        print(f"results written to {out}")
    print(summary)


def _summary(naive: float, enc_phe: float, enc_fast: float, enc_online: float,
             fl: dict) -> list[str]:
    sus, burst, c, one = fl["sustained"], fl["burst"], fl["ceiling"], fl["batch1"]
    return [
        f"encrypt: {1000 / enc_fast:.3f} ms; phe: {1000 / enc_phe:.3f} ms; ratio"
        f" {enc_fast / enc_phe:.1f} (2048 bits, fixed-base table, no pool); pool online:"
        f" {1000 / enc_online:.4f} ms",
        f"ingest: {sus['readings_per_s']:.0f} readings/s sustained, {burst['readings_per_s']:.0f}"
        f" burst; naive: {naive:.1f} readings/s; ratio {sus['readings_per_s'] / naive:.1f}"
        f" sustained, {burst['readings_per_s'] / naive:.1f} burst ({fl['meters']} meters, 8"
        f" readings per request; sustained over {sus['wall_s']:.0f} s from an empty pool)",
        f"ceiling: {c['requests_per_s']:.0f} requests/s (no-op OSCORE resource); gateway:"
        f" {one['requests_per_s']:.0f} requests/s at 1 reading per request;"
        f" {one['requests_per_s'] / c['requests_per_s']:.2f}; server CPU per request"
        f" {one['server_cpu_ms_per_request']:.2f} ms against the no-op's"
        f" {c['server_cpu_ms_per_request']:.2f} ms, generator {c['generator_cpu'] * 100:.0f} %"
        f" of a core ({os.cpu_count()} cores)",
        f"backlog: {fl['meters']} meters deliver a day each in {fl['backlog']['wall_s']:.1f} s;"
        f" p50 {fl['backlog']['p50_ms']:.0f} ms, p99 {fl['backlog']['p99_ms']:.0f} ms;"
        f" {fl['backlog']['timeouts']} exchanges timed out, {fl['backlog']['retransmits']}"
        f" retransmissions, {fl['backlog']['busy']} told to come back (5.03)"]


def _fleet_rows(fl: dict) -> str:
    runs = [("a day's backlog each, all at once, gateway just started", fl["backlog"], 8),
            ("then more days each, at once (pool kept dry)", fl["sustained"], 8),
            ("burst after 20 s idle (pool full), 250 meters", fl["burst"], 8),
            ("4 requests of 1 reading each", fl["batch1"], 1),
            ("the same, no-op OSCORE server (ceiling)", fl["ceiling"], 1)]
    return "\n".join(
        f"| {name} | {r['wall_s']:.1f} | {r['requests_per_s']:.0f} | {r['readings_per_s']:.0f} |"
        f" {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['retransmits']} | {r['separate']} |"
        f" {r['timeouts']} |"
        f" {r['busy']} | {r['generator_cpu'] * 100:.0f} % |" for name, r, _ in runs)


def _kib(v: int | None, top: int = 64) -> str:
    return f"**{v} KiB**" if v is not None else f"more than {top} KiB"


def _margin(v: int | None) -> str:
    if v is None:
        return "none: fails even at the scan's top"
    return f"{64 - v} KiB" if v <= 64 else f"none: needs {v - 64} KiB more"


def _heap_rows(h: dict) -> str:
    esp32_run = ("P1 polled every 250 ms with a whole DSMR 5 telegram at every poll, a full"
                 " pre-sync buffer (180 minutes) drained at sync, then"
                 f" {ESP32_LIVE_SAMPLES} live samples; readings delivered to the gateway")
    rows = [("Unix board, `.py` sources", "replay of one day (96 readings, per-boot context"
             " agreement)", h["unix_src"], UNIX_TOP_KIB),
            ("Unix board, `.mpy` build", "the same", h["unix_mpy"], UNIX_TOP_KIB),
            ("ESP32 board, `.mpy` build, fake hardware", esp32_run, h["esp32_mpy"],
             ESP32_TOP_KIB)]
    return "\n".join(f"| {p} | {r} | {_kib(v, top)} | {_margin(v)} |" for p, r, v, top in rows)


def write_markdown(path: Path, bits: int, n: int, rows, fw: dict, summary: str,
                   fl: dict) -> None:
    heap_rows = _heap_rows(fw["heap"])
    fleet_rows = _fleet_rows(fl)
    mpy = "\n".join(f"| `{k}.mpy` | {v} |" for k, v in fw["mpy"].items())
    ct = "\n".join(f"| {a:g} | {e1:+.3f} | {e2:+.3f} | {e3:+.3f} |" for a, e1, e2, e3 in fw["ct"])
    cpu = platform.processor() or platform.machine()
    text = f"""# Benchmarks

Produced by `make bench` (`gridveil bench`, then `gridveil pageweight`); re-run it after any change on
a hot path. The "Scaling" section comes from `make bench-scaling` (about 10
minutes), "Gateway memory under a flood" from `gridveil flood`. Figures are
from one run. On this machine (a virtual machine with neighbours) the
throughput varies by up to 20 % between runs, the ceiling included; this
is why every comparison is a ratio of two figures measured side by side in
the same run.

- date: {dt.date.today()}; machine: {cpu}, Python {platform.python_version()}
- Paillier key: {bits} bits (with gmpy2); {n} readings from the sample data,
  10 meters, batches of {BATCH}

## Gateway ingest

| path | readings/s |
| --- | ---: |
""" + "\n".join(f"| {name} | {rate:.1f} |" for name, rate in rows) + f"""

```
{summary}
```

The first table's full path: 10 meters, one thread each, batches of 8, the
customers' sealed copies included. The full path includes everything the naive one does (one Paillier
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

## A fleet at once

{fl['meters']} meters in one process (`host_tools/loadgen.py`: each its own
UDP socket and OSCORE context, one exchange at a time, RFC 7252
retransmission, 30 s for a separate response, Max-Age honoured) against
the real gateway on this machine's 2 cores, which the gateway's processes
(event loop, PES, pool worker: docs/architecture.md) and the generator
share. No customer copies here (the first table
has them). "generator" is the load generator's own CPU over the run's wall
time: far from one core, so it is not what limits the figures, but on
these 2 cores whatever it uses the gateway's processes do not get.
"resent" counts retransmitted requests (no answer within the ACK
timeout); "separate" the exchanges answered with an empty ACK first and the
response later (RFC 7252 5.2.2), which costs both sides two more datagrams.

| run | wall s | req/s | readings/s | p50 ms | p99 ms | resent | separate | timeouts | 5.03 | generator |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{fleet_rows}

The gateway's peak resident memory over these runs, its processes' peaks
added up: {fl['gateway_peak_rss_mib']:.0f} MiB (the fixed-base table is about
22 MiB, one in the PES process and one in each pool worker).
Batches that arrive together share one commit (`gateway/groupcommit.py`);
when more than 15 s of work is waiting the gateway answers 5.03 with a
Max-Age in the second half of the time the backlog needs.

## Firmware (MicroPython Unix port)

Smallest heap from which every larger heap, up to the top of the scan,
also completes the run (scanned down in 1 KiB steps: from sources the need
is not monotone, so a bisection could land on either side of a hole):

| path | run | smallest heap | margin at 64 KiB |
| --- | --- | ---: | ---: |
{heap_rows}

The ESP32 row includes {fw['heap']['esp32_fakes_kib']:.1f} KiB that the fakes
(`tests/firmware/fakes/`) and the driving script hold; on a board that is C
code. This port is 64-bit: pointers, small objects and bytecode tables are
about twice their size on the ESP32's 32-bit core, so these figures are an
upper bound, and the ESP32's true margin cannot be measured here (see
docs/hardware.md, "Memory"). The fleet, the demo and the tests run the
`.mpy` build at {fleet.HEAP}.

- CPU per reading, the marginal cost: a whole day's run minus a half
  day's, over the 48 readings between them, so start-up (the interpreter,
  imports, the context agreement) cancels out: **{fw['cpu_ms_per_reading']:.2f} ms**
  (replay parsing, register, queue on file, OSCORE, CoAP). Whole runs,
  start-up included, side by side: {fw['cpu_ms_whole_run']:.2f} ms per reading
  with the open interval's checkpoints, {fw['cpu_ms_no_checkpoints']:.2f} ms without.
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

    kept = mdsection.kept(path, "flood", "pageweight", "scaling", "scale")  # measured by their own commands
    Path(path).write_text(text + ("\n" + kept if kept else ""))

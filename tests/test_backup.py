"""Backup and restore, as an operator does them, with every party running.

The gateway is backed up while meters report, runs on, and is then
replaced by its backup (the disk died): everything it acknowledged after
the backup must come back from the meters, no reading may count twice, and
no (key, nonce) may repeat in a capture of every datagram between the
meters and the gateway, before and after the restore. (A key holder's
restore is tested with the holders, in tests/test_authority.py.)"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import aiocoap
from helpers.relay import UdpRelay
from helpers.system import System

from gateway import backup
from host_tools import demo


def scrape(url: str, ca=None) -> dict:
    """GET a service's /metrics, parsed: {(name, labels): value}."""
    import ssl
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(url, timeout=30, context=ctx) as r:
        text = r.read().decode()
    return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for fam in text_string_to_metric_families(text) for smp in fam.samples}


def oscore_fields(datagram: bytes):
    """(token, partial IV, kid context, kid, ciphertext) of an OSCORE
    message, or None for anything else (an empty ACK, a plain 4.01)."""
    try:
        msg = aiocoap.Message.decode(datagram)
    except Exception:  # noqa: BLE001 -- not CoAP: nothing to note
        return None
    value = msg.opt.oscore
    if value is None:
        return None
    value = bytes(value)
    flags = value[0] if value else 0
    n, pos = flags & 0x07, 1
    piv = value[pos:pos + n]
    pos += n
    ctx = None
    if flags & 0x10:
        s = value[pos]
        ctx = value[pos + 1:pos + 1 + s]
        pos += 1 + s
    kid = value[pos:] if flags & 0x08 else None
    return msg.token, piv, ctx, kid, msg.payload


class NonceLedger:
    """Each protected datagram's (context, partial IV), with the distinct
    ciphertexts sent under it: a retransmission repeats the very same bytes
    and is fine; two different ciphertexts under one nonce are a reuse."""

    def __init__(self):
        self.seen: dict[tuple, set[bytes]] = defaultdict(set)
        self.requests: dict[bytes, tuple] = {}  # token -> (kid, kid context, piv)
        self.count = 0

    def request(self, d: bytes) -> bytes:
        f = oscore_fields(d)
        if f is not None and f[3] is not None:
            token, piv, ctx, kid, ct = f
            ctx = ctx if ctx is not None else self.requests.get(token, (None, None))[1]
            self.requests[token] = (kid, ctx, piv)
            self.seen[("meter", kid, ctx, piv)].add(ct)
            self.count += 1
        return d

    def response(self, d: bytes) -> bytes:
        f = oscore_fields(d)
        if f is not None and f[0] in self.requests:
            token, piv, ctx, _, ct = f
            kid, req_ctx, req_piv = self.requests[token]
            # With its own partial IV the gateway's nonce is (its context, that
            # IV); without one it reuses the request's.
            key = ("gw", kid, (ctx or b"") + (req_ctx or b""), piv) if piv else \
                ("gw-req", kid, req_ctx, req_piv)
            self.seen[key].add(ct)
            self.count += 1
        return d

    def reused(self) -> list:
        return [k for k, cts in self.seen.items() if len(cts) > 1]


def test_a_gateway_restored_from_its_backup_loses_nothing_and_reuses_no_nonce(tmp_path,
                                                                             sample_files,
                                                                             request):
    files = sample_files
    # One day in about 12 s of real time: the backup, and later the loss of
    # the disk, land mid-replay.
    s = System(tmp_path / "gv", files, speed=86400 // 12, customers=True,
               settings={"ack_timeout_ms": 300, "max_retransmit": 2, "retry_ms": 300,
                         "max_retry_ms": 1000})
    request.addfinalizer(s.close)  # no service outlives the test, failed or not
    nonces = NonceLedger()
    relay = None
    try:
        s.start_gateway()
        relay = UdpRelay(s.gw.port, to_gateway=nonces.request, to_meter=nonces.response)
        for d in s.meter_dirs():  # the meters reach the gateway through the capture
            cfg = d / "settings.json"
            cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "gateway_port": relay.port}))
        meters = s.start_meters()
        time.sleep(3)
        archive = tmp_path / "backups" / "gw1.tar.gz"
        out = s.gridveil(s.gw, "gateway", "backup", "--out", str(archive))
        assert "Meters now forget the readings it holds" in out
        at_backup = backup.read_manifest(archive)["readings_through"]
        time.sleep(4)  # the gateway acknowledges more, then its disk dies
        s.kill_gateway()
        lost = {m["meter_id"]: m["last_seq"] for m in s.meter_rows()}
        assert sum(lost[m] - at_backup[m] for m in lost) >= 20, (at_backup, lost)
        out = s.gridveil(s.gw, "gateway", "restore", str(archive), "--replace")
        assert "restored as of" in out
        assert {m["meter_id"]: m["last_seq"] for m in s.meter_rows()} == at_backup
        s.start(s.gw, "gateway", "run")
        outputs = [p.communicate(timeout=180)[0].decode() for p in meters]
    finally:
        if relay is not None:
            relay.close()
    for p, text in zip(meters, outputs, strict=True):
        assert p.returncode == 0, text[-3000:]
        assert "0 still queued" in text, text[-3000:]
    assert sum("restored from a backup?" in t for t in outputs) >= 3, outputs[0][-3000:]
    gone = [line for t in outputs for line in t.splitlines() if "no longer here" in line]
    assert gone == []
    # What the operator's Prometheus sees, against what the meters sent.
    gw = scrape(f"http://127.0.0.1:{s.gw.metrics_port}/metrics")
    assert gw[("gridveil_gateway_readings_stored_total", ())] == 10 * 96
    assert gw[("gridveil_gateway_meters", ())] == 10
    assert 0 <= gw[("gridveil_gateway_backup_age_seconds", ())] < 600
    assert gw[("process_resident_memory_bytes", ())] > 10 << 20
    mdms = scrape(f"{s.mdms.url}/metrics", s.mdms_ca())
    assert mdms[("gridveil_mdms_intake_items_total", ())] > 192
    assert sum(v for (n, _), v in mdms.items() if n == "gridveil_mdms_meters") == 10
    s.stop_gateway()
    s.seal_all()
    released = s.release()
    ok, line = s.cross_check(released)  # every Wh once: none lost, none twice
    assert ok, line
    assert len(released.aggregates) == 192
    ok, line = demo.check_customer_copies(s, files)  # copies sealed after the restore open too
    assert ok, line
    for role, h in s.holders.items():
        fig = scrape(f"{h.url}/metrics", h.home / "tls" / "cert.pem")
        assert fig[("gridveil_holder_answers_total", (("outcome", "answered"),))] >= 1, role
        assert fig[("gridveil_holder_log_verified", ())] == 1
    assert nonces.count > 500
    assert nonces.reused() == []
    s.close()


def test_a_plain_context_restored_with_its_old_reservations_repeats_no_sequence_number(
        tmp_path, monkeypatch):
    """A peer without B.2 (aiocoap-client, libcoap) keeps one context with
    the gateway; the gateway's own sequence numbers for it (its Echo
    challenges after each start) were reserved in the database, which a
    restore takes back. The clock's line still puts the restored gateway
    above every number it used, and a flood of challenges cannot push it
    further ahead of that line than SEQ_SLACK."""
    import logging
    import shutil
    from collections import Counter

    from gateway import keystore
    from gateway.ratelog import RateLog
    from gateway.store import Store

    now = [keystore.SEQ_EPOCH + 86400.0]
    monkeypatch.setattr(keystore, "time", type("Clock", (), {"time": lambda: now[0]}))
    secret = keystore.MeterSecret("m01", b"\x01", bytes(16), bytes(8))

    def context(db):
        store = Store(db)
        return store, keystore.MeterContext(secret, b"gw", store, Counter(),
                                            RateLog(logging.getLogger("t")))

    store, old = context(tmp_path / "gateway.db")
    old.new_sequence_number()
    store.close()
    shutil.copy(tmp_path / "gateway.db", tmp_path / "backup.db")  # the backup
    store, old = context(tmp_path / "gateway.db")
    used = []
    for _ in range(2):  # a flood of challenges, as many as the context may answer
        while old.seqs_left() and len(used) < 10_000:
            used.append(old.new_sequence_number())
        assert not old.seqs_left()
        now[0] += 1.0  # a second later the line has moved on by SEQ_RATE
    assert keystore.SEQ_SLACK - keystore.SEQ_CHUNK < len(used) < keystore.SEQ_SLACK + keystore.SEQ_RATE
    store.close()

    now[0] += keystore.RESTORE_WAIT_S  # `gridveil gateway restore` waits this long
    store, new = context(tmp_path / "backup.db")
    assert store.reserved_seq(secret.kid) < max(used)  # the reservations went back...
    assert new.new_sequence_number() > max(used)  # ...the sequence numbers did not
    store.close()

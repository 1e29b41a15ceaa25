"""The release path where a fleet's scale makes failures ordinary: a key
holder SIGKILLed in the middle of a release loses no grant (the holders
answer a retried request with what they granted), a requester that asks
again and again gets the same noisy value every time, and two MDMS
processes behind one load balancer serve one database side by side."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.holders import REPO, Gateway, Holders, gridveil
from test_web import Client

from authority.client import Refusal
from authority.ledger import Ledger
from common import paillier, records, signing
from gateway.fastenc import FastEncryptor
from host_tools import groundtruth
from host_tools.site import free_port
from mdms.store import MdmsStore

DAY0 = 1767225600  # 2026-01-01, UTC


def _granted(holders: Holders, role: str) -> int:
    return sum(1 for e in holders.client(role).log() if e["kind"] == "aggregate"
               and e["granted"])


def _wait(cond, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_holder_killed_mid_release_loses_no_grant(tmp_path, umass_files):
    holders = Holders(tmp_path)
    meters = [f"m{i}" for i in range(1, 6)]
    gw = Gateway(tmp_path, holders, meters=dict.fromkeys(meters, "town"))
    pub = paillier.load_public(holders.pub_file())
    fast = FastEncryptor(pub)
    data = {m: [v for _, v in sorted(groundtruth.interval_energy(f).items())]
            for m, f in zip(meters, umass_files, strict=False)}
    items, truth = [], []
    for j in range(2 * 96):
        end = DAY0 + 900 * (j + 1)
        total = sum(data[m][j] for m in meters)
        rec = records.AggregateRecord(gw.id, "town", end - 900, end, 5,
                                      paillier.to_bytes(pub, fast.encrypt(total)),
                                      paillier.key_id(pub), tuple(meters))
        items.append([(rec, records.sign(gw.key, rec))])
        truth.append(total)

    auth = holders.start()
    try:
        first = auth.release_aggregates(items[:40], batch=8)  # the job's first pages
        assert [a.wh for a in first] == truth[:40]
        # Then the utility's holder freezes, the guardian's grants the page
        # in flight, and the utility's is killed: values one holder granted
        # and the other never answered.
        utility = holders.procs["utility"]
        os.kill(utility.pid, signal.SIGSTOP)
        box: dict = {}

        def release():
            try:
                box["out"] = auth.release_aggregates(items[40:], batch=8)
            except Exception as e:  # noqa: BLE001 - what the job would see
                box["error"] = e

        t = threading.Thread(target=release)
        t.start()
        _wait(lambda: _granted(holders, "guardian") > 40 // 8, "the guardian's grant")
        os.kill(utility.pid, signal.SIGKILL)
        t.join(120)
        assert "error" in box and "out" not in box, box
        assert _granted(holders, "guardian") == 40 // 8 + 1

        auth = holders.start()  # the holders come back; the job runs again
        again = auth.release_aggregates(items, batch=8)
        assert not [a for a in again if isinstance(a, Refusal)]
        assert [a.wh for a in again] == truth  # every value, to the Wh
    finally:
        holders.stop()
    for role in holders.roles:
        entries = [e for e in Ledger(holders.homes[role] / "authority.db").entries()
                   if e["kind"] == "aggregate" and e["granted"]]
        marks = [json.loads(e["marks"]) for e in entries]
        # Each interval marked released once, and the values granted before
        # the kill answered again, not refused as "already released".
        assert sum(len(m["agg"]) for m in marks) == 2 * 96, role
        assert sum(len(m.get("again", [])) for m in marks) == (48 if role == "guardian" else 40)


def _push(url: str, ca, gid: str, key, items: list) -> int:
    import urllib.request

    from common import tls

    body = json.dumps({"gateway": gid, "items": items, "health": None}).encode()
    req = urllib.request.Request(url + "/v1/intake", data=body, method="POST", headers={
        "Content-Type": "application/json", "X-GridVeil-Gateway": gid,
        "X-GridVeil-Signature": signing.sign_b64(key, body)})
    with urllib.request.urlopen(req, timeout=60, context=tls.client_context(ca)) as r:
        return r.status


def test_two_mdms_processes_serve_one_cluster_side_by_side(tmp_path, citus):
    """Intake and the web are stateless: pushes spread over two `mdms serve`
    processes on one Citus database are stored once each, whichever took
    them, and a login made at one process is good at the other."""
    db = citus.new_database()
    home = tmp_path / "mdms"
    gridveil(home, "mdms", "init", "--db", db, "--tls-host", "127.0.0.1")
    key = Ed25519PrivateKey.generate()
    (tmp_path / "gw.pub").write_bytes(signing.public_pem(key.public_key()))
    gridveil(home, "mdms", "trust-gateway", "gw1", str(tmp_path / "gw.pub"))
    gridveil(home, "mdms", "user-add", "olga", "--role", "operator",
             env={"GRIDVEIL_WEB_PASSWORD": "a long operator password"})
    procs, urls = [], []
    try:
        for _ in range(2):
            port = free_port()
            p = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "--home", str(home),
                                  "mdms", "serve", "--port", str(port)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
            line = p.stdout.readline().decode()
            assert line.startswith("READY"), line
            procs.append(p)
            urls.append(line.split()[1])
        ca = home / "tls" / "cert.pem"

        def agg(nbh: str, end: int) -> dict:
            rec = records.AggregateRecord("gw1", nbh, end - 900, end, 1, b"\x01" * 16, "k1",
                                          ("m-" + nbh,))
            return {"kind": "aggregate", "record": base64.b64encode(rec.signed_bytes()).decode(),
                    "signature": base64.b64encode(records.sign(key, rec)).decode()}

        nbhs = [f"n{i:02d}" for i in range(20)]
        _push(urls[0], ca, "gw1", key, [{"kind": "meter", "meter_id": "m-" + n,
                                         "neighbourhood": n, "customer": None,
                                         "tariff": "flat"} for n in nbhs])
        batches = [[agg(n, DAY0 + 900 * (j + 1)) for j in range(24)] for n in nbhs]

        def send(i: int) -> None:
            # Every batch to one process, and again to the other (a retry
            # after a lost answer lands wherever the balancer sends it).
            _push(urls[i % 2], ca, "gw1", key, batches[i])
            _push(urls[(i + 1) % 2], ca, "gw1", key, batches[i])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        _push(urls[1], ca, "gw1", key, [{"kind": "sealed_through", "neighbourhood": n,
                                         "through": DAY0 + 24 * 900} for n in nbhs])
        store = MdmsStore(db)
        try:
            ready = store.unreleased_aggregate_parts()
        finally:
            store.close()
        assert len(ready) == 20 * 24 and all(len(p) == 1 for p in ready.values())

        a, b = Client(urls[0], ca), Client(urls[1], ca)
        status, _ = a.staff_login("olga", "a long operator password")
        assert status == 303
        for cookie in a.jar:
            b.jar.set_cookie(cookie)
        assert b.request("GET", "/operator")[0] == 200
        assert Client(urls[1], ca).request("GET", "/operator")[0] == 303  # not logged in
    finally:
        for p in procs:
            p.terminate()
            p.wait(20)

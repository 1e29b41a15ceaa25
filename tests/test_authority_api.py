"""The key holders' local HTTP API, as the MDMS uses it: two real server
processes (utility and privacy guardian), bearer tokens, refusals as 403."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_authority import DAY0, PRICES, T1, agg, feed_day, make_env, seal_now

from authority.api import HttpHolder
from authority.client import Authority
from authority.holder import DAY, BillRequest
from authority.keys import KeyDir
from authority.policy import Refusal
from gateway.pes import PES
from gateway.seal import signed_bill_days
from gateway.signing import load_private
from gateway.store import Store

REPO = Path(__file__).resolve().parents[1]


def serve(tmp_path, role):
    token = tmp_path / f"{role}.token"
    cli = [sys.executable, "-m", "host_tools.cli", "--home", str(tmp_path)]
    subprocess.run(cli + ["authority", "token", "--holder", role, "--name", "mdms", "--out",
                          str(token)], check=True, cwd=REPO, capture_output=True)
    p = subprocess.Popen(cli + ["authority", "serve", "--holder", role, "--port", "0"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline().decode()
    assert line.startswith("READY "), p.stderr.read().decode()
    return p, line.split()[1], token.read_text().strip()


@pytest.fixture
def servers(tmp_path):
    gh = make_env(tmp_path)
    store = Store(gh.db)
    feed_day(PES(store, 900), range(1, 7))
    seal_now(store, load_private(gh.signing_key))
    procs = {role: serve(tmp_path, role) for role in ("utility", "guardian")}
    yield tmp_path, store, procs
    for p, _, _ in procs.values():
        p.terminate()
        p.wait()
    store.close()


def test_mdms_releases_through_both_holders_apis(servers):
    tmp_path, store, procs = servers
    holders = {role: HttpHolder(url, token) for role, (_, url, token) in procs.items()}
    auth = Authority(holders, KeyDir(tmp_path / "authority" / "utility" / "keys"))
    assert auth.release_aggregate(*agg(store, "big", T1)) == sum(100 + i for i in range(1, 6))
    with pytest.raises(Refusal) as e:
        auth.release_aggregate(*agg(store, "small", T1))
    assert e.value.code == "too_few"
    days = signed_bill_days(store, "m2")
    assert auth.release_bill(BillRequest("m2", DAY0, DAY0 + DAY, PRICES, days)) == \
        96 * 102 * 25_000
    with pytest.raises(Refusal) as e:
        auth.release_bill(BillRequest("m3", DAY0, DAY0 + 3600, PRICES,
                                      signed_bill_days(store, "m3")))
    assert e.value.code == "period_too_short"
    # Each holder logged each decision under the token's requester name.
    for _, url, token in procs.values():
        req = urllib.request.Request(url + "/v1/log", headers={"Authorization": f"Bearer {token}"})
        log = json.loads(urllib.request.urlopen(req).read())
        assert [(e["requester"], e["granted"]) for e in log] == \
            [("mdms", 1), ("mdms", 0), ("mdms", 1), ("mdms", 0)]


def test_api_rejects_missing_tokens_and_garbage(servers):
    _, _, procs = servers
    _, url, token = procs["utility"]
    cases = [("/v1/aggregate", b"{}", None, 401), ("/v1/aggregate", b"{}", "wrong", 401),
             ("/v1/aggregate", b"not json", token, 400),
             ("/v1/aggregate", json.dumps({"record": "AAAA", "signature": ""}).encode(), token,
              400),
             ("/v1/bill", json.dumps({"meter_id": "m1"}).encode(), token, 400),
             ("/v1/nothing", b"{}", token, 404)]
    for path, body, tok, status in cases:
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        req = urllib.request.Request(url + path, data=body, headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == status, (path, body)
    assert procs["utility"][0].poll() is None  # still serving


def test_mdms_web_reaches_holders_through_their_apis(servers):
    from mdms.releases import authority

    tmp_path, store, procs = servers
    (tmp_path / "mdms").mkdir(exist_ok=True)
    holders = {}
    for role, (_, url, token) in procs.items():
        f = tmp_path / "mdms" / f"{role}.token"
        f.write_text(token)
        f.chmod(0o600)
        holders[role] = {"url": url, "token_file": f.name}
    (tmp_path / "mdms" / "authority.json").write_text(json.dumps({"holders": holders}))
    auth = authority(tmp_path)
    assert all(isinstance(h, HttpHolder) for h in auth.holders.values())
    assert auth.release_aggregate(*agg(store, "big", T1 + 900)) == sum(100 + i for i in range(1, 6))

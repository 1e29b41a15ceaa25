"""A key holder's HTTP API as a client meets it: tokens required, garbage
and oversized bodies answered with a clear 4xx (never a traceback), and
TLS: a client trusts exactly the certificate it was given and refuses to
talk to a server showing any other."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers.holders import REPO, Holders

from authority.client import HolderClient
from common import tls
from common.files import ConfigError


@pytest.fixture(scope="module")
def holder(tmp_path_factory):
    base = tmp_path_factory.mktemp("api")
    holders = Holders(base)
    home = holders.homes["utility"]
    tls.self_signed(home / "tls" / "key.pem", home / "tls" / "cert.pem", "holder", ["127.0.0.1"])
    holders.start()
    yield holders, home / "tls" / "cert.pem"
    holders.stop()


def _post(url, path, body, token, ca):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url + path, data=body, headers=headers, method="POST")
    return urllib.request.urlopen(req, context=tls.client_context(ca), timeout=30)


def test_api_rejects_missing_tokens_and_garbage(holder):
    holders, cert = holder
    url, token = holders.urls["utility"], holders.token
    assert url.startswith("https://")  # the home's certificate is served by default
    cases = [("/v1/aggregates", b"{}", None, 401), ("/v1/aggregates", b"{}", "wrong", 401),
             ("/v1/aggregates", b"not json", token, 400),
             ("/v1/aggregates", json.dumps({"aggregates": [{"parts": [
                 {"record": "AAAA", "signature": ""}]}]}).encode(), token, 400),
             ("/v1/aggregates", json.dumps({"aggregates": "x"}).encode(), token, 400),
             ("/v1/aggregates", json.dumps({"aggregates": [{"parts": "x"}]}).encode(), token,
              400),
             ("/v1/bills", json.dumps({"meter_id": "m1"}).encode(), token, 400),
             ("/v1/bills", json.dumps({"neighbourhoods": ["../x"], "start": 0, "end": 86400,
                                       "bills": []}).encode(), token, 400),
             # The guardian's desk is not the utility's holder's to serve.
             ("/v1/requests", json.dumps({"what": "bills", "neighbourhoods": ["a"],
                                          "start": 0, "end": 1}).encode(), token, 404),
             # The MDMS's token cannot log a decision: there is no such call.
             ("/v1/decision", json.dumps({"subject": "request:1 bills", "approved": True,
                                          "reason": "ok"}).encode(), token, 404),
             ("/v1/nothing", b"{}", token, 404)]
    for path, body, tok, status in cases:
        with pytest.raises(urllib.error.HTTPError) as e:
            _post(url, path, body, tok, cert)
        assert e.value.code == status, (path, body[:40])
        assert b"Traceback" not in e.value.read()
    # An oversized upload is refused from its announced length, before the
    # body is read (the server answers and closes; the rest is never taken).
    host, port = url[len("https://"):].split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=tls.client_context(cert),
                                       timeout=30)
    conn.putrequest("POST", "/v1/aggregates")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Length", str(17 << 20))
    conn.endheaders(b"[[[[")
    assert conn.getresponse().status == 413
    conn.close()
    assert holders.procs["utility"].poll() is None  # still serving
    log = (holders.base / "utility.log").read_text()
    assert "Traceback" not in log


def test_client_refuses_a_server_with_another_certificate(holder, tmp_path):
    holders, cert = holder
    url, token = holders.urls["utility"], holders.token
    good = HolderClient("utility", url, token, cert)
    assert good.verify()["ok"]
    # A certificate for the same address, but not the one this client pins.
    tls.self_signed(tmp_path / "k.pem", tmp_path / "other.pem", "impostor", ["127.0.0.1"])
    with pytest.raises(ConfigError, match="not the one this client trusts"):
        HolderClient("utility", url, token, tmp_path / "other.pem").verify()
    with pytest.raises(ConfigError, match="needs a trust file"):
        HolderClient("utility", url, token, None)


def test_serve_refuses_half_a_tls_configuration(holder, tmp_path):
    holders, cert = holder
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "--home",
                        str(holders.homes["guardian"]), "holder", "serve", "--port", "0",
                        "--tls-cert", str(cert)], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, **holders.env["guardian"]}, timeout=60)
    assert r.returncode == 2 and "both --tls-cert and --tls-key" in r.stderr
    assert Path(cert).exists()

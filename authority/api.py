"""A key holder's small local HTTP API, and the client the MDMS uses.

    POST /v1/aggregate  {"record": b64, "signature": b64, "dp": false}
    POST /v1/bill       {"meter_id", "start", "end", "prices": {"0": 25000},
                         "days": [{"record": b64, "signature": b64}, ...]}
    GET  /v1/log        the decision log
    GET  /v1/verify     {"ok": true, "message": "..."}

Records travel as their signed bytes. A grant answers 200 with
{"kind": "value"|"partial", "number": "<decimal>", "key_id", "receipt": {"n", "hash"}};
a refusal answers 403 with {"refused": code, "message"}; bad input 400.
Every call needs `Authorization: Bearer <token>`; the holder keeps only
SHA-256 hashes of tokens, each naming the requester that the log records.
The server handles one request at a time and listens on loopback by default.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from common import records
from common.files import ConfigError, read_json, write_atomic, write_json

from .holder import Answer, BillRequest, KeyHolder
from .ledger import Receipt
from .policy import Refusal

log = logging.getLogger("gridveil.authority.api")
TOKENS = "api-tokens.json"
MAX_BODY = 4 << 20


def new_token(holder_dir: Path, requester: str, out: Path) -> None:
    """Create a bearer token for `requester`; write it to `out` (0600)."""
    path = Path(holder_dir) / TOKENS
    tokens = read_json(path, "API tokens", secret=True) if path.exists() else {}
    token = secrets.token_urlsafe(32)
    tokens[hashlib.sha256(token.encode()).hexdigest()] = requester
    write_json(path, tokens, secret=True)
    write_atomic(Path(out), (token + "\n").encode(), secret=True)


def _signed(item: dict):
    rec = records.parse(base64.b64decode(item["record"], validate=True))
    return rec, base64.b64decode(item["signature"], validate=True)


def _answer_json(a: Answer) -> dict:
    return {"kind": a.kind, "number": str(a.number), "key_id": a.key_id,
            "receipt": {"n": a.receipt.n, "hash": a.receipt.hash}}


def make_handler(holder: KeyHolder, tokens: dict[str, str]):
    class Handler(BaseHTTPRequestHandler):
        server_version = "gridveil-authority"

        def log_message(self, fmt, *args):  # requests go to our log, not stderr
            log.info("%s %s", self.address_string(), fmt % args)

        def _send(self, status: int, obj) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _requester(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return None
            return tokens.get(hashlib.sha256(auth[7:].strip().encode()).hexdigest())

        def _body(self) -> dict:
            n = int(self.headers.get("Content-Length") or 0)
            if not 0 < n <= MAX_BODY:
                raise ValueError("missing or oversized body")
            d = json.loads(self.rfile.read(n))
            if not isinstance(d, dict):
                raise ValueError("body must be a JSON object")
            return d

        def do_GET(self):
            who = self._requester()
            if who is None:
                return self._send(401, {"error": "a valid bearer token is required"})
            if self.path == "/v1/log":
                return self._send(200, holder.ledger.entries())
            if self.path == "/v1/verify":
                ok, msg = holder.ledger.verify()
                return self._send(200, {"ok": ok, "message": msg})
            return self._send(404, {"error": "no such resource"})

        def do_POST(self):
            who = self._requester()
            if who is None:
                return self._send(401, {"error": "a valid bearer token is required"})
            try:
                body = self._body()
                if self.path == "/v1/aggregate":
                    rec, sig = _signed(body)
                    if not isinstance(rec, records.AggregateRecord):
                        raise ValueError("not an aggregate record")
                    a = holder.release_aggregate(rec, sig, who, bool(body.get("dp", False)))
                elif self.path == "/v1/bill":
                    days = [_signed(x) for x in body["days"]]
                    if not all(isinstance(r, records.BillDayRecord) for r, _ in days):
                        raise ValueError("not a bill day record")
                    req = BillRequest(str(body["meter_id"]), int(body["start"]), int(body["end"]),
                                      {int(k): v for k, v in body["prices"].items()}, days)
                    a = holder.release_bill(req, who)
                else:
                    return self._send(404, {"error": "no such resource"})
            except Refusal as r:
                return self._send(403, {"refused": r.code, "message": str(r)})
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                return self._send(400, {"error": f"bad request: {e}"})
            return self._send(200, _answer_json(a))

    return Handler


def serve(holder: KeyHolder, host: str = "127.0.0.1", port: int = 8710, ready=None) -> None:
    path = holder.home.path / TOKENS
    if not path.exists():
        raise ConfigError(f"no API tokens in {holder.home.path}; create one with"
                          " `gridveil authority token`")
    tokens = read_json(path, "API tokens", secret=True)
    httpd = HTTPServer((host, port), make_handler(holder, tokens))
    log.info("%s key holder API on http://%s:%d", holder.role, host, httpd.server_port)
    if ready:
        ready(httpd.server_port)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


class HttpHolder:
    """The MDMS side: the same calls as an in-process KeyHolder."""

    def __init__(self, url: str, token: str, timeout: float = 30):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def close(self) -> None:
        pass

    def _post(self, path: str, obj: dict) -> Answer:
        req = urllib.request.Request(self.url + path, data=json.dumps(obj).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                d = json.loads(r.read())
        except urllib.error.HTTPError as e:
            d = json.loads(e.read() or b"{}")
            if e.code == 403:
                raise Refusal(d.get("refused", "refused"), d.get("message", "refused")) from None
            raise ConfigError(f"key holder at {self.url} answered {e.code}:"
                              f" {d.get('error', '')}") from None
        except urllib.error.URLError as e:
            raise ConfigError(f"cannot reach the key holder at {self.url}: {e.reason}") from None
        return Answer(d["kind"], int(d["number"]), Receipt(**d["receipt"]), d["key_id"])

    @staticmethod
    def _item(rec, sig) -> dict:
        return {"record": base64.b64encode(rec.signed_bytes()).decode(),
                "signature": base64.b64encode(sig).decode()}

    def release_aggregate(self, rec, signature, requester=None, with_dp=False) -> Answer:
        return self._post("/v1/aggregate", {**self._item(rec, signature), "dp": with_dp})

    def release_bill(self, req: BillRequest, requester=None) -> Answer:
        return self._post("/v1/bill", {
            "meter_id": req.meter_id, "start": req.start, "end": req.end,
            "prices": {str(k): v for k, v in req.prices.items()},
            "days": [self._item(r, s) for r, s in req.days]})

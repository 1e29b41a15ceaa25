"""A key holder's HTTP API (Starlette, served by uvicorn, TLS optional):

    GET  /v1/keys        {"keys": {key_id: n}}: public keys, to combine partials
    POST /v1/aggregates  {"decision": {...}, "aggregates": [{"parts": [{"record": b64,
                          "signature": b64}, ...]}, ...]}: up to 4,000 sums, each
                         granted or refused on its own (noise is the holder's
                         policy; a request that asks for none, or for some, is
                         refused as malformed). Answer: {"results": [{"pack",
                         "slot", "key_id", "contributors", "noisy"} or
                         {"refused", "message"}], "packs": [{"kind", "number",
                         "key_id", "slots"}], "receipt": {"n", "hash"}}: many
                         values to one decryption (authority/packing.py). Asked
                         again, a value granted before is answered the same.
    POST /v1/bills       {"decision", "neighbourhoods": [...], "start", "end",
                          "bills": [{"meter_id", "tariff": "id@version",
                          "days": [{"record": b64, "signature": b64}, ...]}]}:
                         every bill of those neighbourhoods for one period,
                         all answered or all refused (prices come from the
                         holder's approved tariffs, never from the request);
                         answered like /v1/aggregates, one slot per bill
    POST /v1/requests    {"what", "neighbourhoods", "start", "end", "note", "ref"}:
                         propose a release to the privacy guardian (its holder
                         only); the guardian decides at its own desk
    GET  /v1/decisions   the guardian's signed decisions (?after=N), to attach
                         to release requests (its holder only)
    GET  /v1/activation  ?household=H: the meters enrolled for it, and which wait
                         for its consent (the guardian's holder only)
    POST /v1/activate    {"consent": {...}}: a household's first consent, with the
                         proof of its activation code (common/consent.py);
                         answers the guardian's signed binding for gateways
    POST /v1/consent     {"consent": {...}}: a later consent, signed with the key
                         the household activated with
    GET  /v1/bindings    every signed binding (household, meters, sealing key)
    GET  /v1/policy      this holder's release policy (k, billing, noise), so
                         the guardian sees what it would refuse before deciding
    GET  /v1/log         the decision log: ?after=N (oldest first) or ?before=N
                         (newest first), &limit=M, &kind=K
    GET  /v1/verify      {"ok": true, "message": "..."}: the newest verification of
                         the log against the state (at start-up, then daily in
                         the background; `gridveil holder verify` runs one now)
    GET  /v1/head        the log's head {role, n, hash, signature}, signed with
                         the holder's own Ed25519 key, for auditors to keep

Records travel as their signed bytes. A refusal of a whole request
answers 403 {"refused": code, "message"}; bad input 400 with a message. Every call needs
`Authorization: Bearer <token>`; the holder keeps only SHA-256 hashes of
tokens (`gridveil holder allow`), each naming the requester its log records.
Decisions run one at a time on one worker thread, so "released once" can
never race; the decryptions run beside them on every core.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from common import metrics as common_metrics
from common import records
from common.asgi import BodyTooLarge, read_body
from common.files import ConfigError, read_json, write_json

from . import metrics as holder_metrics
from .aggregates import Decided
from .bills import BillGroup, BillRequest
from .holder import KeyHolder, check_name
from .policy import Refusal

log = logging.getLogger("gridveil.holder.api")
MAX_BODY = 16 << 20
MAX_LOG_PAGE = 5000


class NotHere(Exception):
    """A guardian's endpoint asked of the utility's holder."""


def allow(holder_dir: Path, requester: str, token_sha256: str) -> None:
    """Accept bearer tokens whose SHA-256 is `token_sha256` as `requester`.
    The token itself is made and kept by the requester (the MDMS)."""
    check_name(requester, "requester name")
    h = token_sha256.strip().lower()
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise ConfigError("the token hash must be 64 hex digits (SHA-256)")
    path = Path(holder_dir) / "api-tokens.json"
    tokens = read_json(path, "API tokens", secret=True) if path.exists() else {}
    tokens[h] = requester
    write_json(path, tokens, secret=True)


def _signed(items, kind) -> list[tuple]:
    """[(record, signature)] from the wire, every record of `kind`."""
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("each record must be an object {record, signature}")
        rec = records.parse(base64.b64decode(item["record"], validate=True))
        if not isinstance(rec, kind):
            raise ValueError(f"not a {kind.__name__}")
        out.append((rec, base64.b64decode(item["signature"], validate=True)))
    return out


def _decided_json(d: Decided, role: str) -> dict:
    """Each item's slot in the opened packs, or its refusal; the packs."""
    kind = "value" if role == "single" else "partial"
    return {"results": [{"refused": r.code, "message": str(r)} if isinstance(r, Refusal) else
                        {"pack": r.pack, "slot": r.slot, "key_id": r.key_id,
                         "contributors": r.contributors, "noisy": r.noisy}
                        for r in d.results],
            "packs": [{"kind": kind, "number": str(p.number), "key_id": p.key_id,
                       "slots": len(p.ciphertexts)} for p in d.packs],
            "receipt": {"n": d.receipt.n, "hash": d.receipt.hash}}


def create_app(holder: KeyHolder, tokens=None, secure: bool = False) -> Starlette:
    """`tokens`: a fixed {SHA-256: requester}, or by default the holder's
    tokens file, read again whenever it changes."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="holder")
    answers: Counter = Counter()  # outcome -> requests (/metrics)

    async def run(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(worker, fn, *args)

    async def opened(decided: Decided) -> dict:
        # Decisions run one at a time on `worker`; opening (the costly part,
        # on every core) runs beside it, so requests overlap there.
        await asyncio.get_running_loop().run_in_executor(None, holder.open, decided)
        return _decided_json(decided, holder.role)

    def requester(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        table = holder.home.api_tokens() if tokens is None else tokens
        return table.get(hashlib.sha256(auth[7:].strip().encode()).hexdigest())

    def endpoint(handler, needs_body: bool):
        async def wrapped(request: Request):
            who = requester(request)
            if who is None:
                return JSONResponse({"error": "a valid bearer token is required"}, 401)
            try:
                body = None
                if needs_body:
                    body = json.loads(await read_body(request, MAX_BODY))
                    if not isinstance(body, dict):
                        raise ValueError("body must be a JSON object")
                out = JSONResponse(await handler(request, who, body))
                if needs_body:
                    answers["answered"] += 1
                return out
            except BodyTooLarge:
                return JSONResponse({"error": f"body over {MAX_BODY} bytes"}, 413)
            except Refusal as r:
                answers[r.code] += 1
                return JSONResponse({"refused": r.code, "message": str(r)}, 403)
            except NotHere as e:
                return JSONResponse({"error": str(e)}, 404)
            except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as e:
                return JSONResponse({"error": f"bad request: {str(e)[:200]}"}, 400)
        return wrapped

    async def keys(request, who, body):
        return {"keys": holder.public_keys(), "role": holder.role}

    def noise_free(body):
        if "dp" in body:
            raise ValueError("noise is the holder's policy, not the request's")

    async def aggregates(request, who, body):
        noise_free(body)
        items = body["aggregates"]
        if not isinstance(items, list):
            raise ValueError("aggregates must be a list")
        signed = [_signed(i["parts"], records.AggregateRecord) for i in items]
        return await opened(await run(holder.decide_aggregates, signed, body.get("decision"),
                                      who))

    async def bills(request, who, body):
        noise_free(body)
        if "prices" in body or any("prices" in b for b in body["bills"]):
            raise ValueError("prices come from the holder's approved tariffs, not from requests")
        start, end = int(body["start"]), int(body["end"])
        group = BillGroup(tuple(check_name(n, "neighbourhood") for n in body["neighbourhoods"]),
                          start, end,
                          [BillRequest(str(b["meter_id"]), start, end, str(b["tariff"]),
                                       _signed(b["days"], records.BillDayRecord))
                           for b in body["bills"]])
        return await opened(await run(holder.decide_bills, group, body.get("decision"), who))

    def guardian_only():
        if holder.desk is None:
            raise NotHere("this holder takes no requests and makes no decisions: that is"
                              " the privacy guardian's")

    async def propose(request, who, body):
        guardian_only()
        n = await run(holder.desk.propose, who, str(body["what"]), list(body["neighbourhoods"]),
                      int(body["start"]), int(body["end"]), str(body.get("note", "")),
                      str(body.get("ref", "")))
        return {"id": n}

    async def activation(request, who, body):
        guardian_only()
        household = check_name(request.query_params.get("household", ""), "household id")
        return await run(holder.registry.waiting, household)

    async def activate(request, who, body):
        guardian_only()
        return {"binding": await run(holder.registry.activate, body.get("consent"))}

    async def consent(request, who, body):
        guardian_only()
        return {"binding": await run(holder.registry.consent, body.get("consent"))}

    async def bindings(request, who, body):
        guardian_only()
        return {"bindings": await run(holder.registry.bindings)}

    async def decisions(request, who, body):
        guardian_only()
        after = _query_int(request, "after", 0)
        limit = max(1, min(MAX_LOG_PAGE, _query_int(request, "limit", 500)))
        return {"decisions": await run(holder.desk.decisions, after, limit)}

    async def policy(request, who, body):
        return {"role": holder.role, "policy": holder.policy.to_json()}

    async def log_entries(request, who, body):
        after = _query_int(request, "after", 0)
        before = _query_int(request, "before", 0)
        limit = max(1, min(MAX_LOG_PAGE, _query_int(request, "limit", MAX_LOG_PAGE)))
        kind = request.query_params.get("kind", "")[:32]
        return {"role": holder.role,
                "entries": await run(holder.ledger.entries, after, limit, kind, before)}

    async def verify(request, who, body):
        ok, msg = holder.verification()
        return {"ok": ok, "message": msg, "role": holder.role}

    async def head(request, who, body):
        return await run(holder.head)

    async def not_found(request, exc):
        return JSONResponse({"error": "no such resource"}, 404)

    routes = [Route("/v1/keys", endpoint(keys, False)),
              Route("/v1/aggregates", endpoint(aggregates, True), methods=["POST"]),
              Route("/v1/bills", endpoint(bills, True), methods=["POST"]),
              Route("/v1/requests", endpoint(propose, True), methods=["POST"]),
              Route("/v1/decisions", endpoint(decisions, False)),
              Route("/v1/activation", endpoint(activation, False)),
              Route("/v1/activate", endpoint(activate, True), methods=["POST"]),
              Route("/v1/consent", endpoint(consent, True), methods=["POST"]),
              Route("/v1/bindings", endpoint(bindings, False)),
              Route("/v1/policy", endpoint(policy, False)),
              Route("/v1/log", endpoint(log_entries, False)),
              Route("/v1/verify", endpoint(verify, False)),
              Route("/v1/head", endpoint(head, False))]
    routes += common_metrics.starlette_routes(lambda: holder_metrics.figures(holder, answers),
                                              lambda: holder_metrics.health(holder))
    if holder.desk is not None:  # the guardian's desk, in a browser (authority/deskweb.py)
        from .deskweb import Desk

        routes += Desk(holder, secure).routes()
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


def _query_int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name, str(default))
    if not raw.isdigit() or len(raw) > 15:
        raise ValueError(f"{name} must be a whole number")
    return int(raw)


def deny(holder_dir: Path, requester: str) -> int:
    """Revoke every token of `requester`; returns how many."""
    path = Path(holder_dir) / "api-tokens.json"
    tokens = read_json(path, "API tokens", secret=True) if path.exists() else {}
    kept = {h: r for h, r in tokens.items() if r != requester}
    write_json(path, kept, secret=True)
    return len(tokens) - len(kept)


def load_tokens(holder: KeyHolder) -> dict[str, str]:
    if not holder.home.tokens.exists():
        raise ConfigError(f"no API tokens in {holder.home.path}; allow a requester with"
                          " `gridveil holder allow`")
    return read_json(holder.home.tokens, "API tokens", secret=True)

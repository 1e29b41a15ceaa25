"""The customer portal's server side. It authenticates a customer by a
verifier that the browser derives from the password (PBKDF2, then HKDF
with the label of logins; the wrapping key has another label),
and hands out only ciphertext: the customer's wrapped private key, the
day keys wrapped to it, and the sealed readings. Decryption happens in the
browser (static/portal.js); nothing here could do it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from authority.client import Refusal
from common import customer
from common.files import ConfigError, check_name
from common.tariff import FLAT

from . import auth
from .web import Web, client_key

log = logging.getLogger("gridveil.portal")

MAX_READINGS = 200_000
DEMAND_SHOWN = 96 * 62  # the neighbourhood's newest two months of quarter hours


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _keyfile(web: Web, customer_id: str) -> dict | None:
    found = web.store.customer(customer_id) if customer_id else None
    return found[0] if found else None


def _decoy(web: Web, customer_id: str) -> dict:
    # Unknown ids get stable, plausible parameters: no account enumeration.
    mac = hmac.new(web.store.secret("portal-decoy"), customer_id.encode(),
                   hashlib.sha256).digest()
    return {"name": customer.KDF_NAME, "iterations": customer.PBKDF2_ITERATIONS,
            "salt": b64(mac[:16])}


def _context(web: Web, meters: list[str]) -> dict:
    """What the browser needs beside the readings to explain them: each
    meter's tariff (its bands and prices, as the gateway bands it), the
    bills the key holders released for it, and the released demand of its
    neighbourhood, to compare with. All of it was released already; none
    of it is about another household alone (each aggregate sums at least k)."""
    info, bills, demand = [], [], {}
    for m in meters:
        row = web.store.meter(m)
        if row is None:
            continue
        # "flat" is built into every gateway, so none ever pushes it.
        t = web.store.tariff(row["gateway_id"], row["tariff"]) or \
            (FLAT.to_json() if row["tariff"] == FLAT.id else None)
        info.append({"meter": m, "neighbourhood": row["neighbourhood"], "tariff": t})
        bills += [{"meter": m, "first_day": b["first_day"], "days": b["days"],
                   "amount_uct": b["amount_uct"]} for b in web.store.bills(m)]
        nbh = row["neighbourhood"]
        if nbh not in demand:
            demand[nbh] = [[a["interval_end"], a["wh"], a["contributors"]]
                           for a in web.store.released_aggregates(nbh, limit=DEMAND_SHOWN)]
    return {"meter_info": info, "bills": bills, "neighbourhood_demand": demand}


class BadSecrets(ValueError):
    pass


def _b64d(value, size: int | None = None, limit: int = 8192) -> bytes:
    text = str(value)
    if len(text) > limit:
        raise BadSecrets(f"longer than {limit} characters")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise BadSecrets("not base64") from None
    if size is not None and len(raw) != size:
        raise BadSecrets(f"expected {size} bytes, got {len(raw)}")
    return raw


def _wrapped(w, shortest: int = 1000) -> dict:
    if not isinstance(w, dict) or w.get("alg") != "AES-GCM":
        raise BadSecrets("a wrapped key must be {alg: AES-GCM, nonce, ciphertext}")
    _b64d(w.get("nonce"), 12)
    if len(_b64d(w.get("ciphertext"))) < shortest:
        raise BadSecrets("the wrapped private key is too short to hold its key")
    return {"alg": "AES-GCM", "nonce": str(w["nonce"]), "ciphertext": str(w["ciphertext"])}


SIGNING_KEY_BYTES = 100  # a P-256 key in PKCS#8 (with the tag) is longer than this


def new_secrets(entry: dict, body: dict) -> tuple[dict, str]:
    """A customer's key file entry with what the browser re-wrapped: the
    private keys under a new password (and, after a recovery, under a new
    recovery code), and the new login verifier's hash. The server cannot
    check the wrapping (it has no key); the browser unwrapped it once more
    before sending. Raises BadSecrets."""
    try:
        kdf = {"name": body["kdf"]["name"], "iterations": body["kdf"]["iterations"],
               "salt": str(body["kdf"]["salt"])}
        customer.kdf_params(kdf)
    except (KeyError, TypeError, ConfigError) as e:
        raise BadSecrets(f"kdf: {e}") from None
    new = {**entry, "kdf": kdf, "wrapped_private_key": _wrapped(body.get("wrapped_private_key"))}
    if "signing_public_key" in entry:  # an account from an activation holds both keys
        new["wrapped_signing_key"] = _wrapped(body.get("wrapped_signing_key"), SIGNING_KEY_BYTES)
    if "recovery" in body:
        r = body["recovery"]
        if not isinstance(r, dict) or len(_b64d(r.get("salt"))) < 16:
            raise BadSecrets("recovery must be {salt, wrapped_private_key, verifier}")
        new["recovery"] = {"salt": str(r["salt"]),
                           "wrapped_private_key": _wrapped(r.get("wrapped_private_key")),
                           "verifier_hash": auth.hash_secret(_b64d(r.get("verifier"), 32))}
        if "signing_public_key" in entry:
            new["recovery"]["wrapped_signing_key"] = _wrapped(r.get("wrapped_signing_key"),
                                                              SIGNING_KEY_BYTES)
    return new, auth.hash_secret(_b64d(body.get("verifier"), 32))


def new_account(cid: str, body: dict) -> tuple[dict, str]:
    """A household's account from its activation: public keys, both private
    keys wrapped (password, recovery code), verifiers' hashes. Raises
    BadSecrets."""
    for k in ("public_key", "signing_public_key"):
        if len(_b64d(body.get(k))) < 60:
            raise BadSecrets(f"{k} must be a public key (SubjectPublicKeyInfo, base64)")
    entry = {"kind": "gridveil-customer-key", "customer_id": cid,
             "public_key": str(body["public_key"]),
             "signing_public_key": str(body["signing_public_key"])}
    return new_secrets(entry, body)


def routes(web: Web):
    def locked(keys: tuple, what: str) -> JSONResponse | None:
        """A 429 while these keys' failures keep them locked, else None."""
        wait = web.throttle.locked_for(*keys)
        if wait <= 0:
            return None
        return JSONResponse({"error": f"too many failed {what}; wait {int(wait) + 1} s"},
                            status_code=429)

    async def portal(request: Request):
        return web.render(request, "portal.html")

    async def params(request: Request):
        cid = request.query_params.get("customer", "")[:64]
        kf = _keyfile(web, cid)
        if kf is None:
            return JSONResponse(_decoy(web, cid))
        k = kf["kdf"]
        return JSONResponse({"name": k["name"], "iterations": k["iterations"], "salt": k["salt"]})

    async def login(request: Request):
        try:
            body = json.loads(await request.body())
            cid, verifier = str(body["customer"])[:64], base64.b64decode(body["verifier"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "send {customer, verifier}"}, status_code=400)
        keys = ("customer:" + cid, client_key(request))
        if refused := locked(keys, "logins"):
            return refused
        row = web.store.customer(cid)
        if row is None or not auth.check_secret(verifier, row[1]):
            web.throttle.failed(*keys)
            return JSONResponse({"error": "wrong customer id or password"}, status_code=401)
        web.throttle.succeeded(*keys)
        token, csrf = web.sessions.create(cid, "customer")
        r = JSONResponse({"csrf": csrf})
        r.set_cookie(auth.COOKIE, token, max_age=auth.SESSION_S, httponly=True,
                     samesite="strict", secure=web.cfg.secure_cookies)
        return r

    async def recovery(request: Request):
        """The private key wrapped under the recovery code: useless without
        the code's 128 bits, so anyone may fetch it; unknown ids get a
        stable decoy, as for the login parameters."""
        cid = request.query_params.get("customer", "")[:64]
        kf = _keyfile(web, cid)
        if kf is not None and "recovery" in kf:
            r = kf["recovery"]
            return JSONResponse({k: r[k] for k in ("salt", "wrapped_private_key",
                                                   "wrapped_signing_key") if k in r})
        mac = hmac.new(web.store.secret("portal-decoy"), b"recovery|" + cid.encode(),
                       hashlib.sha512).digest()
        return JSONResponse({"salt": b64(mac[:16]), "wrapped_private_key": {
            "alg": "AES-GCM", "nonce": b64(mac[16:28]), "ciphertext": b64(mac * 32)},
            "wrapped_signing_key": {"alg": "AES-GCM", "nonce": b64(mac[28:40]),
                                    "ciphertext": b64(mac[:48] * 3)}})

    async def _json(request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise BadSecrets("send JSON") from None
        if not isinstance(body, dict):
            raise BadSecrets("send a JSON object")
        return body

    async def change_password(request: Request):
        cid = request.state.session["username"]
        keys = ("customer:" + cid, client_key(request))
        if refused := locked(keys, "attempts"):
            return refused
        row = web.store.customer(cid)
        try:
            body = await _json(request)
            old = _b64d(body.get("old_verifier"), 32)
            if row is None or not auth.check_secret(old, row[1]):
                web.throttle.failed(*keys)
                return JSONResponse({"error": "your current password is not right"},
                                    status_code=403)
            # A password change keeps the recovery code as it is.
            entry, verifier_hash = new_secrets(row[0], {k: v for k, v in body.items()
                                                        if k != "recovery"})
        except BadSecrets as e:
            return JSONResponse({"error": f"malformed request: {e}"}, status_code=400)
        web.store.put_customer(cid, entry, verifier_hash)
        log.info("customer %s changed their password", cid)
        return JSONResponse({"ok": True})

    async def recover(request: Request):
        try:
            body = await _json(request)
            cid = str(body.get("customer", ""))[:64]
            proof = _b64d(body.get("recovery_verifier"), 32)
        except BadSecrets as e:
            return JSONResponse({"error": f"malformed request: {e}"}, status_code=400)
        keys = ("recover:" + cid, client_key(request))
        if refused := locked(keys, "attempts"):
            return refused
        row = web.store.customer(cid)
        stored = (row[0].get("recovery") or {}).get("verifier_hash") if row else None
        if not stored or not auth.check_secret(proof, stored):
            if not stored:
                auth.check_secret(proof, auth.hash_secret(b"x"))  # same time either way
            web.throttle.failed(*keys)
            return JSONResponse({"error": "wrong customer id or recovery code"}, status_code=401)
        if "recovery" not in body:
            return JSONResponse({"error": "malformed request: a recovery sets a new recovery"
                                          " code too"}, status_code=400)
        try:
            entry, verifier_hash = new_secrets(row[0], body)
        except BadSecrets as e:
            return JSONResponse({"error": f"malformed request: {e}"}, status_code=400)
        web.throttle.succeeded(*keys)
        web.store.put_customer(cid, entry, verifier_hash)
        web.store.end_sessions_of(cid, "customer")
        log.info("customer %s set a new password with their recovery code", cid)
        return JSONResponse({"ok": True})

    def guardian():
        return web.authority().guardian

    async def activation(request: Request):
        """What the household is asked to consent to (the guardian's list)."""
        cid = request.query_params.get("customer", "")[:64]
        try:
            w = await run_in_threadpool(guardian().activation, cid)
        except (ConfigError, Refusal) as e:
            log.warning("activation of %r: the guardian's holder said: %s", cid, e)
            return JSONResponse({"error": "the privacy guardian's holder cannot be asked now;"
                                          " try again later"}, status_code=503)
        if not w.get("to_confirm"):
            return JSONResponse({"error": "no meter waits for this household's consent"},
                                status_code=404)
        return JSONResponse({"meters": w["meters"], "to_confirm": w["to_confirm"]})

    async def activate(request: Request):
        """A household's first activation: its account, and its consent
        relayed to the guardian's holder, which checks the household's
        signature and the proof of the activation code (we can do neither)."""
        keys = ("activate", client_key(request))
        if refused := locked(keys, "activations"):
            return refused
        try:
            body = await _json(request)
            cid = str(body.get("customer", ""))[:64]
            check_name(cid, "customer id")
            entry, verifier_hash = new_account(cid, body)
            sent = body.get("consent")
            if not isinstance(sent, dict) or sent.get("household") != cid:
                raise BadSecrets("consent must be the household's own")
        except (BadSecrets, ConfigError) as e:
            return JSONResponse({"error": f"malformed request: {e}"}, status_code=400)
        if web.store.customer(cid) is not None:
            return JSONResponse({"error": "this household has activated already: log in"},
                                status_code=409)
        try:
            binding = await run_in_threadpool(guardian().activate, sent)
        except Refusal as r:
            web.throttle.failed(*keys)
            return JSONResponse({"error": f"the privacy guardian refused: {r}"}, status_code=403)
        except ConfigError as e:
            log.warning("activation of %s: %s", cid, e)
            return JSONResponse({"error": "the privacy guardian's holder cannot be asked now;"
                                          " try again later"}, status_code=503)
        web.store.put_customer(cid, entry, verifier_hash)
        log.info("household %s activated: meters %s", cid, ", ".join(binding["meters"]))
        return JSONResponse({"ok": True, "meters": binding["meters"]})

    async def consent(request: Request):
        """A logged-in household's consent to a meter enrolled since."""
        cid = request.state.session["username"]
        try:
            sent = (await _json(request)).get("consent")
            if not isinstance(sent, dict) or sent.get("household") != cid:
                raise BadSecrets("consent must be the household's own")
            binding = await run_in_threadpool(guardian().consent, sent)
        except BadSecrets as e:
            return JSONResponse({"error": f"malformed request: {e}"}, status_code=400)
        except Refusal as r:
            return JSONResponse({"error": f"the privacy guardian refused: {r}"}, status_code=403)
        except ConfigError:
            return JSONResponse({"error": "the privacy guardian's holder cannot be asked now;"
                                          " try again later"}, status_code=503)
        log.info("household %s consented: meters %s", cid, ", ".join(binding["meters"]))
        return JSONResponse({"ok": True, "meters": binding["meters"]})

    def to_confirm(cid: str) -> list[str]:
        try:
            return guardian().activation(cid).get("to_confirm", [])
        except (ConfigError, Refusal):
            return []  # the guardian's holder is away: ask again at the next login

    async def data(request: Request):
        cid = request.state.session["username"]
        kf = _keyfile(web, cid)
        if kf is None:
            return JSONResponse({"error": "no key file for this customer"}, status_code=404)
        meters = web.store.customer_meters(cid)
        day_keys, readings = [], []
        for m in meters:  # the newest readings, and the day keys that open them
            mine = web.store.sealed_readings(m, max(1, MAX_READINGS - len(readings)))
            readings += [{"meter": m, "seq": s, "day": d, "key_no": n, "nonce": b64(nc),
                          "ct": b64(ct)} for s, d, n, nc, ct in mine]
            day_keys += [{"meter": m, "day": d, "key_no": n, "wrapped": b64(w)}
                         for d, n, w in web.store.day_keys(m, mine[0][1] if mine else 0)]
        return JSONResponse({"customer": cid, "kdf": kf["kdf"],
                             "wrapped_private_key": kf["wrapped_private_key"],
                             "wrapped_signing_key": kf.get("wrapped_signing_key"),
                             "signing_public_key": kf.get("signing_public_key"),
                             "public_key": kf.get("public_key"),
                             "to_confirm": await run_in_threadpool(to_confirm, cid),
                             "meters": meters, "day_keys": day_keys, "readings": readings,
                             **_context(web, meters)})

    return [("/portal", portal, ["GET"]), ("/portal/app", portal, ["GET"]),
            ("/api/portal/params", params, ["GET"]), ("/api/portal/login", login, ["POST"]),
            ("/api/portal/data", data, ["GET"]), ("/api/portal/recovery", recovery, ["GET"]),
            ("/api/portal/recover", recover, ["POST"]),
            ("/api/portal/password", change_password, ["POST"]),
            ("/api/portal/activation", activation, ["GET"]),
            ("/api/portal/activate", activate, ["POST"]),
            ("/api/portal/consent", consent, ["POST"])]

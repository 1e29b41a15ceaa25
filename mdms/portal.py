"""The customer portal's server side. It authenticates a customer by a
verifier that the browser derives from the password (PBKDF2, its own salt),
and hands out only ciphertext: the customer's wrapped private key, the
day keys wrapped to it, and the sealed readings. Decryption happens in the
browser (static/portal.js); nothing here could do it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from starlette.requests import Request
from starlette.responses import JSONResponse

from common.files import ConfigError, read_json
from gateway.config import GatewayHome
from gateway.store import Store, StoreError

from . import auth
from .web import Web, client_key

MAX_READINGS = 200_000


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def register_customer(web_store, customer_id: str, keyfile: dict, password: str) -> None:
    """At customer creation: keep a slow hash of the login verifier only."""
    from common import customer

    verifier = customer.auth_verifier(keyfile, password)
    web_store.db.execute("INSERT OR REPLACE INTO customer_logins VALUES (?, ?)",
                         (customer_id, auth.hash_secret(verifier)))


def _keyfile(web: Web, customer_id: str) -> dict | None:
    if not customer_id or "/" in customer_id or customer_id.startswith("."):
        return None
    path = web.cfg.home / "customers" / f"{customer_id}.json"
    if not path.exists():
        return None
    try:
        return read_json(path, "customer key file", secret=True)
    except ConfigError:
        return None


def _decoy(web: Web, customer_id: str) -> dict:
    # Unknown ids get stable, plausible parameters: no account enumeration.
    mac = hmac.new(web.store.secret("portal-decoy"), customer_id.encode(),
                   hashlib.sha256).digest()
    return {"iterations": 600_000, "salt_auth": b64(mac[:16]), "salt_wrap": b64(mac[16:])}


def routes(web: Web):
    async def portal(request: Request):
        return web.render(request, "portal.html")

    async def params(request: Request):
        cid = request.query_params.get("customer", "")[:64]
        kf = _keyfile(web, cid)
        if kf is None:
            return JSONResponse(_decoy(web, cid))
        k = kf["kdf"]
        return JSONResponse({"iterations": k["iterations"], "salt_auth": k["salt_auth"],
                             "salt_wrap": k["salt_wrap"]})

    async def login(request: Request):
        try:
            body = json.loads(await request.body())
            cid, verifier = str(body["customer"])[:64], base64.b64decode(body["verifier"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "send {customer, verifier}"}, status_code=400)
        keys = ("customer:" + cid, client_key(request))
        wait = web.throttle.locked_for(*keys)
        if wait > 0:
            return JSONResponse({"error": f"too many failed logins; wait {int(wait) + 1} s"},
                                status_code=429)
        row = web.store.db.execute("SELECT verifier_hash FROM customer_logins WHERE"
                                   " customer_id=?", (cid,)).fetchone()
        if row is None or not auth.check_secret(verifier, row[0]):
            web.throttle.failed(*keys)
            return JSONResponse({"error": "wrong customer id or password"}, status_code=401)
        web.throttle.succeeded(*keys)
        token, csrf = web.sessions.create(cid, "customer")
        r = JSONResponse({"csrf": csrf})
        r.set_cookie(auth.COOKIE, token, max_age=auth.SESSION_S, httponly=True,
                     samesite="strict", secure=web.cfg.secure_cookies)
        return r

    async def data(request: Request):
        cid = request.state.session["username"]
        kf = _keyfile(web, cid)
        if kf is None:
            return JSONResponse({"error": "no key file for this customer"}, status_code=404)
        try:
            gw = Store(GatewayHome(web.cfg.home / "gateway").db, readonly=True)
        except StoreError as e:
            return JSONResponse({"error": str(e)}, status_code=503)
        try:
            meters = [r[0] for r in gw.db.execute(
                "SELECT meter_id FROM meters WHERE customer=? ORDER BY meter_id", (cid,))]
            marks = ",".join("?" * len(meters))
            day_keys = [{"meter": m, "day": d, "key_no": n, "wrapped": b64(w)}
                        for m, d, n, w in gw.db.execute(
                            f"SELECT meter_id, day, key_no, wrapped FROM customer_day_keys"
                            f" WHERE meter_id IN ({marks})", meters)]
            readings = [{"meter": m, "seq": s, "day": d, "key_no": n, "nonce": b64(nc),
                         "ct": b64(ct)}
                        for m, s, d, n, nc, ct in gw.db.execute(
                            f"SELECT meter_id, seq, day, key_no, nonce, ciphertext FROM"
                            f" sealed_readings WHERE meter_id IN ({marks})"
                            f" ORDER BY meter_id, seq LIMIT {MAX_READINGS}", meters)]
        finally:
            gw.close()
        return JSONResponse({"customer": cid, "kdf": kf["kdf"],
                             "wrapped_private_key": kf["wrapped_private_key"],
                             "meters": meters, "day_keys": day_keys, "readings": readings})

    return [("/portal", portal, ["GET"]), ("/portal/app", portal, ["GET"]),
            ("/api/portal/params", params, ["GET"]), ("/api/portal/login", login, ["POST"]),
            ("/api/portal/data", data, ["GET"])]

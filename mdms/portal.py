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

from starlette.requests import Request
from starlette.responses import JSONResponse

from common import customer
from common.files import ConfigError
from common.tariff import FLAT

from . import auth
from .web import Web, client_key

MAX_READINGS = 200_000


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def register_customer(store, keyfile: dict) -> str:
    """A customer's registration file (`gridveil customer create`): the key
    file with the private key wrapped under the password, and a slow hash
    of the login verifier. The MDMS never sees the password."""
    try:
        cid = str(keyfile["customer_id"])
        verifier_hash = str(keyfile["login_verifier_hash"])
        entry = {k: keyfile[k] for k in ("kind", "customer_id", "kdf", "public_key",
                                         "wrapped_private_key")}
    except (KeyError, TypeError) as e:
        raise ConfigError(f"customer file is malformed: missing {e}") from None
    customer.kdf_params(entry["kdf"])  # an old or weakened file would fail in every browser
    store.put_customer(cid, entry, verifier_hash)
    return cid


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
                           for a in web.store.released_aggregates(nbh)]
    return {"meter_info": info, "bills": bills, "neighbourhood_demand": demand}


def routes(web: Web):
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
        wait = web.throttle.locked_for(*keys)
        if wait > 0:
            return JSONResponse({"error": f"too many failed logins; wait {int(wait) + 1} s"},
                                status_code=429)
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

    async def data(request: Request):
        cid = request.state.session["username"]
        kf = _keyfile(web, cid)
        if kf is None:
            return JSONResponse({"error": "no key file for this customer"}, status_code=404)
        meters = web.store.customer_meters(cid)
        day_keys, readings = [], []
        for m in meters:
            day_keys += [{"meter": m, "day": d, "key_no": n, "wrapped": b64(w)}
                         for d, n, w in web.store.day_keys(m)]
            readings += [{"meter": m, "seq": s, "day": d, "key_no": n, "nonce": b64(nc),
                          "ct": b64(ct)}
                         for s, d, n, nc, ct in web.store.sealed_readings(
                             m, MAX_READINGS - len(readings))]
        return JSONResponse({"customer": cid, "kdf": kf["kdf"],
                             "wrapped_private_key": kf["wrapped_private_key"],
                             "meters": meters, "day_keys": day_keys, "readings": readings,
                             **_context(web, meters)})

    return [("/portal", portal, ["GET"]), ("/portal/app", portal, ["GET"]),
            ("/api/portal/params", params, ["GET"]), ("/api/portal/login", login, ["POST"]),
            ("/api/portal/data", data, ["GET"])]

"""The customer's side of a sealed copy, without a browser: log in to the
MDMS portal API as the portal script does (a verifier derived from the
password, never the password), fetch the wrapped private key and the
sealed readings, and open them here. The same steps run in the browser
portal with WebCrypto (mdms/static/portal.js)."""

from __future__ import annotations

import base64
import datetime as dt
import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request

from cryptography.exceptions import InvalidTag

from common import customer, tls
from common.files import ConfigError

MIN_ITERATIONS = 100_000  # whatever a server says, never derive with fewer


def _opener(ca_file):
    handlers = [urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())]
    ctx = tls.client_context(ca_file)
    if ctx is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    return urllib.request.build_opener(*handlers)


def _call(opener, url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                           "Accept": "application/json"})
    try:
        with opener.open(req, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read(4096)).get("error", "")
        except ValueError:
            msg = ""
        raise ConfigError(f"the portal answered {e.code}: {msg}") from None
    except urllib.error.URLError as e:
        raise ConfigError(f"cannot reach the portal at {url}: {e.reason}") from None


def fetch(mdms_url: str, ca_file, customer_id: str, password: str) -> dict:
    base = mdms_url.rstrip("/")
    opener = _opener(ca_file)
    p = _call(opener, f"{base}/api/portal/params?" +
              urllib.parse.urlencode({"customer": customer_id}))
    if int(p["iterations"]) < MIN_ITERATIONS:
        raise ConfigError(f"the portal asks for {p['iterations']} PBKDF2 iterations, fewer than"
                          f" the {MIN_ITERATIONS} this client accepts; not sending a verifier")
    verifier = customer.derive(password, base64.b64decode(p["salt_auth"]), int(p["iterations"]))
    _call(opener, f"{base}/api/portal/login",
          {"customer": customer_id, "verifier": base64.b64encode(verifier).decode()})
    return _call(opener, f"{base}/api/portal/data")


def readings(mdms_url: str, ca_file, customer_id: str, password: str) -> list[list]:
    """[meter, seq, interval end (UTC, ISO), energy Wh, register Wh] for
    every reading of the customer's meters."""
    d = fetch(mdms_url, ca_file, customer_id, password)
    if int(d["kdf"]["iterations"]) < MIN_ITERATIONS:
        raise ConfigError("the portal sent weakened key-derivation parameters; refusing them")
    priv = customer.unlock({"customer_id": customer_id, "kdf": d["kdf"],
                            "wrapped_private_key": d["wrapped_private_key"]}, password)
    keys = {(k["meter"], k["day"], k["key_no"]): customer.open_day_key(
        priv, base64.b64decode(k["wrapped"])) for k in d["day_keys"]}
    rows = []
    for r in d["readings"]:
        try:
            s, end, energy, register = customer.open_reading(
                keys[(r["meter"], r["day"], r["key_no"])], r["meter"], r["seq"],
                base64.b64decode(r["nonce"]), base64.b64decode(r["ct"]))
        except (KeyError, InvalidTag):
            raise ConfigError(f"sealed reading {r['meter']}#{r['seq']} does not open: it was"
                              " altered, or belongs to another key") from None
        stamp = dt.datetime.fromtimestamp(end, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
        rows.append([r["meter"], s, stamp, energy, register])
    return rows

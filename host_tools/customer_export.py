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


def _opener(ca_file):
    handlers = [urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())]
    ctx = tls.client_context(ca_file)
    if ctx is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    return urllib.request.build_opener(*handlers)


def _call(opener, url: str, body: dict | None = None, csrf: str | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if csrf:
        headers["X-CSRF-Token"] = csrf
    req = urllib.request.Request(url, data=data, headers=headers)
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
    return _fetch(mdms_url, ca_file, customer_id, password)[0]


def _fetch(mdms_url: str, ca_file, customer_id: str, password: str) -> tuple[dict, bytes]:
    return _session(mdms_url, ca_file, customer_id, password)[:2]


def _session(mdms_url: str, ca_file, customer_id: str, password: str):
    """(the portal data, the wrapping key, a function posting in the session)
    from one key derivation (600,000 PBKDF2 iterations are the slow part;
    the browser does them once too)."""
    base = mdms_url.rstrip("/")
    opener = _opener(ca_file)
    p = _call(opener, f"{base}/api/portal/params?" +
              urllib.parse.urlencode({"customer": customer_id}))
    # The floor and the labels are this client's, whatever the server sent:
    # customer.kdf_params refuses weak parameters before any verifier exists.
    salt, iterations = customer.kdf_params(p)
    verifier, wrap_key = customer.derive_keys(password, customer_id, salt, iterations)
    csrf = _call(opener, f"{base}/api/portal/login",
                 {"customer": customer_id,
                  "verifier": base64.b64encode(verifier).decode()}).get("csrf")

    def post(path: str, body: dict) -> dict:
        return _call(opener, base + path, body, csrf)

    return _call(opener, f"{base}/api/portal/data"), wrap_key, post


def readings(mdms_url: str, ca_file, customer_id: str, password: str) -> list[list]:
    """[meter, seq, interval end (UTC, ISO), energy Wh, register Wh] for
    every reading of the customer's meters."""
    d, wrap_key = _fetch(mdms_url, ca_file, customer_id, password)
    priv = customer.unwrap({"customer_id": customer_id,
                            "wrapped_private_key": d.get("wrapped_private_key")}, wrap_key)
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


PORTAL_SCRIPTS = ("account.js", "chart.js", "household.js", "portal.js", "tables.js")


def check_portal(mdms_url: str, ca_file) -> list[tuple[str, str, bool]]:
    """Compare the portal code a server serves with this release's own:
    [(path served, its SHA-256, same as ours)]. The page must load exactly
    our scripts (under their content-hashed names) and allow no others (its
    Content-Security-Policy). This is what a household, or the guardian on
    its behalf, can check from outside: the utility serves the portal, and
    the portal holds the password."""
    import hashlib
    import re
    from importlib.resources import files

    base = mdms_url.rstrip("/")
    opener = _opener(ca_file)

    def get(path: str):
        try:
            with opener.open(urllib.request.Request(base + path), timeout=60) as r:
                return r.read(20 * 2**20), r.headers
        except urllib.error.HTTPError as e:
            raise ConfigError(f"the portal answered {e.code} for {path}") from None
        except urllib.error.URLError as e:
            raise ConfigError(f"cannot reach the portal at {base}: {e.reason}") from None

    page, headers = get("/portal")
    csp = headers.get("Content-Security-Policy", "")
    scripts = re.findall(rb"<script\b([^>]*)>", page)
    srcs = [re.search(rb'src="([^"]+)"', s) for s in scripts]
    if any(m is None for m in srcs) or "script-src 'self';" not in csp + ";":
        raise ConfigError("the portal page runs inline or foreign scripts (or its"
                          " Content-Security-Policy allows them): do not enter a password there")
    served = [m.group(1).decode() for m in srcs]
    # /static/<name>.<12 hex digits>.js: the name says which of ours it must be.
    names = [re.fullmatch(r"/static/([a-z]+)\.[0-9a-f]{12}(\.js)", p) for p in served]
    if any(n is None for n in names) or sorted(n[1] + n[2] for n in names) != \
            sorted(PORTAL_SCRIPTS):
        raise ConfigError(f"the portal page loads {served}, not this release's {list(PORTAL_SCRIPTS)}")
    static = files("mdms") / "static"
    out = []
    for path, name in zip(served, names, strict=True):
        body, _ = get(path)
        ours = (static / (name[1] + name[2])).read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        out.append((path, digest, digest == hashlib.sha256(ours).hexdigest()))
    return out


def activate(mdms_url: str, ca_file, household: str, code: str, password: str,
             meters: list[str] | None = None, seal_key=None) -> tuple[list[str], str]:
    """The household's first activation, through the portal API, without a
    browser: its two key pairs made here, the consent to its meters signed
    here, the activation code proven without being sent. `meters`: the ones
    the guardian's letter names; anything else waiting is refused here.
    Returns (the meters it consented to, its recovery code)."""
    from common import consent

    base = mdms_url.rstrip("/")
    opener = _opener(ca_file)
    waiting = _call(opener, f"{base}/api/portal/activation?" +
                    urllib.parse.urlencode({"customer": household}))
    asked = sorted(waiting.get("to_confirm") or [])
    if not asked:
        raise ConfigError(f"no meter waits for {household}'s consent")
    if meters is not None and asked != sorted(meters):
        raise ConfigError(f"the portal asks consent for {asked}, not for {sorted(meters)} (the"
                          " meters in the guardian's letter): not signing")
    new = customer.create(household, password, seal_key=seal_key)
    seal_pub = consent.spki(new.seal_key.public_key())
    kf = new.keyfile
    _call(opener, f"{base}/api/portal/activate", {
        "customer": household, **{k: kf[k] for k in (
            "kdf", "public_key", "signing_public_key", "wrapped_private_key",
            "wrapped_signing_key")},
        "verifier": base64.b64encode(new.verifier).decode(),
        "recovery": {**kf["recovery"],
                     "verifier": base64.b64encode(new.recovery_verifier).decode()},
        "consent": consent.sign(new.sign_key, household, asked, seal_pub, code)})
    return asked, new.recovery_code


def confirm(mdms_url: str, ca_file, household: str, password: str,
            meters: list[str] | None = None) -> list[str]:
    """A household's consent to meters the guardian enrolled for it since
    it activated, without a browser: signed here with its own key (unwrapped
    here with its password). `meters`: the ones it expects; anything else
    waiting is refused here. Returns the meters it now consented to."""
    from common import consent

    d, wrap_key, post = _session(mdms_url, ca_file, household, password)
    asked = sorted(d.get("to_confirm") or [])
    if not asked:
        raise ConfigError(f"no meter waits for {household}'s consent")
    if meters is not None and not set(asked) <= set(meters):
        raise ConfigError(f"the portal asks consent for {asked}, not only for {sorted(meters)}:"
                          " not signing")
    try:
        if not d.get("signing_public_key"):
            raise KeyError("signing_public_key")
        seal_pub = base64.b64decode(d["public_key"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("this account holds no consent key (made before consents): activate"
                          " again with a code from the guardian") from None
    key = customer.unwrap({"customer_id": household, "wrapped_private_key":
                           d.get("wrapped_signing_key")}, wrap_key)
    return post("/api/portal/consent",
                {"consent": consent.sign(key, household, asked, seal_pub)})["meters"]

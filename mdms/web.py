"""The web app's frame: configuration, sessions, the role matrix, CSRF,
security headers, templates. Pages live in pages.py (staff) and
portal.py (customers); every route declares its roles here, in ROLE_MATRIX,
and the tests walk that matrix for every role."""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from common.asgi import BodyTooLarge, read_body

from . import auth
from .assets import Assets
from .config import MdmsHome, authority
from .store import MdmsStore

log = logging.getLogger("gridveil.web")
HERE = Path(__file__).resolve().parent
MAX_BODY = 1 << 20
ROLES = ("admin", "operator", "analyst", "billing", "auditor", "guardian", "customer")
HOME_PAGE = {"admin": "/admin", "operator": "/operator", "analyst": "/analyst",
             "billing": "/billing", "auditor": "/auditor", "guardian": "/guardian",
             "customer": "/portal/app"}

# (method, path) -> roles allowed. Anything not listed here and not public
# is refused: a route must be added to this table to be reachable at all.
ROLE_MATRIX: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/admin"): frozenset({"admin"}),
    ("POST", "/admin/users"): frozenset({"admin"}),
    ("POST", "/admin/users/delete"): frozenset({"admin"}),
    ("POST", "/admin/users/update"): frozenset({"admin"}),
    ("GET", "/operator"): frozenset({"operator"}),
    ("GET", "/analyst"): frozenset({"analyst"}),
    ("GET", "/analyst/demand.csv"): frozenset({"analyst"}),
    ("POST", "/analyst/request"): frozenset({"analyst"}),
    ("GET", "/billing"): frozenset({"billing"}),
    ("GET", "/billing/bills.csv"): frozenset({"billing"}),
    ("POST", "/billing/request"): frozenset({"billing"}),
    ("GET", "/auditor"): frozenset({"auditor"}),
    ("GET", "/auditor/log.csv"): frozenset({"auditor"}),
    ("GET", "/guardian"): frozenset({"guardian"}),
    ("GET", "/portal/app"): frozenset({"customer"}),
    ("GET", "/api/portal/data"): frozenset({"customer"}),
    ("POST", "/api/portal/password"): frozenset({"customer"}),
    ("POST", "/api/portal/consent"): frozenset({"customer"}),
}
PUBLIC = {("GET", "/"), ("GET", "/login"), ("POST", "/login"), ("POST", "/logout"),
          ("GET", "/portal"), ("GET", "/api/portal/params"), ("POST", "/api/portal/login"),
          ("GET", "/api/portal/recovery"), ("POST", "/api/portal/recover"),
          ("GET", "/api/portal/activation"), ("POST", "/api/portal/activate")}

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class WebConfig:
    home: Path  # the MDMS's own home (mdms.json)
    secure_cookies: bool = False  # set when served over HTTPS


class Web:
    """Shared state of one running app."""

    def __init__(self, cfg: WebConfig, store: MdmsStore | None = None):
        self.cfg = cfg
        self.store = store or MdmsStore(MdmsHome(cfg.home).db_url())
        self.intake_stats: Counter = Counter()  # mdms/metrics.py
        self._authority = None
        self.job = None  # the release job, when this process runs it (mdms/app.py)
        self.sessions = auth.Sessions(self.store)
        self.throttle = auth.Throttle(self.store)
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(["html"]))
        self.assets = Assets(HERE / "static")
        self.templates.globals["static"] = self.assets.url

    def render(self, request: Request, name: str, status: int = 200, **ctx) -> HTMLResponse:
        session = getattr(request.state, "session", None)
        ctx.update(session=session, csrf=session["csrf"] if session else "",
                   nav=HOME_PAGE.get(session["role"]) if session else None)
        return HTMLResponse(self.templates.get_template(name).render(**ctx), status_code=status)

    def authority(self):
        """The key holders, over their HTTP APIs: one client set (and its
        thread pool) while mdms.json stays as it is; a changed mdms.json
        takes effect without a restart."""
        st = MdmsHome(self.cfg.home).settings_file.stat()
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if self._authority is None or self._authority[0] != stamp:
            self._authority = (stamp, authority(self.cfg.home))
        return self._authority[1]


def client_key(request: Request) -> str:
    return "ip:" + (request.client.host if request.client else "?")


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in \
        request.headers.get("accept", "")


ERROR_TITLES = {403: "Not for your role", 404: "No such page", 413: "Too much at once"}


def refuse(web: Web, request: Request, status: int, message: str) -> Response:
    """JSON for the APIs, the login page for a missing session, otherwise a
    page in the site's own frame with a way back."""
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    portal = request.url.path.startswith("/portal")
    if status == 401:
        return RedirectResponse("/portal" if portal else "/login", status_code=303)
    session = getattr(request.state, "session", None)
    if session:  # the refusal shows in the site's frame, with the way back
        back, back_text = HOME_PAGE[session["role"]], "Back to your start page"
    else:
        back, back_text = ("/portal", "To the customer portal") if portal else \
            ("/login", "To the login page")
    return web.render(request, "error.html", status, title=ERROR_TITLES.get(status, "Refused"),
                      message=message[:1].upper() + message[1:] + ".", back=back,
                      back_text=back_text)


def check_csrf(request: Request, body: bytes, session: dict) -> bool:
    token = request.headers.get("x-csrf-token")
    if token is None and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"):
        token = (parse_qs(body.decode(errors="replace")).get("csrf") or [None])[0]
    return token is not None and hmac.compare_digest(str(token), session["csrf"])


class Guard:
    """ASGI middleware: session lookup, role matrix, CSRF, headers."""

    def __init__(self, app, web: Web):
        self.app = app
        self.web = web

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}  # static files set their own caching
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                            if k.lower().encode() not in have]
                message["headers"] = headers
            await send(message)

        request = Request(scope, receive)
        path, method = scope["path"], scope["method"]
        if path.startswith("/v1/") or path in ("/metrics", "/healthz"):
            # the gateways' intake (signed requests) and the monitoring's
            # figures (counts only): no session
            return await self.app(scope, receive, send_with_headers)
        body = b""
        if method == "POST":
            try:  # refused as soon as it is too large, not after reading it all
                body = await read_body(request, MAX_BODY)
            except BodyTooLarge:
                too_large = refuse(self.web, request, 413, "that request was too large")
                return await too_large(scope, receive, send_with_headers)

        async def replay():  # the body was read here; hand it on unchanged
            return {"type": "http.request", "body": body, "more_body": False}

        session = self.web.sessions.get(request.cookies.get(auth.COOKIE))
        scope.setdefault("state", {})["session"] = session
        if path.startswith("/static/") and method == "GET":
            return await self.app(scope, receive, send_with_headers)
        key = (method, path)
        if key not in PUBLIC:
            roles = ROLE_MATRIX.get(key)
            if roles is None:
                response = refuse(self.web, request, 404, "no such page")
            elif session is None:
                response = refuse(self.web, request, 401, "please log in")
            elif session["role"] not in roles:
                log.warning("%s (%s) refused %s %s", session["username"], session["role"],
                            method, path)
                response = refuse(self.web, request, 403, "your role may not open this page")
            elif method == "POST" and not check_csrf(request, body, session):
                response = refuse(self.web, request, 403, "this form expired or did not come from"
                                                          " this site; go back, reload and try again")
            else:
                response = None
            if response is not None:
                return await response(scope, replay, send_with_headers)
        await self.app(scope, replay, send_with_headers)


class NoTraceback:
    """Outermost: an unexpected error becomes a plain 500 and one log line
    that names it, never a traceback in the response or the log."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as e:  # noqa: BLE001 - the last line of defence
            log.error("%s %s failed: %s: %s", scope.get("method"), scope.get("path"),
                      type(e).__name__, str(e)[:200])
            if scope["type"] == "http" and not started:
                await Response("internal error; the operator's log says what",
                               status_code=500)(scope, receive, send)

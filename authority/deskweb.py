"""The guardian's desk in a browser, served by the guardian's own key holder
(https://<holder>/desk), never by the utility: the page that signs a
decision must not come from the party the decision constrains.

One person, the privacy guardian, logs in with the desk password
(`gridveil holder desk-password`, kept here as an scrypt hash). A session is
a random token in an HttpOnly, SameSite=Strict cookie, held in this
process's memory only (a restart logs the guardian out), with its own CSRF
token in every form. Five wrong passwords lock the desk for a minute,
doubling after each further one. The page shows what each request would
release in the holder's own terms (what, where, from when to when: exactly
what the signed decision will cover), the requester's words apart and
marked as theirs, and the holder's policy; approving or declining signs a
decision with the holder's key; every decision can be revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from common.decisions import ANY, parse_time
from common.decisions import show_time as utc
from common.files import ConfigError, read_json, write_json
from common.passwords import check_secret, hash_secret

log = logging.getLogger("gridveil.holder.desk")

HERE = Path(__file__).resolve().parent
COOKIE = "gv_desk"
SESSION_S = 8 * 3600
MAX_FAILURES, LOCK_S = 5, 60
MIN_PASSWORD = 12
MAX_FORM = 16 << 10
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self';"
                               " form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def set_password(home: Path, password: str) -> None:
    from zxcvbn import zxcvbn

    if len(password) < MIN_PASSWORD or zxcvbn(password[:100])["score"] < 3:
        raise ConfigError(f"the desk password must have at least {MIN_PASSWORD} characters and"
                          " be hard to guess (zxcvbn score 3 or more)")
    write_json(Path(home) / "desk-password.json", {"hash": hash_secret(password.encode())},
               secret=True)


def where(nbhs) -> str:
    return "any neighbourhood" if ANY in nbhs else ", ".join(nbhs)


class Desk:
    """The desk's routes, over one KeyHolder (its desk, ledger and policy)."""

    def __init__(self, holder, secure: bool):
        self.holder = holder
        self.secure = secure
        self.sessions: dict[str, tuple[float, str]] = {}  # sha256(token) -> (expires, csrf)
        self.failures, self.locked_until = 0, 0.0
        self.jinja = Environment(loader=FileSystemLoader(HERE / "templates"),
                                 autoescape=select_autoescape(["html"]))
        self.css = (HERE / "static" / "desk.css").read_bytes()

    def password_hash(self) -> str | None:
        f = self.holder.home.path / "desk-password.json"
        return read_json(f, "desk password", secret=True).get("hash") if f.exists() else None

    # --- sessions -------------------------------------------------------
    def session(self, request: Request) -> str | None:
        """The session's CSRF token, if the request carries a live session."""
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        hit = self.sessions.get(hashlib.sha256(token.encode()).hexdigest())
        if hit is None or hit[0] < time.time():
            return None
        return hit[1]

    def page(self, name: str, status: int = 200, **ctx) -> HTMLResponse:
        html = self.jinja.get_template(name).render(utc=utc, where=where, **ctx)
        return HTMLResponse(html, status, headers=HEADERS)

    async def form(self, request: Request, csrf: str | None) -> dict | None:
        """The form's fields, if it carries this session's CSRF token."""
        if int(request.headers.get("content-length") or 0) > MAX_FORM:
            return None
        form = await request.form()
        sent = str(form.get("csrf", ""))
        if csrf is None or not hmac.compare_digest(sent.encode(), csrf.encode()):
            return None
        return {k: str(v)[:500] for k, v in form.items()}

    # --- routes ------------------------------------------------------------
    async def show(self, request: Request, message: str = "", error: str = "",
                   status: int = 200):
        csrf = self.session(request)
        if csrf is None:
            return self.page("desk_login.html", status, error=error,
                             unset=self.password_hash() is None)
        desk = self.holder.desk
        return self.page("desk.html", status, csrf=csrf, message=message, error=error,
                         pending=desk.proposals(pending_only=True),
                         decided=desk.decisions()[::-1][:100],
                         policy=self.holder.policy, role=self.holder.role)

    async def login(self, request: Request):
        now = time.time()
        if now < self.locked_until:
            return await self.show(request, error=f"Too many wrong passwords: wait"
                                                  f" {int(self.locked_until - now) + 1} s.",
                                   status=429)
        form = await request.form() if int(request.headers.get("content-length") or 0) \
            <= MAX_FORM else {}
        stored = self.password_hash()
        if stored is None or not check_secret(str(form.get("password", ""))[:200].encode(),
                                              stored):
            self.failures += 1
            if self.failures >= MAX_FAILURES:
                self.locked_until = now + LOCK_S * 2 ** min(self.failures - MAX_FAILURES, 6)
            log.warning("desk: a wrong password from %s", request.client.host
                        if request.client else "?")
            return await self.show(request, error="Wrong password.", status=401)
        self.failures = 0
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        self.sessions = {k: v for k, v in self.sessions.items() if v[0] > now}
        self.sessions[hashlib.sha256(token.encode()).hexdigest()] = (now + SESSION_S, csrf)
        r = RedirectResponse("/desk", 303, headers=HEADERS)
        r.set_cookie(COOKIE, token, max_age=SESSION_S, httponly=True, samesite="strict",
                     secure=self.secure, path="/desk")
        return r

    async def logout(self, request: Request):
        form = await self.form(request, self.session(request))
        if form is not None:
            token = request.cookies.get(COOKIE, "")
            self.sessions.pop(hashlib.sha256(token.encode()).hexdigest(), None)
        r = RedirectResponse("/desk", 303, headers=HEADERS)
        r.delete_cookie(COOKIE, path="/desk")
        return r

    async def act(self, request: Request):
        """Decide, sign a standing approval or revoke: each signed with the
        holder's key and logged in its hash chain before it is shown."""
        form = await self.form(request, self.session(request))
        if form is None:
            return await self.show(request, error="The form expired; try again.", status=403)
        desk, action = self.holder.desk, request.url.path.rsplit("/", 1)[-1]
        try:
            if action == "decide":
                approve = form.get("decision") == "approve"
                d = desk.decide(int(form.get("id", "")), approve, form.get("reason", ""))
                done = (f"Request {form['id']} {'approved' if approve else 'declined'}: decision"
                        f" {d.id} signed at {utc(d.decided_at)} UTC.")
            elif action == "standing":
                d = desk.standing(form.get("what", ""), form.get("neighbourhoods", "*").split(","),
                                  parse_time(form.get("from", "")), parse_time(form.get("to", "")),
                                  parse_time(form["expires"]) if form.get("expires") else 0,
                                  form.get("reason", ""))
                done = f"Standing approval signed: {d.in_words()}."
            else:
                d = desk.revoke(int(form.get("id", "")))
                done = f"Decision {d.id} revoked: this holder refuses it from now on."
        except (ConfigError, ValueError) as e:
            return await self.show(request, error=f"Nothing was signed: {e}", status=400)
        log.info("desk: %s", done)
        return await self.show(request, message=done)

    async def stylesheet(self, request: Request):
        return Response(self.css, media_type="text/css",
                        headers={**HEADERS, "Cache-Control": "max-age=3600"})

    def routes(self) -> list[Route]:
        return [Route("/desk", self.show, methods=["GET"]),
                Route("/desk/login", self.login, methods=["POST"]),
                Route("/desk/logout", self.logout, methods=["POST"]),
                Route("/desk/decide", self.act, methods=["POST"]),
                Route("/desk/standing", self.act, methods=["POST"]),
                Route("/desk/revoke", self.act, methods=["POST"]),
                Route("/desk/desk.css", self.stylesheet, methods=["GET"])]

"""Staff pages: login, admin, operator, analyst, billing, auditor, privacy
guardian. What each role may open is decided in web.ROLE_MATRIX, never
here."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import secrets
import time
import urllib.parse
from collections import defaultdict

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from common.files import ConfigError

from . import audit, auth, fleet, releases, scope
from .store import IntegrityError
from .web import HOME_PAGE, ROLES, Web, client_key

DAY = 86400
ANALYST_VALUES = 20_000  # the newest released values the analyst's page draws
CSV_ROWS = 500_000  # at most, per download
BILLS_SHOWN = 5_000  # the newest bills of the chosen dates on the billing page
log = logging.getLogger("gridveil.web")


def utc(ts) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


STAFF_ROLES = [r for r in ROLES if r != "customer"]


def _checked(role: str | None, password: str | None) -> tuple[str | None, str | None]:
    """(role, password hash) from an admin form; None where not given."""
    if role is not None and role not in STAFF_ROLES:
        raise ConfigError(f"role must be one of {', '.join(STAFF_ROLES)}")
    if password is not None and len(password) < 12:
        raise ConfigError("passwords need at least 12 characters")
    return role, auth.hash_secret(password.encode()) if password is not None else None


def add_user(store, username: str, role: str, password: str) -> None:
    if not username or len(username) > 64 or not username.isprintable():
        raise ConfigError("user name must be 1..64 printable characters")
    role, pw_hash = _checked(role, password)
    try:
        store.add_user(username, role, pw_hash)
    except IntegrityError:
        raise ConfigError(f"user {username} already exists") from None


def update_user(store, who: str, username: str, role: str, password: str) -> str:
    """A staff account's new role and/or password, set by an admin; returns
    what was done, in words."""
    if store.user(username) is None:
        raise ConfigError(f"there is no user {username!r}")
    role, pw_hash = _checked(role or None, password or None)
    if role is None and pw_hash is None:
        raise ConfigError("choose a new role, or type a new password, or both")
    if role and username == who:
        raise ConfigError("you cannot change your own role (ask another admin)")
    store.update_user(username, role, pw_hash)
    done = [f"role is now {role}"] if role else []
    done += ["password was reset"] if pw_hash else []
    log.info("admin %s changed user %s: %s", who, username, ", ".join(done))
    return f"{username}: {' and '.join(done)}; their sessions ended."


def routes(web: Web):
    async def index(request: Request):
        s = request.state.session
        return RedirectResponse(HOME_PAGE[s["role"]] if s else "/login", status_code=303)

    def login_form(request: Request, status: int = 200, error: str = ""):
        # A fresh form token with every form shown, failed attempts included:
        # a typo must not leave a form that can only say "expired".
        token = secrets.token_urlsafe(16)
        r = web.render(request, "login.html", status, login_csrf=token, error=error)
        r.set_cookie(auth.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                     secure=web.cfg.secure_cookies)
        return r

    async def login_page(request: Request):
        return login_form(request)

    async def login(request: Request):
        form = await request.form()
        user, pw = str(form.get("username", "")), str(form.get("password", ""))
        if not secrets.compare_digest(str(form.get("csrf", "")),
                                      request.cookies.get(auth.LOGIN_CSRF_COOKIE, "-")):
            return login_form(request, 403, "Your login form expired; try again.")
        keys = ("user:" + user, client_key(request))
        wait = web.throttle.locked_for(*keys)
        if wait > 0:
            return login_form(request, 429,
                              f"Too many failed logins; try again in {int(wait) + 1} s.")
        row = web.store.user(user)
        rows = [row] if row else []
        ok = bool(rows) and auth.check_secret(pw.encode(), rows[0]["pw_hash"])
        if not rows:
            auth.check_secret(pw.encode(), auth.hash_secret(b"x"))  # same time either way
        if not ok:
            web.throttle.failed(*keys)
            wait = web.throttle.locked_for(*keys)
            if wait > 0:  # said now, on the attempt that started the lock
                return login_form(request, 429, "Wrong user name or password. Too many failed"
                                  f" logins; try again in {int(wait) + 1} s.")
            return login_form(request, 401, "Wrong user name or password.")
        web.throttle.succeeded(*keys)
        token, _ = web.sessions.create(user, rows[0]["role"])
        r = RedirectResponse(HOME_PAGE[rows[0]["role"]], status_code=303)
        r.set_cookie(auth.COOKIE, token, max_age=auth.SESSION_S, httponly=True,
                     samesite="strict", secure=web.cfg.secure_cookies)
        return r

    async def logout(request: Request):
        s = request.state.session
        web.sessions.end(request.cookies.get(auth.COOKIE))
        r = RedirectResponse("/portal" if s and s["role"] == "customer" else "/login",
                             status_code=303)
        r.delete_cookie(auth.COOKIE)
        return r

    async def admin(request: Request, error: str = "", status: int = 200, form=None,
                    done: str = ""):
        users = web.store.users()
        meters = web.store.meters()
        nbhs = defaultdict(int)
        for m in meters:
            nbhs[m["neighbourhood"]] += 1
        return web.render(request, "admin.html", status, users=users, meters=meters,
                          neighbourhoods=sorted(nbhs.items()), roles=STAFF_ROLES, error=error,
                          form=form or {}, done=done, utc=utc)

    async def admin_users(request: Request):
        form = await request.form()
        name = str(form.get("username", ""))
        try:
            add_user(web.store, name, str(form.get("role", "")), str(form.get("password", "")))
        except ConfigError as e:  # the form comes back as typed, but for the password
            return await admin(request, str(e), 400,
                               {"username": name[:64], "role": str(form.get("role", ""))})
        log.info("admin %s added user %s", request.state.session["username"], name)
        return RedirectResponse("/admin", status_code=303)

    async def admin_update_user(request: Request):
        form = await request.form()
        try:
            done = update_user(web.store, request.state.session["username"],
                               str(form.get("username", "")), str(form.get("role", "")),
                               str(form.get("password", "")))
        except ConfigError as e:
            return await admin(request, str(e), 400)
        return await admin(request, done=done)

    async def admin_delete_user(request: Request):
        form = await request.form()
        user = str(form.get("username", ""))
        if user == request.state.session["username"]:
            return await admin(request, "you cannot delete your own account", 400)
        row = web.store.user(user)
        if row is None:
            return await admin(request, f"there is no user {user[:64]!r}", 400)
        if form.get("confirm") != "yes":  # one more step: removal cannot be undone
            return web.render(request, "admin_remove.html", user=row)
        web.store.delete_user(user)
        log.info("admin %s removed user %s", request.state.session["username"], user)
        return await admin(request, done=f"{user} was removed and logged out.")

    async def operator(request: Request):
        after = str(request.query_params.get("after", ""))[:128]
        return web.render(request, "operator.html", **fleet.view(web.store, time.time(), after),
                          after=after,
                          utc=utc, thresholds=(fleet.LATE_S // 60, fleet.SILENT_S // 3600))

    def wake_job() -> None:
        """A page with requests pending nudges the release job (when this
        process runs it) to look for the guardian's decisions now; the
        releases themselves never run inside a request."""
        if web.job is not None and web.store.requests("pending", limit=1):
            web.job.wake()

    async def analyst(request: Request):
        wake_job()
        rows = web.store.released_aggregates(limit=ANALYST_VALUES)
        hourly, profile, peaks = releases.demand_views(rows)
        asked = web.store.requests(kind="aggregates", limit=10)
        fewest = min((r["contributors"] for r in rows), default=0)
        noisy = sum(1 for r in rows if r["noisy"])
        return web.render(request, "analyst.html", hourly=hourly, peaks=peaks, asked=asked,
                          fewest=fewest, noisy=noisy,
                          chart=Markup(json.dumps({"hourly": hourly, "profile": profile})
                                       .replace("</", "<\\/")),
                          count=len(rows), utc=utc)

    async def demand_csv(request: Request):
        rows = web.store.released_aggregates(limit=CSV_ROWS)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["neighbourhood", "interval_end_utc", "energy_wh", "noisy"])
        for r in rows:
            w.writerow([r["neighbourhood"], utc(r["interval_end"]), r["wh"], r["noisy"]])
        return Response(buf.getvalue(), media_type="text/csv", headers={
            "Content-Disposition": "attachment; filename=neighbourhood-demand.csv"})

    async def request_release(request: Request):
        kind = "aggregates" if request.url.path.startswith("/analyst") else "bills"
        form = await request.form()
        params = {}
        if kind == "bills":
            raw = str(form.get("period_days") or "1").strip()
            if raw == "month":
                params = {"period": "month"}
            elif not raw.isdigit() or not 1 <= int(raw) <= 400:
                return await billing(request, error=f"The period must be \"month\" or a whole"
                                                    f" number of days from 1 to 400, not"
                                                    f" {raw[:20]!r}.", status=400)
            else:
                params = {"period": int(raw)}
        rid = web.store.add_request(kind, params, request.state.session["username"])
        try:
            # The guardian decides at its own key holder; we only propose.
            await run_in_threadpool(releases.propose, web.store, web.authority(), rid)
        except ConfigError as e:
            log.warning("request %d could not reach the guardian's holder yet: %s", rid, e)
        return RedirectResponse("/analyst" if kind == "aggregates" else "/billing",
                                status_code=303)

    def _bills(request: Request, limit: int = BILLS_SHOWN):
        q = request.query_params
        try:
            start = dt.date.fromisoformat(q["from"]) if q.get("from") else None
            end = dt.date.fromisoformat(q["to"]) if q.get("to") else None
        except ValueError:
            start = end = None
        epoch = dt.date(1970, 1, 1)
        # Bills starting up to 400 days before `from` may still reach into it.
        rows = web.store.bills(first=(start - epoch).days - 400 if start else 0,
                               end=(end - epoch).days + 1 if end else 1 << 31, limit=limit)
        out = []
        for r in rows:
            first = epoch + dt.timedelta(days=r["first_day"])
            last = first + dt.timedelta(days=r["days"] - 1)
            if (start and last < start) or (end and first > end):
                continue
            out.append({**r, "first": first, "last": last, "eur": r["amount_uct"] / 1e8})
        return out, (q.get("from") or ""), (q.get("to") or "")

    async def billing(request: Request, error: str = "", status: int = 200):
        if not error:
            wake_job()
        bills, start, end = _bills(request)
        asked = web.store.requests(kind="bills", limit=10)
        return web.render(request, "billing.html", status, bills=bills, start=start, end=end,
                          asked=asked, total=sum(b["eur"] for b in bills), error=error,
                          utc=utc)

    async def bills_csv(request: Request):
        bills, _, _ = _bills(request, CSV_ROWS)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["meter_id", "first_day", "last_day", "amount_micro_cents", "amount_eur"])
        for b in bills:
            w.writerow([b["meter_id"], b["first"], b["last"], b["amount_uct"], f"{b['eur']:.2f}"])
        return Response(buf.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": "attachment; filename=bills.csv"})

    def audit_rows(request: Request):
        q = request.query_params
        f = {k: str(q.get(k, ""))[:100] for k in ("role", "kind", "decision", "q")}
        try:
            status, entries = audit.fetch(web.authority().holders)
        except ConfigError as e:
            status, entries = [{"role": "-", "ok": False, "message": str(e)}], []
        return status, audit.select(entries, **f), f

    async def auditor(request: Request):
        status, rows, f = await run_in_threadpool(audit_rows, request)
        pages = max(1, -(-len(rows) // audit.PAGE))
        raw = request.query_params.get("page", "1")
        page = min(pages, max(1, int(raw))) if raw.isdigit() else 1
        shown = rows[(page - 1) * audit.PAGE:page * audit.PAGE]
        query = {k: v for k, v in f.items() if v}
        return web.render(request, "auditor.html", chains=status, rows=shown, total=len(rows),
                          page=page, pages=pages, f=f, query=urllib.parse.urlencode(query),
                          roles=[h["role"] for h in status if h["role"] != "-"],
                          kinds=audit.KINDS, readable=audit.readable,
                          verdict=audit.verdict, requests=web.store.requests(limit=200), utc=utc,
                          window=f"{audit.WINDOW:,}")

    async def audit_csv(request: Request):
        _, rows, _ = await run_in_threadpool(audit_rows, request)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["holder", "n", "time_utc", "requester", "kind", "subject", "subject_in_words",
                    "decision", "reason", "hash"])
        for e in rows:
            w.writerow([e["role"], e["n"], utc(e["at"]), e["requester"], e["kind"], e["subject"],
                        audit.readable(e["subject"]), audit.verdict(e), e["reason"], e["hash"]])
        return Response(buf.getvalue(), media_type="text/csv", headers={
            "Content-Disposition": "attachment; filename=key-holder-decisions.csv"})

    def pending_with_scope() -> list[dict]:
        pending = list(reversed(web.store.requests("pending")))
        if not pending:
            return []
        try:
            policies = web.authority().policies()
        except ConfigError as e:
            e = scope.Scope(error=f"The key holders' policies could not be read ({e}), so what"
                                  " approving releases cannot be shown; each holder still"
                                  " checks every value.")
            return [{**r, "scope": e, "params_json": json.loads(r["params"])} for r in pending]
        return [{**r, "scope": scope.describe(web.store, policies, r),
                 "params_json": json.loads(r["params"])} for r in pending]

    async def guardian(request: Request):
        # The scope asks every holder for its policy: off the event loop.
        wake_job()
        pending = await run_in_threadpool(pending_with_scope)
        return web.render(request, "guardian.html", pending=pending,
                          done=web.store.requests("decided", limit=50), utc=utc)

    return [("/", index, ["GET"]), ("/login", login_page, ["GET"]), ("/login", login, ["POST"]),
            ("/logout", logout, ["POST"]), ("/admin", admin, ["GET"]),
            ("/admin/users", admin_users, ["POST"]),
            ("/admin/users/delete", admin_delete_user, ["POST"]),
            ("/admin/users/update", admin_update_user, ["POST"]), ("/operator", operator, ["GET"]),
            ("/analyst", analyst, ["GET"]), ("/analyst/demand.csv", demand_csv, ["GET"]),
            ("/analyst/request", request_release, ["POST"]), ("/billing", billing, ["GET"]),
            ("/billing/bills.csv", bills_csv, ["GET"]),
            ("/billing/request", request_release, ["POST"]), ("/auditor", auditor, ["GET"]),
            ("/auditor/log.csv", audit_csv, ["GET"]),
            ("/guardian", guardian, ["GET"])]

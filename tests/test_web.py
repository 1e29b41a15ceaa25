"""The MDMS web app on a real uvicorn server: every page and API call
against the role matrix for every role, CSRF, login throttling, and, in a
real headless Chromium (Debian's chromium, driven by Playwright), each
role's pages and the customer portal decrypting in the browser. Every
request body, server log line and database file of a portal session is
checked for the password, the decryption key and plaintext readings."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import http.cookiejar
import io
import json
import os
import re
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import axe_playwright_python
import pytest
from helpers.system import System

from common import customer, tls
from common.tariff import Rule, Tariff
from host_tools import customer_export, demo, groundtruth
from mdms.web import HOME_PAGE, ROLE_MATRIX, ROLES

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Two bands in a zone an hour off UTC: the portal's money view and its
# local days are then not the trivial ones.
TOU = Tariff("tou-test", {0: "off-peak", 1: "peak"}, {0: 18_000, 1: 32_000},
             (Rule(frozenset(range(7)), 7, 21, 1),), utc_offset_min=60)


@pytest.fixture(scope="module")
def site(tmp_path_factory, sample_files):
    """The demo's deployment: two gateways, two holders, the MDMS serving
    the dashboard and the portal over HTTPS with its own certificate."""
    base = tmp_path_factory.mktemp("web")
    s = System(base / "gv", sample_files, customers=True, gateways=2, tariff=TOU)
    s.start_gateway()
    runs = s.run_meters()
    assert all(r.returncode == 0 for r in runs)
    s.seal_all()
    s.release()
    accounts = demo.setup_web(s)
    passwords = dict(re.findall(r"^(\w+)\s+user \w+\s+password (\S+)", accounts.read_text(), re.M))
    s.stop(s.mdms)  # again with request logging, to check what it logs
    s.start(s.mdms, "-v", "mdms", "serve", "--port", str(s.mdms.port))
    desk = re.search(r"^guardian-desk at (\S+)/desk password (\S+)", accounts.read_text(), re.M)
    yield {"system": s, "url": s.mdms_url(), "ca": s.mdms_ca(), "passwords": passwords,
           "log": s.logs / "mdms.log", "desk": desk.group(1), "desk_password": desk.group(2),
           "desk_ca": s.exchange / "holder-guardian.cert.pem"}
    s.close()


class Client:
    """A cookie-keeping HTTP client that does not follow redirects."""

    def __init__(self, url, ca):
        self.url = url
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect,
            urllib.request.HTTPSHandler(context=tls.client_context(ca)))
        self.csrf = None
        self.headers = None  # of the last response

    def request(self, method, path, data=None, headers=None):
        body = None
        h = dict(headers or {})
        if isinstance(data, dict):
            body = urllib.parse.urlencode(data).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        elif data is not None:
            body = data
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=h)
        try:
            with self.opener.open(req, timeout=30) as r:
                self.headers = r.headers
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            self.headers = e.headers
            return e.code, e.read()

    def cookie(self, name):
        return next((c.value for c in self.jar if c.name == name), None)

    def staff_login(self, user, password):
        self.request("GET", "/login")
        return self.request("POST", "/login", {"username": user, "password": password,
                                               "csrf": self.cookie("gv_login_csrf")})

    def customer_login(self, cid, password):
        """As the portal script does: the salt from the server, the verifier
        derived here; the password never leaves."""
        p = json.loads(self.request("GET", f"/api/portal/params?customer={cid}")[1])
        salt, iterations = customer.kdf_params(p)
        verifier = base64.b64encode(customer.derive_keys(password, cid, salt,
                                                         iterations)[0]).decode()
        status, body = self.request("POST", "/api/portal/login",
                                    json.dumps({"customer": cid, "verifier": verifier}).encode(),
                                    {"Content-Type": "application/json"})
        if status == 200:
            self.csrf = json.loads(body)["csrf"]
        return status


def logged_in(site, role):
    c = Client(site["url"], site["ca"])
    if role == "customer":
        assert c.customer_login("c01", demo.DEMO_PASSWORD) == 200
    else:
        status, _ = c.staff_login(role, site["passwords"][role])
        assert status == 303
        _, page = c.request("GET", HOME_PAGE[role])
        c.csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
    return c


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix_every_route(site, role):
    c = logged_in(site, role)
    for (method, path), allowed in ROLE_MATRIX.items():
        data = {"csrf": c.csrf, "period_days": "1", "id": "999999", "decision": "decline", "reason": "r",
                "username": f"u-{role}", "role": "auditor", "password": "x" * 14} \
            if method == "POST" else None
        status, _ = c.request(method, path, data)
        if role in allowed:  # reached (a JSON API says what it wanted instead of a form)
            ok = (200, 303, 400) if path.startswith("/api/") else (200, 303)
            assert status in ok, (role, method, path, status)
        else:
            assert status == 403, (role, method, path, status)


def test_anonymous_csrf_and_unknown_routes(site):
    c = Client(site["url"], site["ca"])
    for (method, path) in ROLE_MATRIX:
        status, _ = c.request(method, path, {} if method == "POST" else None)
        assert status in (303, 401), (method, path, status)  # to the login page, or 401 for APIs
    a = logged_in(site, "analyst")
    assert a.request("POST", "/analyst/request", {"csrf": "forged"})[0] == 403
    assert a.request("POST", "/analyst/request", {})[0] == 403
    assert a.request("GET", "/debug")[0] == 404
    status, _, = a.request("GET", "/operator")
    assert status == 403


def test_login_throttling(site):
    admin = logged_in(site, "admin")
    assert admin.request("POST", "/admin/users", {"csrf": admin.csrf, "username": "lockme",
                                                  "role": "auditor",
                                                  "password": "lockme-password"})[0] == 303
    c = Client(site["url"], site["ca"])
    for _ in range(4):
        assert c.staff_login("lockme", "wrong password!")[0] == 401
    status, body = c.staff_login("lockme", "wrong password!")  # the fifth: the lock starts,
    assert status == 429 and b"Too many failed logins" in body  # and is announced at once
    status, body = c.staff_login("lockme", "lockme-password")
    assert status == 429 and b"Too many failed logins" in body
    p = Client(site["url"], site["ca"])
    for _ in range(5):
        assert p.customer_login("c09", "not the password") == 401
    assert p.customer_login("c09", demo.DEMO_PASSWORD) == 429
    assert p.customer_login("c08", demo.DEMO_PASSWORD) == 200  # others are not locked out
    # The admin removes the account: it cannot log in any more.
    assert admin.request("POST", "/admin/users/delete", {"csrf": admin.csrf, "confirm": "yes",
                                                         "username": "lockme"})[0] == 200
    assert b"lockme" not in admin.request("GET", "/admin")[1]


def test_customer_sees_only_their_own_meter(site):
    c = logged_in(site, "customer")
    status, body = c.request("GET", "/api/portal/data")
    data = json.loads(body)
    assert status == 200 and data["meters"] == ["m01"]
    assert {r["meter"] for r in data["readings"]} == {"m01"}
    assert b'"wh"' not in body and b"energy" not in body  # ciphertext only
    assert c.request("GET", "/api/portal/data?customer=c02")[1] == body  # no way to ask
    # Unknown customer ids get stable decoy parameters: ids cannot be enumerated.
    a = json.loads(c.request("GET", "/api/portal/params?customer=nobody")[1])
    b = json.loads(c.request("GET", "/api/portal/params?customer=nobody")[1])
    real = json.loads(c.request("GET", "/api/portal/params?customer=c02")[1])
    assert a == b and set(a) == set(real) and a["salt"] != real["salt"]


# --- in the browser ---------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed: `make test` installs it as root on"
                    " Debian; otherwise run `sudo apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


STAFF_TEXT = {"admin": "Administration", "operator": "Fleet health",
              "analyst": "Neighbourhood demand", "billing": "Bills", "auditor": "Audit log",
              "guardian": "Decryption requests"}


@pytest.mark.parametrize("role", list(STAFF_TEXT))
def test_each_role_in_the_browser(site, browser, role):
    page = browser.new_page(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site["url"] + "/login")
    page.fill("input[name=username]", role)
    page.fill("input[name=password]", site["passwords"][role])
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert page.url.endswith(HOME_PAGE[role])
    assert page.locator("h1").first.inner_text() == STAFF_TEXT[role]
    page.screenshot(path=str(ARTIFACTS / f"web-{role}.png"), full_page=True)
    page.screenshot(path=str(ARTIFACTS / f"docs-{role}.png"))  # the README's, one screen
    for other, path in HOME_PAGE.items():
        if other not in (role, "customer"):
            resp = page.goto(site["url"] + path)
            assert resp.status == 403, (role, path)
    if role == "operator":  # every meter just reported: fresh, with a day's sparkline
        page.goto(site["url"] + "/operator")
        rows = page.locator("#fleet tbody tr").all()
        assert len(rows) == 10 and all(r.get_attribute("data-fresh") == "ok" for r in rows)
        for r in rows:
            ys = [float(p.split(",")[1]) for p in
                  r.locator("polyline").get_attribute("points").split()]
            assert min(ys) == 0.0 and len(ys) == 96  # the busiest quarter hour at full height
            # The meter's own telemetry, in words (the emulator has no radio).
            device = r.locator("td.device").inner_text()
            assert "last start: power-on" in device and "KiB memory free" in device, device
            assert "Wi-Fi" not in device
        assert "every meter and gateway reports on time" in page.inner_text("#alerts")
    if role == "auditor":
        page.goto(site["url"] + "/auditor")
        assert page.locator("[data-verified=yes]").count() == 2  # both key holders
    assert errors == []
    page.close()


def test_charts_name_their_axes_and_hover_in_units(site, browser):
    """The analyst's hourly chart: axis titles drawn, and the hover shows
    each neighbourhood's value with its unit, equal to the released
    quarter-hours of that hour summed from the CSV export."""
    import csv
    import io

    page = browser.new_page(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    _login(page, site, "analyst")
    titles = page.locator("#hourly svg text.title").all_text_contents()
    assert titles == ["time (UTC)", "energy per hour (kWh)"]
    # k and noise, stated from the released values (the site's policy: k=5, no noise).
    stated = " ".join(page.locator("main p").first.inner_text().split())
    assert "each the sum over at least 5 households (the key holders' k), exact (no noise)" \
        in stated, stated
    _, body = logged_in(site, "analyst").request("GET", "/analyst/demand.csv")
    truth: dict = {}
    for r in csv.DictReader(io.StringIO(body.decode())):
        end = r["interval_end_utc"]  # YYYY-MM-DD HH:MM, the end of a quarter hour
        hour = (dt.datetime.fromisoformat(end) - dt.timedelta(seconds=1)).strftime("%m-%d %H:00")
        truth.setdefault(hour, {}).setdefault(r["neighbourhood"], 0)
        truth[hour][r["neighbourhood"]] += int(r["energy_wh"])
    box = page.locator("#hourly svg").bounding_box()
    for fraction in (0.3, 0.6, 0.9):
        page.mouse.move(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
        tip = page.locator("#hourly .tip").inner_text().splitlines()
        shown = dict(line.split(": ") for line in tip[1:])
        assert shown == {n: f"{wh / 1000:.3f} kWh" for n, wh in truth[tip[0]].items()}, tip
    page.close()


def test_a_typo_at_login_does_not_break_the_form(site, browser):
    """After one wrong password the form used to carry an empty CSRF field:
    every later try said "Your login form expired"."""
    page = browser.new_page(ignore_https_errors=True)
    page.goto(site["url"] + "/login")
    page.fill("input[name=username]", "analyst")
    page.fill("input[name=password]", "not the password")
    page.click("form button")
    assert "Wrong user name or password" in page.content()
    page.fill("input[name=username]", "analyst")
    page.fill("input[name=password]", site["passwords"]["analyst"])
    page.click("form button")
    page.wait_for_url("**/analyst")
    page.close()


def _login(page, site, role):
    page.goto(site["url"] + "/login")
    page.fill("input[name=username]", role)
    page.fill("input[name=password]", site["passwords"][role])
    page.click("button[type=submit]")
    page.wait_for_url("**" + HOME_PAGE[role])


def test_admin_confirms_removal_keeps_the_form_and_changes_accounts(site, browser):
    """Remove asks first; a refused form keeps what was typed (never the
    password); a role change or password reset ends that user's sessions."""
    page = browser.new_page(ignore_https_errors=True)
    _login(page, site, "admin")
    page.fill("#add-user input[name=username]", "casey")
    page.select_option("#add-user select[name=role]", "auditor")
    page.fill("#add-user input[name=password]", "short")
    page.evaluate("document.querySelector('#add-user input[name=password]').minLength = 0")
    page.click("#add-user button")
    assert "at least 12 characters" in page.inner_text("[role=alert]")
    assert page.input_value("#add-user input[name=username]") == "casey"
    assert page.input_value("#add-user select[name=role]") == "auditor"
    assert page.input_value("#add-user input[name=password]") == ""
    page.fill("#add-user input[name=password]", "a-long-enough-pass")
    page.click("#add-user button")
    page.wait_for_url("**/admin")
    casey = Client(site["url"], site["ca"])
    assert casey.staff_login("casey", "a-long-enough-pass")[0] == 303
    assert casey.request("GET", "/auditor")[0] == 200
    # The admin makes casey an analyst: casey's session ends, the new role holds.
    page.select_option("#update-user select[name=username]", "casey")
    page.select_option("#update-user select[name=role]", "analyst")
    page.click("#update-user button")
    assert "casey: role is now analyst" in page.inner_text("[role=status]")
    assert casey.request("GET", "/auditor")[0] == 303  # to the login page
    assert casey.staff_login("casey", "a-long-enough-pass")[0] == 303
    assert casey.request("GET", "/analyst")[0] == 200
    # Remove: a confirmation first; "keep" keeps.
    page.click("text=Remove casey")
    assert page.locator("h1").inner_text() == "Remove casey?"
    page.click("text=No, keep the account")
    page.wait_for_url("**/admin")
    assert "casey" in page.inner_text("#users")
    page.click("text=Remove casey")
    page.click("text=Yes, remove casey")
    assert "casey was removed" in page.inner_text("[role=status]")
    assert "casey" not in page.inner_text("#users")
    assert casey.request("GET", "/analyst")[0] == 303
    page.close()


def test_refusals_are_pages_with_a_way_back(site, browser):
    page = browser.new_page(ignore_https_errors=True)
    resp = page.goto(site["url"] + "/no/such/page")
    assert resp.status == 404 and page.locator("h1").inner_text() == "No such page"
    page.click("text=To the login page")
    page.wait_for_url("**/login")
    _login(page, site, "billing")
    resp = page.goto(site["url"] + "/auditor")
    assert resp.status == 403 and page.locator("h1").inner_text() == "Not for your role"
    page.click("text=Back to your start page")
    page.wait_for_url("**/billing")
    page.close()
    # A customer who logs out from the page header lands on the portal.
    c = logged_in(site, "customer")
    status, _ = c.request("POST", "/logout", {"csrf": c.csrf})
    assert status == 303 and c.headers["Location"] == "/portal"


AXE = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()
SIZES = {"desktop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}


def _accessible_and_fits(page, what):
    """axe-core (npm's, as shipped in axe-playwright-python) finds nothing,
    and the page needs no sideways scrolling."""
    page.evaluate(AXE)  # each navigation needs it again; CSP does not apply to this
    found = page.evaluate("axe.run(document).then(r => r.violations.map(v => ({id: v.id,"
                          " impact: v.impact, nodes: v.nodes.slice(0, 3).map(n => n.html)})))")
    assert found == [], (what, found)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, (what, f"{overflow} px wider than the screen")
    page.screenshot(path=str(ARTIFACTS / f"a11y-{'-'.join(map(str, what))}.png".replace("/", "_")),
                    full_page=True)


@pytest.mark.parametrize("size", list(SIZES))
def test_every_page_is_accessible_and_fits_the_screen(site, browser, size):
    logged_in(site, "analyst").request("POST", "/analyst/request", {})  # no CSRF: refused
    a = logged_in(site, "analyst")
    a.request("POST", "/analyst/request", {"csrf": a.csrf})  # the guardian has one pending
    page = browser.new_page(viewport=SIZES[size], ignore_https_errors=True)
    for path in ("/login", "/portal", "/no/such/page"):
        page.goto(site["url"] + path)
        _accessible_and_fits(page, (size, path))
    page.goto(site["url"] + "/portal")
    page.click("#forgot")
    _accessible_and_fits(page, (size, "portal recovery"))
    page.goto(site["url"] + "/login")  # an error state that counts no failed login
    page.evaluate("document.querySelector('input[name=csrf]').value = 'stale'")
    page.fill("input[name=username]", "nobody")
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    assert "Your login form expired" in page.inner_text("[role=alert]")
    _accessible_and_fits(page, (size, "login error"))
    for role in STAFF_TEXT:
        _login(page, site, role)
        _accessible_and_fits(page, (size, role))
        if role == "admin":
            page.click("#users button.danger >> nth=0")
            _accessible_and_fits(page, (size, "admin remove confirmation"))
        if role == "billing":
            page.goto(site["url"] + "/auditor")
            _accessible_and_fits(page, (size, "403"))
        page.goto(site["url"] + HOME_PAGE[role])
        page.click("header button")
    page.goto(site["url"] + "/portal")
    page.fill("#customer", "c01")
    page.fill("#password", demo.DEMO_PASSWORD)
    page.click("#portal-login button")
    page.wait_for_selector("body[data-ready=yes]", timeout=60000)
    _accessible_and_fits(page, (size, "portal unlocked"))
    page.close()


def test_auditor_filters_searches_pages_and_exports(site, browser):
    """Every aggregate the site released is one grant in each holder's log:
    the filters find exactly those (ground truth: the neighbourhoods'
    quarter hours in the data files), subjects read as words, the pages
    walk through them, the export holds the same selection."""
    s = site["system"]
    released = len(groundtruth.aggregates(
        {m: groundtruth.interval_energy(f) for m, f in zip(sorted(s.assignment), s.files,
                                                            strict=True)}, s.assignment))
    auditor = logged_in(site, "auditor")
    _, body = auditor.request("GET", "/auditor/log.csv?role=utility&kind=aggregate"
                                     "&decision=granted")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert len(rows) == released == 192
    assert all(re.fullmatch(r"(north|south), the quarter hour to 2026-01-0[12] \d\d:\d\d UTC",
                            r["subject_in_words"]) for r in rows), rows[0]
    page = browser.new_page(ignore_https_errors=True)
    _login(page, site, "auditor")
    page.select_option("#audit-filter select[name=kind]", "aggregate")
    page.select_option("#audit-filter select[name=decision]", "granted")
    page.fill("#audit-filter input[name=q]", "south")
    page.click("#audit-filter button")
    south = sum(1 for r in rows if r["subject_in_words"].startswith("south"))
    assert page.inner_text("#audit-count").startswith(f"{2 * south} decision(s)")  # both holders
    assert page.locator("#audit tbody tr").count() == 50
    page.click("text=Older ›")
    assert "page 2 of" in page.inner_text("#audit-count")
    assert page.input_value("#audit-filter input[name=q]") == "south"  # the filter holds
    page.close()


def _desk_login(page, site) -> None:
    page.goto(site["desk"] + "/desk")
    page.fill("#password", site["desk_password"])
    page.click("main form button")
    page.wait_for_selector("h1:text('Decryption requests')")


@pytest.mark.parametrize("size", list(SIZES))
def test_guardian_decides_at_its_own_desk(site, browser, size):
    """Billing and the analyst ask in the MDMS, which only proposes; the
    guardian decides at the desk its own key holder serves, sees what each
    request covers, must say why to decline, and sees each decision
    confirmed with its time; the requesters see the answer in the MDMS.
    On a desk and on a phone."""
    page = browser.new_page(viewport=SIZES[size], ignore_https_errors=True)
    asked = {}
    for role, button in (("billing", "Request release of signed bill days"),
                         ("analyst", "Request release of newly sealed intervals")):
        _login(page, site, role)
        page.click(f"text={button}")
        page.wait_for_url("**" + HOME_PAGE[role])
        row = page.locator("table.requests tbody tr").first
        asked[role] = row.get_attribute("data-request")
        page.click("header button")  # log out
    # Everything was released when the site was set up (under the demo's
    # standing approvals): nothing waits, so nothing is proposed.
    for role in ("billing", "analyst"):
        r = site["system"].mdms_store().request(int(asked[role]), pending_only=False)
        assert r["status"] == "declined" and r["reason"] == "nothing waited to be released"
    # The MDMS cannot decide: its guardian page only says where that happens.
    _login(page, site, "guardian")
    assert "gridveil holder decide" in page.inner_text("main")
    assert page.locator("form[action='/guardian/decide']").count() == 0
    page.click("header button")

    # Two requests the MDMS proposed, as it does when something waits.
    auth = site["system"].authority()
    bills = auth.propose("bills", ["north"], 0, 86400 * 20000, "billing asks", "mdms:901")
    demand = auth.propose("aggregates", ["south"], 0, 86400 * 20000, "analyst asks",
                          "mdms:902")
    _desk_login(page, site)
    card = page.locator(f"#request-{demand}")
    assert "quarter-hour totals of south" in card.inner_text()
    assert "In their words: “analyst asks”" in card.inner_text()
    page.screenshot(path=str(ARTIFACTS / f"web-guardian-{size}.png"), full_page=True)
    _accessible_and_fits(page, (size, "guardian's desk with requests"))
    card.locator("input[name=reason]").fill("Wait for the quarterly review")
    card.locator("button.danger").click()
    assert f"Request {demand} declined: decision" in page.inner_text("[role=status]")
    page.locator(f"#request-{bills} button >> nth=0").click()
    status = page.inner_text("[role=status]")
    assert re.search(rf"Request {bills} approved: decision \d+ signed at \d{{4}}-\d\d-\d\d"
                     r" \d\d:\d\d UTC", status), status
    decided = page.inner_text("#decided")
    assert "Wait for the quarterly review" in decided and "bills of north" in decided
    _accessible_and_fits(page, (size, "guardian's desk after deciding"))
    page.close()
    # The decisions are signed by the guardian's key and in its log, never the MDMS's.
    got = {d.request: d for d in auth.refresh_decisions()}
    assert not got["mdms:902"].approved and got["mdms:901"].approved
    entries = auth.holders["guardian"].log()
    mine = [e for e in entries if e["kind"] == "decision"]
    assert any("Wait for the quarterly review" in e["reason"] for e in mine)
    assert all(e["requester"] == "guardian" for e in mine)


def test_customer_portal_decrypts_in_the_browser(site, browser):
    s = site["system"]
    kf = customer_export.fetch(site["url"], site["ca"], "c03", demo.DEMO_PASSWORD)
    verifier, wrap_key = customer.derive_keys(demo.DEMO_PASSWORD, "c03",
                                              *customer.kdf_params(kf["kdf"]))
    log_start = site["log"].stat().st_size
    page = browser.new_page(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    bodies = []
    page.on("request", lambda r: bodies.append((r.url, r.post_data_buffer or b"")))
    page.goto(site["url"] + "/portal")
    page.fill("#customer", "c03")
    page.fill("#password", demo.DEMO_PASSWORD)
    page.click("#portal-login button")
    page.wait_for_selector("body[data-ready=yes]", timeout=60000)
    page.screenshot(path=str(ARTIFACTS / "web-portal.png"))
    shown = {int(tr.get_attribute("data-end")): int(tr.get_attribute("data-wh"))
             for tr in page.locator("#readings tbody tr").all()}
    truth = groundtruth.interval_energy(s.files[2])
    assert shown == truth  # the customer's decrypted values are the ground truth
    total = float(page.inner_text("#total").split()[1])
    assert round(total * 1000) == sum(truth.values())
    page.click("#portal-logout")
    page.wait_for_url("**/portal")
    assert page.request.get(site["url"] + "/api/portal/data").status == 401
    page.close()

    secrets_ = [demo.DEMO_PASSWORD.encode(), wrap_key, base64.b64encode(wrap_key), wrap_key.hex().encode()]
    sent = [b for u, b in bodies if b and not u.endswith("/logout")]
    assert len(sent) == 1 and b'"verifier"' in sent[0]  # the only body: the login
    for b in sent:
        assert not any(x in b for x in secrets_)
        assert b'"wh"' not in b
    log = site["log"].read_bytes()[log_start:]
    assert log  # the server did log the session's requests
    for x in secrets_ + [verifier, base64.b64encode(verifier)]:
        assert x not in log
    for f in s.mdms.home.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for x in secrets_ + [verifier, base64.b64encode(verifier)]:
                assert x not in data, f


@pytest.mark.parametrize("size", list(SIZES))
def test_portal_days_money_and_bills_match_the_ground_truth(site, browser, size):
    """The household's own views, from readings its browser decrypted: days
    in the tariff's zone with the day before beside them; the cost of each
    band; the released bill recomputed band by band, to the micro-cent; all
    against the raw data file and the tariff, not the code under test."""
    s = site["system"]
    truth = groundtruth.interval_energy(s.files[2])  # c03's meter, m03
    tz = dt.timezone(dt.timedelta(hours=1))
    local_day = {end: dt.datetime.fromtimestamp(end - 900, tz).date() for end in truth}
    days = sorted(set(local_day.values()))
    assert len(days) == 2  # one UTC day is two days an hour ahead of UTC
    page = browser.new_page(viewport=SIZES[size], ignore_https_errors=True,
                            timezone_id="UTC", accept_downloads=True)
    page.goto(site["url"] + "/portal")
    page.fill("#customer", "c03")
    page.fill("#password", demo.DEMO_PASSWORD)
    page.click("#portal-login button")
    page.wait_for_selector("body[data-ready=yes]", timeout=60000)

    def kwh_on(day):
        return f"{sum(wh for e, wh in truth.items() if local_day[e] == day) / 1000:.3f} kWh"

    # Opens on the newest day, in tariff time, still running: it is set
    # against the same hours of the day before (none: the data starts at
    # 01:00 local time, and the newest day ends at 01:00).
    assert page.inner_text("#period") == days[1].strftime("%A %-d %B %Y")
    assert page.inner_text("#this-label") == "This day so far"
    assert page.inner_text("#this-period").startswith(kwh_on(days[1]))
    assert page.inner_text("#prev-period") == "no readings"
    assert page.is_disabled("#next") and not page.is_disabled("#prev")
    page.click("#prev")
    assert page.inner_text("#period") == days[0].strftime("%A %-d %B %Y")
    assert page.inner_text("#this-label") == "This day"
    assert page.inner_text("#this-period").startswith(kwh_on(days[0]))
    # The money view: kWh per band in that day, priced by the tariff.
    bands = {}
    for end, wh in truth.items():
        if local_day[end] == days[0]:
            name = TOU.bands[TOU.band(end - 900)]
            bands[name] = bands.get(name, 0) + wh
    shown = {r[0]: r[1] for r in (tr.locator("td").all_inner_texts()
                                   for tr in page.locator("#bands tbody tr").all())}
    assert shown == {n: f"{wh / 1000:.3f}" for n, wh in bands.items()}
    cost = sum(wh * TOU.prices[{v: k for k, v in TOU.bands.items()}[n]] for n, wh in bands.items())
    assert page.inner_text("#bands-total") == f"€{cost / 1e8:.2f}"
    # Week and month hold both days.
    for view, title in (("week", "29 December – 4 January 2026"), ("month", "January 2026")):
        page.click(f"#view-buttons [data-view={view}]")
        assert page.get_attribute(f"#view-buttons [data-view={view}]", "aria-pressed") == "true"
        assert page.inner_text("#period") == title
    _accessible_and_fits(page, (size, "portal month"))
    page.click("#view-buttons [data-view=week]")
    assert page.inner_text("#this-period").startswith(f"{sum(truth.values()) / 1000:.3f} kWh")
    # The released bill (a UTC day), recomputed here from the readings.
    (bill,) = page.locator("#bills tr.bill-total").all()
    want = groundtruth.bills({"m03": truth}, {"m03": TOU}, 900)
    exact = int(bill.get_attribute("data-computed"))
    assert exact == sum(want.values())
    assert int(bill.get_attribute("data-billed")) in (exact // 10**6 * 10**6,
                                                      -(-exact // 10**6) * 10**6)
    assert "matches your readings to the cent" in bill.inner_text()
    # The device's own zone (UTC, set above): one day.
    page.select_option("#zone", "device")
    page.click("#view-buttons [data-view=day]")
    assert page.inner_text("#period") == "Thursday 1 January 2026"
    assert page.is_disabled("#prev") and page.is_disabled("#next")
    # A CSV of the range chosen, a line per quarter hour.
    page.fill("#csv-from", "2026-01-01")
    page.fill("#csv-to", "2026-01-01")
    with page.expect_download() as got:
        page.click("#csv-form button")
    lines = Path(got.value.path()).read_text().splitlines()
    assert lines[0] == "TYPE,DATE,START TIME,END TIME,USAGE,UNITS,COST,NOTES"
    assert sorted(round(float(x.split(",")[4]) * 1000) for x in lines[1:]) == sorted(truth.values())
    page.close()


@pytest.mark.parametrize("size,who", [("desktop", 6), ("phone", 10)])
def test_password_change_and_recovery_happen_in_the_browser(site, browser, size, who):
    """A household changes its password in the portal, then forgets it and
    gets back in with the recovery code from enrollment, which is replaced
    by a new one shown once. The keys the browser made work in Python too
    (`customer export` decrypts every reading with the new password), and
    the server only ever received verifiers and wrapped keys. On a desktop
    and on a phone's screen, each with its own household (the first run
    changes its password for good)."""
    from host_tools import customer_export

    s = site["system"]
    cid = f"c{who:02d}"
    truth = sorted(groundtruth.interval_energy(s.files[who - 1]).values())  # its meter

    def decrypted(password):
        rows = customer_export.readings(site["url"], site["ca"], cid, password)
        return sorted(r[3] for r in rows)

    second, third = "violet kettle harbour 19 lantern", "quiet granite orchard 73 pylon"
    page = browser.new_page(viewport=SIZES[size], ignore_https_errors=True)
    bodies = []
    page.on("request", lambda r: bodies.append(r.post_data_buffer or b""))
    page.goto(site["url"] + "/portal")
    page.fill("#customer", cid)
    page.fill("#password", demo.DEMO_PASSWORD)
    page.click("#portal-login button")
    page.wait_for_selector("body[data-ready=yes]", timeout=60000)
    page.fill("#pw-current", "not my password at all")
    page.fill("#pw-new", second)
    page.fill("#pw-repeat", second)
    page.click("#password-form button")
    page.wait_for_selector("#pw-status:has-text('not right')", timeout=60000)
    page.fill("#pw-current", demo.DEMO_PASSWORD)
    page.click("#password-form button")
    page.wait_for_selector("#pw-status:has-text('Password changed')", timeout=60000)
    assert Client(site["url"], site["ca"]).customer_login(cid, demo.DEMO_PASSWORD) == 401
    assert decrypted(second) == truth

    # Forgotten: the recovery code from `customer create` gets them back in.
    page.goto(site["url"] + "/portal")
    page.click("#forgot")
    assert "only way back" in page.inner_text("#recover-card")
    old_code = s.recovery_codes[cid]
    page.fill("#rc-customer", cid)
    page.fill("#rc-code", "AAAA-" + old_code[5:])  # a mistyped code opens nothing
    page.fill("#rc-new", third)
    page.fill("#rc-repeat", third)
    page.click("#recover-form button")
    page.wait_for_selector("#rc-status:has-text('do not open')", timeout=60000)
    page.fill("#rc-code", old_code.lower())  # case does not matter
    page.click("#recover-form button")
    page.wait_for_selector("#new-code-box:not([hidden])", timeout=60000)
    _accessible_and_fits(page, (size, "recovery code shown"))
    new_code = page.inner_text("#new-code")
    assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){5}-[A-Z2-7]{2}", new_code)
    assert new_code != old_code
    assert decrypted(third) == truth
    for old in (demo.DEMO_PASSWORD, second):
        assert Client(site["url"], site["ca"]).customer_login(cid, old) == 401
    # The new code opens the key in Python; the old one opens nothing.
    _, body = Client(site["url"], site["ca"]).request("GET", f"/api/portal/recovery?customer={cid}")
    held = json.loads(body)
    salt = base64.b64decode(held["salt"])
    kf = {"customer_id": cid, "wrapped_private_key": held["wrapped_private_key"]}
    customer.unwrap(kf, customer.recovery_keys(new_code, cid, salt)[1])
    with pytest.raises(customer.ConfigError, match="wrong password"):
        customer.unwrap(kf, customer.recovery_keys(old_code, cid, salt)[1])
    page.close()
    for secret in (demo.DEMO_PASSWORD, second, third, old_code, new_code):
        assert not any(secret.encode() in b for b in bodies), secret
    assert "Traceback" not in site["log"].read_text()


def test_a_household_activates_in_the_browser_then_sees_what_to_expect(site, browser):
    """A household new to the guardian, with its letter (household id, meter,
    one-time code): the browser makes its keys, signs its consent and proves
    the code; the guardian then counts its meter and binds its sealing key.
    Before its meter has reported it sees words, not a chart from -1 to 6."""
    s = site["system"]
    out = s.cli(s.holders["guardian"], "holder", "enroll", "m99", "--household", "c99").stdout
    code = re.search(r"activation code for household c99: (\S+)", out).group(1)
    page = browser.new_page(ignore_https_errors=True)
    errors, sent = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: sent.append(r.post_data or "") if r.method == "POST" else 0)
    page.goto(site["url"] + "/portal")
    page.click("#first-time")
    page.fill("#ac-customer", "c99")
    page.fill("#ac-code", code)
    page.click("#ac-look")
    page.wait_for_selector("#ac-meters-box:not([hidden])")
    assert "m99" in page.inner_text("#ac-meters")
    _accessible_and_fits(page, ("desktop", "portal activation"))
    page.check("#ac-mine")
    page.fill("#ac-new", demo.DEMO_PASSWORD)
    page.fill("#ac-repeat", demo.DEMO_PASSWORD)
    page.click("#activate-form button[type=submit]")
    page.wait_for_selector("#ac-code-box:not([hidden])", timeout=60000)
    recovery = page.inner_text("#ac-recovery")
    assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){5}-[A-Z2-7]{2}", recovery)
    # The code and the password never left the page; the consent did.
    assert not any(code in b or demo.DEMO_PASSWORD in b for b in sent)
    (binding,) = [b for b in s.authority().guardian.bindings() if b["household"] == "c99"]
    assert binding["meters"] == ["m99"]
    page.fill("#password", demo.DEMO_PASSWORD)
    page.click("#portal-login button")
    page.wait_for_selector("body[data-ready=yes]", timeout=60000)
    assert page.is_visible("#empty") and not page.is_visible("#views")
    assert "No readings yet" in page.inner_text("#empty")
    assert "No bill has been released" in page.inner_text("#no-bills")
    assert page.locator("svg").count() == 0 and errors == []
    _accessible_and_fits(page, ("desktop", "portal with no readings"))
    # A second meter the guardian enrolls later waits for this household's word.
    s.cli(s.holders["guardian"], "holder", "enroll", "m98", "--household", "c99")
    page.goto(site["url"] + "/portal")
    page.fill("#customer", "c99")
    page.fill("#password", demo.DEMO_PASSWORD)
    page.click("#portal-login button")
    page.wait_for_selector("#confirm-card:not([hidden])", timeout=60000)
    assert "m98" in page.inner_text("#confirm-meters")
    page.click("#confirm-yes")
    page.wait_for_selector("#confirm-status:has-text('Confirmed')", timeout=60000)
    (binding,) = [b for b in s.authority().guardian.bindings() if b["household"] == "c99"]
    assert binding["meters"] == ["m98", "m99"]
    page.close()


def test_malformed_key_changes_get_a_400_and_change_nothing(site):
    """Garbage, short or oversized secrets, a wrong proof: each gets a clear
    answer, no traceback, and the customer can still log in as before."""
    anyone = Client(site["url"], site["ca"])
    ok_shape = {"customer": "c07", "recovery_verifier": base64.b64encode(b"x" * 32).decode(),
                "verifier": base64.b64encode(b"v" * 32).decode(),
                "kdf": {"name": customer.KDF_NAME, "iterations": 600_000,
                        "salt": base64.b64encode(b"s" * 16).decode()},
                "wrapped_private_key": {"alg": "AES-GCM",
                                        "nonce": base64.b64encode(b"n" * 12).decode(),
                                        "ciphertext": base64.b64encode(b"c" * 1800).decode()}}
    json_h = {"Content-Type": "application/json"}
    for body, want in ((b"not json", 400), (b"[1]", 400),
                       (json.dumps({**ok_shape, "recovery_verifier": "%%%"}).encode(), 400),
                       (json.dumps({**ok_shape, "recovery_verifier": "A" * 9000}).encode(), 400),
                       (json.dumps(ok_shape).encode(), 401)):  # the proof is wrong
        status, answer = anyone.request("POST", "/api/portal/recover", body, json_h)
        assert status == want and b"error" in answer, (body[:40], status, answer)
    c = logged_in(site, "customer")  # c01
    bad_kdf = {**ok_shape, "old_verifier": ok_shape["verifier"],
               "kdf": {**ok_shape["kdf"], "iterations": 1000}}
    for body, want in ((b"{}", 400), (json.dumps(bad_kdf).encode(), 403)):
        status, _ = c.request("POST", "/api/portal/password", body,
                              {**json_h, "X-CSRF-Token": c.csrf})
        assert status == want, (body[:40], status)
    assert Client(site["url"], site["ca"]).customer_login("c07", demo.DEMO_PASSWORD) == 200
    assert "Traceback" not in site["log"].read_text()


def test_recovery_copies_do_not_tell_who_has_an_account(site):
    """Anyone may fetch a recovery copy (it is noise without the code), so
    an unknown id must get one that looks the same and stays the same:
    asking tells nobody which ids are customers."""
    anyone = Client(site["url"], site["ca"])

    def copy(cid):
        status, body = anyone.request("GET", f"/api/portal/recovery?customer={cid}")
        assert status == 200
        d = json.loads(body)
        w = d["wrapped_private_key"]
        return (len(base64.b64decode(d["salt"])), w["alg"], len(base64.b64decode(w["nonce"])),
                len(base64.b64decode(w["ciphertext"])) > 1000), body

    real, _ = copy("c08")
    fake, first = copy("nobody-here")
    assert fake == real
    assert copy("nobody-here")[1] == first  # stable: a second ask cannot tell either


# --- the utility serving the portal: what the portal's own code refuses --------------

def _serving(body: str):
    """A route handler that answers with this JSON, as a hostile server would."""
    return lambda route: route.fulfill(status=200, content_type="application/json", body=body)


def test_portal_refuses_weakened_parameters_from_its_server(site, browser):
    """The MDMS is the utility's: it sends the KDF parameters. A server that
    asks for few iterations (so that it can guess the password quickly from
    the verifier) gets no verifier at all; nor does one sending a short salt
    or an unknown derivation."""
    real = json.loads(Client(site["url"], site["ca"]).request(
        "GET", "/api/portal/params?customer=c04")[1])
    for bad in ({**real, "iterations": 1000}, {**real, "iterations": "600000"},
                {**real, "salt": base64.b64encode(b"short").decode()},
                {**real, "name": "PBKDF2-SHA256", "salt_auth": real["salt"],
                 "salt_wrap": real["salt"]}):
        page = browser.new_page(ignore_https_errors=True)
        posts = []
        page.on("request", lambda r, posts=posts: posts.append(r.url) if r.method == "POST" else 0)
        page.route("**/api/portal/params*", _serving(json.dumps(bad)))
        page.goto(site["url"] + "/portal")
        page.wait_for_selector("#portal-login[data-ready=yes]")
        page.fill("#customer", "c04")
        page.fill("#password", demo.DEMO_PASSWORD)
        page.click("#portal-login button")
        page.wait_for_selector("#status:has-text('Could not unlock')")
        assert posts == [], bad  # no login attempt: no verifier left the page
        page.close()


def test_login_verifier_is_not_the_wrapping_key(site, browser):
    """What the browser sends is the HKDF login label's output: the same as
    the Python client derives, and never the wrapping key, whatever salt
    the server hands out (there is one salt; the labels are the client's)."""
    kf = customer_export.fetch(site["url"], site["ca"], "c05", demo.DEMO_PASSWORD)
    kf["customer_id"] = "c05"
    salt, iterations = customer.kdf_params(kf["kdf"])
    verifier, wrap_key = customer.derive_keys(demo.DEMO_PASSWORD, "c05", salt, iterations)
    assert verifier != wrap_key
    page = browser.new_page(ignore_https_errors=True)
    sent = []
    page.on("request", lambda r: sent.append(r.post_data or "") if r.url.endswith(
        "/api/portal/login") else 0)
    page.goto(site["url"] + "/portal")
    page.fill("#customer", "c05")
    page.fill("#password", demo.DEMO_PASSWORD)
    page.click("#portal-login button")
    page.wait_for_selector("body[data-ready=yes]", timeout=60000)
    page.close()
    assert [json.loads(b)["verifier"] for b in sent] == [base64.b64encode(verifier).decode()]
    # And the verifier opens nothing: the wrapped key does not decrypt under it.
    with pytest.raises(Exception, match="wrong password"):
        customer.unlock({**kf, "kdf": kf["kdf"]}, "not-" + demo.DEMO_PASSWORD)
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    w = kf["wrapped_private_key"]
    with pytest.raises(InvalidTag):
        AESGCM(verifier).decrypt(base64.b64decode(w["nonce"]), base64.b64decode(w["ciphertext"]),
                                 b"c05")


def test_portal_form_cannot_send_the_password_before_its_script(site, browser):
    """A slow or blocked portal.js must not turn the form into a plain GET
    that puts the password in the URL (and in every log on the way)."""
    page = browser.new_page(ignore_https_errors=True)
    page.route("**/static/portal.*.js", lambda route: route.abort())
    requests = []
    page.on("request", lambda r: requests.append((r.method, r.url, r.post_data or "")))
    page.goto(site["url"] + "/portal")
    form = page.locator("#portal-login")
    assert form.get_attribute("method") == "post"
    assert page.locator("#portal-login [name]").count() == 0
    assert page.locator("#portal-login fieldset").get_attribute("disabled") is not None
    assert page.locator("#password").is_disabled()
    # Even forced (a stray script, an extension): the form posts nothing.
    with page.expect_request(lambda r: r.method == "POST"):
        page.evaluate("document.getElementById('password').value = 'secret-typed-early';"
                      "document.querySelector('#portal-login fieldset').disabled = false;"
                      "document.getElementById('portal-login').submit()")
    posted = [(u, b) for m, u, b in requests if m == "POST"]
    assert posted and all(u.endswith("/portal") and b == "" for u, b in posted), posted
    for _method, url, body in requests:
        assert "secret-typed-early" not in url + body
    page.close()


def test_check_portal_spots_altered_portal_code(site):
    """`gridveil customer check-portal`: what a household (or the guardian)
    runs to see that the utility serves this release's portal unchanged.
    The utility here copies the real portal and alters the script."""
    import http.server
    import threading

    from host_tools import customer_export

    results = customer_export.check_portal(site["url"], site["ca"])
    served = [p for p, _, _ in results]
    assert [p.split(".")[0] for p in served] == ["/static/chart", "/static/household",
                                                 "/static/portal", "/static/account",
                                                 "/static/tables"]
    assert all(same for _, _, same in results)
    real = Client(site["url"], site["ca"])
    copies = {p: real.request("GET", p)[1] for p in ("/portal", *served)}
    copies[served[2]] += b"\nfetch('/collect', {method: 'POST', body: 'the password'});\n"
    csp = "default-src 'self'; script-src 'self';"

    class Hostile(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = copies.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Security-Policy", csp)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        got = {p: same for p, _, same in customer_export.check_portal(url, None)}
        assert [got[p] for p in served] == [True, True, False, True, True]  # portal.js changed
        # An inline script, or a policy that allows one, is refused outright.
        copies["/portal"] = copies["/portal"].replace(b"</main>", b"<script>1</script></main>")
        with pytest.raises(customer_export.ConfigError, match="inline or foreign"):
            customer_export.check_portal(url, None)
    finally:
        srv.shutdown()


def test_static_files_are_hashed_cached_and_compressed(site):
    """Pages link content-hashed names kept a year; text goes out gzipped;
    pages themselves are never cached nor compressed (they carry the CSRF
    token)."""
    import gzip
    import hashlib

    a = logged_in(site, "analyst")
    _, page = a.request("GET", "/analyst", headers={"Accept-Encoding": "gzip"})
    assert a.headers["Cache-Control"] == "no-store" and "Content-Encoding" not in a.headers
    links = re.findall(rb'(?:src|href)="(/static/([a-z]+)\.([0-9a-f]{12})\.(js|css|svg))"', page)
    assert {name.decode() for _, name, _, _ in links} >= {"chart", "dashboard", "app", "favicon"}
    for url, name, digest, ext in links:
        ours = (REPO / "mdms" / "static" / f"{name.decode()}.{ext.decode()}").read_bytes()
        assert hashlib.sha256(ours).hexdigest()[:12] == digest.decode()
        status, body = a.request("GET", url.decode(), headers={"Accept-Encoding": "gzip"})
        assert status == 200 and "immutable" in a.headers["Cache-Control"]
        if a.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert body == ours
        etag = a.headers["ETag"]
        assert a.request("GET", url.decode(), headers={"If-None-Match": etag})[0] == 304
    assert a.request("GET", "/static/chart.js", headers={"Accept-Encoding": "gzip"})[0] == 200
    assert a.headers["Content-Encoding"] == "gzip" and a.headers["Cache-Control"] == "no-cache"
    assert a.request("GET", "/static/chart.000000000000.js")[0] == 404
    assert a.request("GET", "/static/../web.py")[0] == 404


def test_first_loads_stay_under_a_megabyte(site, browser):
    """The analyst's page and the portal (unlocked) from an empty cache; a
    repeat load fetches the page alone, its static files come from cache."""
    from host_tools import pageweight

    rows = {what.split(",")[0] + (" again" if "repeat" in what else ""): (n, wire, raw)
            for what, n, wire, raw in pageweight.measure(
                browser, site["url"], site["passwords"]["analyst"], "c01", demo.DEMO_PASSWORD)}
    for first in ("analyst page", "portal"):
        n, wire, raw = rows[first]
        assert n >= 4 and 0 < wire < pageweight.LIMIT, (first, rows[first])
    for first, again in (("analyst page", "analyst page again"), ("portal", "portal page again")):
        # The page, and the favicon Chromium fetches for itself; the scripts
        # and the style sheet come from the cache.
        assert rows[again][0] <= 2 and rows[again][1] < rows[first][1] / 2, rows


# --- the web front under hostile input (issue: under hostile traffic) ------------------

def test_bad_form_values_get_a_400_with_a_message(site):
    billing = logged_in(site, "billing")
    def newest_request():
        return re.findall(rb'data-request="(\d+)"', billing.request("GET", "/billing")[1])[:1]

    before = newest_request()
    for bad in ("abc", "-3", "0", "401", "1e3", "9" * 40):
        status, body = billing.request("POST", "/billing/request",
                                       {"csrf": billing.csrf, "period_days": bad})
        assert status == 400 and b"whole number of days from 1 to 400" in body, (bad, status)
    assert newest_request() == before  # no request was added
    assert "Traceback" not in site["log"].read_text()


def test_body_limit_holds_while_the_body_streams_in(site):
    """A chunked POST that never ends: refused once it passes the limit, not
    after the server has buffered all of it."""
    import ssl

    host, port = site["url"].split("//")[1].split(":")
    ctx = tls.client_context(site["ca"])
    with socket.create_connection((host, int(port)), timeout=20) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
                  b"urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 65536
        try:
            for _ in range(40):  # 2.5 MiB, past the 1 MiB limit, and no final chunk
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (ssl.SSLError, OSError):
            pass  # the server may close while we still send
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]


def test_only_time_clears_an_address_failure_count(site):
    """A good login of one's own portal account between guesses used to
    reset the address's count: 45 of 45 staff guesses were evaluated. And
    X-Forwarded-For from a client is not believed."""
    from mdms.auth import MAX_FAILURES_PER_CLIENT
    from mdms.config import MdmsHome
    from mdms.store import MdmsStore

    store = MdmsStore(MdmsHome(site["system"].mdms.home).db_url())
    store.clear_failures("ip:127.0.0.1")  # what earlier tests of this module left
    guesser, portal = Client(site["url"], site["ca"]), Client(site["url"], site["ca"])
    statuses = []
    for i in range(MAX_FAILURES_PER_CLIENT + 5):
        statuses.append(guesser.staff_login(f"staff{i % 7}", "a guess")[0])
        assert portal.customer_login("c07", demo.DEMO_PASSWORD) in (200, 429)
    assert statuses[:MAX_FAILURES_PER_CLIENT - 1] == [401] * (MAX_FAILURES_PER_CLIENT - 1)
    assert set(statuses[MAX_FAILURES_PER_CLIENT:]) == {429}
    status, _ = guesser.staff_login("auditor", site["passwords"]["auditor"])
    assert status == 429  # even the right password waits
    status, _ = Client(site["url"], site["ca"]).request(
        "POST", "/login", {"username": "auditor", "password": site["passwords"]["auditor"]},
        {"X-Forwarded-For": "203.0.113.9"})
    assert status in (403, 429)  # (403: no login form cookie) never a session
    store.clear_failures("ip:127.0.0.1")  # the operator's unlock, for the tests after this
    store.close()


# Last in this module: it locks the desk against its own address for a while.
def test_the_desk_refuses_a_forged_form_and_needs_a_reason(site):
    """The desk's own checks, over plain HTTP as an attacker would send it:
    no session, a session without the CSRF token, a decline without a
    reason; wrong passwords lock it for a while."""
    c = Client(site["desk"], site["desk_ca"])
    status, body = c.request("POST", "/desk/decide", {"id": "1", "decision": "approve"})
    assert status == 403 and b"The form expired" in body
    status, _ = c.request("POST", "/desk/login", {"password": site["desk_password"]})
    assert status == 303
    auth = site["system"].authority()
    pid = auth.propose("aggregates", ["north"], 0, 86400, "", "mdms:903")
    status, body = c.request("POST", "/desk/decide", {"id": str(pid), "decision": "approve"})
    assert status == 403  # a logged-in session, but no CSRF token: a forged form
    csrf = re.search(rb'name="csrf" value="([^"]+)"', c.request("GET", "/desk")[1]).group(1)
    status, body = c.request("POST", "/desk/decide", {"id": str(pid), "decision": "decline",
                                                      "reason": "  ", "csrf": csrf.decode()})
    assert status == 400 and b"say why you decline" in body
    assert not [d for d in auth.refresh_decisions() if d.request == "mdms:903"]
    other = Client(site["desk"], site["desk_ca"])
    codes = [other.request("POST", "/desk/login", {"password": f"wrong {i}"})[0]
             for i in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    assert b"Traceback" not in (site["system"].logs / "holder-guardian.log").read_bytes()

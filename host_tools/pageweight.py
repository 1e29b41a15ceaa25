"""What the web pages weigh on the wire: `gridveil pageweight`.

Runs the demo, then opens the analyst's page and the customer portal in a
real headless Chromium with an empty cache (first load) and again with the
cache it filled (repeat load), and counts every byte the browser received:
headers and bodies as sent (gzipped where the server compressed them), and
the bodies unpacked. The browser tests use `measure` on their own site and
hold the first loads under 1 MB."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from . import demo, mdsection

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
LIMIT = 1_000_000  # bytes, a first load of the analyst page or the portal


def chromium() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        raise demo.DemoError("Debian's chromium is needed: sudo apt-get install chromium")
    return found


class Tally:
    """Bytes the page received, load by load. Each request belongs to the
    load it started in, and a load is counted only once all of its requests
    have finished: on a busy machine a response can finish after the page
    went idle, and must not be counted in the next load."""

    def __init__(self, page):
        self.page = page
        self.load = 0
        self.started: dict = {}  # request -> the load it started in
        self.rows: list[tuple[int, str, int, int]] = []  # load, url, on the wire, unpacked
        page.on("request", lambda r: self.started.__setitem__(r, self.load))
        page.on("requestfailed", lambda r: self.started.pop(r, None))
        page.on("requestfinished", self._done)

    def _done(self, request):
        load = self.started.pop(request, self.load)
        response = request.response()
        if response is None:
            return
        sizes = request.sizes()
        try:
            unpacked = len(response.body())
        except Exception:  # noqa: BLE001 - a redirect has no body to read
            unpacked = 0
        self.rows.append((load, request.url,
                          sizes["responseHeadersSize"] + sizes["responseBodySize"], unpacked))

    def take(self) -> tuple[int, int, int]:
        """(requests, bytes on the wire, bytes unpacked) of the current load,
        counting what came over the network (the cache's answers weigh 0)."""
        for _ in range(200):  # at most 10 s for the stragglers
            if self.load not in self.started.values():
                break
            self.page.wait_for_timeout(50)
        rows = [r for r in self.rows if r[0] == self.load and r[2] > 0]
        self.rows = [r for r in self.rows if r[0] != self.load]
        self.load += 1
        return len(rows), sum(r[2] for r in rows), sum(r[3] for r in rows)


def _staff_login(context, url: str, role: str, password: str) -> None:
    context.request.get(url + "/login")
    token = next(c["value"] for c in context.cookies() if c["name"] == "gv_login_csrf")
    context.request.post(url + "/login", form={"username": role, "password": password,
                                               "csrf": token}, max_redirects=0)


def measure(browser, url: str, analyst_password: str, customer: str,
            customer_password: str) -> list[tuple[str, int, int, int]]:
    """[(what, requests, bytes on the wire, bytes unpacked)]."""
    out = []
    context = browser.new_context(ignore_https_errors=True)
    _staff_login(context, url, "analyst", analyst_password)
    page = context.new_page()
    tally = Tally(page)
    page.goto(url + "/analyst", wait_until="networkidle")
    out.append(("analyst page, first load", *tally.take()))
    page.goto(url + "/analyst", wait_until="networkidle")
    out.append(("analyst page, repeat load", *tally.take()))
    context.close()

    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    tally = Tally(page)
    page.goto(url + "/portal", wait_until="networkidle")
    page.fill("#customer", customer)
    page.fill("#password", customer_password)
    page.click("#portal-login button")
    page.wait_for_selector("body[data-ready=yes]", timeout=120000)
    page.wait_for_load_state("networkidle")
    out.append((f"portal, first load and unlock ({customer}'s readings)", *tally.take()))
    page.goto(url + "/portal", wait_until="networkidle")
    out.append(("portal page, repeat load", *tally.take()))
    context.close()
    return out


def markdown(rows, note: str) -> str:
    table = "\n".join(f"| {what} | {n} | {wire / 1000:.1f} | {raw / 1000:.1f} |"
                      for what, n, wire, raw in rows)
    return f"""## Page weight

Measured by `gridveil pageweight` on the demo ({note}): every byte a real
headless Chromium received, headers included; "on the wire" is as sent
(static files gzipped), "unpacked" the bodies as the browser used them.
The first load starts from an empty cache; the repeat load has the cache
the first one filled (content-hashed static files are kept a year, so only
the page itself comes again, and the favicon, which Chromium fetches on
its own). The browser tests hold both first loads
under {LIMIT // 1000} kB (`test_first_loads_stay_under_a_megabyte`). Charts
are `mdms/static/chart.js`; the plotly.js bundle they replace was 4.8 MB
uncompressed and sent with every visit.

| page | requests | on the wire (kB) | unpacked (kB) |
| --- | ---: | ---: | ---: |
{table}
"""


def run(out: Path | None = None, bits: int = 2048) -> int:
    from playwright.sync_api import sync_playwright

    rows = []

    def then(site, accounts: Path) -> None:
        passwords = dict(re.findall(r"^(\w+)\s+user \w+\s+password (\S+)",
                                    accounts.read_text(), re.M))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            try:
                rows.extend(measure(browser, site.mdms_url(), passwords["analyst"], "c01",
                                    demo.DEMO_PASSWORD))
            finally:
                browser.close()

    with tempfile.TemporaryDirectory(prefix="gridveil-pageweight-") as t:
        print("running the demo, then measuring in headless Chromium")
        if not demo.run(Path(t), bits=bits, then=then):
            print("the demo failed; no page weights")
            return 1
    for what, n, wire, raw in rows:
        print(f"  {what:<52} {n:3d} requests {wire / 1000:8.1f} kB on the wire"
              f" {raw / 1000:8.1f} kB unpacked")
    if out:
        mdsection.write(out, "pageweight", markdown(rows, "10 households, one day"))
        print(f"written to {out}")
    heavy = [r for r in rows if "first load" in r[0] and r[2] > LIMIT]
    return 1 if heavy else 0

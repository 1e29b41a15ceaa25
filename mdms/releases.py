"""Release requests: an analyst or billing asks, the privacy guardian
approves or declines, and only then do the key holders (each checking the
policy on its own) release. Released values are kept for the dashboard."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from authority.api import HttpHolder
from authority.client import Authority
from authority.holder import HolderHome
from authority.keys import PASSPHRASE_ENV
from authority.ledger import Ledger
from authority.setup import holder_dirs
from common.files import ConfigError, check_owner_only, read_json
from gateway.config import GatewayHome
from gateway.store import Store
from host_tools import report

HOUR = 3600


def demand_views(rows: list[dict]):
    """(hourly {nbh: [[hour, kWh]]}, daily profile {nbh: [24 mean kWh]},
    peaks [{nbh, day, hour, kwh}]) from released quarter-hours."""
    hourly: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        hourly[r["neighbourhood"]][(r["interval_end"] - 1) // HOUR * HOUR] += r["wh"]
    series = {n: [[h, wh / 1000] for h, wh in sorted(hs.items())] for n, hs in hourly.items()}
    profile, peaks = {}, []
    for n, hs in hourly.items():
        sums, counts = [0.0] * 24, [0] * 24
        by_day: dict[int, list] = defaultdict(list)
        for h, wh in hs.items():
            sums[h // HOUR % 24] += wh / 1000
            counts[h // HOUR % 24] += 1
            by_day[h // 86400].append((wh, h))
        profile[n] = [round(s / c, 3) if c else None for s, c in zip(sums, counts, strict=True)]
        for _, items in sorted(by_day.items()):
            wh, h = max(items)
            peaks.append({"neighbourhood": n, "hour": h, "kwh": wh / 1000})
    return series, profile, sorted(peaks, key=lambda p: (p["hour"], p["neighbourhood"]))


def authority(home: Path) -> Authority:
    """The key holders as the MDMS reaches them: over their HTTP APIs when
    <home>/mdms/authority.json names them, e.g.

        {"holders": {"utility": {"url": "http://127.0.0.1:8710", "token_file": "utility.token"},
                     "guardian": {"url": "http://127.0.0.1:8711", "token_file": "guardian.token"}}}

    (token files relative to that folder), else in this process. Public
    keys for combining partials come from the authority folder."""
    cfg_file = home / "mdms" / "authority.json"
    keys = HolderHome(next(iter(holder_dirs(home / "authority").values()))).keys
    if cfg_file.exists():
        cfg = read_json(cfg_file, "MDMS authority settings")
        try:
            holders = {role: HttpHolder(h["url"], read_secret(cfg_file.parent / h["token_file"]))
                       for role, h in cfg["holders"].items()}
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"{cfg_file} is malformed: {e!r}") from None
        return Authority(holders, keys, requester="mdms-web")
    p = os.environ.get(PASSPHRASE_ENV)
    return Authority.local(home / "authority", {"single": p, "utility": p, "guardian": p},
                           requester="mdms-web")


def read_secret(path: Path) -> str:
    check_owner_only(path, "API token")
    return path.read_text().strip()


def approve(web, rid: int, who: str) -> str:
    rows = web.store.rows("SELECT * FROM requests WHERE id=? AND status='pending'", (rid,))
    if not rows:
        return "no such pending request"
    req = rows[0]
    params = json.loads(req["params"])
    gw = Store(GatewayHome(web.cfg.home / "gateway").db, readonly=True)
    auth = authority(web.cfg.home)
    out = report.Released()
    try:
        if req["kind"] == "aggregates":
            done = {(r["neighbourhood"], r["interval_end"]) for r in web.store.rows(
                "SELECT neighbourhood, interval_end FROM released_aggregates")}
            report.release_aggregates(gw, auth, out, bool(params.get("dp")), skip=done)
        else:
            done = {(r["meter_id"], r["first_day"]) for r in web.store.rows(
                "SELECT meter_id, first_day FROM bills")}
            report.release_bills(gw, auth, out, int(params.get("period_days", 1)), skip=done)
    finally:
        auth.close()
        gw.close()
    web.store.save_released(out, int(params.get("period_days", 1)), bool(params.get("dp")))
    outcome = (f"released {len(out.aggregates)} aggregates and {len(out.bills)} bills;"
               f" {len(out.refusals)} refused by policy")
    web.store.decide(rid, "approved", who, outcome)
    return outcome


def decline(web, rid: int, who: str) -> None:
    rows = web.store.rows("SELECT kind FROM requests WHERE id=? AND status='pending'", (rid,))
    if not rows:
        return
    if web.store.decide(rid, "declined", who, "declined by the privacy guardian"):
        # The guardian's holder logs the refusal too, so auditors see it there.
        d = holder_dirs(web.cfg.home / "authority").get("guardian")
        if d is not None:
            led = Ledger(HolderHome(d).ledger)
            led.record("mdms-web", rows[0]["kind"], f"request:{rid}", False,
                       f"declined: by privacy guardian {who}")
            led.close()

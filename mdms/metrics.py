"""The MDMS's /metrics and /healthz (common/metrics.py): intake, the
release job's lag, the fleet as the gateways last reported it, the
database's size. Scraped every minute or so; the queries are the ones the
operator's dashboard runs."""

from __future__ import annotations

import time
from collections import Counter

from common import metrics

from .store import MdmsStore

LATE_S, SILENT_S = 3600, 6 * 3600  # as the dashboard counts them (mdms/pages.py)


def figures(store: MdmsStore, intake: Counter):
    now = time.time()
    yield metrics.counter("mdms_intake_items", "items stored from gateways' pushes, since this"
                          " process started (a resent one counts again)", intake["items"])
    yield metrics.counter("mdms_intake_refused", "pushes refused, by HTTP status",
                          label="status", values={k[8:]: v for k, v in intake.items()
                                                  if k.startswith("refused:")})
    through = store.released_through()
    yield metrics.gauge("mdms_release_lag_seconds", "since the end of the newest interval"
                        " released (-1: none yet)", now - through if through else -1)
    gws = store.gateways()
    yield metrics.gauge("mdms_gateways", "gateways the intake accepts", len(gws))
    seen = [g["health_at"] for g in gws if g["health_at"]]
    yield metrics.gauge("mdms_gateway_oldest_report_seconds", "since the gateway that reported"
                        " longest ago last did (-1: none has)",
                        now - min(seen) if seen else -1)
    fleet = store.fleet_counts(now - LATE_S, now - SILENT_S)
    yield metrics.gauge("mdms_meters", "meters by how recently their gateway heard from them",
                        label="state", values=fleet)
    yield metrics.gauge("mdms_db_bytes", "the MDMS's database (on a cluster: its coordinator)",
                        store.db_bytes())


def health(store: MdmsStore) -> tuple[bool, dict]:
    try:
        store.released_through()
    except Exception as e:  # noqa: BLE001 -- any database failure is an unhealthy MDMS
        return False, {"error": f"database: {type(e).__name__}"}
    return True, {"service": "mdms"}

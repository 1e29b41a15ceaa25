"""/metrics, in Prometheus' text format (the prometheus_client library), and
/healthz, for every service.

A service hands over one function that reads its figures when Prometheus
scrapes: from its own stores and the few counters it keeps in memory, so
that nothing is counted twice and nothing runs between scrapes. The
process's own figures (resident memory, CPU, open files) come from
prometheus_client's process collector. Names start with `gridveil_`; the
alerts to set on them are in docs/deploy.md.

Only counts and ages are exported, never a meter's reading or a
household's name: the endpoints need no token, but belong behind the same
firewall as the service's API.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client import generate_latest as _generate
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

Read = Callable[[], Iterable]  # yields metric families (gauge(), counter(), ...)
Health = Callable[[], tuple[bool, dict]]


def _family(cls, name: str, text: str, value, label, values):
    if label is None:
        return cls(f"gridveil_{name}", text, value=value or 0)
    f = cls(f"gridveil_{name}", text, labels=[label])
    for k, v in sorted((values or {}).items()):
        f.add_metric([str(k)], v)
    return f


def gauge(name: str, text: str, value: float | None = None, label: str | None = None,
          values: dict | None = None) -> GaugeMetricFamily:
    """One gauge, or one per value of `label`."""
    return _family(GaugeMetricFamily, name, text, value, label, values)


def counter(name: str, text: str, value: float | None = None, label: str | None = None,
            values: dict | None = None) -> CounterMetricFamily:
    """A counter (its name gets Prometheus' `_total`), or one per `label` value."""
    return _family(CounterMetricFamily, name, text, value, label, values)


class _Figures:
    def __init__(self, read: Read):
        self.read = read

    def collect(self):
        yield from self.read()


def registry(read: Read) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)
    reg.register(_Figures(read))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return _generate(reg)


CONTENT_TYPE = CONTENT_TYPE_LATEST


def health_body(ok: bool, detail: dict) -> bytes:
    return json.dumps({"ok": ok, **detail}, sort_keys=True).encode()


def starlette_routes(read: Read, health: Health) -> list:
    """GET /metrics and GET /healthz for a Starlette app (the MDMS, the
    holders). Both read stores, so they run off the event loop."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    reg = registry(read)

    async def metrics(request):
        return Response(await run_in_threadpool(exposition, reg), media_type=CONTENT_TYPE)

    async def healthz(request):
        ok, detail = await run_in_threadpool(health)
        return Response(health_body(ok, detail), 200 if ok else 503,
                        media_type="application/json")

    return [Route("/metrics", metrics), Route("/healthz", healthz)]

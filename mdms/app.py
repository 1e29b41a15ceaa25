"""The ASGI app: `gridveil mdms serve` serves it with uvicorn."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount, Route

from common import metrics as common_metrics

from . import intake, metrics, pages, portal
from .config import MdmsHome
from .job import ReleaseJob
from .web import Guard, NoTraceback, Web, WebConfig


def create_app(cfg: WebConfig):
    """The MDMS service: the gateways' intake API, the staff dashboard and
    the customer portal, on one server; and the release job in a thread of
    its own when mdms.json sets release_every_s (mdms/job.py)."""
    web = Web(cfg)
    routes = [Route(p, f, methods=m) for p, f, m in pages.routes(web) + portal.routes(web)]
    routes.append(Route("/v1/intake", intake.route(web.store, web.intake_stats),
                        methods=["POST"]))
    routes += common_metrics.starlette_routes(
        lambda: metrics.figures(web.store, web.intake_stats), lambda: metrics.health(web.store))
    routes.append(Mount("/static", app=web.assets, name="static"))

    @asynccontextmanager
    async def lifespan(app):
        stop = threading.Event()
        every = MdmsHome(cfg.home).release_every_s()
        if every:
            web.job = ReleaseJob(web.store, web.authority(), None,
                                 MdmsHome(cfg.home).retention_days())
            threading.Thread(target=web.job.serve, args=(every, stop), name="release-job",
                             daemon=True).start()
        yield
        stop.set()
        if web.job:
            web.job.wake()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.web = web
    return NoTraceback(Guard(app, web))

"""The ASGI app: `gridveil mdms serve` serves it with uvicorn."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount, Route

from . import intake, pages, portal
from .web import Guard, NoTraceback, Web, WebConfig


def create_app(cfg: WebConfig):
    """The MDMS service: the gateways' intake API, the staff dashboard and
    the customer portal, on one server."""
    web = Web(cfg)
    routes = [Route(p, f, methods=m) for p, f, m in pages.routes(web) + portal.routes(web)]
    routes.append(Route("/v1/intake", intake.route(web.store), methods=["POST"]))
    routes.append(Mount("/static", app=web.assets, name="static"))
    app = Starlette(routes=routes)
    app.state.web = web
    return NoTraceback(Guard(app, web))

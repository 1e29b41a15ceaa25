"""The ASGI app: `gridveil mdms serve` serves it with uvicorn."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import intake, pages, portal
from .web import HERE, Guard, NoTraceback, Web, WebConfig

PLOTLY = Path(__import__("plotly").__file__).parent / "package_data" / "plotly.min.js"


class StaticWithVendor(StaticFiles):
    """Our own static files plus plotly.min.js from the installed plotly
    package: charts work offline, from no CDN."""

    async def get_response(self, path, scope):
        if path == "vendor/plotly.min.js":
            from starlette.responses import FileResponse

            return FileResponse(PLOTLY, media_type="text/javascript")
        return await super().get_response(path, scope)


def create_app(cfg: WebConfig):
    """The MDMS service: the gateways' intake API, the staff dashboard and
    the customer portal, on one server."""
    web = Web(cfg)
    routes = [Route(p, f, methods=m) for p, f, m in pages.routes(web) + portal.routes(web)]
    routes.append(Route("/v1/intake", intake.route(web.store), methods=["POST"]))
    routes.append(Mount("/static", StaticWithVendor(directory=HERE / "static"), name="static"))
    app = Starlette(routes=routes)
    app.state.web = web
    return NoTraceback(Guard(app, web))

"""The live view: one static page served at ``/`` by every node.

The page uses only the public API (market data, ``/v1/cluster`` and the
WebSocket). To show every member's own commit and applied index it reads
``/v1/cluster`` from each member's HTTP address, so those public, read-only,
credential-free routes answer cross-origin GETs.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

PUBLIC_CROSS_ORIGIN_PREFIXES = (
    "/v1/cluster",
    "/v1/symbols",
    "/v1/book/",
    "/v1/trades/",
    "/v1/bbo/",
)


def _page() -> bytes:
    return resources.files(__package__).joinpath("index.html").read_bytes()


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if request.method == "GET" and request.path.startswith(PUBLIC_CROSS_ORIGIN_PREFIXES):
        response.headers["Access-Control-Allow-Origin"] = "*"


def add_routes(app: web.Application) -> None:
    """Serve the live view at ``/`` and allow cross-origin reads of public data."""
    body = _page()

    async def index(request: web.Request) -> web.Response:
        return web.Response(
            body=body, content_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    app.router.add_get("/", index)
    app.on_response_prepare.append(_on_prepare)

"""The live view at ``/`` and the API page at ``/api``: static pages served by every node.

Both are packaged files (no CDN, nothing fetched from elsewhere) that use only
the public API of the node serving them. The live view reads every member's
status through ``GET /v1/cluster/members`` (the node asks its members itself),
so it works through ``kubectl port-forward``, an ingress or an HTTPS proxy that
reaches one node only. The API page renders ``/openapi.json`` in the browser.

The public, read-only, credential-free routes also answer cross-origin GETs,
for dashboards of one's own on another origin.
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
    "/v1/analytics/",
    "/openapi.json",
)

PAGES = {"/": "index.html", "/api": "api.html"}


def page(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if request.method == "GET" and request.path.startswith(PUBLIC_CROSS_ORIGIN_PREFIXES):
        response.headers["Access-Control-Allow-Origin"] = "*"


def add_routes(app: web.Application) -> None:
    """Serve the live view at ``/``, the API page at ``/api``, and allow cross-origin
    reads of public data."""
    for path, name in PAGES.items():
        body = page(name)

        async def serve(_request: web.Request, body: bytes = body) -> web.Response:
            return web.Response(
                body=body,
                content_type="text/html",
                headers={
                    "Cache-Control": "no-cache",
                    # the pages load nothing from anywhere but this node
                    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                    "style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:",
                },
            )

        app.router.add_get(path, serve)
    app.on_response_prepare.append(_on_prepare)

"""The node's one HTTP application: the public API plus probes, metrics and admin.

The public ``/v1`` API (``exchange_node.api.create_app``) is built by its own
package against the ``ExchangeService`` seam; this module mounts it and adds
the routes the shell owns (``/healthz``, ``/readyz``, ``/metrics``,
``/v1/admin/*``) and the request-latency middleware.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from aiohttp import web
from exchange_node.server import admin

log = logging.getLogger("exchange.node.http")


def _api_app(node: Any) -> web.Application | None:
    if importlib.util.find_spec("exchange_node.api.app") is None and not hasattr(
        importlib.import_module("exchange_node.api"), "create_app"
    ):
        return None
    api = importlib.import_module("exchange_node.api")
    create_app = getattr(api, "create_app", None)
    if create_app is None:
        return None
    from exchange_node.api.config import ApiConfig

    return create_app(node, ApiConfig(api_keys=dict(node.config.api_keys)))  # type: ignore[no-any-return]


def build_app(node: Any) -> web.Application:
    try:
        app = _api_app(node)
    except ImportError as exc:
        log.warning("public API unavailable: %s", exc)
        app = None
    if app is None:
        app = web.Application(client_max_size=1 << 20)
    app.middlewares.insert(0, admin.http_metrics_middleware)
    admin.add_routes(app, node, node.config.admin_token)
    return app


async def start_http(node: Any, host: str, port: int) -> web.AppRunner:
    app = build_app(node)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
    await site.start()
    return runner

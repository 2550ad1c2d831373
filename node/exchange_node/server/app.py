"""The node's one HTTP application: the public API plus probes, metrics and admin.

The public ``/v1`` API (``exchange_node.api.create_app``) is built by its own
package against the ``ExchangeService`` seam; this module mounts it and adds
the routes the shell owns (``/healthz``, ``/readyz``, ``/metrics``,
``/v1/admin/*``), the live view at ``/`` and the request-latency middleware.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from exchange_node.server import admin

log = logging.getLogger("exchange.node.http")


def build_app(node: Any) -> web.Application:
    from exchange_node.api import ApiConfig, add_routes

    api_config = ApiConfig(api_keys=dict(node.config.api_keys))
    app = web.Application(
        client_max_size=api_config.max_body_bytes + 1024,
        middlewares=[admin.http_metrics_middleware],
    )
    admin.add_routes(app, node, node.config.admin_token)
    add_routes(app, node, api_config)
    from exchange_node import web as live_view

    live_view.add_routes(app)
    return app


async def start_http(node: Any, host: str, port: int) -> web.AppRunner:
    app = build_app(node)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
    await site.start()
    return runner

"""The node's two HTTP applications: the public one, and the admin API on its own listener.

The public ``/v1`` API (``exchange_node.api.create_app``) is built by its own
package against the ``ExchangeService`` seam; this module mounts it and adds
the routes the shell owns (``/healthz``, ``/readyz``, ``/metrics``), the live
view at ``/`` and the request-latency middleware. ``/v1/admin/*`` is served
by a second application on ``--admin-port`` only, so a Service or an ingress
in front of the public port can never expose it (the public port answers 404
there). With ``--http-tls-cert``/``--http-tls-key`` both listeners speak TLS
with the same certificate, reloaded when its files change (server/tls.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from exchange_node.api.app import http_server_options
from exchange_node.server import admin
from exchange_node.server.tls import ReloadingServerTLS

log = logging.getLogger("exchange.node.http")


def build_app(node: Any) -> web.Application:
    from exchange_node.api import ApiConfig, add_routes

    # The documented EXCHANGE_API_* variables and --api-* flags (flags win), and
    # the keys of the node's own configuration.
    api_config = ApiConfig.from_env(
        api_keys=dict(node.config.api_keys),
        price_scales={s.name: s.price_scale for s in getattr(node.config, "symbols", ())},
        # a node serving HTTPS checks its members' certificates against the cluster's CA
        member_status_ca_file=(
            str(node.config.peer_tls_ca)
            if getattr(node.config, "http_tls_cert", None)
            and getattr(node.config, "peer_tls_ca", None)
            else None
        ),
        **getattr(node.config, "api_settings", {}),
    )
    app = web.Application(
        client_max_size=api_config.max_body_bytes + 1024,
        middlewares=[admin.http_metrics_middleware],
    )
    admin.add_probe_routes(app, node)
    api = add_routes(app, node, api_config)
    metrics = getattr(node, "metrics", None)
    if metrics is not None and hasattr(metrics, "watch_api"):
        metrics.watch_api(lambda: api.refusals)
    if metrics is not None and hasattr(metrics, "watch_storage"):
        metrics.watch_storage(node.config.data_dir)
    if metrics is not None and hasattr(metrics, "watch_ws"):
        limit = api_config.ws_send_queue_bytes * api_config.ws_max_connections
        metrics.watch_ws(lambda: api.hub, limit)
    from exchange_node import web as live_view

    live_view.add_routes(app)
    return app


def build_admin_app(node: Any) -> web.Application:
    app = web.Application(client_max_size=64 * 1024, middlewares=[admin.http_metrics_middleware])
    admin.add_admin_routes(app, node, node.config.admin_token)
    return app


class ListenError(OSError):
    """A listener could not bind; ``flag`` names the port flag to blame."""

    def __init__(self, flag: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, f"{flag} {port}: {cause.strerror or cause}")
        self.flag = flag


@dataclass
class HttpServers:
    """The public and admin listeners; ``cleanup`` closes both."""

    public: web.AppRunner
    admin: web.AppRunner
    tls: ReloadingServerTLS | None

    async def cleanup(self) -> None:
        await self.admin.cleanup()
        await self.public.cleanup()


def server_tls(config: Any, *, admin: bool) -> ReloadingServerTLS | None:
    if config.http_tls_cert is None:
        return None
    client_ca = config.admin_tls_client_ca if admin else None
    return ReloadingServerTLS(config.http_tls_cert, config.http_tls_key, client_ca)


async def _serve(
    app: web.Application, host: str, port: int, tls: ReloadingServerTLS | None, flag: str
) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **http_server_options(app))
    await runner.setup()
    site = web.TCPSite(
        runner,
        host,
        port,
        reuse_address=True,
        backlog=1024,
        ssl_context=tls.context if tls is not None else None,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(flag, port, exc) from exc
    return runner


async def start_http(node: Any, host: str, port: int, admin_port: int | None = None) -> HttpServers:
    """Start the public listener on ``port`` and the admin listener on ``admin_port``
    (default ``--admin-port``). Raises ``ListenError`` naming the flag on bind errors."""
    config = node.config
    admin_port = config.admin_port if admin_port is None else admin_port
    public_tls = server_tls(config, admin=False)
    admin_tls = server_tls(config, admin=True)
    public = await _serve(build_app(node), host, port, public_tls, "--http-port")
    try:
        admin_runner = await _serve(
            build_admin_app(node), host, admin_port, admin_tls, "--admin-port"
        )
    except OSError:
        await public.cleanup()
        raise
    return HttpServers(public, admin_runner, public_tls)

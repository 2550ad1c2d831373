"""The public HTTP API: routes, handlers and request plumbing.

``add_routes(app, service, config)`` mounts everything on an existing
application (the node's shell adds /healthz, /readyz, /metrics and the admin
API beside it); ``create_app(service, config)`` makes a stand-alone one.

Order entry (place, batch, cancel, replace, mass cancel, in-flight counts) is
``orders.OrderEntry``, which the WebSocket hub (``ws.py``) holds too; this
module only routes to it. Reads go to ``queries``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from exchange_node.engine.commands import SymbolSpec
from exchange_node.limits import API_TARPIT_MAX_HELD, API_TARPIT_MAX_S
from exchange_node.service import ExchangeService, NotLeader, ServiceError

from . import errors, jsonio, queries, schema
from .auth import Authenticator, RateLimiter, bearer_token, new_refusals
from .config import ApiConfig
from .errors import ApiError
from .forwarding import LEADER_HEADER, LEADER_WATCH_S, Forwarder
from .members import MemberStatusFetcher
from .orders import OrderEntry, service_error
from .ws import WsHub

API_KEY: web.AppKey[Api] = web.AppKey("exchange_api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_JSON = "application/json"
_BODY_KEY: web.RequestKey[bytes] = web.RequestKey("exchange_api.body", bytes)


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(body=jsonio.dumps(body), status=status, content_type=_JSON, headers=headers)


def read_answer(mark: dict[str, Any], body: dict[str, Any]) -> web.Response:
    """A read's answer: its body with ``read`` (consistency, applied index) and the same
    in the ``X-Consistency`` and ``X-Applied-Index`` headers (docs/api.md)."""
    headers = {
        "X-Consistency": mark["consistency"],
        "X-Applied-Index": str(mark["applied_index"]),
    }
    return json_response({**body, "read": mark}, headers=headers)  # views may be shared


class Api:
    """The HTTP side: request plumbing (bodies, query and path parameters, reads at a
    consistency, errors as JSON, forwarding) and the handlers of ``ROUTES``. Order
    entry is ``orders``, shared with the WebSocket ``hub``."""

    def __init__(self, service: ExchangeService, config: ApiConfig) -> None:
        self.service = service
        self.config = config
        self.refusals = new_refusals()
        """Limit -> requests refused by it (exported as ``exchange_api_refusals_total``)."""
        self.auth = Authenticator(
            config.api_keys,
            RateLimiter(
                config.rate_limit_per_second,
                config.rate_limit_burst,
                overrides=config.key_rate_limits,
            ),
            RateLimiter(config.auth_failure_rate_per_second, config.auth_failure_burst),
            self.refusals,
        )
        self.forwarder = Forwarder(
            config.forward_timeout_seconds,
            config.max_forward_hops,
            config.unavailable_retry_after_seconds,
            # End a forward as soon as this node sees leadership move (docs/api.md).
            leader_now=self.leader_http_now,
            tls=lambda: self.members.tls(),
        )
        self._leader_seen: tuple[float, str | None] = (-1.0, None)
        self.tarpitted = 0
        """Refusals of shut-out keys being held now (``refuse``)."""
        self.tarpitted_total = 0
        """Refusals of shut-out keys held before their answer, in all."""
        self.orders = OrderEntry(service, config, self.refusals)
        self.hub = WsHub(service, config, self.orders, self.auth, self.forwarder)
        self.members = MemberStatusFetcher(
            service.status,
            timeout_seconds=config.member_status_timeout_seconds,
            cache_seconds=config.member_status_cache_seconds,
            verify_tls=config.member_status_verify_tls,
            ca_file=config.member_status_ca_file,
        )
        self._openapi_body: bytes | None = None

    # ------------------------------------------------------------------ lifecycle

    async def on_cleanup(self, _app: web.Application) -> None:
        await self.hub.close()
        await self.forwarder.close()
        await self.members.close()

    async def on_shutdown(self, _app: web.Application) -> None:
        await self.hub.close()

    # ------------------------------------------------------------------ plumbing

    def endpoint(self, *, write: bool) -> Callable[[Handler], Handler]:
        """Wrap a handler: ApiError and service errors become JSON answers;
        NotLeader forwards the request to the leader (or redirects)."""

        def wrap(handler: Handler) -> Handler:
            @functools.wraps(handler)
            async def run(request: web.Request) -> web.StreamResponse:
                try:
                    return await handler(request)
                except ApiError as exc:
                    return await self.refuse(exc)
                except NotLeader as exc:
                    try:
                        return await self.not_leader(request, exc, write=write)
                    except ApiError as inner:
                        return inner.response()
                except ServiceError as exc:
                    return service_error(
                        exc, self.config.unavailable_retry_after_seconds
                    ).response()

            return run

        return wrap

    async def refuse(self, exc: ApiError) -> web.StreamResponse:
        """The error's answer. A key shut out for ignoring Retry-After gets it only
        after the delay (at most API_TARPIT_MAX_S): answered at once, a client that
        retries at once costs the loop a request parse hundreds of times a second,
        which the other clients' latency pays for (docs/api.md)."""
        limit = (exc.extra or {}).get("limit")
        if (
            limit == "retry_after_ignored"
            and exc.retry_after
            and self.tarpitted < API_TARPIT_MAX_HELD
        ):
            self.tarpitted += 1
            self.tarpitted_total += 1
            try:
                await asyncio.sleep(min(exc.retry_after, API_TARPIT_MAX_S))
            finally:
                self.tarpitted -= 1
        return exc.response()

    def leader_http_now(self) -> str | None:
        """This node's view of the leader's HTTP address, at most 50 ms old (one
        status for every forwarded request in flight)."""
        now = time.monotonic()
        at, leader = self._leader_seen
        if now - at >= LEADER_WATCH_S:
            status = self.service.status()
            leader = next((m.http_address for m in status.members if m.id == status.leader), None)
            if status.leader == status.node_id:
                leader = None  # this node leads now: nothing to forward to
            self._leader_seen = (now, leader)
        return leader

    async def not_leader(
        self, request: web.Request, exc: NotLeader, *, write: bool
    ) -> web.StreamResponse:
        if self.config.follower_writes == "redirect":
            if not exc.leader_http:
                raise self.forwarder.no_leader("this node is not the leader and no leader is known")
            raise ApiError(
                421,
                "not_leader",
                "this node is not the leader; send the request to the leader",
                None,
                extra={"leader": exc.leader_id, "leader_address": exc.leader_http},
            )
        response = await self.forwarder.forward(
            request, exc.leader_http, request.get(_BODY_KEY), write=write
        )
        return response

    async def read_json(self, request: web.Request, *, allow_empty: bool = False) -> Any:
        """The request body as JSON: 415 for a wrong content type, 413 when too large,
        400 when malformed (NaN and Infinity included)."""
        limit = self.config.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise self.too_large(length)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.config.http_body_timeout_seconds):
                while True:
                    chunk = await request.content.read(limit + 1 - size)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        raise self.too_large(None)
        except TimeoutError:
            self.refusals["body_timeout"] += 1
            raise ApiError(
                408,
                errors.BODY_TIMEOUT,
                f"the request body did not arrive within {self.config.http_body_timeout_seconds} s",
                "body",
                extra={"limit": "http_body_timeout_seconds"},
            ) from None
        body = b"".join(chunks)
        request[_BODY_KEY] = body
        if not body.strip():
            if allow_empty:
                return {}
            raise errors.bad_request(errors.MALFORMED_JSON, "the request body is empty", "body")
        if request.content_type != _JSON:
            raise ApiError(
                415,
                errors.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type must be {_JSON}, got {request.content_type or 'none'}",
                "Content-Type",
            )
        try:
            return jsonio.loads(body)
        except jsonio.JsonInputError as exc:
            raise errors.bad_request(
                errors.MALFORMED_JSON, f"malformed JSON: {exc}", "body"
            ) from None

    def too_large(self, length: int | None) -> ApiError:
        size = f"{length} bytes" if length is not None else "the body"
        return ApiError(
            413,
            errors.BODY_TOO_LARGE,
            f"{size} exceeds the limit of {self.config.max_body_bytes} bytes",
            "body",
        )

    async def consistent_read(self, request: web.Request) -> dict[str, Any]:
        """Linearizable by default (ReadIndex); ``?consistency=stale`` reads locally.
        Returns the read's mark: its consistency and the applied index it reflects
        (``read_answer`` puts both in the body and the headers)."""
        mode = request.query.get("consistency", "linearizable")
        if mode != "stale":
            if mode != "linearizable":
                raise errors.bad_request(
                    errors.INVALID_VALUE,
                    f"consistency must be linearizable or stale, got {mode[:40]!r}",
                    "consistency",
                )
            await self.service.read_barrier()
        # No await from here to the answer: the body is built at this index.
        return {"consistency": mode, "applied_index": self.service.applied_index}

    def known_symbol(self, symbol: str, field: str = "symbol", status: int = 404) -> SymbolSpec:
        spec = self.orders.symbol_spec(symbol)
        if spec is None:
            raise ApiError(status, errors.UNKNOWN_SYMBOL, f"unknown symbol {symbol[:40]!r}", field)
        return spec

    @staticmethod
    def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
        raw = request.query.get(name)
        if raw is None:
            return default
        if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
            raise errors.bad_request(
                errors.INVALID_TYPE, f"{name} must be an integer, got {raw[:40]!r}", name
            )
        value = int(raw)
        if not lo <= value <= hi:
            raise errors.bad_request(
                errors.INVALID_VALUE, f"{name} must be between {lo} and {hi}, got {value}", name
            )
        return value

    @staticmethod
    def path_order_id(request: web.Request) -> int:
        raw = request.match_info["order_id"]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 20:
            raise errors.bad_request(
                errors.INVALID_TYPE,
                f"order_id must be a positive integer, got {raw[:40]!r}",
                "order_id",
            )
        value = int(raw)
        if not 1 <= value <= schema.UINT64_MAX:
            raise errors.bad_request(errors.INVALID_VALUE, "order_id out of range", "order_id")
        return value

    @staticmethod
    def path_client_order_id(request: web.Request) -> str:
        raw = request.match_info["client_order_id"]
        if schema.CLIENT_ORDER_ID_RE.fullmatch(raw) is None:
            raise errors.bad_request(
                errors.INVALID_VALUE,
                f"client_order_id must match {schema.CLIENT_ORDER_ID_PATTERN}",
                "client_order_id",
            )
        return raw

    # ------------------------------------------------------------------ HTTP handlers

    async def h_new_order(self, request: web.Request) -> web.StreamResponse:
        client_id = self.auth.client_for(request)
        payload = await self.read_json(request)
        status, body = await self.orders.place_order(client_id, payload)
        return json_response(body, status)

    async def h_batch(self, request: web.Request) -> web.StreamResponse:
        client_id = self.auth.client_for(request)
        self.orders.check_in_flight(client_id, 1)  # before reading and parsing the body
        token = bearer_token(request)
        assert token is not None  # client_for checked it
        reservation = self.auth.reserve_batch(token, self.config.max_batch, request)
        try:
            payload = await self.read_json(request)
            status, body = await self.orders.place_batch(client_id, payload, reservation)
        finally:
            reservation.release()  # a no-op once settled
        encoded = await self.orders.encode_batch_answer(body)
        return web.Response(body=encoded, status=status, content_type=_JSON)

    async def h_cancel(self, request: web.Request) -> web.StreamResponse:
        client_id = self.auth.client_for(request)
        status, body = await self.orders.cancel_order(client_id, self.path_order_id(request), None)
        return json_response(body, status)

    async def h_cancel_by_client_id(self, request: web.Request) -> web.StreamResponse:
        client_id = self.auth.client_for(request)
        coid = self.path_client_order_id(request)
        status, body = await self.orders.cancel_order(client_id, None, coid)
        return json_response(body, status)

    async def h_replace(self, request: web.Request) -> web.StreamResponse:
        client_id = self.auth.client_for(request)
        order_id = self.path_order_id(request)
        payload = await self.read_json(request)
        status, body = await self.orders.replace_order(client_id, order_id, None, payload)
        return json_response(body, status)

    async def h_replace_by_client_id(self, request: web.Request) -> web.StreamResponse:
        client_id = self.auth.client_for(request)
        coid = self.path_client_order_id(request)
        payload = await self.read_json(request)
        status, body = await self.orders.replace_order(client_id, None, coid, payload)
        return json_response(body, status)

    async def h_mass_cancel(self, request: web.Request) -> web.StreamResponse:
        client_id = self.auth.client_for(request)
        payload = await self.read_json(request, allow_empty=True)
        status, body = await self.orders.mass_cancel(client_id, payload)
        return json_response(body, status)

    async def h_get_order(self, request: web.Request) -> web.StreamResponse:
        client_id = self.auth.client_for(request)
        order_id = self.path_order_id(request)
        mark = await self.consistent_read(request)
        order = queries.order_view(self.service.engine, order_id)
        if order is None:
            raise ApiError(404, errors.NOT_FOUND, f"no order {order_id}", "order_id")
        self.orders.check_owner(client_id, order["client_id"])
        return read_answer(mark, order)

    async def h_get_order_by_client_id(self, request: web.Request) -> web.StreamResponse:
        client_id = self.auth.client_for(request)
        coid = self.path_client_order_id(request)
        mark = await self.consistent_read(request)
        order = queries.order_view_by_client_id(self.service.engine, client_id, coid)
        if order is None:
            raise ApiError(
                404, errors.NOT_FOUND, f"no order with client_order_id {coid!r}", "client_order_id"
            )
        return read_answer(mark, order)

    async def h_open_orders(self, request: web.Request) -> web.StreamResponse:
        client_id = self.auth.client_for(request)
        symbol = request.query.get("symbol")
        mark = await self.consistent_read(request)
        if symbol is not None:
            self.known_symbol(symbol, status=400)
        return read_answer(
            mark, {"orders": queries.open_orders_view(self.service.engine, client_id, symbol)}
        )

    def market_reader(self, request: web.Request) -> None:
        if self.config.public_market_data:
            self.auth.optional_client(request)
        else:
            self.auth.client_for(request)

    async def h_symbols(self, request: web.Request) -> web.StreamResponse:
        self.market_reader(request)
        mark = await self.consistent_read(request)
        return read_answer(
            mark,
            {
                "symbols": queries.symbols_view(
                    self.service.engine,
                    self.config.price_scales,
                    self.config.default_price_scale,
                )
            },
        )

    async def h_book(self, request: web.Request) -> web.StreamResponse:
        self.market_reader(request)
        symbol = request.match_info["symbol"]
        depth = self.query_int(
            request, "depth", self.config.default_depth, 1, self.config.max_depth
        )
        mark = await self.consistent_read(request)
        self.known_symbol(symbol)
        return read_answer(mark, queries.book_view(self.service.engine, symbol, depth))

    async def h_trades(self, request: web.Request) -> web.StreamResponse:
        self.market_reader(request)
        symbol = request.match_info["symbol"]
        limit = self.query_int(
            request, "limit", self.config.default_trades, 1, self.config.max_trades
        )
        mark = await self.consistent_read(request)
        self.known_symbol(symbol)
        return read_answer(
            mark,
            {"symbol": symbol, "trades": queries.trades_view(self.service.engine, symbol, limit)},
        )

    async def h_bbo(self, request: web.Request) -> web.StreamResponse:
        self.market_reader(request)
        symbol = request.match_info["symbol"]
        mark = await self.consistent_read(request)
        self.known_symbol(symbol)
        return read_answer(mark, queries.bbo_view(self.service.engine, symbol))

    async def h_analytics(self, request: web.Request) -> web.StreamResponse:
        self.market_reader(request)
        symbol = request.match_info["symbol"]
        mark = await self.consistent_read(request)
        self.known_symbol(symbol)
        return read_answer(mark, queries.analytics_view(self.service.engine, symbol))

    async def h_positions(self, request: web.Request) -> web.StreamResponse:
        client_id = self.auth.client_for(request)
        mark = await self.consistent_read(request)
        return read_answer(
            mark,
            {
                "client_id": client_id,
                "positions": queries.positions_view(self.service.engine, client_id),
            },
        )

    async def h_cluster(self, request: web.Request) -> web.StreamResponse:
        self.market_reader(request)
        return json_response(queries.cluster_view(self.service.status()))

    async def h_cluster_members(self, request: web.Request) -> web.StreamResponse:
        self.market_reader(request)
        scheme = "https" if request.secure else "http"
        return json_response(await self.members.view(scheme))

    async def h_openapi(self, request: web.Request) -> web.StreamResponse:
        if self._openapi_body is None:
            from .openapi import build_openapi

            self._openapi_body = jsonio.dumps(build_openapi(self.config))
        return web.Response(body=self._openapi_body, content_type=_JSON)


# The routes: (method, path, handler name, is a write). The OpenAPI document
# (openapi.py) describes exactly these; a test checks both ways.
ROUTES: list[tuple[str, str, str, bool]] = [
    ("POST", "/v1/orders", "h_new_order", True),
    ("GET", "/v1/orders", "h_open_orders", False),
    ("POST", "/v1/orders/batch", "h_batch", True),
    ("POST", "/v1/orders/mass-cancel", "h_mass_cancel", True),
    ("GET", "/v1/orders/by-client-id/{client_order_id}", "h_get_order_by_client_id", False),
    ("DELETE", "/v1/orders/by-client-id/{client_order_id}", "h_cancel_by_client_id", True),
    ("POST", "/v1/orders/by-client-id/{client_order_id}/replace", "h_replace_by_client_id", True),
    ("GET", "/v1/orders/{order_id}", "h_get_order", False),
    ("DELETE", "/v1/orders/{order_id}", "h_cancel", True),
    ("POST", "/v1/orders/{order_id}/replace", "h_replace", True),
    ("GET", "/v1/positions", "h_positions", False),
    ("GET", "/v1/symbols", "h_symbols", False),
    ("GET", "/v1/book/{symbol}", "h_book", False),
    ("GET", "/v1/trades/{symbol}", "h_trades", False),
    ("GET", "/v1/bbo/{symbol}", "h_bbo", False),
    ("GET", "/v1/analytics/{symbol}", "h_analytics", False),
    ("GET", "/v1/cluster", "h_cluster", False),
    ("GET", "/v1/cluster/members", "h_cluster_members", False),
    ("GET", "/openapi.json", "h_openapi", False),
]

WS_PATH = "/v1/ws"


@web.middleware
async def json_routing_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No route matched (404) or wrong method (405): answer in the API's JSON error shape
    too. Matched routes pass straight through (one attribute check)."""
    routing_error = request.match_info.http_exception
    if routing_error is None:
        return await handler(request)
    if routing_error.status == 405:
        allowed = getattr(routing_error, "allowed_methods", ())
        response = ApiError(
            405, "method_not_allowed", f"{request.method} is not allowed here", None
        ).response()
        response.headers["Allow"] = ",".join(sorted(allowed))
        return response
    return ApiError(
        routing_error.status, errors.NOT_FOUND, f"no route {request.path[:100]!r}", None
    ).response()


def add_routes(app: web.Application, service: ExchangeService, config: ApiConfig) -> Api:
    """Mount the public API on ``app`` (which may already hold other routes); it also
    adds a middleware that answers unmatched routes with the JSON error shape."""
    api = Api(service, config)
    app.middlewares.append(json_routing_errors)
    app[API_KEY] = api
    for method, path, name, write in ROUTES:
        handler = api.endpoint(write=write)(getattr(api, name))
        app.router.add_route(method, path, handler)
    app.router.add_get(WS_PATH, api.hub.handle)
    app.on_shutdown.append(api.on_shutdown)
    app.on_cleanup.append(api.on_cleanup)
    return api


def create_app(service: ExchangeService, config: ApiConfig | None = None) -> web.Application:
    """A stand-alone application serving the public API."""
    config = config or ApiConfig()
    app = web.Application(client_max_size=config.max_body_bytes + 1024)
    add_routes(app, service, config)
    return app


def http_server_options(app: web.Application) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` serving ``app``: the idle timeout that
    also closes a connection whose request headers do not complete (aiohttp arms its
    keep-alive timer when a connection opens and after each answer)."""
    api = app.get(API_KEY)
    if api is None:
        return {}
    return {"keepalive_timeout": api.config.http_idle_timeout_seconds}


__all__ = [
    "API_KEY",
    "LEADER_HEADER",
    "Api",
    "add_routes",
    "create_app",
    "http_server_options",
    "json_response",
]

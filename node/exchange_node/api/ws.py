"""The WebSocket channel at /v1/ws: market data, your order events, order entry.

One hub per application reads ONE ``service.subscribe()`` iterator and fans
each applied log entry out to the connections subscribed to it:

- ``book:{symbol}``: a level-2 snapshot ``{"type": "snapshot", "seq", "bids",
  "asks"}`` then ``{"type": "delta", "updates": [{side, price, quantity, seq}]}``
  where ``seq`` is the engine's per-symbol book sequence (consecutive: a jump
  means a missed update; resubscribe for a new snapshot).
- ``trades:{symbol}``: ``{"type": "trades", "trades": [...]}`` (no client ids).
- ``orders``: your own order events ``{"type": "events", "log_index", "events"}``.
- ``stats``: once a second, what this node applied in that second, all symbols
  and clients together: ``{"type": "stats", "interval_ms", "orders", "trades",
  "rejects", "log_index"}`` (the live view's orders/s chart and activity feed).

Every connection has a send queue bounded in bytes: what it has queued plus
what its socket's transport holds (the bytes the kernel did not take) may not
exceed ``ws_send_queue_bytes`` (nor ``ws_send_queue`` messages). One more
message and the connection is closed with code 4008 ("slow consumer"), its
queue dropped and, if the close frame cannot be written either, its transport
aborted: a connection costs the node at most the limit plus a constant.
Messages are encoded once and the same ``bytes`` object goes to every
subscriber (a book snapshot once per symbol and book version), so a fan-out
costs one queue append per subscriber, whatever the message's size.

Connections are capped per node, per API key, per remote address and, lower,
per remote address without a key; a connection without a key has fewer
subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from exchange_node.engine.events import Accepted, BookUpdate, Fill, Rejected, TradingStatus
from exchange_node.limits import (
    API_WS_CLOSE_TIMEOUT_S,
    API_WS_MAX_IN_FLIGHT,
    API_WS_RESUBSCRIBE_S,
    API_WS_SLOW_CLOSE_S,
    API_WS_STATS_INTERVAL_S,
)
from exchange_node.service import ExchangeService, NotLeader, ServiceError

from . import errors, jsonio, queries
from .auth import Authenticator, bearer_token
from .config import ApiConfig
from .errors import ApiError
from .forwarding import HOP_HEADER, Forwarder
from .orders import Answer, OrderEntry, service_error
from .present import own_fill, public_trade
from .schema import WS_CANCEL

log = logging.getLogger("exchange_node.api.ws")

CLOSE_SLOW_CONSUMER = 4008
CLOSE_GOING_AWAY = 1001
FULL_BOOK = 1 << 30
"""Depth that means every level (a snapshot carries the whole book)."""
_TEXT = aiohttp.WSMsgType.TEXT
_SLOW_CONSUMER_REASON = b"slow consumer: send queue full"
_SLOW_CONSUMER_CLOSE_FRAME = (
    bytes([0x88, 2 + len(_SLOW_CONSUMER_REASON)])
    + CLOSE_SLOW_CONSUMER.to_bytes(2, "big")
    + _SLOW_CONSUMER_REASON
)
"""An unmasked server close frame: FIN + CLOSE, length, code 4008, reason."""


class Connection:
    """One WebSocket client: its identity, subscriptions and send queue bounded in bytes."""

    __slots__ = (
        "address",
        "book_seq",
        "client_id",
        "closing",
        "hub",
        "in_flight",
        "max_bytes",
        "max_messages",
        "queue",
        "queued_bytes",
        "rate_key",
        "ready",
        "scheme",
        "subscriptions",
        "token",
        "transport",
        "ws",
    )

    def __init__(
        self,
        hub: WsHub,
        ws: web.WebSocketResponse,
        client_id: str | None,
        token: str | None,
        address: str,
        transport: asyncio.BaseTransport | None,
    ) -> None:
        config = hub.config
        self.hub = hub
        self.ws = ws
        self.client_id = client_id
        self.token = token
        self.address = address
        self.transport = transport
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.max_bytes = config.ws_send_queue_bytes
        self.max_messages = config.ws_send_queue
        self.ready = asyncio.Event()
        self.subscriptions: set[str] = set()
        self.book_seq: dict[str, int] = {}
        """Per book subscription: the last seq this client has (snapshot or delta)."""
        self.closing = False
        self.in_flight = 0
        self.rate_key = token or "ws-anonymous"
        """Whose rate-limit bucket this socket's requests are charged to."""
        self.scheme = "http"
        """How this socket arrived (``https`` over TLS): orders it forwards to the leader
        go the same way (members of one cluster serve alike)."""

    def pending_bytes(self) -> int:
        """Bytes this connection holds: its queue plus what the kernel did not take."""
        transport = self.transport
        buffered = 0
        if transport is not None and not transport.is_closing():
            buffered = transport.get_write_buffer_size()  # type: ignore[attr-defined]
        return self.queued_bytes + buffered

    def send(self, message: bytes) -> None:
        """Queue an encoded text frame (shared between subscribers, never copied)."""
        if self.closing:
            return
        size = len(message)
        if len(self.queue) >= self.max_messages or self.pending_bytes() + size > self.max_bytes:
            self.hub.drop_slow_consumer(self)
            return
        self.queue.append(message)
        self.queued_bytes += size
        self.ready.set()

    def send_json(self, message: dict[str, Any]) -> None:
        self.send(jsonio.dumps(message))

    def clear(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0

    async def write_loop(self) -> None:
        queue, ws = self.queue, self.ws
        while True:
            while not queue:
                self.ready.clear()
                await self.ready.wait()
            message = queue.popleft()
            self.queued_bytes -= len(message)
            # Awaits the transport's drain when its buffer is over the high-water mark:
            # the queue then grows and the byte limit decides.
            await ws.send_frame(message, _TEXT)


class WsHub:
    """The WebSocket side of one application: connections, subscriptions, the fan-out
    of applied entries and order entry through the shared ``orders``."""

    def __init__(
        self,
        service: ExchangeService,
        config: ApiConfig,
        orders: OrderEntry,
        auth: Authenticator,
        forwarder: Forwarder,
    ) -> None:
        self.service = service
        self.config = config
        self.orders = orders
        self.auth = auth
        self.forwarder = forwarder
        self.refusals = orders.refusals
        self.connections: set[Connection] = set()
        self.book_subs: dict[str, set[Connection]] = {}
        self.trade_subs: dict[str, set[Connection]] = {}
        self.order_subs: dict[str, set[Connection]] = {}
        self.stats_subs: set[Connection] = set()
        self._counts = [0, 0, 0]
        """Orders accepted, trades, rejections applied since the last stats message."""
        self._last_index = 0
        self._stats_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._subscription: Any = None
        self._closed = False
        self._background: set[asyncio.Task[Any]] = set()
        self._snapshots: dict[str, tuple[int, bytes]] = {}
        self.per_key: dict[str, int] = {}
        self.per_address: dict[str, int] = {}
        self.anonymous_per_address: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle

    def ensure_started(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stats_task is not None:
            self._stats_task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for conn in list(self.connections):
            conn.closing = True
            with contextlib.suppress(Exception):
                await conn.ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")
        for task in list(self._background):
            task.cancel()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run(self) -> None:
        """Consume the service's applied entries; resubscribe (and resync) if dropped."""
        first = True
        while not self._closed:
            subscription: Any = None
            try:
                subscription = self._subscription = self.service.subscribe()
                if not first:
                    # Subscribed again first, so nothing falls between the two.
                    self._resync()
                first = False
                async for log_index, results in subscription:
                    self.dispatch(log_index, results)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event fan-out failed; resubscribing")
            finally:
                await _close_subscription(subscription)
                self._subscription = None
            # The iterator ended: this hub was too slow and was dropped (or the
            # service is stopping). Back off a little before resubscribing.
            await asyncio.sleep(API_WS_RESUBSCRIBE_S)

    def _resync(self) -> None:
        for symbol, conns in list(self.book_subs.items()):
            for conn in list(conns):
                self._send_snapshot(conn, symbol)
        gap = {"type": "gap", "message": "events may have been missed; re-read state over HTTP"}
        for channel_subs, prefix in ((self.trade_subs, "trades:"), (self.order_subs, None)):
            for key, conns in list(channel_subs.items()):
                channel = "orders" if prefix is None else prefix + key
                text = jsonio.dumps({"channel": channel, **gap})
                for conn in list(conns):
                    conn.send(text)

    # ------------------------------------------------------------------ fan-out

    def dispatch(self, log_index: int, results: list[Any]) -> None:
        book_subs, trade_subs, order_subs = self.book_subs, self.trade_subs, self.order_subs
        counting = bool(self.stats_subs)
        if not (book_subs or trade_subs or order_subs or counting):
            return
        self._last_index = log_index
        counts = self._counts
        book: dict[str, list[BookUpdate]] = {}
        trades: dict[str, list[dict[str, Any]]] = {}
        private: dict[str, list[dict[str, Any]]] = {}
        statuses: list[TradingStatus] = []
        for result in results:
            if result.log_index != log_index:
                continue  # an idempotent replay of an earlier result: already published
            for event in result.events:
                kind = type(event)
                if counting:
                    if kind is Accepted:
                        counts[0] += 1
                    elif kind is Fill:
                        counts[1] += 1
                    elif kind is Rejected:
                        counts[2] += 1
                if kind is BookUpdate:
                    if event.symbol in book_subs:
                        book.setdefault(event.symbol, []).append(event)
                elif kind is Fill:
                    if event.symbol in trade_subs:
                        trades.setdefault(event.symbol, []).append(public_trade(event))
                    if event.taker_client_id in order_subs:
                        private.setdefault(event.taker_client_id, []).append(
                            own_fill(event, event.taker_order_id, "TAKER")
                        )
                    if event.maker_client_id in order_subs:
                        private.setdefault(event.maker_client_id, []).append(
                            own_fill(event, event.maker_order_id, "MAKER")
                        )
                elif kind is TradingStatus:
                    statuses.append(event)
                else:
                    client_id = getattr(event, "client_id", None)
                    if client_id is not None and client_id in order_subs:
                        private.setdefault(client_id, []).append(event.to_dict())
        for symbol, updates in book.items():
            self._send_deltas(symbol, updates)
        for symbol, items in trades.items():
            text = jsonio.dumps({"channel": f"trades:{symbol}", "type": "trades", "trades": items})
            for conn in list(trade_subs.get(symbol, ())):
                conn.send(text)
        for client_id, events in private.items():
            text = jsonio.dumps(
                {"channel": "orders", "type": "events", "log_index": log_index, "events": events}
            )
            for conn in list(order_subs.get(client_id, ())):
                conn.send(text)
        for status in statuses:
            text = jsonio.dumps(
                {
                    "channel": f"book:{status.symbol}",
                    "type": "trading_status",
                    "halted": status.halted,
                }
            )
            for conn in list(book_subs.get(status.symbol, ())):
                conn.send(text)

    async def _publish_stats(self) -> None:
        """Every ``API_WS_STATS_INTERVAL_S`` while anyone listens: the counts of that
        interval (measured on the loop's clock, so a late tick reports its real span)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while self.stats_subs and not self._closed:
            await asyncio.sleep(API_WS_STATS_INTERVAL_S)
            now = loop.time()
            orders, trades, rejects = self._counts
            self._counts = [0, 0, 0]
            text = jsonio.dumps(
                {
                    "channel": "stats",
                    "type": "stats",
                    "interval_ms": round((now - started) * 1000),
                    "orders": orders,
                    "trades": trades,
                    "rejects": rejects,
                    "log_index": self._last_index,
                }
            )
            started = now
            for conn in list(self.stats_subs):
                conn.send(text)
        self._stats_task = None

    def _send_deltas(self, symbol: str, updates: list[BookUpdate]) -> None:
        channel = f"book:{symbol}"
        first_seq, last_seq = updates[0].seq, updates[-1].seq
        full: bytes | None = None
        for conn in list(self.book_subs.get(symbol, ())):
            have = conn.book_seq.get(symbol, 0)
            if last_seq <= have:
                continue  # already in this client's snapshot
            if first_seq > have:
                if full is None:
                    full = _delta_text(channel, updates)
                conn.send(full)
            else:
                conn.send(_delta_text(channel, [u for u in updates if u.seq > have]))
            conn.book_seq[symbol] = last_seq

    def _send_snapshot(self, conn: Connection, symbol: str) -> None:
        seq, text = self._snapshot(symbol)
        conn.book_seq[symbol] = seq
        conn.send(text)

    def _snapshot(self, symbol: str) -> tuple[int, bytes]:
        """The full-depth snapshot of ``symbol``, built and encoded once per book seq."""
        engine = self.service.engine
        cached = self._snapshots.get(symbol)
        if cached is not None and cached[0] == engine.best_bid_offer(symbol).seq:
            return cached
        view = queries.book_view(engine, symbol, FULL_BOOK)
        built = (
            view["seq"],
            jsonio.dumps({"channel": f"book:{symbol}", "type": "snapshot", **view}),
        )
        self._snapshots[symbol] = built
        return built

    def drop_slow_consumer(self, conn: Connection) -> None:
        if conn.closing:
            return
        conn.closing = True
        conn.clear()  # its memory goes back now, not when the socket is gone
        self.refusals["ws_slow_consumer"] += 1
        log.info(
            "closing a slow WebSocket consumer",
            extra={"remote": conn.address, "client_id": conn.client_id},
        )
        self._detach(conn)
        self._close_slow(conn)

    def _close_slow(self, conn: Connection) -> None:
        """Close 4008 without waiting on the reader: the close frame goes straight to the
        transport (aiohttp's own close would wait behind the blocked writer), and after
        API_WS_SLOW_CLOSE_S the transport is aborted, dropping whatever the peer did not
        read (even a transport already closing holds its unsent bytes until then)."""
        transport = conn.transport
        if transport is None or conn.ws.closed:
            return
        with contextlib.suppress(Exception):
            transport.write(_SLOW_CONSUMER_CLOSE_FRAME)  # type: ignore[attr-defined]
        asyncio.get_running_loop().call_later(API_WS_SLOW_CLOSE_S, transport.abort)  # type: ignore[attr-defined]

    def _detach(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for channel in list(conn.subscriptions):
            self._unsubscribe(conn, channel)

    # ------------------------------------------------------------------ connections

    async def handle(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        token = bearer_token(request, allow_query=True)
        client_id: str | None = None
        if token is not None:
            client_id = self.auth.api_keys.get(token)
            if client_id is None:
                return self.auth.failed(request).response()
        elif not config.public_market_data:
            return ApiError(
                401,
                errors.UNAUTHORIZED,
                "missing API key (Authorization header or ?token=)",
                "Authorization",
            ).response()
        # Compression is off: deflating a shared snapshot once per subscriber would
        # make a fan-out's loop time grow with subscribers times message size.
        ws = web.WebSocketResponse(
            heartbeat=config.ws_heartbeat_seconds,
            max_msg_size=config.ws_max_message_bytes,
            timeout=API_WS_CLOSE_TIMEOUT_S,
            compress=False,
        )
        if len(self.connections) >= config.ws_max_connections:
            return ApiError(
                503,
                errors.UNAVAILABLE,
                f"too many WebSocket connections (limit {config.ws_max_connections})",
                None,
                retry_after=config.unavailable_retry_after_seconds,
            ).response()
        if not ws.can_prepare(request).ok:
            return errors.bad_request(
                errors.INVALID_VALUE,
                "this endpoint needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
                "Upgrade",
            ).response()
        address = request.remote or "unknown"
        refused = self._over_connection_caps(token, address)
        if refused is not None:
            return refused.response()
        self._count_connection(token, address, +1)
        try:
            return await self._serve(request, ws, client_id, token, address)
        finally:
            self._count_connection(token, address, -1)

    def _over_connection_caps(self, token: str | None, address: str) -> ApiError | None:
        """429 naming the cap a new connection would exceed, or None."""
        config = self.config
        checks = [
            (self.per_address, address, config.ws_max_connections_per_address, "per address"),
        ]
        if token is None:
            checks.append(
                (
                    self.anonymous_per_address,
                    address,
                    config.ws_max_anonymous_per_address,
                    "without an API key per address",
                )
            )
        else:
            checks.append((self.per_key, token, config.ws_max_connections_per_key, "per API key"))
        for counts, key, cap, what in checks:
            if counts.get(key, 0) >= cap:
                self.refusals["ws_connections"] += 1
                return ApiError(
                    429,
                    errors.RATE_LIMITED,
                    f"too many WebSocket connections {what} (limit {cap})",
                    None,
                    retry_after=self.config.unavailable_retry_after_seconds,
                )
        return None

    def _count_connection(self, token: str | None, address: str, delta: int) -> None:
        tables = [(self.per_address, address)]
        tables.append(
            (self.anonymous_per_address, address) if token is None else (self.per_key, token)
        )
        for counts, key in tables:
            value = counts.get(key, 0) + delta
            if value > 0:
                counts[key] = value
            else:
                counts.pop(key, None)

    async def _serve(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        client_id: str | None,
        token: str | None,
        address: str,
    ) -> web.StreamResponse:
        config = self.config
        await ws.prepare(request)
        conn = Connection(self, ws, client_id, token, address, request.transport)
        if token is None:
            conn.rate_key = f"addr:{address}"
        if request.secure:
            conn.scheme = "https"
        self.connections.add(conn)
        self.ensure_started()
        writer = asyncio.get_running_loop().create_task(conn.write_loop())
        try:
            conn.send_json(
                {
                    "type": "hello",
                    "client_id": client_id,
                    "heartbeat_seconds": config.ws_heartbeat_seconds,
                }
            )
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self.on_text(conn, message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    conn.send_json(
                        _error(
                            None,
                            None,
                            errors.bad_request(errors.INVALID_TYPE, "send JSON text frames", None),
                        )
                    )
                else:
                    break
        finally:
            conn.closing = True
            self._detach(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        return ws

    def on_text(self, conn: Connection, text: str) -> None:
        try:
            message = jsonio.loads(text)
        except jsonio.JsonInputError as exc:
            conn.send_json(
                _error(
                    None,
                    None,
                    errors.bad_request(errors.MALFORMED_JSON, f"malformed JSON: {exc}", "body"),
                )
            )
            return
        if type(message) is not dict:
            conn.send_json(
                _error(
                    None,
                    None,
                    errors.bad_request(
                        errors.INVALID_TYPE, "a message must be a JSON object", None
                    ),
                )
            )
            return
        op = message.pop("op", None)
        request_id = message.pop("id", None)
        if request_id is not None and not (
            (type(request_id) is str and len(request_id) <= 64) or type(request_id) is int
        ):
            conn.send_json(
                _error(
                    op,
                    None,
                    errors.bad_request(
                        errors.INVALID_TYPE,
                        "id must be a string (<= 64 characters) or an integer",
                        "id",
                    ),
                )
            )
            return
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            conn.send_json(
                _error(
                    op,
                    request_id,
                    errors.bad_request(
                        errors.INVALID_VALUE,
                        "op must be one of subscribe, unsubscribe, order, cancel, ping",
                        "op",
                    ),
                )
            )
            return
        try:
            handler(self, conn, request_id, message)
        except ApiError as exc:
            conn.send_json(_error(op, request_id, exc))

    # ------------------------------------------------------------------ ops

    def op_ping(self, conn: Connection, request_id: Any, message: dict[str, Any]) -> None:
        conn.send_json({"type": "pong", "id": request_id})

    def _channels(self, message: dict[str, Any]) -> list[str]:
        extra = set(message) - {"channels"}
        if extra:
            field = sorted(extra)[0]
            raise errors.bad_request(errors.UNKNOWN_FIELD, f"unknown field {field!r}", field)
        channels = message.get("channels")
        if type(channels) is not list or not channels or not all(type(c) is str for c in channels):
            raise errors.bad_request(
                errors.INVALID_TYPE, "channels must be a non-empty array of strings", "channels"
            )
        return channels

    def op_subscribe(self, conn: Connection, request_id: Any, message: dict[str, Any]) -> None:
        channels = self._channels(message)
        config = self.config
        if conn.client_id is None:
            cap, whose = config.ws_anonymous_max_subscriptions, "connection without an API key"
        else:
            cap, whose = config.ws_max_subscriptions, "connection"
        if len(conn.subscriptions | set(channels)) > cap:
            raise errors.bad_request(
                errors.INVALID_VALUE, f"at most {cap} subscriptions per {whose}", "channels"
            )
        for channel in channels:
            kind, _, symbol = channel.partition(":")
            if channel == "orders":
                if conn.client_id is None:
                    raise ApiError(
                        401, errors.UNAUTHORIZED, "the orders channel needs an API key", "channels"
                    )
            elif channel == "stats":
                pass
            elif kind in ("book", "trades") and symbol:
                if self.orders.symbol_spec(symbol) is None:
                    raise errors.bad_request(
                        errors.UNKNOWN_SYMBOL, f"unknown symbol {symbol[:40]!r}", "channels"
                    )
            else:
                raise errors.bad_request(
                    errors.INVALID_VALUE,
                    f"unknown channel {channel[:60]!r} (book:SYMBOL, trades:SYMBOL, orders or stats)",
                    "channels",
                )
        self.auth.charge(conn.rate_key)  # a book snapshot is not free
        self.ensure_started()
        new = [channel for channel in channels if channel not in conn.subscriptions]
        conn.send_json({"type": "subscribed", "id": request_id, "channels": channels})
        for channel in new:
            conn.subscriptions.add(channel)
            if channel == "orders":
                assert conn.client_id is not None
                self.order_subs.setdefault(conn.client_id, set()).add(conn)
                continue
            if channel == "stats":
                if not self.stats_subs:
                    self._counts = [0, 0, 0]
                self.stats_subs.add(conn)
                if self._stats_task is None:
                    self._stats_task = asyncio.get_running_loop().create_task(self._publish_stats())
                continue
            kind, _, symbol = channel.partition(":")
            if kind == "book":
                self.book_subs.setdefault(symbol, set()).add(conn)
                self._send_snapshot(conn, symbol)
            else:
                self.trade_subs.setdefault(symbol, set()).add(conn)

    def op_unsubscribe(self, conn: Connection, request_id: Any, message: dict[str, Any]) -> None:
        channels = self._channels(message)
        for channel in channels:
            self._unsubscribe(conn, channel)
        conn.send_json({"type": "unsubscribed", "id": request_id, "channels": channels})

    def _unsubscribe(self, conn: Connection, channel: str) -> None:
        if channel not in conn.subscriptions:
            return
        conn.subscriptions.discard(channel)
        if channel == "stats":
            self.stats_subs.discard(conn)
            return
        if channel == "orders":
            index, key = self.order_subs, conn.client_id or ""
        else:
            kind, _, key = channel.partition(":")
            index = self.book_subs if kind == "book" else self.trade_subs
            if kind == "book":
                conn.book_seq.pop(key, None)
        subs = index.get(key)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del index[key]

    def _writer_op(self, conn: Connection, op: str) -> str:
        if conn.client_id is None or conn.token is None:
            raise ApiError(401, errors.UNAUTHORIZED, f"{op} needs an API key", "Authorization")
        if conn.in_flight >= API_WS_MAX_IN_FLIGHT:
            raise ApiError(
                429,
                errors.RATE_LIMITED,
                f"more than {API_WS_MAX_IN_FLIGHT} requests in flight",
                None,
            )
        self.auth.charge(conn.rate_key)
        return conn.client_id

    def op_order(self, conn: Connection, request_id: Any, message: dict[str, Any]) -> None:
        client_id = self._writer_op(conn, "order")
        self._run_op(
            conn,
            "order",
            request_id,
            lambda: self.orders.place_order(client_id, message),
            ("POST", "/v1/orders", message),
        )

    def op_cancel(self, conn: Connection, request_id: Any, message: dict[str, Any]) -> None:
        client_id = self._writer_op(conn, "cancel")
        fields = WS_CANCEL.validate(message)
        order_id, coid = fields.get("order_id"), fields.get("client_order_id")
        if (order_id is None) == (coid is None):
            raise errors.bad_request(
                errors.INVALID_VALUE,
                "name the order by exactly one of order_id, client_order_id",
                "order_id",
            )
        path = (
            f"/v1/orders/{order_id}" if order_id is not None else f"/v1/orders/by-client-id/{coid}"
        )
        self._run_op(
            conn,
            "cancel",
            request_id,
            lambda: self.orders.cancel_order(client_id, order_id, coid),
            ("DELETE", path, None),
        )

    def _run_op(
        self,
        conn: Connection,
        op: str,
        request_id: Any,
        action: Callable[[], Awaitable[Answer]],
        http: tuple[str, str, Any],
    ) -> None:
        conn.in_flight += 1
        self._spawn(self._op_task(conn, op, request_id, action, http))

    async def _op_task(
        self,
        conn: Connection,
        op: str,
        request_id: Any,
        action: Callable[[], Awaitable[Answer]],
        http: tuple[str, str, Any],
    ) -> None:
        try:
            try:
                status, body = await action()
            except NotLeader as exc:
                status, body = await self._forward(conn, exc, http)
            except ServiceError as exc:
                raise service_error(exc, self.config.unavailable_retry_after_seconds) from None
            conn.send_json(
                {"type": "ack", "op": op, "id": request_id, "status": status, "body": body}
            )
        except ApiError as exc:
            conn.send_json(_error(op, request_id, exc))
        finally:
            conn.in_flight -= 1

    async def _forward(
        self, conn: Connection, exc: NotLeader, http: tuple[str, str, Any]
    ) -> Answer:
        """Order entry on a follower: the same request over HTTP to the leader."""
        if self.config.follower_writes == "redirect" or not exc.leader_http:
            if exc.leader_http:
                raise ApiError(
                    421,
                    "not_leader",
                    "this node is not the leader; connect to the leader",
                    None,
                    extra={"leader": exc.leader_id, "leader_address": exc.leader_http},
                )
            raise self.forwarder.no_leader("this node is not the leader and no leader is known")
        method, path, payload = http
        headers = {"Authorization": f"Bearer {conn.token}", HOP_HEADER: "1"}
        body = None
        if payload is not None:
            headers["Content-Type"] = "application/json"
            body = jsonio.dumps(payload)
        status, _headers, raw, _ctype = await self.forwarder.exchange(
            method,
            f"{conn.scheme}://{exc.leader_http}{path}",
            headers,
            body,
            exc.leader_http,
            write=True,
        )
        try:
            answer = jsonio.loads(raw)
        except jsonio.JsonInputError:
            answer = {
                "error": {
                    "code": errors.FORWARD_FAILED,
                    "message": "the leader's answer was not JSON",
                    "field": None,
                }
            }
        return status, answer

    _ops: dict[str, Callable[[WsHub, Connection, Any, dict[str, Any]], None]] = {
        "ping": op_ping,
        "subscribe": op_subscribe,
        "unsubscribe": op_unsubscribe,
        "order": op_order,
        "cancel": op_cancel,
    }


async def _close_subscription(subscription: Any) -> None:
    """Give the service's subscription back (it would otherwise fill up and be dropped)."""
    if subscription is None:
        return
    with contextlib.suppress(Exception):
        aclose = getattr(subscription, "aclose", None)
        if aclose is not None:
            await aclose()
            return
        close = getattr(subscription, "close", None)
        if close is not None:
            close()


def _delta_text(channel: str, updates: list[BookUpdate]) -> bytes:
    return jsonio.dumps(
        {
            "channel": channel,
            "type": "delta",
            "updates": [
                {"side": u.side.name, "price": u.price, "quantity": u.quantity, "seq": u.seq}
                for u in updates
            ],
        }
    )


def _error(op: Any, request_id: Any, exc: ApiError) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "error",
        "op": op if isinstance(op, str) else None,
        "id": request_id,
        "status": exc.status,
    }
    out.update(exc.body())
    if exc.retry_after is not None:
        out["retry_after"] = exc.retry_after
    return out

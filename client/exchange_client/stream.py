"""``MarketStream``: the WebSocket feed with local order books kept by sequence number.

A ``book:SYMBOL`` channel sends a snapshot, then deltas whose ``seq`` goes up by
exactly one per level change (docs/api.md). ``LocalOrderBook`` applies them;
a jump in ``seq`` is a gap: the stream unsubscribes and subscribes again for a
fresh snapshot (the server sends a snapshot only for a new subscription), and the
book reports ``synced = False`` until it arrives. A dropped connection is
reconnected to the next endpoint with the same subscriptions. What comes out of
``async for event in stream`` is typed: ``BookEvent``, ``TradesEvent``,
``OrderEvents``, ``TradingStatusEvent``, ``GapEvent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .aio import normalize_endpoint
from .errors import error_from
from .models import Book, Level, OrderResult, Trade


class LocalOrderBook:
    """One symbol's level-2 book, rebuilt from a snapshot and deltas."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.seq = 0
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.synced = False
        """False until a snapshot arrived, and again from a gap until the next one."""
        self.gaps = 0

    def apply_snapshot(self, doc: dict[str, Any]) -> None:
        self.seq = int(doc["seq"])
        self.bids = {int(p): int(q) for p, q in doc.get("bids", [])}
        self.asks = {int(p): int(q) for p, q in doc.get("asks", [])}
        self.synced = True

    def apply_update(self, update: dict[str, Any]) -> bool:
        """Apply one level update; False (and the book unsynced) on a gap.

        An update at or below the book's ``seq`` is already in it (a delta that
        overlaps the snapshot) and is skipped."""
        if not self.synced:
            return False
        seq = int(update["seq"])
        if seq <= self.seq:
            return True
        if seq != self.seq + 1:
            self.synced = False
            self.gaps += 1
            return False
        side = self.bids if update["side"] == "BUY" else self.asks
        price, quantity = int(update["price"]), int(update["quantity"])
        if quantity:
            side[price] = quantity
        else:
            side.pop(price, None)
        self.seq = seq
        return True

    def view(self, depth: int = 10) -> Book:
        bids = sorted(self.bids.items(), reverse=True)[:depth]
        asks = sorted(self.asks.items())[:depth]
        return Book(
            self.symbol,
            self.seq,
            [Level(p, q) for p, q in bids],
            [Level(p, q) for p, q in asks],
        )


@dataclass(frozen=True, slots=True)
class BookEvent:
    symbol: str
    book: LocalOrderBook
    snapshot: bool
    """True when a (re)subscription's snapshot replaced the book."""


@dataclass(frozen=True, slots=True)
class TradesEvent:
    symbol: str
    trades: list[Trade]


@dataclass(frozen=True, slots=True)
class OrderEvents:
    """Events of your own orders (``orders`` channel)."""

    log_index: int
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class TradingStatusEvent:
    symbol: str
    halted: bool


@dataclass(frozen=True, slots=True)
class GapEvent:
    """Something was missed on ``channel``: a book resyncs by itself; for trades and
    orders re-read what you need over HTTP."""

    channel: str


StreamEvent = BookEvent | TradesEvent | OrderEvents | TradingStatusEvent | GapEvent


@dataclass
class StreamStats:
    connects: int = 0
    snapshots: int = 0
    deltas: int = 0
    gaps: int = 0
    resubscribes: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


class MarketStream:
    """Subscribe to books, trades and (with a key) your orders; iterate the events."""

    def __init__(
        self,
        endpoints: list[str] | str,
        token: str | None = None,
        *,
        books: list[str] = (),  # type: ignore[assignment]
        trades: list[str] = (),  # type: ignore[assignment]
        orders: bool = False,
        session: aiohttp.ClientSession | None = None,
        reconnect_delay: float = 0.2,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        self.endpoints = [normalize_endpoint(e) for e in endpoints if e.strip()]
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")
        self._rotation = itertools.cycle(self.endpoints)
        self._token = token
        self.channels = [f"book:{s}" for s in books] + [f"trades:{s}" for s in trades]
        if orders:
            self.channels.append("orders")
        self.books = {s: LocalOrderBook(s) for s in books}
        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reconnect_delay = reconnect_delay
        self._ids = itertools.count(1)
        self._closed = False
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._order_ids = itertools.count(1)
        self._coid_prefix = f"ws-{id(self) & 0xFFFFFF:x}-{int(time.time()) & 0xFFFFFF:x}"
        self.stats = StreamStats()

    async def __aenter__(self) -> MarketStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._own_session and self._session is not None:
            await self._session.close()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        while True:
            base = next(self._rotation)
            url = base.replace("http", "ws", 1) + "/v1/ws"
            try:
                ws = await self._session.ws_connect(url, headers=headers, heartbeat=10)
            except (aiohttp.ClientError, OSError, TimeoutError):
                await asyncio.sleep(self._reconnect_delay)
                continue
            self.stats.connects += 1
            for book in self.books.values():
                book.synced = False
            if self.channels:
                await ws.send_json(
                    {"op": "subscribe", "id": next(self._ids), "channels": self.channels}
                )
            return ws

    async def _resubscribe(self, channel: str) -> None:
        assert self._ws is not None
        self.stats.resubscribes += 1
        await self._ws.send_json(
            {"op": "unsubscribe", "id": next(self._ids), "channels": [channel]}
        )
        await self._ws.send_json({"op": "subscribe", "id": next(self._ids), "channels": [channel]})

    async def _events(self, doc: dict[str, Any]) -> list[StreamEvent]:
        kind = doc.get("type")
        channel = str(doc.get("channel", ""))
        _, _, symbol = channel.partition(":")
        if kind == "snapshot":
            book = self.books.setdefault(symbol, LocalOrderBook(symbol))
            book.apply_snapshot(doc)
            self.stats.snapshots += 1
            return [BookEvent(symbol, book, True)]
        if kind == "delta":
            current = self.books.get(symbol)
            if current is None or not current.synced:
                return []  # waiting for the snapshot of a resubscription
            self.stats.deltas += 1
            for update in doc.get("updates", []):
                if not current.apply_update(update):
                    self.stats.gaps += 1
                    await self._resubscribe(channel)
                    return [GapEvent(channel)]
            return [BookEvent(symbol, current, False)]
        if kind == "trades":
            return [
                TradesEvent(symbol, [Trade.from_json(t, symbol) for t in doc.get("trades", [])])
            ]
        if kind == "events":
            return [OrderEvents(int(doc.get("log_index", 0)), list(doc.get("events", [])))]
        if kind == "trading_status":
            return [TradingStatusEvent(symbol, bool(doc.get("halted")))]
        if kind == "gap":
            self.stats.gaps += 1
            if channel.startswith("book:"):
                self.books[symbol].synced = False
                await self._resubscribe(channel)
            return [GapEvent(channel)]
        if kind in ("ack", "error"):
            waiter = self._pending.pop(str(doc.get("id")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(doc)
                return []
        if kind == "error":
            self.stats.errors.append(doc)
        return []

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Every event, across reconnections, until ``close``."""
        while not self._closed:
            self._ws = await self._connect()
            try:
                async for message in self._ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        if message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                            break
                        continue
                    for event in await self._events(message.json()):
                        yield event
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await self._ws.close()
                self._fail_pending()
            if not self._closed:
                await asyncio.sleep(self._reconnect_delay)

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self.events()

    def _fail_pending(self) -> None:
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(
                    ConnectionError(
                        "the socket closed before the answer; retry the same "
                        "client_order_id (over HTTP if need be): it is exactly-once"
                    )
                )
        self._pending.clear()

    async def place_order(
        self,
        symbol: str,
        side: str,
        quantity: int,
        price: int | None = None,
        *,
        client_order_id: str | None = None,
        timeout: float = 6.5,
        **options: Any,
    ) -> OrderResult:
        """Place an order over the socket (it needs a key, and the stream must be being
        iterated: answers arrive with the events). The same exactly-once rule as over
        HTTP: when this raises ``ConnectionError`` or ``TimeoutError`` the outcome is
        unknown, and placing the same ``client_order_id`` again is safe."""
        if self._ws is None or self._ws.closed:
            raise ConnectionError("the stream is not connected")
        coid = client_order_id or f"{self._coid_prefix}-{next(self._order_ids)}"
        request_id = f"o{next(self._ids)}"
        message: dict[str, Any] = {
            "op": "order",
            "id": request_id,
            "symbol": symbol,
            "side": str(side),
            "quantity": quantity,
            "client_order_id": coid,
            **{
                k: (str(v) if k in ("order_type", "time_in_force") else v)
                for k, v in options.items()
            },
        }
        if price is not None:
            message["price"] = price
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = waiter
        try:
            await self._ws.send_json(message)
            answer = await asyncio.wait_for(waiter, timeout)
        finally:
            self._pending.pop(request_id, None)
        if answer.get("type") == "ack" and answer.get("status") == 200:
            return OrderResult.from_json(answer["body"], coid)
        status = int(answer.get("status") or 0)
        body = answer.get("body") if answer.get("type") == "ack" else {"error": answer.get("error")}
        raise error_from(status, body)

"""``AsyncClient``: the asyncio client of the order API.

- **Leader-aware.** Writes go straight to the leader named by ``GET /v1/cluster``
  (learnt on first use, forgotten when it stops answering or a follower says it
  forwarded). When the leader cannot be reached directly (behind a port-forward,
  another network), any endpoint will do: followers forward writes to the leader.
- **Exactly once.** Every order carries a ``client_order_id`` (generated when not
  given); a write that times out, loses its connection or gets 502/503/504 is sent
  again with the *same body*, so the exchange returns the original result instead
  of placing a second order. Retries rotate over the endpoints with backoff; 429
  waits ``Retry-After``. After ``max_attempts`` a write whose fate is unknown
  raises ``OutcomeUnknownError`` (retrying later with the same id is still safe).
- **Typed.** Methods return the models of ``exchange_client.models`` and raise the
  errors of ``exchange_client.errors``; ``request`` is the untyped escape hatch.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from .errors import ExchangeError, OutcomeUnknownError, UnavailableError, error_from
from .models import (
    Book,
    ClusterStatus,
    Order,
    OrderResult,
    Position,
    Symbol,
    Trade,
)

RETRYABLE_STATUSES = frozenset({502, 503, 504})
FORWARDED_HEADER = "X-Exchange-Forwarded-By"
DIRECT_PAUSE_SECONDS = 10.0


def normalize_endpoint(endpoint: str) -> str:
    """``host:port`` or a URL -> ``scheme://host:port`` without a trailing slash."""
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint:
        raise ValueError("empty endpoint")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    return endpoint


@dataclass
class RequestStats:
    requests: int = 0
    """HTTP requests sent (each retry counts)."""
    retries: int = 0
    failures: int = 0
    """Calls abandoned after every retry."""
    leader_direct: int = 0
    """Writes sent straight to the leader."""
    forwarded: int = 0
    """Answers a follower relayed from the leader."""
    unreachable: int = 0
    """Connection failures or timeouts (requests and leader look-ups)."""


class AsyncClient:
    """One client identity (API key) over one or more endpoints of one cluster."""

    def __init__(
        self,
        endpoints: list[str] | str,
        token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 6.5,
        max_attempts: int = 8,
        leader_aware: bool = True,
        client_order_id_prefix: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        self.endpoints = [normalize_endpoint(e) for e in endpoints if e.strip()]
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")
        self._rotation = itertools.cycle(range(len(self.endpoints)))
        self._current = self.endpoints[next(self._rotation)]
        self._headers = dict(extra_headers or {})
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session = session
        self._own_session = session is None
        # A write's server-side deadline is 5 s and forwarding 6 s: wait a little longer.
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(1.0, timeout))
        self.max_attempts = max_attempts
        self.leader_aware = leader_aware
        self._leader: str | None = None
        self._leader_known = False
        self._direct_failures = 0
        self._direct_paused_until = 0.0
        self._prefix = client_order_id_prefix or f"sdk-{secrets.token_hex(4)}"
        self._sequence = itertools.count(1)
        self.stats = RequestStats()

    # ---- lifecycle ---------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def next_client_order_id(self) -> str:
        """A fresh client order id: this client's random prefix and a counter."""
        return f"{self._prefix}-{next(self._sequence)}"

    # ---- routing -----------------------------------------------------------------

    def _rotate(self) -> None:
        self._current = self.endpoints[next(self._rotation)]

    def forget_leader(self) -> None:
        self._leader, self._leader_known = None, False

    async def _find_leader(self) -> str | None:
        """The leader's base URL from ``GET /v1/cluster`` (one try per endpoint)."""
        for _ in range(len(self.endpoints)):
            try:
                async with self.session.get(
                    self._current + "/v1/cluster", headers=self._headers, timeout=self._timeout
                ) as response:
                    if response.status == 200:
                        doc = await response.json(content_type=None)
                        status = ClusterStatus.from_json(doc)
                        leader = status.leader_member()
                        if leader is not None and leader.http_address:
                            scheme = self._current.split("://", 1)[0]
                            return f"{scheme}://{leader.http_address}"
                        return None
            except (TimeoutError, aiohttp.ClientError, OSError):
                self.stats.unreachable += 1
            except (ValueError, KeyError):
                pass
            self._rotate()
        return None

    async def _target(self, write: bool) -> str:
        if write and self.leader_aware and time.monotonic() >= self._direct_paused_until:
            if not self._leader_known:
                self._leader = await self._find_leader()
                # No leader right now (an election): ask again on the next write.
                self._leader_known = self._leader is not None
            if self._leader is not None:
                return self._leader
        return self._current

    # ---- requests ----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        write: bool | None = None,
    ) -> tuple[int, Any]:
        """Send one request, retrying the identical request on transient failures.

        Returns ``(status, JSON body)`` of the last answer (never raises for an HTTP
        status); status 0 when no answer came at all.
        """
        write = method != "GET" if write is None else write
        data = None if body is None else json.dumps(body)
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        delay = 0.05
        status, payload = 0, None
        for attempt in range(self.max_attempts):
            if attempt:
                self.stats.retries += 1
            base = await self._target(write)
            direct = write and base == self._leader
            self.stats.requests += 1
            try:
                async with self.session.request(
                    method, base + path, data=data, headers=headers, timeout=self._timeout
                ) as response:
                    status = response.status
                    try:
                        payload = await response.json(content_type=None)
                    except (ValueError, aiohttp.ContentTypeError):
                        payload = None
                    if direct:
                        self.stats.leader_direct += 1
                        self._direct_failures = 0
                    if response.headers.get(FORWARDED_HEADER):
                        self.stats.forwarded += 1
                        self._leader_known = False  # it moved: ask again next time
                    if status == 429:
                        if attempt + 1 < self.max_attempts:
                            await asyncio.sleep(float(response.headers.get("Retry-After", "0.2")))
                        continue
                    if status == 421 and direct:
                        self.forget_leader()
                        continue
                    if status not in RETRYABLE_STATUSES:
                        return status, payload
                    if status == 503 and direct:
                        self.forget_leader()
                    retry_after = response.headers.get("Retry-After")
                    if retry_after:
                        delay = max(delay, min(float(retry_after), 2.0))
            except (TimeoutError, aiohttp.ClientError, OSError):
                self.stats.unreachable += 1
                status, payload = 0, None
                if direct:
                    # A dead leader (ask again), or one whose own address this client
                    # cannot reach (a port-forward): after three misses in a row at an
                    # address that is not one of the endpoints, write through the
                    # endpoints (followers forward) for a while.
                    self.forget_leader()
                    if base not in self.endpoints:
                        self._direct_failures += 1
                    if self._direct_failures >= 3:
                        self._direct_failures = 0
                        self._direct_paused_until = time.monotonic() + DIRECT_PAUSE_SECONDS
                self._rotate()
            if attempt + 1 < self.max_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        self.stats.failures += 1
        return status, payload

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = await self.request(method, path, body)
        if 200 <= status < 300:
            return payload
        if status in (0, 504) and method != "GET":
            raise OutcomeUnknownError(
                status, "outcome_unknown", "no answer after every retry", None, payload
            )
        if status == 0:
            raise UnavailableError(0, "unavailable", "no endpoint answered", None, None)
        raise error_from(status, payload)

    # ---- orders ------------------------------------------------------------------

    def order_body(
        self,
        symbol: str,
        side: str,
        quantity: int,
        price: int | None = None,
        *,
        order_type: str = "LIMIT",
        time_in_force: str = "GTC",
        post_only: bool = False,
        stp: str | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        """The JSON of one order, with a client order id (generated if not given)."""
        body: dict[str, Any] = {
            "symbol": symbol,
            "side": str(side),
            "quantity": quantity,
            "client_order_id": client_order_id or self.next_client_order_id(),
        }
        if price is not None:
            body["price"] = price
        if order_type != "LIMIT":
            body["order_type"] = str(order_type)
        if time_in_force != "GTC":
            body["time_in_force"] = str(time_in_force)
        if post_only:
            body["post_only"] = True
        if stp is not None:
            body["stp"] = stp
        return body

    async def place_order(
        self,
        symbol: str,
        side: str,
        quantity: int,
        price: int | None = None,
        **options: Any,
    ) -> OrderResult:
        """Place one order (``price`` in integer units; see ``Symbol.from_price``).
        Raises ``RejectedError`` when the engine rejects it."""
        body = self.order_body(symbol, side, quantity, price, **options)
        doc = await self._call("POST", "/v1/orders", body)
        return OrderResult.from_json(doc, body["client_order_id"])

    async def place_batch(self, orders: list[dict[str, Any]]) -> list[OrderResult]:
        """Place up to 500 orders as one log entry. Each dict is an order body
        (``order_body`` builds one); an order without ``client_order_id`` gets one.
        An order the engine rejects comes back with ``rejected`` and ``error`` set."""
        bodies = [
            o if o.get("client_order_id") else {**o, "client_order_id": self.next_client_order_id()}
            for o in orders
        ]
        doc = await self._call("POST", "/v1/orders/batch", {"orders": bodies})
        return [
            OrderResult.from_json(item, body["client_order_id"])
            for item, body in zip(doc["results"], bodies, strict=True)
        ]

    async def cancel(self, order_id: int) -> OrderResult:
        return OrderResult.from_json(await self._call("DELETE", f"/v1/orders/{int(order_id)}"))

    async def cancel_by_client_id(self, client_order_id: str) -> OrderResult:
        path = f"/v1/orders/by-client-id/{quote(client_order_id, safe='')}"
        return OrderResult.from_json(await self._call("DELETE", path), client_order_id)

    async def replace(
        self,
        order_id: int,
        price: int,
        quantity: int,
        new_client_order_id: str | None = None,
    ) -> OrderResult:
        """New price and new *total* quantity; the replacement gets a new client order id
        (generated when not given), so the replace itself is exactly-once too."""
        new_id = new_client_order_id or self.next_client_order_id()
        body = {"price": price, "quantity": quantity, "new_client_order_id": new_id}
        doc = await self._call("POST", f"/v1/orders/{int(order_id)}/replace", body)
        return OrderResult.from_json(doc, new_id)

    async def mass_cancel(self, symbol: str | None = None) -> OrderResult:
        body = {"symbol": symbol} if symbol else {}
        return OrderResult.from_json(await self._call("POST", "/v1/orders/mass-cancel", body))

    async def order(self, order_id: int) -> Order:
        return Order.from_json(await self._call("GET", f"/v1/orders/{int(order_id)}"))

    async def order_by_client_id(self, client_order_id: str) -> Order:
        path = f"/v1/orders/by-client-id/{quote(client_order_id, safe='')}"
        return Order.from_json(await self._call("GET", path))

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        path = "/v1/orders" + (f"?symbol={quote(symbol, safe='')}" if symbol else "")
        doc = await self._call("GET", path)
        return [Order.from_json(o) for o in doc["orders"]]

    async def positions(self, consistency: str = "linearizable") -> dict[str, Position]:
        doc = await self._call("GET", _with_consistency("/v1/positions", consistency))
        return {s: Position.from_json(s, p) for s, p in (doc.get("positions") or {}).items()}

    # ---- market data and the cluster ---------------------------------------------

    async def symbols(self) -> dict[str, Symbol]:
        doc = await self._call("GET", "/v1/symbols")
        return {s["symbol"]: Symbol.from_json(s) for s in doc["symbols"]}

    async def book(self, symbol: str, depth: int = 10, consistency: str = "linearizable") -> Book:
        path = f"/v1/book/{quote(symbol, safe='')}?depth={int(depth)}"
        return Book.from_json(await self._call("GET", _with_consistency(path, consistency)))

    async def trades(
        self, symbol: str, limit: int = 100, consistency: str = "linearizable"
    ) -> list[Trade]:
        path = f"/v1/trades/{quote(symbol, safe='')}?limit={int(limit)}"
        doc = await self._call("GET", _with_consistency(path, consistency))
        items = doc["trades"] if isinstance(doc, dict) else doc
        return [Trade.from_json(t, symbol) for t in items]

    async def bbo(self, symbol: str, consistency: str = "linearizable") -> dict[str, Any]:
        path = _with_consistency(f"/v1/bbo/{quote(symbol, safe='')}", consistency)
        result: dict[str, Any] = await self._call("GET", path)
        return result

    async def analytics(self, symbol: str, consistency: str = "linearizable") -> dict[str, Any]:
        path = _with_consistency(f"/v1/analytics/{quote(symbol, safe='')}", consistency)
        result: dict[str, Any] = await self._call("GET", path)
        return result

    async def cluster(self) -> ClusterStatus:
        """The cluster as the node currently used sees it."""
        return ClusterStatus.from_json(await self._call("GET", "/v1/cluster"))


def _with_consistency(path: str, consistency: str) -> str:
    if consistency == "linearizable":
        return path
    if consistency != "stale":
        raise ValueError("consistency must be 'linearizable' or 'stale'")
    return path + ("&" if "?" in path else "?") + "consistency=stale"


__all__ = ["AsyncClient", "ExchangeError", "RequestStats", "normalize_endpoint"]

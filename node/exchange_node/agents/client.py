"""A small exactly-once client of the public API, shared by every agent.

A write that times out, hits a broken connection or a 503/504 is retried
with the *same body*, so the same ``client_order_id``: the exchange returns
the original result instead of placing a second order. Retries rotate over
the cluster's addresses, so losing the node an agent talks to costs a retry,
not an order. 429 waits for ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

RETRYABLE_STATUSES = frozenset({502, 503, 504})


@dataclass
class ClientStats:
    requests: int = 0
    orders: int = 0
    accepted: int = 0
    fills: int = 0
    filled_quantity: int = 0
    retries: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    """Engine or API rejections by reason code."""
    failures: int = 0
    """Requests abandoned after every retry."""

    def merge(self, other: ClientStats) -> None:
        for name in (
            "requests",
            "orders",
            "accepted",
            "fills",
            "filled_quantity",
            "retries",
            "failures",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejects.update(other.rejects)


class ExchangeClient:
    def __init__(
        self,
        urls: list[str],
        token: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float = 3.0,
        max_attempts: int = 8,
    ) -> None:
        if not urls:
            raise ValueError("at least one cluster URL is needed")
        self._urls = [u.rstrip("/") for u in urls]
        self._next_url = itertools.cycle(range(len(self._urls)))
        self._url = self._urls[next(self._next_url)]
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_attempts = max_attempts
        self.stats = ClientStats()

    def _rotate(self) -> None:
        self._url = self._urls[next(self._next_url)]

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, JSON body); retries the identical request on transient failures."""
        data = None if body is None else json.dumps(body)
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        delay = 0.05
        for attempt in range(self._max_attempts):
            if attempt:
                self.stats.retries += 1
            self.stats.requests += 1
            try:
                async with self._session.request(
                    method, self._url + path, data=data, headers=headers, timeout=self._timeout
                ) as response:
                    status = response.status
                    try:
                        payload = await response.json(content_type=None)
                    except (ValueError, aiohttp.ContentTypeError):
                        payload = None
                    if status == 429:
                        await asyncio.sleep(float(response.headers.get("Retry-After", "0.2")))
                        continue
                    if status not in RETRYABLE_STATUSES:
                        return status, payload
                    retry_after = response.headers.get("Retry-After")
                    if retry_after:
                        delay = max(delay, float(retry_after))
            except (TimeoutError, aiohttp.ClientError, OSError):
                self._rotate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        self.stats.failures += 1
        return 0, None

    # ---- orders ---------------------------------------------------------------

    def _count_result(self, status: int, body: Any) -> None:
        self.stats.orders += 1
        if status == 200 and isinstance(body, dict):
            self.stats.accepted += 1
            for event in body.get("events", ()):
                if event.get("type") == "fill":
                    self.stats.fills += 1
                    self.stats.filled_quantity += int(event.get("quantity", 0))
        elif isinstance(body, dict) and isinstance(body.get("error"), dict):
            self.stats.rejects[str(body["error"].get("code"))] += 1
        elif status == 0:
            self.stats.rejects["unavailable"] += 1
        else:
            self.stats.rejects[f"http_{status}"] += 1

    async def new_order(self, order: dict[str, Any]) -> tuple[int, Any]:
        status, body = await self.request("POST", "/v1/orders", order)
        self._count_result(status, body)
        return status, body

    async def batch(self, orders: list[dict[str, Any]]) -> list[tuple[int, Any]]:
        status, body = await self.request("POST", "/v1/orders/batch", {"orders": orders})
        results: list[tuple[int, Any]] = []
        if status == 200 and isinstance(body, dict) and isinstance(body.get("results"), list):
            # each item is a result body, or {"status": 4xx, "error": ..., "result": ...}
            for item in body["results"]:
                code = item.get("status") if isinstance(item, dict) else None
                # a result body's "status" is the order's state (a string): HTTP 200
                item_status = code if isinstance(code, int) else 200 if code else 0
                self._count_result(item_status, item)
                results.append((item_status, item))
        else:
            for _ in orders:
                self._count_result(status, body)
                results.append((status, body))
        return results

    async def mass_cancel(self, symbol: str | None) -> tuple[int, Any]:
        return await self.request(
            "POST", "/v1/orders/mass-cancel", {"symbol": symbol} if symbol else {}
        )

    async def cancel_by_client_id(self, client_order_id: str) -> tuple[int, Any]:
        return await self.request("DELETE", f"/v1/orders/by-client-id/{client_order_id}")

    # ---- market data (stale reads: agents need speed, not linearizability) ----

    async def symbols(self) -> list[dict[str, Any]]:
        status, body = await self.request("GET", "/v1/symbols")
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"GET /v1/symbols answered {status}: {body}")
        return list(body["symbols"])

    async def bbo(self, symbol: str) -> dict[str, Any] | None:
        status, body = await self.request("GET", f"/v1/bbo/{symbol}?consistency=stale")
        return body if status == 200 and isinstance(body, dict) else None

    async def positions(self) -> dict[str, Any]:
        status, body = await self.request("GET", "/v1/positions?consistency=stale")
        if status == 200 and isinstance(body, dict):
            return dict(body.get("positions") or {})
        return {}

"""The agents' client: the SDK's ``AsyncClient`` (client/exchange_client) with the
agents' counters on top, so there is one client implementation, not two.

The SDK does the exactly-once part: a write that times out, hits a broken
connection or a 502/503/504 is retried with the *same body*, so the same
``client_order_id``, and the exchange returns the original result instead of
placing a second order; retries rotate over the cluster's addresses, writes go
to the leader directly when it can be reached; 429 waits for ``Retry-After``.
This module keeps the agents' ``(status, body)`` calls and counts what the
orders came to (accepted, fills, rejections by reason).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import aiohttp
from exchange_client import AsyncClient
from exchange_client.aio import RETRYABLE_STATUSES, RequestStats

__all__ = ["RETRYABLE_STATUSES", "ClientStats", "ExchangeClient"]


@dataclass
class ClientStats(RequestStats):
    """The SDK's request counters (requests, retries, failures...) and the orders'."""

    orders: int = 0
    accepted: int = 0
    fills: int = 0
    filled_quantity: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    """Engine or API rejections by reason code."""

    def merge(self, other: ClientStats) -> None:
        for f in fields(self):
            if f.name != "rejects":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
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
        self.sdk = AsyncClient(
            urls, token, session=session, timeout=timeout, max_attempts=max_attempts
        )
        # One set of counters: the SDK counts requests and retries into it too.
        self.stats = ClientStats()
        self.sdk.stats = self.stats

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, JSON body); the SDK retries the identical request on transient failures."""
        return await self.sdk.request(method, path, body)

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

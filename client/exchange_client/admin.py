"""``AdminClient``: the admin API (``/v1/admin/*``, on each node's admin port).

Endpoints are admin listeners. Calls that only the leader serves (membership,
leader transfer, halt/resume, risk limits) go to the leader: the client learns
each endpoint's node id from its status, and follows a 421 to the endpoint of
the node it names. ``actor`` is sent as ``X-Exchange-Actor`` and lands in the
node's audit log next to the authenticated identity.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp

from .aio import normalize_endpoint
from .errors import NotLeaderError, UnavailableError, error_from
from .models import ClusterStatus


class AdminClient:
    def __init__(
        self,
        endpoints: list[str] | str,
        token: str,
        *,
        actor: str | None = None,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context``: for https endpoints, the CA to trust and, when the admin
        listener requires one, the client certificate (``tls_context`` builds it)."""
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        self.endpoints = [normalize_endpoint(e) for e in endpoints if e.strip()]
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")
        self._headers = {"Authorization": f"Bearer {token}"}
        if actor:
            self._headers["X-Exchange-Actor"] = actor
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(2.0, timeout))
        self._session = session
        self._own_session = session is None
        self._node_of: dict[str, int] = {}
        self._ssl = ssl_context

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _raw(
        self, endpoint: str, method: str, path: str, body: Any = None
    ) -> tuple[int, Any, dict[str, str], bytes]:
        data = None if body is None else json.dumps(body)
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            method,
            endpoint + path,
            data=data,
            headers=headers,
            timeout=self._timeout,
            ssl=self._ssl if self._ssl is not None else True,
        ) as response:
            raw = await response.read()
            doc: Any = None
            if response.content_type == "application/json":
                doc = json.loads(raw or b"null")
            return response.status, doc, dict(response.headers), raw

    async def statuses(self) -> dict[str, dict[str, Any] | None]:
        """Every endpoint's admin status (None: it did not answer)."""

        async def one(endpoint: str) -> dict[str, Any] | None:
            try:
                status, doc, _, _ = await self._raw(endpoint, "GET", "/v1/admin/status")
            except (aiohttp.ClientError, OSError, TimeoutError):
                return None
            if status != 200:
                if status == 401:
                    raise error_from(status, doc)
                return None
            self._node_of[endpoint] = int(doc["node_id"])
            return dict(doc)

        docs = await asyncio.gather(*(one(e) for e in self.endpoints))
        return dict(zip(self.endpoints, docs, strict=True))

    async def status(self) -> ClusterStatus:
        """The status of the leader when it is among the endpoints, else the first
        endpoint that answers."""
        docs = await self.statuses()
        answered = [d for d in docs.values() if d is not None]
        if not answered:
            raise UnavailableError(0, "unavailable", "no admin endpoint answered")
        leader = next((d for d in answered if d["role"] == "leader"), answered[0])
        return ClusterStatus.from_json(leader)

    async def _endpoint_of(self, node_id: int) -> str | None:
        for endpoint, known in self._node_of.items():
            if known == node_id:
                return endpoint
        await self.statuses()
        for endpoint, known in self._node_of.items():
            if known == node_id:
                return endpoint
        return None

    async def call(self, method: str, path: str, body: Any = None, *, leader: bool = False) -> Any:
        """One admin call; with ``leader`` it follows 421 answers to the leader's
        endpoint (it must be among the endpoints). Raises ``ExchangeError``s."""
        endpoints = list(self.endpoints)
        tried: set[str] = set()
        last_error: Exception | None = None
        while endpoints:
            endpoint = endpoints.pop(0)
            if endpoint in tried:
                continue
            tried.add(endpoint)
            try:
                status, doc, headers, raw = await self._raw(endpoint, method, path, body)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last_error = exc
                continue
            if status == 421 and leader:
                leader_id = int(doc.get("leader") or 0) if isinstance(doc, dict) else 0
                found = await self._endpoint_of(leader_id) if leader_id else None
                if found is None:
                    raise NotLeaderError(
                        421,
                        "not_leader",
                        f"the leader is node {leader_id or 'unknown'} "
                        f"({doc.get('leader_address')}); add its admin address to --endpoints",
                        None,
                        doc,
                    )
                endpoints.insert(0, found)
                continue
            if status == 503 and leader:
                last_error = error_from(status, doc)
                await asyncio.sleep(0.2)
                continue
            if 200 <= status < 300:
                return doc if doc is not None else (raw, headers)
            raise error_from(status, doc)
        if isinstance(last_error, Exception) and hasattr(last_error, "status"):
            raise last_error
        raise UnavailableError(0, "unavailable", f"no admin endpoint answered: {last_error}")

    async def call_one(self, endpoint: str, method: str, path: str, body: Any = None) -> Any:
        """One admin call to one endpoint (no leader following); raises on errors."""
        status, doc, headers, raw = await self._raw(endpoint, method, path, body)
        if 200 <= status < 300:
            return doc if doc is not None else (raw, headers)
        raise error_from(status, doc)

    # ---- the operations ------------------------------------------------------------

    async def add_member(
        self, node_id: int, address: str, http_address: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"id": node_id, "address": address}
        if http_address:
            body["http_address"] = http_address
        result: dict[str, Any] = await self.call("POST", "/v1/admin/members", body, leader=True)
        return result

    async def promote_member(self, node_id: int) -> dict[str, Any]:
        path = f"/v1/admin/members/{int(node_id)}/promote"
        result: dict[str, Any] = await self.call("POST", path, leader=True)
        return result

    async def remove_member(self, node_id: int) -> dict[str, Any]:
        path = f"/v1/admin/members/{int(node_id)}"
        result: dict[str, Any] = await self.call("DELETE", path, leader=True)
        return result

    async def transfer_leadership(self, target: int | None = None) -> dict[str, Any]:
        body = {"target": target}
        result: dict[str, Any] = await self.call(
            "POST", "/v1/admin/transfer-leadership", body, leader=True
        )
        return result

    async def halt(self, symbol: str) -> dict[str, Any]:
        path = f"/v1/admin/symbols/{quote(symbol, safe='')}/halt"
        result: dict[str, Any] = await self.call("POST", path, leader=True)
        return result

    async def resume(self, symbol: str) -> dict[str, Any]:
        path = f"/v1/admin/symbols/{quote(symbol, safe='')}/resume"
        result: dict[str, Any] = await self.call("POST", path, leader=True)
        return result

    async def risk(self, client: str) -> dict[str, Any]:
        """A client's limits (``*``: the defaults)."""
        result: dict[str, Any] = await self.call("GET", f"/v1/admin/risk/{quote(client, safe='*')}")
        return result

    async def set_risk(self, client: str, **limits: int) -> dict[str, Any]:
        """Set some of ``max_order_qty``, ``max_notional``, ``max_position``,
        ``max_open_orders`` (0: unlimited) for ``client`` (``*``: the defaults)."""
        path = f"/v1/admin/risk/{quote(client, safe='*')}"
        result: dict[str, Any] = await self.call("PUT", path, limits, leader=True)
        return result

    async def retention(self) -> dict[str, Any]:
        """The exactly-once horizon and cap and the finished-order window in force."""
        result: dict[str, Any] = await self.call("GET", "/v1/admin/retention")
        return result

    async def set_retention(self, **settings: int) -> dict[str, Any]:
        """Set some of ``exactly_once_horizon_seconds``, ``exactly_once_max_keys``,
        ``finished_orders`` through the log (every replica, at once)."""
        result: dict[str, Any] = await self.call(
            "PUT", "/v1/admin/retention", settings, leader=True
        )
        return result

    async def snapshot(self) -> dict[str, Any]:
        """Snapshot the first endpoint that answers now; ``{"index", "term"}``."""
        result: dict[str, Any] = await self.call("POST", "/v1/admin/snapshot")
        return result

    async def download_snapshot(self) -> tuple[bytes, int, int]:
        """The newest snapshot file of the first endpoint that has one: (bytes, index, term)."""
        raw, headers = await self.call("GET", "/v1/admin/snapshot")
        return raw, int(headers["X-Snapshot-Index"]), int(headers["X-Snapshot-Term"])

    async def audit(self) -> list[dict[str, Any]]:
        doc = await self.call("GET", "/v1/admin/audit")
        return list(doc["actions"])


def tls_context(
    cacert: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """A client TLS context: trust ``cacert`` (else the system's), present ``cert``/``key``."""
    context = ssl.create_default_context(cafile=cacert)
    if cert:
        context.load_cert_chain(cert, key)
    return context

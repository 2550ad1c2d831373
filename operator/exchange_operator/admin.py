"""The client side of the node's admin API (docs/node-contract.md)."""

from __future__ import annotations

from typing import Any

import aiohttp

from exchange_operator import names
from exchange_operator.observed import NodeStatus, parse_admin_status

DEFAULT_URL_TEMPLATE = "http://{pod}.{peers}.{namespace}.svc:{port}"


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"admin API {status}: {message}")
        self.status = status


def admin_base_url(template: str, cluster: str, namespace: str, pod: str) -> str:
    return template.format(
        pod=pod,
        cluster=cluster,
        namespace=namespace,
        peers=names.peers_service(cluster),
        port=names.HTTP_PORT,
    ).rstrip("/")


class AdminClient:
    """Status and membership calls, authenticated with the cluster's admin token."""

    def __init__(self, session: aiohttp.ClientSession, token: str, timeout: float = 2.0) -> None:
        self._session = session
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(self, method: str, url: str, body: Any = None) -> Any:
        async with self._session.request(
            method, url, json=body, headers=self._headers, timeout=self._timeout
        ) as response:
            payload = (
                await response.json(content_type=None) if response.content_length != 0 else None
            )
            if response.status >= 400:
                raise AdminError(response.status, str(payload))
            return payload

    async def status(self, base_url: str) -> NodeStatus | None:
        """The node's status, or None when it does not answer (down, starting, partitioned)."""
        try:
            payload = await self._call("GET", f"{base_url}/v1/admin/status")
        except (TimeoutError, aiohttp.ClientError, AdminError, ValueError):
            return None
        return parse_admin_status(payload) if isinstance(payload, dict) else None

    async def add_learner(
        self, base_url: str, node_id: int, address: str, http_address: str = ""
    ) -> None:
        body: dict[str, Any] = {"id": node_id, "address": address}
        if http_address:
            body["http_address"] = http_address
        await self._call("POST", f"{base_url}/v1/admin/members", body)

    async def promote(self, base_url: str, node_id: int) -> None:
        await self._call("POST", f"{base_url}/v1/admin/members/{node_id}/promote")

    async def remove(self, base_url: str, node_id: int) -> None:
        await self._call("DELETE", f"{base_url}/v1/admin/members/{node_id}")

    async def transfer_leadership(self, base_url: str, target: int | None) -> None:
        await self._call("POST", f"{base_url}/v1/admin/transfer-leadership", {"target": target})

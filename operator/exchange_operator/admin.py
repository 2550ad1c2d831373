"""The client side of the node's admin API (docs/node-contract.md).

The admin API listens on its own port (8081) with TLS; the client verifies the
node's server certificate against the cluster's CA (``ca.crt`` of the
``<cluster>-http-tls`` Secret) and the pod's DNS name, then sends the admin
token. ``tls_context(None)`` (no CA yet) refuses to talk at all rather than
send the token unverified.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from exchange_operator import names
from exchange_operator.observed import NodeStatus, parse_admin_status

DEFAULT_URL_TEMPLATE = "https://{pod}.{peers}.{namespace}.svc:{port}"


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
        port=names.ADMIN_PORT,
    ).rstrip("/")


def pod_server_name(cluster: str, namespace: str, pod: str) -> str:
    """The name a node's server certificate is checked against (``*.<peers>.<ns>.svc``)."""
    return f"{pod}.{names.peers_service(cluster)}.{namespace}.svc"


def tls_context(ca_pem: bytes | None) -> ssl.SSLContext | None:
    """Verification against the cluster's CA only (not the system's roots)."""
    if not ca_pem:
        return None
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class AdminClient:
    """Status and membership calls, authenticated with the cluster's admin token."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token: str,
        timeout: float = 2.0,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        self._session = session
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._tls = tls
        # The name to verify when the URL's host is not it (tests reach 127.0.0.1).
        self._server_name = server_name

    def with_server_name(self, server_name: str | None) -> AdminClient:
        clone = AdminClient.__new__(AdminClient)
        clone.__dict__.update(self.__dict__)
        clone._server_name = server_name
        return clone

    async def _call(self, method: str, url: str, body: Any = None) -> Any:
        extra: dict[str, Any] = {}
        if urlsplit(url).scheme == "https":
            if self._tls is None:
                raise AdminError(0, "no cluster CA to verify the node with; not sending the token")
            extra["ssl"] = self._tls
            if self._server_name:
                extra["server_hostname"] = self._server_name
        async with self._session.request(
            method, url, json=body, headers=self._headers, timeout=self._timeout, **extra
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

    async def certificate_request(self, base_url: str) -> bytes:
        """The node's CSR for its member key (PEM); the key stays on the node."""
        payload = await self._call("GET", f"{base_url}/v1/admin/certificate-request")
        csr = payload.get("csr") if isinstance(payload, dict) else None
        if not isinstance(csr, str):
            raise AdminError(0, "certificate-request: no csr in the answer")
        return csr.encode()

    async def install_certificate(self, base_url: str, chain_pem: bytes) -> None:
        """PUT the signed certificate chain; the node checks it before using it."""
        await self._call(
            "PUT", f"{base_url}/v1/admin/certificate", {"certificate": chain_pem.decode()}
        )

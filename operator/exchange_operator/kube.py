"""A small asyncio Kubernetes REST client for the operator's children.

kopf watches and patches the ExchangeCluster itself; this client applies the
children with server-side apply and reads pods and claims. It takes kopf's
ConnectionInfo, so both use the same credentials.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from exchange_operator import names

Obj = dict[str, Any]


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return self.version if not self.group else f"{self.group}/{self.version}"

    def collection(self, namespace: str | None) -> str:
        prefix = "/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            return f"{prefix}/namespaces/{quote(namespace)}/{self.plural}"
        return f"{prefix}/{self.plural}"


RESOURCES: dict[str, ResourceType] = {
    "ConfigMap": ResourceType("", "v1", "configmaps"),
    "Secret": ResourceType("", "v1", "secrets"),
    "Service": ResourceType("", "v1", "services"),
    "Pod": ResourceType("", "v1", "pods"),
    "PersistentVolumeClaim": ResourceType("", "v1", "persistentvolumeclaims"),
    "StatefulSet": ResourceType("apps", "v1", "statefulsets"),
    "PodDisruptionBudget": ResourceType("policy", "v1", "poddisruptionbudgets"),
    "NetworkPolicy": ResourceType("networking.k8s.io", "v1", "networkpolicies"),
    "Ingress": ResourceType("networking.k8s.io", "v1", "ingresses"),
    "CronJob": ResourceType("batch", "v1", "cronjobs"),
    "ServiceMonitor": ResourceType("monitoring.coreos.com", "v1", "servicemonitors"),
    "PrometheusRule": ResourceType("monitoring.coreos.com", "v1", "prometheusrules"),
    "Certificate": ResourceType("cert-manager.io", "v1", "certificates"),
    "CertificateRequest": ResourceType("cert-manager.io", "v1", "certificaterequests"),
    names.KIND: ResourceType(names.GROUP, names.VERSION, names.PLURAL),
}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    if not (info.ca_path or info.ca_data or info.certificate_path or info.certificate_data):
        return True
    context = ssl.create_default_context(
        cafile=os.fsdecode(info.ca_path) if info.ca_path else None,
        cadata=_text(info.ca_data) if info.ca_data else None,
    )
    cert, key = info.certificate_path, info.private_key_path
    with tempfile.TemporaryDirectory() as tmp:
        if info.certificate_data:
            cert = os.path.join(tmp, "cert.pem")
            with open(cert, "wb") as f:
                f.write(_bytes(info.certificate_data))
        if info.private_key_data:
            key = os.path.join(tmp, "key.pem")
            with open(key, "wb") as f:
                f.write(_bytes(info.private_key_data))
        if cert:
            context.load_cert_chain(os.fsdecode(cert), os.fsdecode(key) if key else None)
    return context


def _text(data: str | bytes) -> str:
    raw = data if isinstance(data, bytes) else data.encode()
    if b"-----BEGIN" not in raw:
        raw = base64.b64decode(raw)
    return raw.decode()


def _bytes(data: str | bytes) -> bytes:
    return _text(data).encode()


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class KubeClient:
    """GET, LIST, server-side APPLY, merge PATCH, CREATE and DELETE of namespaced objects."""

    def __init__(self, info: kopf.ConnectionInfo, token_file: str = SERVICE_ACCOUNT_TOKEN) -> None:
        self._server = info.server.rstrip("/")
        self._headers = {"Accept": "application/json", **info.as_http_headers()}
        self._token_file = token_file if info.token else None
        self._ssl = _ssl_context(info)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=30),
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Obj | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        retry: bool = True,
    ) -> Obj | None:
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self._http().request(
            method, self._server + path, json=body, params=params, headers=headers
        ) as response:
            if response.status == 401 and retry and self._refresh_token():
                return await self._call(
                    method, path, body=body, params=params, content_type=content_type, retry=False
                )
            if response.status == 404:
                return None
            payload = await response.json(content_type=None)
            if response.status >= 400:
                message = payload.get("message") if isinstance(payload, dict) else str(payload)
                raise KubeError(response.status, str(message))
            return payload if isinstance(payload, dict) else None

    def _refresh_token(self) -> bool:
        """Bound service-account tokens rotate; the kubelet rewrites the file."""
        if self._token_file is None or not os.path.exists(self._token_file):
            return False
        with open(self._token_file) as f:
            token = f.read().strip()
        if not token or self._headers.get("Authorization") == f"Bearer {token}":
            return False
        self._headers["Authorization"] = f"Bearer {token}"
        if self._session is not None:
            self._session.headers["Authorization"] = self._headers["Authorization"]
        return True

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        path = f"{RESOURCES[kind].collection(namespace)}/{quote(name)}"
        return await self._call("GET", path)

    async def list(self, kind: str, namespace: str, labels: dict[str, str]) -> list[Obj]:
        params = {"labelSelector": selector_string(labels)}
        result = await self._call("GET", RESOURCES[kind].collection(namespace), params=params)
        items = (result or {}).get("items") or []
        # Match again on our side: the selector is the contract, not the server's filtering.
        return [
            item
            for item in items
            if labels.items() <= ((item.get("metadata") or {}).get("labels") or {}).items()
        ]

    async def apply(self, obj: Obj) -> Obj | None:
        """Server-side apply: create or update the fields this operator manages."""
        meta = obj["metadata"]
        path = f"{RESOURCES[obj['kind']].collection(meta['namespace'])}/{quote(meta['name'])}"
        params = {"fieldManager": names.FIELD_MANAGER, "force": "true"}
        return await self._call(
            "PATCH", path, body=obj, params=params, content_type="application/apply-patch+yaml"
        )

    async def create(self, obj: Obj) -> Obj | None:
        meta = obj["metadata"]
        return await self._call(
            "POST", RESOURCES[obj["kind"]].collection(meta["namespace"]), body=obj
        )

    async def patch(
        self, kind: str, namespace: str, name: str, body: Obj, subresource: str | None = None
    ) -> Obj | None:
        path = f"{RESOURCES[kind].collection(namespace)}/{quote(name)}"
        if subresource:
            path += f"/{subresource}"
        return await self._call(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        path = f"{RESOURCES[kind].collection(namespace)}/{quote(name)}"
        return await self._call("DELETE", path) is not None

    async def served(self, kind: str) -> bool:
        """Whether the API server serves this kind (e.g. the Prometheus Operator's CRDs)."""
        rt = RESOURCES[kind]
        prefix = "/api/v1" if not rt.group else f"/apis/{rt.group}/{rt.version}"
        try:
            listing = await self._call("GET", prefix)
        except KubeError:
            return False
        return any(r.get("name") == rt.plural for r in (listing or {}).get("resources") or ())

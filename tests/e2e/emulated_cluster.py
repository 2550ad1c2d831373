"""The cluster interface on the emulated API server with real node processes.

`tests/operator/test_operator_live_nodes.start_live(rbac=True)`: the emulator
that enforces a real API server's rules (OpenAPI, CRD schema + CEL, immutable
fields, conflicts, RBAC from the chart's rendered Roles, GC, finalizers,
namespace deletion), the real kopf operator logged in as the chart's service
account, and `exchange node` processes behind the pods (ProcessKubelet). A
Service's endpoints are its selected pods that are ready, as kube-proxy does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from cluster import Obj
from exchange_operator import names
from kmock_harness import ClusterEmulator
from test_operator_live_nodes import Live, start_live

NAMESPACE = "trading"  # start_live's namespace
CR_RES = f"{names.GROUP}/{names.VERSION}/{names.PLURAL}"


def _resource(obj: Obj) -> str:
    api_version, kind = obj["apiVersion"], obj["kind"]
    plural = {
        "Secret": "secrets",
        "Namespace": "namespaces",
        "ConfigMap": "configmaps",
        names.KIND: names.PLURAL,
    }[kind]
    return f"{api_version}/{plural}"


def _path(obj: Obj, named: bool) -> str:
    res = _resource(obj)
    group_version, plural = res.rsplit("/", 1)
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    namespace = obj["metadata"].get("namespace")
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    return f"{path}/{obj['metadata']['name']}" if named else path


class EmulatedCluster:
    name = "emulated"

    def __init__(self, live: Live) -> None:
        self.live = live
        self.emulator: ClusterEmulator = live.emulator

    async def _call(self, method: str, path: str, body: Any = None, ctype: str = "") -> Any:
        headers = {"Content-Type": ctype} if ctype else {}
        async with self.live.http.request(
            method, self.live.base + path, json=body, headers=headers
        ) as response:
            answer = await response.json(content_type=None)
            if response.status >= 400 and not (method == "DELETE" and response.status == 404):
                raise AssertionError(f"{method} {path}: {response.status} {answer}")
            return answer

    async def apply(self, objects: list[Obj]) -> None:
        for obj in objects:
            if obj["kind"] == "Namespace" and self.emulator.get(
                "v1/namespaces", None, obj["metadata"]["name"]
            ):
                continue
            await self._call(
                "PATCH",
                _path(obj, named=True) + "?fieldManager=e2e",
                obj,
                "application/apply-patch+yaml",
            )

    async def status(self, namespace: str, name: str) -> Obj:
        return dict((self.emulator.get(CR_RES, namespace, name) or {}).get("status") or {})

    async def wait(self, what: str, predicate: Callable[[], Any], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await _maybe_await(predicate()):
            if loop.time() > deadline:
                raise AssertionError(f"never reached: {what}\n{self.live.kubelet.logs()[-3000:]}")
            await asyncio.sleep(0.1)

    async def client_endpoint(self, namespace: str, service: str) -> tuple[str, str, bytes]:
        svc = self.emulator.get("v1/services", namespace, service)
        assert svc is not None, f"no Service {service}"
        selector = svc["spec"].get("selector") or {}
        ready = [
            pod
            for _, pod in self.emulator.live("v1/pods")
            if pod["metadata"].get("namespace") == namespace
            and selector.items() <= (pod["metadata"].get("labels") or {}).items()
            and self.live.kubelet.is_ready(pod["metadata"]["name"])
            and not pod["metadata"].get("deletionTimestamp")
        ]
        if not ready:
            raise ConnectionError(f"Service {service} has no ready endpoint")
        # A Service spreads connections over its endpoints; here a follower is picked
        # whenever there is one, so every write takes the forwarding path (follower ->
        # leader over HTTPS, the leader's certificate verified) and not only by chance.
        pod = sorted(
            ready,
            key=lambda p: (
                (p["metadata"].get("labels") or {}).get(names.LABEL_ROLE) == "leader",
                str(p["metadata"]["name"]),
            ),
        )[0]
        ordinal = int(pod["metadata"]["name"].rsplit("-", 1)[1])
        kubelet = self.live.kubelet
        base = f"https://{kubelet.host(ordinal)}:{kubelet.http_ports[ordinal]}"
        secret = self.emulator.get("v1/secrets", namespace, names.http_tls_secret(service))
        assert secret is not None
        ca = base64.b64decode(secret["data"][names.CA_CERT_KEY])
        return base, f"{service}.{namespace}.svc", ca

    async def delete(self, objects: list[Obj]) -> None:
        await asyncio.gather(*(self._call("DELETE", _path(o, named=True)) for o in objects))
        await self.emulator.settle()

    async def leftovers(self, namespace: str) -> list[str]:
        await self.emulator.settle()
        left = [
            f"{raw.get('kind')}/{raw['metadata']['name']}"
            for _, raw in self.emulator.live()
            if raw["metadata"].get("namespace") == namespace
            or (raw.get("kind") == "Namespace" and raw["metadata"]["name"] == namespace)
        ]
        return left + [t for t in self.emulator.terminating() if t not in left]


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value):
        return await value
    return value


@contextlib.asynccontextmanager
async def emulated_cluster(tmp_path: Path) -> AsyncIterator[EmulatedCluster]:
    async with start_live(tmp_path, rbac=True) as live:
        cluster = EmulatedCluster(live)
        yield cluster
        operator_refusals = [
            r
            for r in live.emulator.refusals
            if r.startswith("token") and not _into_a_deleted_namespace(r)
        ]
        assert operator_refusals == [], operator_refusals


def _into_a_deleted_namespace(refusal: str) -> bool:
    """A write the operator was making when the uninstall deleted the namespace along
    with the cluster (the scenario deletes everything at once, as `kubectl delete -f`
    does): every operator races deletion so, and it is not a missing permission, which
    is what the check above is for. A 403 always counts."""
    return re.search(r': 404 namespaces "[^"]+" not found$', refusal) is not None

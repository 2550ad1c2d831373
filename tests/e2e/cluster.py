"""The small cluster interface the e2e scenario is written against, and its workload.

Two implementations: `kind_cluster.KindCluster` (a real kind cluster, Helm,
kubectl, the image loaded with `kind load docker-image`) and
`emulated_cluster.EmulatedCluster` (the emulated API server that enforces a
real one's rules, the real kopf operator with the chart's RBAC, and real
`exchange node` processes behind the pods). The scenario never knows which.

The workload speaks the public order API through the cluster's client Service
(`<name>.<namespace>.svc`, HTTPS verified with the cluster's CA), with keys
from the API keys Secret the scenario created.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

Obj = dict[str, Any]


@dataclass
class Workload:
    """What a workload run saw: every acknowledged order, and the trades it made."""

    acknowledged: dict[str, int] = field(default_factory=dict)  # client_order_id -> order_id
    owner: dict[str, str] = field(default_factory=dict)  # client_order_id -> client
    fills: int = 0
    refused: int = 0  # answers that were not an acknowledgement (retried with the same id)
    forwarded: int = 0  # acknowledgements a follower relayed from the leader


class Cluster(Protocol):
    """apply, wait, exec a workload, delete, read status."""

    name: str

    async def apply(self, objects: list[Obj]) -> None:
        """Create or update each object (server-side apply semantics)."""

    async def status(self, namespace: str, name: str) -> Obj:
        """The ExchangeCluster's status ({} while it has none)."""

    async def wait(self, what: str, predicate: Callable[[], Any], timeout: float) -> None:
        """Until predicate() (which may read status through a cached view) holds."""

    async def client_endpoint(self, namespace: str, service: str) -> tuple[str, str, bytes]:
        """(base URL, TLS server name, CA PEM) of a Service's HTTP port, as a client in the
        cluster reaches it."""

    async def delete(self, objects: list[Obj]) -> None:
        """Delete every object at once (no ordering, no waiting on each)."""

    async def leftovers(self, namespace: str) -> list[str]:
        """Objects still present in or because of `namespace` (Terminating included)."""


def condition(status: Obj, kind: str) -> str | None:
    for cond in status.get("conditions") or ():
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


async def read(
    cluster: Cluster,
    namespace: str,
    name: str,
    http: aiohttp.ClientSession,
    path: str,
    token: str | None = None,
) -> tuple[int, Any]:
    """GET ``path`` through the client Service: (status, JSON). An election (502, 503,
    504) or an endpoint going away is retried, as a client does; other answers return."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    last = "no answer"
    for _attempt in range(80):
        try:
            base, server_name, ca = await cluster.client_endpoint(namespace, name)
            context = ssl.create_default_context(cadata=ca.decode())
            async with http.get(
                f"{base}{path}", headers=headers, ssl=context, server_hostname=server_name
            ) as r:
                answer = await r.json(content_type=None)
                if r.status not in (502, 503, 504):
                    return r.status, answer
                last = f"{r.status} {answer}"
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            last = repr(exc)
        await asyncio.sleep(0.25)
    raise AssertionError(f"GET {path} never answered: {last}")


async def run_workload(
    cluster: Cluster,
    namespace: str,
    name: str,
    keys: dict[str, str],
    orders: int,
    prefix: str,
    result: Workload | None = None,
) -> Workload:
    """Two clients cross orders at one price through the client Service, so every
    pair trades. A request that is not acknowledged is retried with the same
    client_order_id (exactly-once), so an acknowledgement is never lost by retrying."""
    result = result if result is not None else Workload()
    base, server_name, ca = await cluster.client_endpoint(namespace, name)
    context = ssl.create_default_context(cadata=ca.decode())
    (buyer, buyer_key), (seller, seller_key) = sorted(keys.items())[:2]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        status, answer = await read(cluster, namespace, name, http, "/v1/symbols")
        assert status == 200, answer
        symbol = answer["symbols"][0]
        tick = int(symbol.get("tick_size") or 1)
        reference = int(symbol.get("reference_price") or tick * 1000)
        price = max(tick, reference - reference % tick)  # inside any price band
        lot = int(symbol.get("lot_size") or 1)
        for i in range(orders):
            for client, key, side in ((seller, seller_key, "SELL"), (buyer, buyer_key, "BUY")):
                order_id = f"{prefix}-{client}-{i}"
                body = {"symbol": symbol["symbol"], "side": side, "price": price,
                        "quantity": lot, "client_order_id": order_id}  # fmt: skip
                last = "no answer"
                for _attempt in range(40):
                    try:
                        async with http.post(
                            f"{base}/v1/orders",
                            json=body,
                            headers={"Authorization": f"Bearer {key}"},
                            ssl=context,
                            server_hostname=server_name,
                        ) as r:
                            answer = await r.json(content_type=None)
                            if r.status == 200:
                                result.acknowledged[order_id] = int(answer["order_id"])
                                result.owner[order_id] = client
                                if r.headers.get("X-Exchange-Forwarded-By"):
                                    result.forwarded += 1
                                result.fills += sum(
                                    1 for e in answer.get("events", ()) if e.get("type") == "fill"
                                )
                                break
                            last = f"{r.status} {answer}"
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        last = repr(exc)
                    result.refused += 1
                    await asyncio.sleep(0.25)
                    # A Service's endpoints change while pods restart: ask again.
                    with contextlib.suppress(ConnectionError):
                        base, server_name, ca = await cluster.client_endpoint(namespace, name)
                else:
                    raise AssertionError(f"{order_id} was never acknowledged; last: {last}")
    return result


async def lost_orders(
    cluster: Cluster, namespace: str, name: str, keys: dict[str, str], workload: Workload
) -> list[str]:
    """Every acknowledged order must still be known to the cluster (by its client id)."""
    lost = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for order_id, exchange_id in workload.acknowledged.items():
            client = workload.owner[order_id]
            path = f"/v1/orders/by-client-id/{order_id}"
            status, found = await read(cluster, namespace, name, http, path, keys[client])
            if status != 200 or int(found.get("order_id", -1)) != exchange_id:
                lost.append(f"{order_id} (acknowledged as {exchange_id}; {status} {found})"[:240])
    return lost

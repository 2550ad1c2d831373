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
        async with http.get(f"{base}/v1/symbols", ssl=context, server_hostname=server_name) as r:
            assert r.status == 200, await r.text()
            symbols = (await r.json())["symbols"]
        symbol = symbols[0]
        tick = int(symbol.get("tick_size") or 1)
        reference = int(symbol.get("reference_price") or tick * 1000)
        price = max(tick, reference - reference % tick)  # inside any price band
        lot = int(symbol.get("lot_size") or 1)
        for i in range(orders):
            for client, key, side in ((seller, seller_key, "SELL"), (buyer, buyer_key, "BUY")):
                order_id = f"{prefix}-{client}-{i}"
                body = {"symbol": symbol["symbol"], "side": side, "price": price,
                        "quantity": lot, "client_order_id": order_id}  # fmt: skip
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
                                result.fills += sum(
                                    1 for e in answer.get("events", ()) if e.get("type") == "fill"
                                )
                                break
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                    result.refused += 1
                    await asyncio.sleep(0.25)
                    # A Service's endpoints change while pods restart: ask again.
                    base, server_name, ca = await cluster.client_endpoint(namespace, name)
                else:
                    raise AssertionError(f"{order_id} was never acknowledged")
    return result


async def lost_orders(
    cluster: Cluster, namespace: str, name: str, keys: dict[str, str], workload: Workload
) -> list[str]:
    """Every acknowledged order must still be known to the cluster (by its client id)."""
    base, server_name, ca = await cluster.client_endpoint(namespace, name)
    context = ssl.create_default_context(cadata=ca.decode())
    lost = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for order_id, exchange_id in workload.acknowledged.items():
            client = workload.owner[order_id]
            url = f"{base}/v1/orders/by-client-id/{order_id}"
            headers = {"Authorization": f"Bearer {keys[client]}"}
            async with http.get(
                url, headers=headers, ssl=context, server_hostname=server_name
            ) as r:
                found = await r.json(content_type=None) if r.status == 200 else {}
            if int(found.get("order_id", -1)) != exchange_id:
                lost.append(order_id)
    return lost

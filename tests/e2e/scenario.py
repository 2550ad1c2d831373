"""The e2e scenario, step by step, against any `cluster.Cluster`.

Each step is a coroutine the kind suite and the emulated suite both run:
install (API keys Secret + ExchangeCluster), wait for Ready, trade through
the client Service, scale 3 -> 5 -> 3 and roll to a new image with trading
on throughout, check every acknowledged order is kept, delete everything at
once and check nothing is left (nothing Terminating).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from cluster import Cluster, Obj, Workload, condition, lost_orders, run_workload
from exchange_operator import names

CLIENTS = ("e2e-buyer", "e2e-seller")


@dataclass
class Scenario:
    cluster: Cluster
    namespace: str
    name: str = "xc"
    image: str = ""  # "" : the operator's default image
    timeout: float = 120.0
    keys: dict[str, str] = field(default_factory=dict)  # client -> token
    workload: Workload = field(default_factory=Workload)

    def objects(self, replicas: int = 3, image: str | None = None) -> list[Obj]:
        if not self.keys:
            self.keys = {client: secrets.token_hex(20) for client in CLIENTS}
        keys_file = "".join(f"{token}={client}\n" for client, token in self.keys.items())
        spec: Obj = {
            "replicas": replicas,
            "electionMs": 600,
            "heartbeatMs": 100,
            "apiKeysSecretRef": {"name": f"{self.name}-api-keys"},
        }
        if image or self.image:
            spec["image"] = image or self.image
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{self.name}-api-keys", "namespace": self.namespace},
                "stringData": {"api-keys": keys_file},
            },
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": spec,
            },
        ]

    async def ready(self, replicas: int) -> None:
        async def done() -> bool:
            status = await self.cluster.status(self.namespace, self.name)
            return (
                condition(status, "Ready") == "True"
                and int(status.get("replicas") or 0) == replicas
                and len(status.get("members") or ()) == replicas
            )

        await self.cluster.wait(f"Ready with {replicas} members", done, self.timeout)

    # --- the steps --------------------------------------------------------------------
    async def install(self) -> None:
        await self.cluster.apply(self.objects())
        await self.ready(3)

    async def trade(self, orders: int = 10, prefix: str = "t") -> None:
        before = self.workload.fills
        await run_workload(
            self.cluster, self.namespace, self.name, self.keys, orders, prefix, self.workload
        )
        assert self.workload.fills > before, "no trade through the client Service"

    async def trading_while(self, step: asyncio.Future[None] | asyncio.Task[None], tag: str) -> int:
        """Trade in rounds until `step` finishes; the rounds it took."""
        rounds = 0
        while not step.done():
            await self.trade(orders=3, prefix=f"{tag}{rounds}")
            rounds += 1
        await step
        return rounds

    async def scale(self, replicas: int) -> None:
        objects = self.objects(replicas)
        await self.cluster.apply(objects[-1:])
        await self.ready(replicas)

    async def upgrade(self, image: str) -> None:
        await self.cluster.apply(self.objects(3, image=image)[-1:])

        async def rolled() -> bool:
            status = await self.cluster.status(self.namespace, self.name)
            members = status.get("members") or ()
            return (
                condition(status, "Ready") == "True"
                and len(members) == 3
                and all(m.get("image") == image for m in members)
            )

        await self.cluster.wait(f"every member on {image}", rolled, self.timeout)

    async def nothing_lost(self) -> None:
        lost = await lost_orders(self.cluster, self.namespace, self.name, self.keys, self.workload)
        assert lost == [], f"acknowledged orders lost: {lost}"

    async def uninstall(self) -> None:
        await self.cluster.delete(list(reversed(self.objects())))

        async def gone() -> bool:
            return not await self.cluster.leftovers(self.namespace)

        await self.cluster.wait("nothing left, nothing Terminating", gone, self.timeout)

"""The real operator, the emulated API server, and real node processes behind the pods.

ProcessKubelet starts `exchange node` for each pod the StatefulSet controller
creates, with the environment the operator rendered; the operator reads the
nodes' real admin API. Kill one node to see Degraded, two of three to see
QuorumLost. Skipped when the node package is not present.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import api_rules
import kmock
import kopf
import pytest
from exchange_node.chaos import net
from exchange_operator import crd, names
from exchange_operator.handlers import OperatorConfig, register
from kmock_harness import ClusterEmulator, dump
from process_kubelet import ProcessKubelet, drive

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("exchange_node.server_cli") is None,
        reason="the node (exchange_node.server_cli) is not installed",
    ),
]

NS, NAME = "trading", "xc"
CR_RES = f"{names.GROUP}/{names.VERSION}/{names.PLURAL}"
CR_PATH = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NS}/{names.PLURAL}"
DEADLINE = 90.0


@dataclass
class Live:
    emulator: ClusterEmulator
    kubelet: ProcessKubelet
    http: aiohttp.ClientSession
    base: str

    def status(self) -> dict[str, Any]:
        return dict((self.emulator.get(CR_RES, NS, NAME) or {}).get("status") or {})

    def condition(self, kind: str) -> str | None:
        for cond in self.status().get("conditions") or ():
            if cond["type"] == kind:
                return str(cond["status"])
        return None

    async def until(self, what: str, predicate: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(
                    f"never reached: {what}\nstatus: {dump(self.status())}\n{self.kubelet.logs()}"
                )
            await asyncio.sleep(0.1)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with start_live(tmp_path) as started:
        yield started


@contextlib.asynccontextmanager
async def start_live(
    tmp_path: Path, network: net.Network | None = None, rbac: bool = False
) -> AsyncIterator[Live]:
    """The emulator, the real operator and ProcessKubelet (each pod in its own network
    namespace of ``network`` when given; with ``rbac``, the operator has exactly the
    chart's RBAC for the namespace and the emulator enforces it)."""
    emulator = ClusterEmulator()
    async with emulator, kmock.Server(emulator) as server, aiohttp.ClientSession() as http:
        emulator.add_namespace(NS)
        emulator.install_crd(crd.build_crd())
        token = None
        if rbac:
            rules, user = api_rules.chart_rbac({"operator": {"watchNamespaces": [NS]}})
            emulator.authorize(rules, {api_rules.OPERATOR_TOKEN: user})
            token = api_rules.OPERATOR_TOKEN
        kubelet = ProcessKubelet(emulator, tmp_path, NAME, NS, network)
        await kubelet.start()
        emulator.kubelet = kubelet
        url = str(server.url).rstrip("/")
        config = OperatorConfig(
            reconcile_interval=0.3,
            admin_address=kubelet.admin_address,
            admin_timeout=1.0,
            error_backoff=0.3,
            member_addresses=kubelet.member_addresses,
            login=lambda: kopf.ConnectionInfo(server=url, token=token),
        )
        registry = kopf.OperatorRegistry()
        runtime = register(registry, config)
        stop_operator, ready = threading.Event(), threading.Event()

        def run_operator() -> None:
            async def main() -> None:
                try:
                    await kopf.operator(
                        registry=registry,
                        namespaces=[NS],
                        standalone=True,
                        stop_flag=stop_operator,
                        ready_flag=ready,
                    )
                finally:
                    await runtime.close()

            asyncio.run(main())

        operator = threading.Thread(target=run_operator, name="kopf-operator", daemon=True)
        stop_clock = asyncio.Event()
        clock = asyncio.create_task(drive(emulator, kubelet, stop_clock))
        operator.start()
        try:
            assert await asyncio.to_thread(ready.wait, DEADLINE), "kopf never became ready"
            yield Live(emulator, kubelet, http, url)
        finally:
            stop_operator.set()
            await asyncio.to_thread(operator.join, DEADLINE)
            stop_clock.set()
            await clock
            await kubelet.stop()


async def test_real_nodes_status_degraded_and_quorum_lost(live: Live) -> None:
    body = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": NAME},
            "spec": {"replicas": 3, "electionMs": 600, "heartbeatMs": 100}}  # fmt: skip
    async with live.http.post(live.base + CR_PATH, json=body) as response:
        assert response.status == 200, await response.text()

    await live.until("Running with a real leader", lambda: live.status().get("phase") == "Running")
    status = live.status()
    assert status["leaderId"] in (1, 2, 3) and status["term"] >= 1
    members = status["members"]
    assert sorted(m["id"] for m in members) == [1, 2, 3]
    assert all(m["voter"] and m["healthy"] for m in members)
    leader = status["leader"]

    def role_labels() -> dict[str, str | None]:
        return {
            p["metadata"]["name"]: p["metadata"]["labels"].get("role")
            for _, p in live.emulator.live("v1/pods")
        }

    await live.until(
        "role=leader on the leader's pod", lambda: role_labels().get(leader) == "leader"
    )
    assert list(role_labels().values()).count("leader") == 1

    followers = sorted(int(m["name"].rsplit("-", 1)[1]) for m in members if m["name"] != leader)
    live.kubelet.kill(followers[0])
    await live.until("Degraded", lambda: live.condition("Degraded") == "True")
    assert live.condition("QuorumLost") == "False"
    assert live.condition("Available") == "True"

    live.kubelet.kill(followers[1])
    await live.until("QuorumLost", lambda: live.condition("QuorumLost") == "True")
    assert live.status()["phase"] == "QuorumLost"


async def test_real_nodes_scale_up_and_down(live: Live) -> None:
    body = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": NAME},
            "spec": {"replicas": 3, "electionMs": 600, "heartbeatMs": 100}}  # fmt: skip
    async with live.http.post(live.base + CR_PATH, json=body) as response:
        assert response.status == 200, await response.text()
    await live.until("Running", lambda: live.status().get("phase") == "Running")

    def voters() -> int:
        return sum(
            1 for m in live.status().get("members") or () if m.get("voter") and m.get("healthy")
        )

    headers = {"Content-Type": "application/merge-patch+json"}
    async with live.http.patch(
        f"{live.base}{CR_PATH}/{NAME}/scale", json={"spec": {"replicas": 5}}, headers=headers
    ) as response:
        assert response.status == 200
    await live.until(
        "5 healthy voters", lambda: voters() == 5 and live.status().get("phase") == "Running"
    )
    ids = sorted(m["id"] for m in live.status()["members"])
    assert ids[:3] == [1, 2, 3] and len(set(ids)) == 5  # new members got fresh ids

    async with live.http.patch(
        f"{live.base}{CR_PATH}/{NAME}", json={"spec": {"replicas": 3}}, headers=headers
    ) as response:
        assert response.status == 200
    await live.until(
        "3 voters on 3 pods",
        lambda: (
            voters() == 3
            and len(live.emulator.live("v1/pods")) == 3
            and live.status().get("phase") == "Running"
        ),
    )


async def test_real_nodes_rolling_upgrade_moves_leadership_and_keeps_identities(live: Live) -> None:
    body = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": NAME},
            "spec": {"replicas": 3, "electionMs": 600, "heartbeatMs": 100,
                     "image": "ghcr.io/raft-exchange/exchange:0.1.0"}}  # fmt: skip
    async with live.http.post(live.base + CR_PATH, json=body) as response:
        assert response.status == 200, await response.text()
    await live.until("Running", lambda: live.status().get("phase") == "Running")
    first_leader = live.status()["leader"]
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for _, p in live.emulator.live("v1/pods")}

    headers = {"Content-Type": "application/merge-patch+json"}
    patch = {"spec": {"image": "ghcr.io/raft-exchange/exchange:0.2.0"}}
    async with live.http.patch(f"{live.base}{CR_PATH}/{NAME}", json=patch, headers=headers) as r:
        assert r.status == 200

    def upgraded() -> bool:
        pods = [p for _, p in live.emulator.live("v1/pods")]
        status = live.status()
        return (
            len(pods) == 3
            and all(p["spec"]["containers"][0]["image"].endswith(":0.2.0") for p in pods)
            and status.get("phase") == "Running"
            and sum(1 for m in status.get("members") or () if m.get("healthy")) == 3
        )

    await live.until("every pod restarted on 0.2.0, all healthy", upgraded)
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for _, p in live.emulator.live("v1/pods")}
    assert all(after[name] != uid for name, uid in before.items())
    status = live.status()
    # Same volumes, same identities: nobody came back as a new member.
    assert sorted(m["id"] for m in status["members"]) == [1, 2, 3]
    # The leader was restarted last, after handing leadership to an upgraded follower.
    assert status["leader"] != first_leader

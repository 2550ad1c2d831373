"""``KubernetesTarget`` against the emulated API server, with real node processes behind
the pods (ProcessKubelet) and the real operator.

- Deleting the leader's pod through the target (grace 0) SIGKILLs the real process;
  the StatefulSet controller recreates the pod, a new process starts on the same
  volume, a new leader is elected and all three members are healthy again.
- A normal delete (``restart``) is a SIGTERM; two pods at once lose quorum until healed.
- A partition creates NetworkPolicies that select exactly the pods named (validated
  against the Kubernetes 1.31 schemas) and healing deletes them.
- With each pod in its own network namespace (root), ProcessKubelet enforces the
  Egress policies with iptables: the partition made through the API cuts the real
  TCP paths between the processes, the majority elects another leader, and healing
  (deleting the policies) lets all three members be healthy again.
- With Chaos Mesh's kinds served, the capabilities grow and each fault creates a
  resource that validates against chaos_mesh_schemas, deleted on healing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import manifest_validation as validation
import pytest
from exchange_node.chaos import net
from exchange_node.chaos.kube_target import KubernetesTarget
from exchange_node.chaos.target import CapabilityError, DiskFault, LinkFault
from kubernetes import client
from test_operator_live_nodes import CR_PATH, NAME, NS, Live, live, start_live  # noqa: F401

pytestmark = [pytest.mark.slow]

CHAOS_MESH = {
    "PodChaos": "podchaos",
    "NetworkChaos": "networkchaos",
    "TimeChaos": "timechaos",
    "IOChaos": "iochaos",
    "StressChaos": "stresschaos",
}


def api_client(cluster: Live) -> Any:
    configuration = client.Configuration()
    configuration.host = cluster.base
    return client.ApiClient(configuration)


def healthy(cluster: Live) -> int:
    return sum(1 for m in cluster.status().get("members") or () if m.get("healthy"))


async def test_pod_deletes_kill_real_processes_and_policies_partition(live: Live) -> None:  # noqa: F811
    body = {"apiVersion": "exchange.raft-exchange.dev/v1alpha1", "kind": "ExchangeCluster",
            "metadata": {"name": NAME}, "spec": {"replicas": 3, "electionMs": 600,
                                                  "heartbeatMs": 100}}  # fmt: skip
    async with live.http.post(live.base + CR_PATH, json=body) as response:
        assert response.status == 200, await response.text()
    await live.until("Running, 3 healthy", lambda: live.status().get("phase") == "Running"
                     and healthy(live) == 3)  # fmt: skip

    target = await asyncio.to_thread(
        KubernetesTarget, NS, NAME, api_client=api_client(live), ready_timeout=90
    )
    assert target.capabilities() == {"kill", "restart", "partition"}
    # The target's calls are synchronous HTTP to the emulator in this loop: in threads.
    pods = await asyncio.to_thread(target.members)
    assert sorted(pods) == [1, 2, 3] and await asyncio.to_thread(target.node_ids) == [1, 2, 3]
    with pytest.raises(CapabilityError, match="NetworkChaos"):
        await asyncio.to_thread(target.loss, 1, 0.3)
    with pytest.raises(CapabilityError, match="pause"):
        await asyncio.to_thread(target.pause, 1)

    # 1. Delete the leader's pod with grace 0: its process dies of SIGKILL.
    leader = await asyncio.to_thread(target.leader)
    assert leader is not None
    pod = pods[leader]
    ordinal = int(pod.rsplit("-", 1)[1])
    process = live.kubelet.processes[ordinal]
    fault = await asyncio.to_thread(target.kill, leader)
    assert await asyncio.to_thread(process.wait, 10) == -signal.SIGKILL
    await live.until("a new leader", lambda: live.status().get("leaderId") not in (0, leader))
    await asyncio.to_thread(fault.heal)  # waits for the recreated pod to be Ready
    replacement = live.kubelet.processes[ordinal]
    assert replacement is not process and replacement.poll() is None
    await live.until("3 healthy again", lambda: healthy(live) == 3)
    ids = sorted(m["id"] for m in live.status()["members"])
    assert ids == [1, 2, 3]  # the same member came back on its volume

    # 2. restart: a normal delete is a SIGTERM (the node hands over and exits cleanly).
    leader = await asyncio.to_thread(target.leader)
    follower = next(i for i in pods if i != leader)
    f_ordinal = int(pods[follower].rsplit("-", 1)[1])
    f_process = live.kubelet.processes[f_ordinal]
    await asyncio.to_thread(target.restart, follower)
    assert f_process.wait(0) in (0, -signal.SIGTERM)
    assert live.kubelet.processes[f_ordinal] is not f_process
    await live.until("3 healthy after restart", lambda: healthy(live) == 3)

    # 3. two pods at once: quorum lost, then back.
    two = sorted(pods)[:2]
    both = await asyncio.to_thread(target.kill_pods, two)
    await asyncio.to_thread(both.heal)
    await live.until("Running after two pods", lambda: live.status().get("phase") == "Running"
                     and healthy(live) == 3)  # fmt: skip

    # 4. partition {leader} | {others}: egress policies on both sides, removed on heal.
    leader = await asyncio.to_thread(target.leader)
    assert leader is not None
    others = [i for i in sorted(pods) if i != leader]
    cut = await asyncio.to_thread(target.partition, [[leader], others])
    policies = {
        p["metadata"]["name"]: p
        for _, p in live.emulator.live("networking.k8s.io/v1/networkpolicies")
        if p["metadata"]["labels"].get("app.kubernetes.io/component") == "chaos"
    }
    assert sorted(policies) == sorted(name for _, name in cut.resources) and len(policies) == 2
    selected = sorted(
        tuple(p["spec"]["podSelector"]["matchExpressions"][0]["values"]) for p in policies.values()
    )
    assert selected == sorted([(pods[leader],), tuple(pods[i] for i in others)])
    for policy in policies.values():
        assert validation.errors(policy) == []
    await asyncio.to_thread(cut.heal)
    assert not [
        p
        for _, p in live.emulator.live("networking.k8s.io/v1/networkpolicies")
        if p["metadata"]["labels"].get("app.kubernetes.io/component") == "chaos"
    ]

    # A fault the run lost track of (its healing failed half way) is deleted by close().
    lost = await asyncio.to_thread(target.partition, [[leader], others])
    target._active.remove(lost)  # type: ignore[arg-type]
    await asyncio.to_thread(target.close)
    assert not [
        p
        for _, p in live.emulator.live("networking.k8s.io/v1/networkpolicies")
        if p["metadata"]["labels"].get("app.kubernetes.io/component") == "chaos"
    ]

    # 5. Chaos Mesh installed: its kinds are discovered and each fault is one resource.
    for kind, plural in CHAOS_MESH.items():
        live.emulator.declare(kind, f"chaos-mesh.org/v1alpha1/{plural}", True, ())
    mesh = await asyncio.to_thread(
        KubernetesTarget, NS, NAME, api_client=api_client(live), via="chaos-mesh"
    )
    assert mesh.chaos_mesh_kinds == set(CHAOS_MESH)
    assert {"loss", "bandwidth", "link", "clock", "disk", "partition"} <= mesh.capabilities()
    injections = [
        lambda: mesh.loss(1, 0.25),
        lambda: mesh.bandwidth(2, 512),
        lambda: mesh.link(1, 2, LinkFault("latency", latency_ms=50, jitter_ms=5)),
        lambda: mesh.link(2, 3, LinkFault("corrupt", probability=0.1)),
        lambda: mesh.clock(3, -600.0),
        lambda: mesh.disk(1, DiskFault("slow_fsync", delay_ms=100)),
        lambda: mesh.disk(2, DiskFault("eio_fsync")),
        lambda: mesh.stress(3, cpu_workers=2, memory="256MB"),
        lambda: mesh.pod_failure(1),
        lambda: mesh.partition([[1], [2, 3]]),
    ]
    made = []
    for inject in injections:
        fault = await asyncio.to_thread(inject)
        for kind, name in fault.resources:
            obj = live.emulator.get(f"chaos-mesh.org/v1alpha1/{CHAOS_MESH[kind]}", NS, name)
            assert obj is not None, (kind, name)
            assert validation.errors(obj) == [], (fault.description, obj)
            made.append((kind, name))
    assert len(made) == 10  # one each; {1} | {2,3} is one pair of sides: one NetworkChaos
    # via=chaos-mesh: a kill is a PodChaos pod-kill (grace 0). Chaos Mesh's controller is
    # not emulated: the test deletes the pod as it would, and healing waits for the new one.
    victim = pods[3]
    killed = await asyncio.to_thread(mesh.kill, 3)
    ((kind, name),) = killed.resources
    pod_chaos = live.emulator.get("chaos-mesh.org/v1alpha1/podchaos", NS, name)
    assert pod_chaos is not None and validation.errors(pod_chaos) == []
    assert pod_chaos["spec"]["action"] == "pod-kill" and pod_chaos["spec"]["gracePeriod"] == 0
    assert pod_chaos["spec"]["selector"]["pods"] == {NS: [victim]}
    made.append((kind, name))
    process = live.kubelet.processes[int(victim.rsplit("-", 1)[1])]
    async with live.http.delete(f"{live.base}/api/v1/namespaces/{NS}/pods/{victim}",
                                params={"gracePeriodSeconds": "0"}) as response:  # fmt: skip
        assert response.status == 200
    assert await asyncio.to_thread(process.wait, 10) == -signal.SIGKILL
    await asyncio.to_thread(mesh.close)  # heals everything: every resource deleted
    for kind, name in made:
        assert live.emulator.get(f"chaos-mesh.org/v1alpha1/{CHAOS_MESH[kind]}", NS, name) is None


@pytest.fixture
async def live_netns(tmp_path: Path) -> AsyncIterator[Live]:
    missing = net.missing_tools("ip", "iptables", "tc")
    if missing:
        pytest.skip(f"pods in network namespaces need root, ip and iptables (missing: {missing})")
    network = net.Network.create([1, 2, 3])
    try:
        async with start_live(tmp_path, network) as started:
            yield started
    finally:
        network.close()


def connects(network: net.Network, src: int, host: str, port: int) -> bool:
    """A TCP connection from pod ``src``'s namespace (ordinal) to host:port."""
    probe = f"import socket; socket.create_connection(({host!r}, {port}), 1.5).close()"
    argv = [*network.exec_prefix(src + 1), sys.executable, "-c", probe]
    return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0


async def test_networkpolicy_partition_cuts_the_real_network(live_netns: Live) -> None:
    xc = live_netns
    kubelet, network = xc.kubelet, xc.kubelet.network
    assert network is not None
    body = {"apiVersion": "exchange.raft-exchange.dev/v1alpha1", "kind": "ExchangeCluster",
            "metadata": {"name": NAME}, "spec": {"replicas": 3, "electionMs": 600,
                                                  "heartbeatMs": 100}}  # fmt: skip
    async with xc.http.post(xc.base + CR_PATH, json=body) as response:
        assert response.status == 200, await response.text()
    await xc.until("Running, 3 healthy", lambda: xc.status().get("phase") == "Running"
                     and healthy(xc) == 3)  # fmt: skip
    target = await asyncio.to_thread(
        KubernetesTarget, NS, NAME, api_client=api_client(xc), ready_timeout=90
    )
    pods = await asyncio.to_thread(target.members)
    leader = await asyncio.to_thread(target.leader)
    assert leader is not None
    ordinal = {i: int(name.rsplit("-", 1)[1]) for i, name in pods.items()}
    others = [i for i in sorted(pods) if i != leader]
    a, b = ordinal[leader], ordinal[others[0]]

    def grpc(o: int) -> tuple[str, int]:
        return kubelet.host(o), kubelet.grpc_ports[o]

    assert await asyncio.to_thread(connects, network, a, *grpc(b))
    cut = await asyncio.to_thread(target.partition, [[leader], others])
    # leader -> each other, each other -> leader: four DROP rules in force
    await xc.until("the policies enforced", lambda: len(kubelet.policy_rules()) == 4)
    assert not await asyncio.to_thread(connects, network, a, *grpc(b))
    assert not await asyncio.to_thread(connects, network, b, *grpc(a))
    c = ordinal[others[1]]
    assert await asyncio.to_thread(connects, network, b, *grpc(c))  # the majority still talks
    await xc.until("a new leader among the majority", lambda: xc.status().get("leaderId") in others)
    await asyncio.to_thread(cut.heal)
    await xc.until("the rules removed", lambda: kubelet.policy_rules() == [])
    assert await asyncio.to_thread(connects, network, a, *grpc(b))
    await xc.until("3 healthy after healing", lambda: xc.status().get("phase") == "Running"
                     and healthy(xc) == 3)  # fmt: skip


@pytest.mark.parametrize(
    ("scenario", "fault"),
    [("node-failure", "delete pod"), ("network-partition", "(NetworkPolicy)")],
)
async def test_chaos_run_against_the_emulated_cluster(
    live_netns: Live, tmp_path: Path, scenario: str, fault: str
) -> None:
    """`exchange chaos run SCENARIO --target kubernetes`, as the experiments' Jobs run
    it: the real CLI, workload and checks, against pods reached by their DNS names on
    the headless Service (a private /etc/hosts in the run's own mount namespace); the
    partition's NetworkPolicies enforced in the pods' network namespaces."""
    if shutil.which("unshare") is None:
        pytest.skip("the pods' DNS names need unshare (util-linux) for a private /etc/hosts")
    xc = live_netns
    assert xc.kubelet.network is not None
    keys = {f"chaos-{i}": f"key-{i}-{secrets.token_hex(8)}" for i in range(4)}
    keys_file = "".join(f"{token}={client}\n" for client, token in keys.items())
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "xc-api-keys"},
              "stringData": {"api-keys": keys_file}}  # fmt: skip
    async with xc.http.post(f"{xc.base}/api/v1/namespaces/{NS}/secrets", json=secret) as r:
        assert r.status in (200, 201), await r.text()
    body = {"apiVersion": "exchange.raft-exchange.dev/v1alpha1", "kind": "ExchangeCluster",
            "metadata": {"name": NAME}, "spec": {"replicas": 3, "electionMs": 600,
            "heartbeatMs": 100, "apiKeysSecretRef": {"name": "xc-api-keys", "key": "api-keys"}}}  # fmt: skip
    async with xc.http.post(xc.base + CR_PATH, json=body) as response:
        assert response.status == 200, await response.text()
    await xc.until("Running, 3 healthy", lambda: xc.status().get("phase") == "Running"
                   and healthy(xc) == 3)  # fmt: skip

    # What the Job mounts: the API keys and the CA of the HTTP server Secret.
    (tmp_path / "api-keys").write_text(keys_file)
    tls = xc.emulator.get("v1/secrets", NS, f"{NAME}-http-tls")
    assert tls is not None
    (tmp_path / "ca.crt").write_bytes(base64.b64decode(tls["data"]["ca.crt"]))
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "emulated",
                  "clusters": [{"name": "emulated", "cluster": {"server": xc.base}}],
                  "users": [{"name": "nobody", "user": {}}],
                  "contexts": [{"name": "emulated",
                                "context": {"cluster": "emulated", "user": "nobody"}}]}  # fmt: skip
    (tmp_path / "kubeconfig").write_text(json.dumps(kubeconfig))
    hosts = "127.0.0.1 localhost\n" + "".join(
        f"{xc.kubelet.host(i)} {NAME}-{i}.{NAME}-peers.{NS}.svc\n" for i in range(3)
    )
    (tmp_path / "hosts").write_text(hosts)
    report = tmp_path / "report"
    run = (
        f"mount --bind {tmp_path / 'hosts'} /etc/hosts && exec {sys.executable} -m "
        f"exchange_node.cli chaos run {scenario} --target kubernetes --duration 12 "
        f"--seed 1 --report {report} --target-option namespace={NS} "
        f"--target-option cluster_name={NAME} --target-option kubeconfig={tmp_path / 'kubeconfig'} "
        f"--target-option ca_file={tmp_path / 'ca.crt'} "
        f"--target-option api_keys_file={tmp_path / 'api-keys'} --target-option ready_timeout=60"
    )
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--mount", "--propagation", "private", "sh", "-c", run,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:] + xc.kubelet.logs()
    result = json.loads((report / "report.json").read_text())
    print(text[-1500:])
    assert result["verdict"] == "pass" and result["target"] == "kubernetes"
    assert result["lost_acks"] == 0 and result["duplicates"] == 0
    assert result["operations"]["acknowledged"] > 50
    faults = [f for f in result["unavailability"]["faults"] if fault in f["description"]]
    assert faults, result["unavailability"]

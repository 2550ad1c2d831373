"""A kubelet that runs real `exchange node` processes behind the emulated pods.

It plugs into ClusterEmulator's Kubelet protocol. Each pod becomes a node
process on loopback with the pod template's environment, rewritten only where
a cluster differs from one machine: the peers' gRPC addresses become
127.0.0.1 with per-pod ports, the ConfigMap and Secret the pod would mount
or reference are read from the emulator, and the volume is a directory.
The HTTP addresses keep the pods' DNS names (`<pod>.<cluster>-peers.<ns>.svc`,
with the pod's port), as real pods advertise them: the HTTP server certificate
names exactly these, so a follower that forwards to the leader over HTTPS, or
asks the members for the live view, verifies the certificate as on Kubernetes.
An emulated cluster DNS in each node process (``EMULATED_CLUSTER_DNS``, a JSON
map of those names to the pods' addresses, used by the node's aiohttp clients)
resolves them, as CoreDNS would.
gRPC resolves in C (not through it); the peers verify each other by member
identity whatever the address, so their addresses stay numeric.
The Secrets the pod mounts (the HTTP server certificate and the CA; no member
key: each node makes its own in its data directory) are written to files as the
kubelet would, and the environment's paths point at them. The operator reaches each node's admin
listener directly over TLS (`admin_address`: 127.0.0.1 and the pod's port,
verified as the pod's DNS name against the cluster CA); `url_template` is a
plain proxy at `http://127.0.0.1:PORT/<pod>/...` for tests that want one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from exchange_node.chaos import net
from exchange_operator import names
from kmock_harness import ClusterEmulator

Obj = dict[str, Any]
NODE_MAIN = (
    "import argparse, json, os, sys\n"
    # The cluster DNS for the node's HTTP clients (forwarding, the members' view): the
    # pods' names resolve to their addresses, everything else as usual. The TLS name
    # checked stays the URL's host. (aiohttp's resolver: uvloop resolves in C.)
    "import aiohttp.connector, aiohttp.resolver\n"
    "hosts = json.loads(os.environ.pop('EMULATED_CLUSTER_DNS', '{}'))\n"
    "class ClusterDns(aiohttp.resolver.ThreadedResolver):\n"
    "    async def resolve(self, host, *rest, **kw):\n"
    "        return await super().resolve(hosts.get(host, host), *rest, **kw)\n"
    "aiohttp.connector.DefaultResolver = ClusterDns\n"
    "from exchange_node import server_cli\n"
    "parser = argparse.ArgumentParser()\n"
    "server_cli.add_arguments(parser)\n"
    "sys.exit(server_cli.main(parser.parse_args([])))\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessKubelet:
    def __init__(
        self,
        emulator: ClusterEmulator,
        workdir: Path,
        cluster: str,
        namespace: str,
        network: net.Network | None = None,
    ) -> None:
        self.emulator = emulator
        self.network = network
        """With a network, each pod runs in its own namespace (ordinal i: node i + 1 of
        chaos.net) on a bridge, and enforce_policies() turns NetworkPolicies into iptables."""
        self._policy_rules: list[net.Rule] = []
        self.workdir = workdir
        self.cluster = cluster
        self.namespace = namespace
        if network is None:
            self.http_ports = [_free_port() for _ in range(7)]
            self.grpc_ports = [_free_port() for _ in range(7)]
            self.admin_ports = [_free_port() for _ in range(7)]
        else:  # each pod has its own address: the ports a real pod has
            self.http_ports = [names.HTTP_PORT] * 7
            self.grpc_ports = [names.GRPC_PORT] * 7
            self.admin_ports = [names.ADMIN_PORT] * 7
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.terminating: dict[int, subprocess.Popen[bytes]] = {}
        self.ready: dict[int, bool] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # --- the Kubelet protocol --------------------------------------------------------
    def pod_created(self, pod: Obj, ordinal: int, fresh_volume: bool) -> None:
        # A pod's replacement starts only after the old container is gone (its
        # data directory is locked until then), as on a real node.
        old = self.terminating.pop(ordinal, None)
        if old is not None:
            try:
                old.wait(timeout=30)
            except subprocess.TimeoutExpired:
                old.kill()
                old.wait()
        data_dir = self.workdir / "volumes" / str(ordinal)
        if fresh_volume and data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        env = self._env(pod, ordinal, data_dir)
        log = open(self.workdir / f"node-{ordinal}.log", "ab")  # noqa: SIM115 - owned by the process
        prefix = self.network.exec_prefix(ordinal + 1) if self.network is not None else []
        self.processes[ordinal] = subprocess.Popen(
            [*prefix, sys.executable, "-c", NODE_MAIN],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.ready[ordinal] = False

    def pod_deleted(self, pod: Obj, ordinal: int) -> None:
        process = self.processes.pop(ordinal, None)
        grace = pod.get("metadata", {}).get("deletionGracePeriodSeconds")
        if process is not None and process.poll() is None:
            # A forced delete (grace 0) is a SIGKILL, as a kubelet sends one.
            process.send_signal(signal.SIGKILL if grace == 0 else signal.SIGTERM)
            self.terminating[ordinal] = process
        self.ready[ordinal] = False

    def is_ready(self, pod_name: str) -> bool:
        return self.ready.get(int(pod_name.rsplit("-", 1)[1]), False)

    def host(self, ordinal: int) -> str:
        """Where pod ``ordinal`` listens: loopback, or its namespace's address."""
        return "127.0.0.1" if self.network is None else self.network.ip(ordinal + 1)

    def dns_name(self, ordinal: int) -> str:
        """Pod ``ordinal``'s DNS name (the emulated cluster DNS resolves it to host())."""
        return names.peer_host(self.cluster, ordinal, self.namespace)

    def http_address(self, ordinal: int) -> str:
        """The HTTP address pod ``ordinal`` advertises: its DNS name, as a real pod."""
        return f"{self.dns_name(ordinal)}:{self.http_ports[ordinal]}"

    def cluster_dns(self) -> dict[str, str]:
        return {self.dns_name(o): self.host(o) for o in range(len(self.http_ports))}

    # --- NetworkPolicies, enforced (with a network) ----------------------------------
    def enforce_policies(self) -> None:
        """Make the pods' namespaces drop what the Egress NetworkPolicies do not allow.

        The part of NetworkPolicy the chaos partitions use: a pod selected by a policy
        with Egress may send only to the pods its egress rules' ``to`` peers select
        (podSelector matchLabels and In/NotIn expressions; any namespace). Traffic to
        anything but a pod (the bridge: the operator, probes) is left alone; packets,
        not connections, are dropped (as a CNI that also cuts established flows)."""
        assert self.network is not None
        pods = {
            int(p["metadata"]["name"].rsplit("-", 1)[1]): p["metadata"].get("labels") or {}
            for _, p in self.emulator.live("v1/pods")
            if p["metadata"]["name"].startswith(f"{self.cluster}-")
        }
        allowed: dict[int, set[int]] = {}
        for _, policy in self.emulator.live("networking.k8s.io/v1/networkpolicies"):
            spec = policy.get("spec") or {}
            if "Egress" not in (spec.get("policyTypes") or ()):
                continue
            reach: set[int] = set()
            for rule in spec.get("egress") or ():
                peers = rule.get("to")
                if not peers:  # a rule without "to" allows every destination
                    reach |= set(pods)
                for peer in peers or ():
                    if "podSelector" in peer:
                        selector = peer["podSelector"]
                        reach |= {o for o, labels in pods.items() if _selects(selector, labels)}
            for ordinal, labels in pods.items():
                if _selects(spec.get("podSelector") or {}, labels):
                    allowed.setdefault(ordinal, set()).update(reach)
        wanted = [
            net.Rule(
                self.network.namespace(src + 1),
                "OUTPUT",
                ["-d", self.network.ip(dst + 1), "-j", "DROP"],
            )
            for src, reach in sorted(allowed.items())
            for dst in sorted(pods)
            if dst != src and dst not in reach
        ]
        stale = [r for r in self._policy_rules if r not in wanted]
        self.network.remove_rules(stale)
        fresh = [r for r in wanted if r not in self._policy_rules]
        self._policy_rules = [r for r in self._policy_rules if r not in stale]
        self._policy_rules += self.network.add_rules(fresh)

    def policy_rules(self) -> list[net.Rule]:
        return list(self._policy_rules)

    # --- faults --------------------------------------------------------------------
    def kill(self, ordinal: int) -> None:
        """A crash: the process dies, the pod object stays (no restart here)."""
        process = self.processes.get(ordinal)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    # --- environment ---------------------------------------------------------------
    def _env(self, pod: Obj, ordinal: int, data_dir: Path) -> dict[str, str]:
        container = pod["spec"]["containers"][0]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EXCHANGE_", "OTEL_"))}
        for item in container.get("env", ()):
            if "value" in item:
                env[item["name"]] = item["value"]
        pod_name = pod["metadata"]["name"]
        env["EXCHANGE_NAME"] = pod_name
        env["EXCHANGE_LISTEN_HOST"] = self.host(ordinal)
        env["EXCHANGE_HTTP_PORT"] = str(self.http_ports[ordinal])
        env["EXCHANGE_GRPC_PORT"] = str(self.grpc_ports[ordinal])
        env["EXCHANGE_ADMIN_PORT"] = str(self.admin_ports[ordinal])
        self._mount_tls(pod, ordinal, env)
        env["EXCHANGE_ADVERTISE_ADDRESS"] = f"{self.host(ordinal)}:{self.grpc_ports[ordinal]}"
        env["EXCHANGE_ADVERTISE_HTTP"] = self.http_address(ordinal)
        env["EMULATED_CLUSTER_DNS"] = json.dumps(self.cluster_dns())
        if "EXCHANGE_PEER_TLS_CERT" not in env and env.get("EXCHANGE_PEER_TLS_ENROLL") != "true":
            # No certificate files are mounted here: say so explicitly (secure by default).
            env["EXCHANGE_INSECURE_PEERS"] = "true"
        peers, peer_http = [], []
        for entry in env.get("EXCHANGE_PEERS", "").split(","):
            if not entry:
                continue
            peer_id, address = entry.split("=", 1)
            peer_ordinal = names.ordinal_of_address(self.cluster, address)
            assert peer_ordinal is not None, address
            host = self.host(peer_ordinal)
            peers.append(f"{peer_id}={host}:{self.grpc_ports[peer_ordinal]}")
            peer_http.append(f"{peer_id}={self.http_address(peer_ordinal)}")
        env["EXCHANGE_PEERS"] = ",".join(peers)
        env["EXCHANGE_PEER_HTTP"] = ",".join(peer_http)
        env["EXCHANGE_DATA_DIR"] = str(data_dir)
        config_map = self.emulator.get(
            "v1/configmaps", self.namespace, names.config_map(self.cluster)
        )
        assert config_map is not None, "the pod would not start without its ConfigMap"
        config_file = self.workdir / "config" / names.CONFIG_FILE_NAME
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(config_map["data"][names.CONFIG_FILE_NAME])
        env["EXCHANGE_CONFIG"] = str(config_file)
        secret = self.emulator.get("v1/secrets", self.namespace, names.admin_secret(self.cluster))
        assert secret is not None, "the pod would not start without its admin Secret"
        env["EXCHANGE_ADMIN_TOKEN"] = base64.b64decode(
            secret["data"][names.ADMIN_TOKEN_KEY]
        ).decode()
        env["EXCHANGE_SHUTDOWN_GRACE_SECONDS"] = "2"
        return env

    def _mount_tls(self, pod: Obj, ordinal: int, env: dict[str, str]) -> None:
        """Materialise the pod's Secret volumes (projected member Secrets, the HTTP
        server Secret) under its own directory and point the environment there."""
        root = self.workdir / f"pod-{ordinal}"
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", ())}
        mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        for mount_path, volume_name in mounts.items():
            volume = volumes.get(volume_name, {})  # "data" is a claim, not a pod volume
            sources = []
            if "projected" in volume:
                sources = [src["secret"] for src in volume["projected"]["sources"]]
            elif "secret" in volume:
                sources = [{"name": volume["secret"]["secretName"]}]
            for source in sources:
                secret = self.emulator.get("v1/secrets", self.namespace, source["name"])
                if secret is None:
                    assert source.get("optional"), f"the pod needs Secret {source['name']}"
                    continue
                items = source.get("items") or [{"key": k, "path": k} for k in secret["data"]]
                for item in items:
                    target = root / mount_path.lstrip("/") / item["path"]
                    content = base64.b64decode(secret["data"][item["key"]])
                    if target.exists() and target.read_bytes() == content:
                        continue  # unchanged: keep the mtime the node's reloaders watch
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(f".{target.name}.tmp")
                    tmp.write_bytes(content)
                    tmp.chmod(0o600)
                    tmp.replace(target)  # atomic, as a kubelet's symlink swap
        for key, value in list(env.items()):
            value = value.replace("$(POD_INDEX)", str(ordinal))
            if value.startswith("/etc/exchange/") and key.endswith(
                ("_CERT", "_KEY", "_CA", "_FILE")
            ):
                value = str(root / value.lstrip("/"))
            env[key] = value

    def admin_address(self, cluster: str, namespace: str, pod: str) -> str:
        """Where a pod's admin listener is (the operator's admin_address)."""
        ordinal = int(pod.rsplit("-", 1)[1])
        return f"{self.host(ordinal)}:{self.admin_ports[ordinal]}"

    # --- the admin proxy and the readiness probe ----------------------------------------
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        app = web.Application()
        app.router.add_route("*", "/{pod}/{path:.*}", self._proxy)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None and site._server.sockets
        self.port = site._server.sockets[0].getsockname()[1]

    def member_addresses(self, cluster: str, namespace: str, pod: str) -> tuple[str, str]:
        """Where a pod's node listens here, for the operator's add-member calls."""
        ordinal = int(pod.rsplit("-", 1)[1])
        return f"{self.host(ordinal)}:{self.grpc_ports[ordinal]}", self.http_address(ordinal)

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/{{pod}}"

    async def _proxy(self, request: web.Request) -> web.Response:
        assert self._session is not None
        ordinal = int(request.match_info["pod"].rsplit("-", 1)[1])
        url = (
            f"https://{self.host(ordinal)}:{self.admin_ports[ordinal]}/{request.match_info['path']}"
        )
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type")
        }
        try:
            async with self._session.request(
                request.method, url, data=await request.read(), headers=headers, ssl=False
            ) as upstream:
                body = await upstream.read()
                return web.Response(
                    status=upstream.status, body=body, content_type=upstream.content_type
                )
        except (aiohttp.ClientError, TimeoutError):
            raise web.HTTPBadGateway() from None

    async def probe(self) -> None:
        """The kubelet's readiness probe: GET /readyz on every running node; and, as a
        kubelet syncs Secret volumes, the pods' certificate files follow their Secrets."""
        assert self._session is not None
        for ordinal in list(self.processes):
            pod = self.emulator.get("v1/pods", self.namespace, f"{self.cluster}-{ordinal}")
            if pod is not None:
                self._mount_tls(pod, ordinal, {})
        for ordinal, process in list(self.processes.items()):
            ready = False
            if process.poll() is None:
                try:
                    # A kubelet's HTTPS probe does not verify the certificate.
                    url = f"https://{self.host(ordinal)}:{self.http_ports[ordinal]}/readyz"
                    async with self._session.get(url, ssl=False) as response:
                        ready = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ready = False
            self.ready[ordinal] = ready

    async def stop(self) -> None:
        everything = [*self.processes.values(), *self.terminating.values()]
        for process in everything:
            if process.poll() is None:
                process.kill()
        for process in everything:
            process.wait()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("node-*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)


async def drive(emulator: ClusterEmulator, kubelet: ProcessKubelet, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await kubelet.probe()
        if kubelet.network is not None:
            kubelet.enforce_policies()
        await emulator.refresh_pods()
        emulator.trim_requests()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, In/NotIn/Exists/DoesNotExist) against labels."""
    if not (selector.get("matchLabels") or {}).items() <= labels.items():
        return False
    for term in selector.get("matchExpressions") or ():
        key, op, values = term["key"], term["operator"], term.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True

"""The cluster interface on a real kind cluster (kubectl, Helm, Docker, kind).

`missing()` names the first thing this machine lacks, in one line, so each
kind test skips with it; nothing here runs without all of them. The session
fixture in test_e2e_kind.py creates the cluster from kind-config.yaml, installs
Calico, builds the image (Dockerfile) and loads it with `kind load
docker-image`, and installs the chart with Helm.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster import Obj

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_NAME = "raft-exchange-e2e"
KIND_CONFIG = Path(__file__).with_name("kind-config.yaml")
CALICO = "https://raw.githubusercontent.com/projectcalico/calico/v3.28.2/manifests/calico.yaml"
# The Kubernetes version of the node image: KIND_NODE_IMAGE (the CI matrix sets it).
NODE_IMAGE = os.environ.get("KIND_NODE_IMAGE", "kindest/node:v1.31.2")
IMAGE = "raft-exchange/exchange:e2e"
ARTIFACTS = ROOT / "build" / "e2e-artifacts"


def _run(*args: str, stdin: str | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def missing() -> str | None:
    """One line naming what is missing for the kind suite, or None."""
    for tool in ("docker", "kind", "kubectl", "helm"):
        if shutil.which(tool) is None:
            return f"kind e2e: `{tool}` is not installed"
    try:
        _run("docker", "info", timeout=30)
    except (RuntimeError, subprocess.TimeoutExpired):
        return "kind e2e: the Docker daemon does not answer (`docker info` failed)"
    try:
        _run("docker", "image", "inspect", NODE_IMAGE, timeout=30)
    except RuntimeError:
        try:
            _run("docker", "manifest", "inspect", NODE_IMAGE, timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            return f"kind e2e: no container registry: cannot pull the node image {NODE_IMAGE}"
    return None


def create() -> None:
    """The kind cluster, Calico, the image and the chart (idempotent per session)."""
    clusters = _run("kind", "get", "clusters").split()
    if CLUSTER_NAME not in clusters:
        _run("kind", "create", "cluster", "--config", str(KIND_CONFIG), "--image", NODE_IMAGE,
             "--wait", "0s", timeout=900)  # fmt: skip
        _run("kubectl", "apply", "--server-side", "-f", CALICO)
        _run("kubectl", "-n", "kube-system", "rollout", "status", "daemonset/calico-node",
             "--timeout=10m", timeout=700)  # fmt: skip
    _run("docker", "build", "-t", IMAGE, str(ROOT), timeout=1800)
    _run("kind", "load", "docker-image", IMAGE, "--name", CLUSTER_NAME, timeout=900)
    repository, tag = IMAGE.split(":")
    _run("helm", "upgrade", "--install", "raft-exchange", str(ROOT / "charts" / "raft-exchange"),
         "-n", "raft-exchange", "--create-namespace", "--wait",
         "--set", f"operator.image.repository={repository}", "--set", f"operator.image.tag={tag}",
         "--set", "operator.image.pullPolicy=Never", timeout=900)  # fmt: skip


def destroy() -> None:
    _run("kind", "delete", "cluster", "--name", CLUSTER_NAME, timeout=600)


def collect_artifacts(namespace: str, tag: str) -> Path:
    """Logs, events, `kubectl describe`, the operator's logs and the nodes' /metrics."""
    out = ARTIFACTS / tag
    out.mkdir(parents=True, exist_ok=True)
    commands = {
        "events.txt": ["kubectl", "-n", namespace, "get", "events", "--sort-by=.lastTimestamp"],
        "describe.txt": ["kubectl", "-n", namespace, "describe", "xc,sts,pods,svc,pvc,netpol"],
        "operator.log": ["kubectl", "-n", "raft-exchange", "logs", "deploy/raft-exchange-operator"],
        "pods.log": [
            "kubectl",
            "-n",
            namespace,
            "logs",
            "-l",
            "app.kubernetes.io/name=raft-exchange",
            "--all-containers",
            "--prefix",
            "--tail=-1",
        ],
        "jobs.log": [
            "kubectl",
            "-n",
            namespace,
            "logs",
            "-l",
            "app.kubernetes.io/component=chaos",
            "--tail=-1",
        ],
    }
    for name, command in commands.items():
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        (out / name).write_text(done.stdout + done.stderr)
    return out


class KindCluster:
    name = "kind"

    def __init__(self) -> None:
        self._forwards: dict[tuple[str, str], tuple[subprocess.Popen[bytes], int]] = {}

    async def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        return await asyncio.to_thread(_run, "kubectl", *args, stdin=stdin)

    async def apply(self, objects: list[Obj]) -> None:
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        await self._kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-", stdin=body)

    async def status(self, namespace: str, name: str) -> Obj:
        try:
            text = await self._kubectl("-n", namespace, "get", "xc", name, "-o", "json")
        except RuntimeError:
            return {}
        return dict(json.loads(text).get("status") or {})

    async def wait(self, what: str, predicate: Callable[[], Any], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            if loop.time() > deadline:
                raise AssertionError(f"never reached: {what}")
            await asyncio.sleep(2)

    async def client_endpoint(self, namespace: str, service: str) -> tuple[str, str, bytes]:
        """kubectl port-forward to the Service (kept open), verified as the Service's name."""
        key = (namespace, service)
        forward = self._forwards.get(key)
        if forward is None or forward[0].poll() is not None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            process = subprocess.Popen(
                ["kubectl", "-n", namespace, "port-forward", f"svc/{service}", f"{port}:8080"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(2)
            self._forwards[key] = forward = (process, port)
        secret = json.loads(
            await self._kubectl(
                "-n", namespace, "get", "secret", f"{service}-http-tls", "-o", "json"
            )
        )
        ca = base64.b64decode(secret["data"]["ca.crt"])
        return f"https://127.0.0.1:{forward[1]}", f"{service}.{namespace}.svc", ca

    async def delete(self, objects: list[Obj]) -> None:
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        await self._kubectl("delete", "--wait=false", "--ignore-not-found", "-f", "-", stdin=body)

    async def leftovers(self, namespace: str) -> list[str]:
        try:
            await self._kubectl("get", "namespace", namespace)
        except RuntimeError:
            return []
        text = await self._kubectl(
            "-n", namespace, "get", "xc,sts,pods,pvc,svc,secrets,configmaps", "-o", "name"
        )
        return [f"namespace/{namespace} (Terminating?)", *text.split()]

    def close(self) -> None:
        for process, _port in self._forwards.values():
            process.terminate()

"""docker-compose.yaml for real, with Debian's docker-compose: the three nodes from
the locally built image and Prometheus (an image built from Debian's package, as
no registry answers here) with the project's rules. Prometheus scrapes every
node, loads the rules, and an order placed through the compose cluster trades.
Grafana cannot run here (no image to be had); tests/compose/test_compose_files.py
checks its provisioning and dashboards against Grafana's schema types instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_IMAGE = "raft-exchange-prometheus-debian:test"
LOCAL_BASE = "raft-exchange-base:bookworm"


def run(
    *args: str, timeout: float = 300, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done


def _unavailable() -> str | None:
    if not shutil.which("docker-compose"):
        return "Debian's docker-compose is not installed (apt-get install docker-compose)"
    if not shutil.which("docker"):
        return "the docker command is not installed (scripts/system-deps.sh installs it as root)"
    if run("docker", "info", check=False, timeout=20).returncode != 0:
        return "the Docker engine is not running (scripts/dockerd.sh starts it as root)"
    return None


_reason = _unavailable()
if _reason:
    pytest.skip(_reason, allow_module_level=True)


def http(url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def eventually(what: str, probe: Any, timeout: float = 90) -> Any:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


@pytest.fixture(scope="module")
def images(exchange_image: str) -> str:
    """This tree's node image (built once per source tree, tests/conftest.py) and the
    Prometheus image."""
    if run("docker", "image", "inspect", PROMETHEUS_IMAGE, check=False).returncode != 0:
        base = (
            LOCAL_BASE
            if run("docker", "image", "inspect", LOCAL_BASE, check=False).returncode == 0
            else "debian:bookworm"
        )
        run(
            "docker",
            "build",
            "-q",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "-t",
            PROMETHEUS_IMAGE,
            "-f",
            str(REPO / "tests" / "compose" / "prometheus-debian.Dockerfile"),
            str(REPO / "tests" / "compose"),
            timeout=600,
        )
    return exchange_image


@pytest.fixture
def stack(images: str) -> Iterator[dict[str, Any]]:
    from exchange_node.tools.local import free_ports

    ports = free_ports(4)
    token = "tok-" + secrets.token_hex(8)
    env = {
        **os.environ,
        "EXCHANGE_IMAGE": images,
        "PROMETHEUS_IMAGE": PROMETHEUS_IMAGE,
        "EXCHANGE_HTTP_PORT_0": str(ports[0]),
        "EXCHANGE_HTTP_PORT_1": str(ports[1]),
        "EXCHANGE_HTTP_PORT_2": str(ports[2]),
        "PROMETHEUS_PORT": str(ports[3]),
        "EXCHANGE_API_KEYS": f"{token}=alice,{token}b=bob",
        "EXCHANGE_ADMIN_TOKEN": "admin-" + secrets.token_hex(8),
    }
    project = "rxc" + secrets.token_hex(3)
    base = ["docker-compose", "-f", str(REPO / "docker-compose.yaml"), "-p", project]
    try:
        started = time.monotonic()
        run(
            *base,
            "up",
            "-d",
            "--no-build",
            "node-0",
            "node-1",
            "node-2",
            "prometheus",
            env=env,
            cwd=REPO,
        )
        print(f"compose up in {time.monotonic() - started:.1f} s")
        yield {"nodes": ports[:3], "prometheus": ports[3], "alice": token, "bob": token + "b"}
    finally:
        logs = run(*base, "logs", "--tail", "15", env=env, cwd=REPO, check=False)
        print(logs.stdout[-4000:])
        run(*base, "down", "-v", "--remove-orphans", env=env, cwd=REPO, check=False)


def test_compose_cluster_trades_and_prometheus_scrapes_every_node(stack: dict[str, Any]) -> None:
    first = f"http://127.0.0.1:{stack['nodes'][0]}"
    eventually("a leader", lambda: http(f"{first}/v1/cluster")[1]["leader"])
    order = {"symbol": "BTC-USD", "price": 50_000, "quantity": 3}
    _status, _sell = eventually(
        "an accepted order",
        lambda: (lambda r: r if r[0] == 200 else None)(
            http(f"{first}/v1/orders", {**order, "side": "SELL"}, stack["alice"])
        ),
    )
    # through another node: a follower forwards to the leader
    second = f"http://127.0.0.1:{stack['nodes'][1]}"
    status, buy = http(f"{second}/v1/orders", {**order, "side": "BUY"}, stack["bob"])
    assert status == 200, buy
    assert buy["status"] == "FILLED", buy
    _, trades = http(f"{second}/v1/trades/BTC-USD?limit=5")
    assert [t["quantity"] for t in trades["trades"]] == [3]

    prom = f"http://127.0.0.1:{stack['prometheus']}"

    def targets_up() -> bool:
        _, doc = http(f"{prom}/api/v1/targets")
        ours = [t for t in doc["data"]["activeTargets"] if t["labels"]["job"] == "raft-exchange"]
        return len(ours) == 3 and all(t["health"] == "up" for t in ours)

    eventually("every node scraped", targets_up)

    def fills_seen() -> float:
        _, doc = http(
            f"{prom}/api/v1/query?query=sum(exchange_fills_total%7Bnamespace%3D%22compose%22%7D)"
        )
        result = doc["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    assert eventually("the trade in Prometheus", fills_seen) >= 3  # every replica applied it
    _, rules = http(f"{prom}/api/v1/rules")
    groups = {g["name"] for g in rules["data"]["groups"]}
    assert "raft-exchange.compose.raft-exchange" in groups
    leaders = eventually(
        "one leader in Prometheus",
        lambda: http(f"{prom}/api/v1/query?query=sum(exchange_raft_is_leader)")[1]["data"][
            "result"
        ],
    )
    assert float(leaders[0]["value"][1]) == 1

"""The image, run as a 3-node cluster of real containers, under real faults.

Containers talk to each other on a user-defined Docker network made by the
test; the test reaches them only through ports published on 127.0.0.1.
Faults are Docker's own: ``docker kill`` (crash), ``docker pause`` (freeze)
and ``docker network disconnect`` (partition). After each, every order
whose submission was acknowledged must still exist, and the replicas must
converge to one state hash.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ADMIN = "admin-" + secrets.token_hex(8)
KEY = "key-docker-" + secrets.token_hex(8)
SYMBOL = "BTC-USD"


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def docker_available() -> str | None:
    try:
        if docker("info", check=False, timeout=20).returncode != 0:
            return "the Docker engine is not running (scripts/dockerd.sh starts it as root)"
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "the docker command is not installed (scripts/system-deps.sh installs it as root)"
    return None


_reason = docker_available()
if _reason:
    pytest.skip(_reason, allow_module_level=True)


def http(
    method: str,
    port: int,
    path: str,
    token: str | None = None,
    body: Any = None,
    timeout: float = 3.0,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


class ContainerCluster:
    def __init__(self, image: str, prefix: str, ports: list[int], admin_ports: list[int]) -> None:
        self.image = image
        self.prefix = prefix
        self.network = f"{prefix}-net"
        self.ports = ports  # published HTTP port per member, index = ordinal
        self.admin_ports = admin_ports  # published admin port (8081) per member
        self.names = [f"{prefix}-{i}" for i in range(len(ports))]

    def run(self, i: int) -> None:
        peers = ",".join(f"{j + 1}={n}:7070" for j, n in enumerate(self.names))
        peer_http = ",".join(f"{j + 1}={n}:8080" for j, n in enumerate(self.names))
        # The host reaches a member through a port published on the default
        # bridge (which has no DNS, so peers cannot find each other there);
        # peers talk on the test's own network, the one the partition cuts.
        docker(
            "create",
            "--name",
            self.names[i],
            "--hostname",
            self.names[i],
            "--network",
            "bridge",
            "-p",
            f"127.0.0.1:{self.ports[i]}:8080",
            "-p",
            f"127.0.0.1:{self.admin_ports[i]}:8081",
            "-v",
            f"{self.names[i]}-data:/var/lib/exchange",
            "-e",
            f"EXCHANGE_NAME={self.names[i]}",
            "-e",
            f"EXCHANGE_NODE_ID={i + 1}",
            "-e",
            f"EXCHANGE_PEERS={peers}",
            "-e",
            f"EXCHANGE_PEER_HTTP={peer_http}",
            "-e",
            f"EXCHANGE_ADVERTISE_ADDRESS={self.names[i]}:7070",
            "-e",
            f"EXCHANGE_ADVERTISE_HTTP={self.names[i]}:8080",
            "-e",
            f"EXCHANGE_ADMIN_TOKEN={ADMIN}",
            "-e",
            f"EXCHANGE_API_KEYS={KEY}=docker",
            "-e",
            "EXCHANGE_ELECTION_MS=600",
            "-e",
            "EXCHANGE_HEARTBEAT_MS=60",
            "-e",
            "EXCHANGE_REQUEST_TIMEOUT_MS=3000",
            "-e",
            "EXCHANGE_INSECURE_PEERS=true",  # a private Docker network; mTLS: tests/security
            self.image,
        )
        docker("network", "connect", self.network, self.names[i])
        docker("start", self.names[i])

    def status(self, i: int) -> dict[str, Any] | None:
        code, body = http("GET", self.admin_ports[i], "/v1/admin/status", ADMIN, timeout=1.5)
        return body if code == 200 else None

    def leader(self, among: list[int]) -> int | None:
        """Ordinal of the member that says it leads, with a majority of `among` agreeing."""
        votes: dict[int, int] = {}
        for i in among:
            st = self.status(i)
            if st and st.get("leader"):
                votes[st["leader"]] = votes.get(st["leader"], 0) + 1
        for node_id, count in votes.items():
            if (
                count * 2 > len(among) - 0
                and (st := self.status(node_id - 1))
                and st["role"] == "leader"
            ):
                return node_id - 1
        return None

    def wait_leader(self, among: list[int], timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.leader(among)
            if found is not None:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no leader among {among}: {[self.status(i) for i in among]}")

    def wait_converged(self, members: list[int], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        last: list[Any] = []
        while time.monotonic() < deadline:
            last = [self.status(i) for i in members]
            if (
                all(last)
                and len({(s["applied_index"], s["state_hash"]) for s in last}) == 1
                and last[0]["applied_index"] == last[0]["commit_index"]
            ):
                return last[0]["state_hash"]
            time.sleep(0.3)
        raise AssertionError(f"replicas did not converge: {last}")

    def submit(self, i: int, client_order_id: str, price: int) -> tuple[int, Any]:
        return http(
            "POST",
            self.ports[i],
            "/v1/orders",
            KEY,
            {
                "client_order_id": client_order_id,
                "symbol": SYMBOL,
                "side": "BUY",
                "price": price,
                "quantity": 1,
            },
            timeout=8.0,
        )

    def place(self, i: int, client_order_id: str, price: int) -> dict[str, Any] | None:
        code, body = self.submit(i, client_order_id, price)
        return body if code == 200 else None

    def remove(self) -> None:
        for name in self.names:
            docker("rm", "-f", "-v", name, check=False)
            docker("volume", "rm", "-f", f"{name}-data", check=False)
        docker("network", "rm", self.network, check=False)


@pytest.fixture(scope="module")
def image(exchange_image: str) -> str:
    # This tree's image, built once per source tree (tests/conftest.py).
    return exchange_image


@pytest.fixture
def containers(image: str):
    from exchange_node.tools.local import free_ports

    ports = free_ports(6)
    cluster = ContainerCluster(image, "rx" + secrets.token_hex(3), ports[:3], ports[3:])
    docker("network", "create", cluster.network)
    try:
        for i in range(3):
            cluster.run(i)
        cluster.wait_leader([0, 1, 2])
        yield cluster
    finally:
        for name in cluster.names:
            logs = docker("logs", "--tail", "20", name, check=False)
            print(f"--- {name}\n{logs.stdout[-1500:]}{logs.stderr[-1500:]}")
        cluster.remove()


def test_image_runs_as_non_root_with_a_healthcheck(image: str):
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][0] in ("CMD", "CMD-SHELL")
    assert "/var/lib/exchange" in config["Volumes"]
    assert {"8080/tcp", "8081/tcp", "7070/tcp"} <= set(config["ExposedPorts"])
    uid = docker("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip()
    assert uid == "10001"
    # no build tools in the final stage
    tools = docker(
        "run", "--rm", "--entrypoint", "sh", image, "-c", "command -v gcc cc pip pip3 || true"
    ).stdout
    assert tools.strip() == ""


def test_faults_lose_no_acknowledged_order(containers: ContainerCluster):
    c = containers
    acknowledged: dict[str, int] = {}
    counter = [0]

    def load(members: list[int], count: int) -> None:
        for _ in range(count):
            counter[0] += 1
            coid = f"d-{counter[0]}"
            for attempt in range(20):
                answer = c.place(
                    members[(counter[0] + attempt) % len(members)], coid, 40_000 + counter[0] % 500
                )
                if answer:
                    acknowledged[coid] = answer["order_id"]
                    break
                time.sleep(0.1)

    def check_all(members: list[int]) -> str:
        state_hash = c.wait_converged(members)
        port = c.ports[members[0]]
        for coid, order_id in acknowledged.items():
            code, body = http("GET", port, f"/v1/orders/by-client-id/{coid}", KEY)
            assert code == 200 and body["order_id"] == order_id, (coid, code, body)
        return state_hash

    everyone = [0, 1, 2]
    load(everyone, 40)
    check_all(everyone)

    # 1. crash: docker kill the leader, keep trading, restart it on its volume
    leader = c.wait_leader(everyone)
    docker("kill", c.names[leader])
    rest = [i for i in everyone if i != leader]
    c.wait_leader(rest)
    load(rest, 30)
    docker("start", c.names[leader])
    load(everyone, 10)
    check_all(everyone)
    restarted = c.status(leader)
    assert restarted and restarted["applied_index"] >= len(acknowledged)  # its volume kept the log

    # 2. freeze: docker pause a follower, keep trading, unpause
    leader = c.wait_leader(everyone)
    follower = next(i for i in everyone if i != leader)
    docker("pause", c.names[follower])
    load([i for i in everyone if i != follower], 30)
    docker("unpause", c.names[follower])
    check_all(everyone)

    # 3. partition: disconnect the leader from the network, keep trading, reconnect
    leader = c.wait_leader(everyone)
    docker("network", "disconnect", c.network, c.names[leader])
    rest = [i for i in everyone if i != leader]
    c.wait_leader(rest)
    load(rest, 30)
    # the isolated old leader is reachable but cannot acknowledge a write
    code, body = c.submit(leader, "isolated-write", 40_001)
    assert code in (503, 504), (code, body)
    docker("network", "connect", c.network, c.names[leader])
    load(everyone, 10)
    final_hash = check_all(everyone)
    assert final_hash and len(acknowledged) >= 140

"""``DockerTarget``: three node containers, the leader killed, a node partitioned by
iptables in its container's namespace, loss and a bandwidth limit on it, then
disconnected from the Docker network; checked
through the public and admin APIs.

A partition that did nothing would fail here: the cut node's applied index must
stand still while the others commit, and move again once healed.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from exchange_node.chaos.docker_target import (
    LABEL,
    DockerTarget,
    docker,
    remove_leftovers,
    unavailable_reason,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

_reason = unavailable_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture(scope="module")
def image(exchange_image: str) -> str:
    # This tree's image, built once per source tree (tests/conftest.py).
    return exchange_image


def call(base: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=8) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def test_docker_target_leader_kill_and_partition(image: str) -> None:
    started = time.monotonic()
    with DockerTarget(image, 3, election_ms=600, heartbeat_ms=60) as target:
        assert {"kill", "pause", "restart"} <= target.capabilities()
        if "partition" not in target.capabilities():
            pytest.skip(f"partition needs the host's tools: {target.missing_tools}")
        ends = target.endpoints()
        key = next(iter(target.credentials().api_keys.values()))
        admin = target.credentials().admin_token
        assert admin is not None
        acked: dict[str, str] = {}
        counter = [0]

        def place(members: list[int], count: int) -> None:
            for _ in range(count):
                counter[0] += 1
                coid = f"t-{counter[0]}"
                order = {"client_order_id": coid, "symbol": "BTC-USD", "side": "BUY",
                         "price": 40_000 + counter[0], "quantity": 1}  # fmt: skip
                for attempt in range(40):
                    node = members[(counter[0] + attempt) % len(members)]
                    code, body = call(ends[node].http, "POST", "/v1/orders", key, order)
                    if code == 200:
                        acked[coid] = body["order_id"]
                        break
                    time.sleep(0.15)
                else:
                    raise AssertionError(f"order {coid} never acknowledged by {members}")

        def applied(node: int) -> int:
            st = target.status(node)
            assert st is not None, f"node {node} does not answer"
            return int(st["applied_index"])

        def converged(timeout: float = 60) -> None:
            deadline = time.monotonic() + timeout
            last: list[Any] = []
            while time.monotonic() < deadline:
                last = [target.status(i) for i in target.node_ids()]
                if all(last) and len({(s["applied_index"], s["state_hash"]) for s in last}) == 1:
                    break
                time.sleep(0.3)
            else:
                raise AssertionError(f"replicas did not converge: {last}")
            for coid, order_id in acked.items():
                code, body = call(ends[1].http, "GET", f"/v1/orders/by-client-id/{coid}", key)
                assert code == 200 and body["order_id"] == order_id, (coid, code, body)

        everyone = target.node_ids()
        place(everyone, 10)

        # 1. kill -9 the leader: the others elect one and keep acknowledging.
        leader = target.wait_for_leader()
        killed = target.kill(leader)
        rest = [i for i in everyone if i != leader]
        place(rest, 10)
        killed.heal()
        converged()

        # 2. partition one follower away from both others (iptables in its namespace).
        leader = target.wait_for_leader()
        cut = next(i for i in everyone if i != leader)
        others = [i for i in everyone if i != cut]
        fault = target.partition([[cut], others])
        assert fault.description == f"partition {{{cut}}} | {{{','.join(map(str, others))}}}"
        time.sleep(0.5)
        before = applied(cut)
        place(others, 10)
        assert max(applied(i) for i in others) >= before + 10
        assert applied(cut) == before, "the partitioned node kept applying"
        fault.heal()
        fault.heal()  # idempotent
        place(everyone, 5)
        converged()
        assert applied(cut) >= before + 15

        # 3. loss and bandwidth on a follower: the rule and the qdisc are in its
        # namespace while in force, gone after healing; the cluster keeps committing.
        dev = target._peer_dev(cut)
        lossy = target.loss(cut, 0.3)
        slow = target.bandwidth(cut, 256)
        rules = target._nsenter(cut, "iptables", "-w", "-S")
        assert rules.count("-m statistic --mode random --probability 0.2999") == 2, rules
        assert "tbf" in target._nsenter(cut, "tc", "qdisc", "show", "dev", dev)
        place(everyone, 5)
        lossy.heal()
        slow.heal()
        assert "statistic" not in target._nsenter(cut, "iptables", "-w", "-S")
        assert "tbf" not in target._nsenter(cut, "tc", "qdisc", "show", "dev", dev)
        converged()
        assert len(acked) == 40

        # 4. Docker's own partition: the follower leaves the peer network.
        gone = target.disconnect(cut)
        time.sleep(0.5)
        before = applied(cut)
        place(others, 5)
        assert applied(cut) == before, "the disconnected node kept applying"
        gone.heal()
        place(everyone, 5)
        converged()
        assert len(acked) == 50
        # link latency needs netem: offered exactly when the kernel has it
        assert ("link" in target.capabilities()) == (target.netem_reason is None)
        print(f"netem: {target.netem_reason or 'available'}")
    # close() removed every container, volume and the network.
    leftovers = docker("ps", "-a", "-q", "--filter", f"name={target.prefix}-").strip()
    assert leftovers == ""
    assert target.network not in docker("network", "ls", "--format", "{{.Name}}")
    print(
        f"docker target: kill, partition, loss, bandwidth, disconnect in {time.monotonic() - started:.1f} s"
    )


def test_leftovers_of_a_dead_run_are_removed(image: str) -> None:
    dead = 2**22 + 1  # above the largest pid_max (2^22): never a live process
    name = "rxcdead-0"
    docker("network", "create", "--label", f"{LABEL}={dead}", "rxcdead-net")
    docker("create", "--name", name, "--label", f"{LABEL}={dead}", image)
    mine = f"rxclive-{os.getpid()}"
    docker("network", "create", "--label", f"{LABEL}={os.getpid()}", mine)
    try:
        removed = remove_leftovers()
        assert {name, "rxcdead-net"} <= set(removed) and mine not in removed
        assert not docker("ps", "-a", "-q", "--filter", f"name={name}").strip()
    finally:
        docker("rm", "-f", name, check=False)
        docker("network", "rm", "rxcdead-net", mine, check=False)

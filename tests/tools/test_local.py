"""`exchange local up` and `exchange local status` as a user runs them."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from exchange_node.tools.local import ClusterSpec, LocalCluster

pytestmark = pytest.mark.slow


def up(root: Path, base_port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exchange_node.cli",
            "local",
            "up",
            "--nodes",
            "3",
            "--base-port",
            str(base_port),
            "--data-root",
            str(root),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_line(proc: subprocess.Popen[str], needle: str) -> str:
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} never printed:\n{''.join(seen)}")


def base_port() -> int:
    # A base with every port of the three nodes free at the time of asking: HTTP +0..2,
    # gRPC +100..102 and the admin API +200..202 (left out before: a CI run failed
    # with the admin port of node 2 in use).
    # Below the kernel's ephemeral range (32768-60999 here), so that no outgoing
    # connection takes one of them between this check and the nodes binding them.
    for _ in range(50):
        base = random.randrange(20_000, 32_000)
        wanted = [base + offset + i for offset in (0, 100, 200) for i in range(3)]
        if set(wanted) <= set(free_ports_near(wanted)):
            return base
    raise AssertionError("no free port range")


def free_ports_near(ports: list[int]) -> list[int]:
    import socket

    ok = []
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            ok.append(port)
    return ok


def test_local_up_status_ctrl_c_and_restart_on_the_same_data(tmp_path) -> None:
    root = tmp_path / "local"
    base = base_port()
    proc = up(root, base)
    try:
        text = wait_line(proc, "Ctrl-C stops every node")
        assert "cluster up" in text and f"http://127.0.0.1:{base}/v1" in text
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "exchange_node.cli",
                "local",
                "status",
                "--data-root",
                str(root),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("leader") >= 1 and "127.0.0.1:" in status.stdout
        spec = ClusterSpec.load(root)
        cluster = LocalCluster(root, spec)
        token = cluster.key_for("alice")
        code, doc = cluster.request(
            1,
            "POST",
            "/v1/orders",
            {
                "symbol": "BTC-USD",
                "side": "BUY",
                "price": 50_000,
                "quantity": 2,
                "client_order_id": "survivor",
            },
            token=token,
            timeout=10,
        )
        assert code == 200, doc
        # One name per replica: every node's /v1/cluster names each member as that
        # member names itself, and it is its data directory's and log file's name.
        names = {m.node_id: f"node-{m.node_id}" for m in spec.members}
        for m in spec.members:
            code, view = cluster.request(m.node_id, "GET", "/v1/cluster", token=token, timeout=10)
            assert code == 200, view
            assert view["name"] == names[m.node_id]
            assert {x["id"]: x["name"] for x in view["members"]} == names
            assert Path(m.data_dir).name == names[m.node_id]
            assert cluster.log_path(m.node_id).name == f"{names[m.node_id]}.log"
            assert cluster.log_path(m.node_id).exists()
        assert all(name in status.stdout for name in names.values()), status.stdout
        pids = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "exchange_node.cli",
                    "local",
                    "status",
                    "--data-root",
                    str(root),
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
        assert sorted(int(k) for k in pids) == [1, 2, 3]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    # Every node process is gone.
    time.sleep(0.2)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(root) not in ps

    proc = up(root, base)
    try:
        text = wait_line(proc, "Ctrl-C stops every node")
        assert "restarting the cluster" in text
        cluster = LocalCluster(root, ClusterSpec.load(root))
        code, doc = cluster.request(
            2, "GET", "/v1/orders/by-client-id/survivor", token=cluster.key_for("alice"), timeout=10
        )
        assert code == 200 and doc["quantity"] == 2, doc
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0

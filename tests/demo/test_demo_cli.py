"""`exchange demo` as a newcomer runs it: start, trade, stop, and resume on the same data."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow


def run_demo(root, base_port: int, seconds: float) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange_node.cli",
            "demo",
            "--data-root",
            str(root),
            "--base-port",
            str(base_port),
            "--duration",
            str(seconds),
            "--summary-every",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def free_base_port() -> int:
    """A base port whose HTTP (base..base+2) and gRPC (base+100..) ports are free now."""
    import socket

    for candidate in range(31_000, 39_000, 211):
        try:
            for port in [candidate + i for i in range(3)] + [candidate + 100 + i for i in range(3)]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return candidate
    raise RuntimeError("no free port range")


def test_demo_starts_trades_prints_where_to_look_and_resumes(tmp_path):
    root = tmp_path / "demo"
    base = free_base_port()
    first = run_demo(root, base, 6)
    for needle in (
        "live view   http://",
        "/v1/ws",
        "/metrics",
        "curl -s -X POST",
        "agents' report",
    ):
        assert needle in first, first
    assert "fallback" in first or "yfinance" in first or "cache" in first  # price source said once
    report = json.loads(re.search(r"agents' report: (\{.*\})", first).group(1))
    assert report["orders"] > 0 and report["failures"] == 0

    # the printed curl line places an order on the same cluster, resumed on its data
    curl = next(line.strip() for line in first.splitlines() if line.strip().startswith("curl "))
    cluster = LocalCluster.create(root, 3)
    cluster.start_all()
    try:
        cluster.wait_for_leader(60)
        # The curl line names one node: every node must be serving, not just the leader.
        cluster.wait_ready(timeout=60)
        placed = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30)
        assert placed.stdout, (curl, placed.returncode, placed.stderr)
        answer = json.loads(placed.stdout)
        assert answer["status"] in ("NEW", "PARTIALLY_FILLED", "FILLED"), answer
        assert answer["order_id"] > 0
    finally:
        cluster.stop_all(10)

    second = run_demo(root, base, 3)
    assert "resuming the cluster" in second
    assert json.loads(re.search(r"agents' report: (\{.*\})", second).group(1))["orders"] > 0
    assert (root / "cluster.json").exists() and any(root.glob("node-1/*"))


def test_bad_flags_are_named(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange_node.cli",
            "demo",
            "--nodes",
            "0",
            "--data-root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--nodes" in proc.stderr

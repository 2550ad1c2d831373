"""`exchange demo` as a newcomer runs it: start, trade, stop, and resume on the same data."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow


BARS = {
    "AAPL": {
        "day": "2026-11-18",
        "open": 231.0,
        "high": 233.2,
        "low": 227.1,
        "close": 229.5,
        "volume": 5e7,
    },
    "MSFT": {
        "day": "2026-11-18",
        "open": 417.0,
        "high": 424.9,
        "low": 415.5,
        "close": 421.0,
        "volume": 2e7,
    },
}
"""Invented bars of one session (not market data) for the replay."""


def run_demo(root, base_port: int, seconds: float, *extra: str) -> str:
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
            *extra,
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

    # resumed, replaying a past day from a bars file (yfinance's cache format)
    bars = tmp_path / "bars.json"
    bars.write_text(json.dumps(BARS))
    second = run_demo(
        root,
        base,
        3,
        "--replay",
        "2026-11-18",
        "--replay-bars",
        str(bars),
        "--replay-minutes",
        "0.1",
    )
    assert "resuming the cluster" in second
    assert "replay: 2 of 4 symbols have a bar" in second, second
    assert "replaying 2026-11-18 over 0.1 min" in second
    report = json.loads(re.search(r"agents' report: (\{.*\})", second).group(1))
    assert report["orders"] > 0 and report["failures"] == 0
    assert re.search(r"sustained [\d,.]+ orders/s over \d+ s", second), second
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


def test_replay_without_bars_offline_is_refused_naming_the_flag(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange_node.cli",
            "demo",
            "--data-root",
            str(tmp_path / "d"),
            "--replay",
            "2026-11-18",
            "--replay-bars",
            str(tmp_path / "missing.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--replay-bars" in proc.stderr, proc.stderr

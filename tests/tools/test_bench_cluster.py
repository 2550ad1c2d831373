"""`exchange bench cluster --json` runs end to end on real processes and reports every
figure by name, with no failed request (no timing is asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ETCD = shutil.which("etcd")


def run_bench_cluster(tmp_path: Path, *flags: str) -> dict[str, Any]:
    """``exchange bench cluster --json`` with small load phases and ``flags``: its JSON."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange_node.cli",
            "bench",
            "cluster",
            "--json",
            "--ws-clients=2",
            "--ws-in-flight=8",
            *flags,
            f"--data-root={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


def figures_of(doc: dict[str, Any]) -> dict[str, float]:
    return {r["name"]: r["value"] for r in doc["results"]}


def test_bench_cluster_json_reports_every_figure(tmp_path) -> None:
    doc = run_bench_cluster(
        tmp_path, "--duration=1", "--failover-trials=1", "--single-clients=8", "--rate=200"
    )
    assert doc["bench"] == "cluster" and doc["host"]["cores"] >= 1
    figures = figures_of(doc)
    assert set(figures) == {
        "batch_throughput",
        "single_throughput",
        "ws_single_throughput",
        "latency_p50_ms_at_500",
        "latency_p99_ms_at_500",
        "cpu_ms_per_order_batch",
        "cpu_ms_per_order_single",
        "cpu_ms_per_order_ws_single",
        "cpu_ms_per_order_at_500",
        "failover_unavailability_median_s",
        "failover_unavailability_max_s",
        "single_node_single_throughput",
        "single_node_latency_p50_ms_at_500",
        "single_node_latency_p99_ms_at_500",
        "request_errors",
        "election_ms",
        "heartbeat_ms",
        "peer_tls",
    }
    assert figures["peer_tls"] == 1  # mTLS unless --peer-tls=off
    assert figures["request_errors"] == 0
    for name in (
        "batch_throughput",
        "single_throughput",
        "ws_single_throughput",
        "single_node_single_throughput",
    ):
        assert figures[name] > 0, name
    assert 0 < figures["latency_p50_ms_at_500"] <= figures["latency_p99_ms_at_500"]
    for phase in ("batch", "single", "ws_single", "at_500"):  # the nodes' CPU, from /proc
        assert 0 < figures[f"cpu_ms_per_order_{phase}"] < 1_000, phase
    assert 0 < figures["failover_unavailability_median_s"] < 30


SHORT_ROUNDS = ("--duration=0.5", "--single-clients=4", "--rate=100", "--rounds=2")
"""Two rounds of short phases: enough to check the interleaving, not to measure."""


def test_bench_cluster_side_by_side_reports_both_modes_and_ratios(tmp_path) -> None:
    figures = figures_of(run_bench_cluster(tmp_path, "--peer-tls=both", *SHORT_ROUNDS))
    for name in (
        "batch_throughput",
        "single_throughput",
        "ws_single_throughput",
        "latency_p50_ms_at_500",
        "cpu_ms_per_order_single",
    ):
        assert figures[f"{name}_mtls"] > 0 and figures[f"{name}_plain"] > 0, name
        # The median of the rounds' ratios lies between the lowest and the highest.
        lowest = figures[f"{name}_mtls_vs_plain_lowest"]
        highest = figures[f"{name}_mtls_vs_plain_highest"]
        assert 0 <= lowest <= figures[f"{name}_mtls_vs_plain"] <= highest, name
    assert figures["rounds"] == 2
    assert figures["request_errors"] == 0
    # Two clusters really ran: one with TLS material, one without.
    assert list((tmp_path / "mtls").rglob("*.key")) and not list(
        (tmp_path / "plain").rglob("*.key")
    )


@pytest.mark.skipif(ETCD is None, reason="etcd is not installed (apt-get install etcd-server)")
def test_bench_cluster_interleaved_with_etcd_reports_each_ratio_with_its_rounds(tmp_path):
    figures = figures_of(
        run_bench_cluster(
            tmp_path, "--compare=etcd", "--etcd-in-flight=16", "--skip-failover", *SHORT_ROUNDS
        )
    )
    assert figures["etcd_put_throughput"] > 0 and figures["batch_throughput"] > 0
    for name in ("latency_p50_ms_at_500", "latency_p99_ms_at_500", "ws_single_throughput"):
        lowest = figures[f"{name}_vs_etcd_lowest"]
        assert 0 < lowest <= figures[f"{name}_vs_etcd"] <= figures[f"{name}_vs_etcd_highest"]
    assert figures["rounds"] == 2 and figures["request_errors"] == 0
    # Both systems really ran, in the same data root.
    assert list((tmp_path / "etcd").glob("m*/member")) and list((tmp_path / "three").iterdir())


def test_bench_cluster_refuses_rounds_below_one():
    out = subprocess.run(
        [sys.executable, "-m", "exchange_node.cli", "bench", "cluster", "--rounds=0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--rounds must be >= 1" in out.stderr

"""`exchange bench cluster --json` runs end to end on real processes and reports every
figure by name, with no failed request (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_cluster_json_reports_every_figure(tmp_path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange_node.cli",
            "bench",
            "cluster",
            "--json",
            "--duration=1",
            "--failover-trials=1",
            "--single-clients=8",
            "--ws-clients=2",
            "--ws-in-flight=8",
            "--rate=200",
            f"--data-root={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["bench"] == "cluster" and doc["host"]["cores"] >= 1
    figures = {r["name"]: r["value"] for r in doc["results"]}
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


def test_bench_cluster_side_by_side_reports_both_modes_and_ratios(tmp_path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange_node.cli",
            "bench",
            "cluster",
            "--json",
            "--peer-tls=both",
            "--duration=0.5",
            "--single-clients=4",
            "--ws-clients=2",
            "--ws-in-flight=8",
            "--rate=100",
            "--rounds=2",
            f"--data-root={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    figures = {
        r["name"]: r["value"] for r in json.loads(out.stdout.strip().splitlines()[-1])["results"]
    }
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

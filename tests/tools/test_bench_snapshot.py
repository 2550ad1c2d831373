"""`exchange bench snapshot --json` runs a small node and reports every figure by name
(no timing asserted: speed is what the bench prints)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_snapshot_json_reports_every_figure() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange_node.cli",
            "bench",
            "snapshot",
            "--json",
            "--resting",
            "2000",
            "--rate",
            "100",
            "--snapshots",
            "2",
            "--between-seconds",
            "0.5",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["bench"] == "snapshot"
    results = {r["name"]: r["value"] for r in doc["results"]}
    assert set(results) == {
        "state_bytes",
        "resting_orders",
        "snapshots",
        "snapshot_seconds_mean",
        "loop_stall_max_ms_during",
        "loop_stall_p99_ms_during",
        "loop_stall_max_ms_between",
        "loop_stall_p99_ms_between",
        "client_orders_during",
        "client_p99_ms_during",
        "client_orders_between",
        "client_p99_ms_between",
        "client_p99_ratio",
        "client_errors",
        "wal_fsync_max_ms_during",
        "wal_fsync_p99_ms_during",
        "wal_fsync_max_ms_between",
        "wal_fsync_p99_ms_between",
    }
    assert results["snapshots"] == 2
    assert results["resting_orders"] == 2000
    # 2,000 resting orders are far more than an empty engine's state.
    assert results["state_bytes"] > 2000 * 50
    assert results["client_orders_between"] > 0
    assert results["client_errors"] == 0

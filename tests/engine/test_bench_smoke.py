"""`exchange bench engine --json` runs and reports every figure by name (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_engine_json_reports_every_figure() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange_node.cli",
            "bench",
            "engine",
            "--json",
            "--commands",
            "3000",
            "--resting",
            "4000",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["bench"] == "engine"
    names = {result["name"] for result in doc["results"]}
    assert {
        "apply_throughput",
        "apply_p50_us",
        "apply_p99_us",
        "bytes_per_resting_order",
        "snapshot_write_seconds_1m",
        "snapshot_restore_seconds_1m",
    } <= names
    assert all(result["value"] > 0 for result in doc["results"])

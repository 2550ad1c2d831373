"""`exchange bench engine --json` runs and reports every figure by name (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


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


def test_bench_engine_counts_instructions_per_command_under_valgrind() -> None:
    """The load-independent figure: a real callgrind count, equal on two runs."""
    import shutil

    import pytest

    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (scripts/system-deps.sh installs it)")
    from exchange_node.tools.bench.engine import measure_instructions

    # The two counts run side by side (each is two single-threaded valgrind processes in
    # turn, so the pair keeps both cores busy): the same figures in half the wall time.
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(measure_instructions, 1_500, seed=7, clients=16) for _ in range(2)]
        first, second = (run.result() for run in runs)
    # Applying a command runs thousands of instructions; the count is repeatable.
    assert 2_000 < first < 1_000_000
    assert abs(first - second) / first < 0.02

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


def test_the_exactly_once_cap_reaches_the_engines_measured(monkeypatch, capsys) -> None:
    """`--exactly-once-max-keys 65536` measures the state 3d038d2 held (its count window)."""
    from exchange_node import cli
    from exchange_node.limits import ENGINE_DEDUP_MAX_KEYS
    from exchange_node.tools.bench import engine as bench_engine

    monkeypatch.setattr(bench_engine, "_MAX_KEYS", [ENGINE_DEDUP_MAX_KEYS])
    caps: list[int] = []
    real = bench_engine.new_engine

    def recording():
        engine = real()
        caps.append(engine.state.dedup_max_keys)
        return engine

    monkeypatch.setattr(bench_engine, "new_engine", recording)
    argv = ["bench", "engine", "--json", "--commands", "500", "--resting", "500"]
    assert cli.main([*argv, "--repeat", "1", "--exactly-once-max-keys", "65536"]) == 0
    assert caps and set(caps) == {65_536}
    assert cli.main([*argv, "--exactly-once-max-keys", "0"]) == 2
    assert "--exactly-once-max-keys" in capsys.readouterr().err

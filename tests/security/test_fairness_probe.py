"""The loop probe of `exchange bench fairness --loop-probe`: it finds a stall and names it.

Issue 12's fairness bound is measured as the leader's event-loop stalls while
a client hogs (docs/performance.md). These tests plant a stall of a known CPU
cost and check that the probe reports it, in CPU time (so the machine's load
does not decide the outcome), with the planted function named; and that the
bench prints the probe's figures from real node processes.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from exchange_node.tools.bench import fairness

PLANTED_MS = 30.0


def planted_stall() -> None:
    """Hold the loop for PLANTED_MS of this thread's CPU time (not wall time)."""
    until = time.thread_time() + PLANTED_MS / 1000
    n = 0
    while time.thread_time() < until:
        n += 1


async def run_probe(out_dir: Path) -> tuple[float, float]:
    probe = asyncio.create_task(fairness._loop_probe(out_dir))
    await asyncio.sleep(0.3)
    started = time.time()
    asyncio.get_running_loop().call_soon(planted_stall)
    await asyncio.sleep(0.3)
    ended = time.time()
    await asyncio.sleep(1.2)  # the probe flushes every second
    probe.cancel()
    return started, ended


def test_the_probe_reports_a_planted_stall_in_cpu_time_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio.events

    # Every callback timed (as with --loop-probe-steps); undone after the test.
    monkeypatch.setattr(asyncio.events.Handle, "_run", asyncio.events.Handle._run)
    monkeypatch.setattr(fairness, "_STEP_THREAD", [])
    monkeypatch.setattr(fairness, "_STEPS", [])
    fairness._time_every_callback()
    callbacks = list(gc.callbacks)
    started, ended = asyncio.run(run_probe(tmp_path))
    # The probe ended with its task: its watchdog thread and GC callback with it (a
    # watchdog left behind sampled this thread's stack for every later test).
    deadline = time.monotonic() + 2
    while any(t.name == "loop-probe-watchdog" and t.is_alive() for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the probe's watchdog thread outlived it"
        time.sleep(0.01)
    assert gc.callbacks == callbacks
    probe = fairness.read_probe(tmp_path, os.getpid())
    window = [(started, ended)]
    before = [(started - 0.3, started - 0.01)]
    figures: dict[str, Any] = fairness.loop_figures(probe, before, window, hog_requests=1)
    assert figures["cpu_max_ms_hogged"] >= PLANTED_MS * 0.9, figures
    assert figures["stalls_hogged"] >= 1
    assert figures["step_max_ms_hogged"] >= PLANTED_MS * 0.9, figures
    # The step is named after the callback, the stack samples after the function.
    assert figures["step_labels"][0][0] == "planted_stall", figures["step_labels"]
    assert any("planted_stall" in site for site, _n in figures["sites"]), figures["sites"]
    # Before the plant nothing near it (CPU time: the machine's load cannot make one).
    assert figures["cpu_max_ms_unloaded"] < PLANTED_MS * 0.5, figures


def test_bench_fairness_prints_the_leaders_loop_figures(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "exchange_node.cli", "bench", "fairness", "--json"),
            *("--nodes=1", "--phase-seconds=4", "--rounds=1", "--hog-batches=4"),
            "--hog-honours-retry-after",  # at its limit; one that ignores it is shut out
            *("--loop-probe", "--loop-probe-steps", f"--data-root={tmp_path}"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    figures = {r["name"]: r["value"] for r in doc["results"]}
    for name in (
        "leader_loop_cpu_p99_ms_hogged",
        "leader_loop_cpu_max_ms_hogged",
        "leader_loop_lag_max_ms_hogged",
        "leader_stall_ms_per_hog_request",
        "leader_step_max_ms_hogged",
        "leader_steps_over_0.5ms_hogged",
    ):
        assert name in figures, sorted(figures)
    # The victim's window (4 s) holds some of the hog's
    # 500-order batches (its limit: 1,000 orders/s; it waits a whole second after a
    # 429), applied in slices of 100 orders: the probe must see those steps.
    assert figures["hog_orders_per_s"] > 0, figures
    assert figures["leader_steps_over_0.5ms_hogged"] > 0, figures
    assert figures["leader_step_max_ms_hogged"] > 0.5, figures
    assert "leader loop: the longest callbacks" in out.stderr

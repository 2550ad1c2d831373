"""Scenarios against a recording fake target, and the run command's refusals (no cluster).

Every schedule injects faults, heals each one, records closed windows, and makes the
same choices for the same seed; a scenario needing a fault kind the target lacks is
refused before anything starts, naming the kind and what it needs.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from exchange_node.chaos import runner
from exchange_node.chaos.runner import RunError, RunOptions, make_target
from exchange_node.chaos.scenarios import SCENARIOS, FaultContext, FaultWindow, compose
from exchange_node.chaos.target import LogMark

ALL_KINDS = frozenset(
    {
        "kill",
        "pause",
        "restart",
        "partition",
        "loss",
        "bandwidth",
        "link",
        "clock",
        "disk",
        "power_cut",
        "corrupt_state",
        "lost_tail",
    }
)


class FakeHandle:
    def __init__(self, target: FakeTarget, description: str) -> None:
        self.description = description
        self.target = target
        self.healed = False
        target.active.append(self)

    def heal(self) -> None:
        if not self.healed:
            self.healed = True
            self.target.active.remove(self)
            self.target.calls.append(f"heal {self.description}")


class FakeTarget:
    name = "fake"

    def __init__(self, nodes: int = 5, caps: frozenset[str] = ALL_KINDS) -> None:
        self.nodes = list(range(1, nodes + 1))
        self.caps = caps
        self.calls: list[str] = []
        self.active: list[FakeHandle] = []
        self.lock = threading.Lock()

    def capabilities(self) -> frozenset[str]:
        return self.caps

    def node_ids(self) -> list[int]:
        return list(self.nodes)

    def leader(self) -> int:
        return 1 + len(self.calls) % len(self.nodes)

    def _fault(self, what: str) -> FakeHandle:
        self.calls.append(what)
        return FakeHandle(self, what)

    def kill(self, n: int) -> FakeHandle:
        return self._fault(f"kill {n}")

    def pause(self, n: int) -> FakeHandle:
        return self._fault(f"pause {n}")

    def restart(self, n: int) -> None:
        self.calls.append(f"restart {n}")

    def partition(self, groups: Any, one_way: bool = False) -> FakeHandle:
        return self._fault(f"partition {[sorted(g) for g in groups]}")

    def loss(self, n: int, p: float) -> FakeHandle:
        return self._fault(f"loss {n} {p}")

    def bandwidth(self, n: int, rate: int) -> FakeHandle:
        return self._fault(f"bandwidth {n} {rate}")

    def link(self, a: int, b: int, fault: Any) -> FakeHandle:
        return self._fault(f"link {a}->{b} {fault.toxic}")

    def clock(self, n: int, offset: float, rate: float = 1.0) -> FakeHandle:
        return self._fault(f"clock {n} {offset}")

    def disk(self, n: int, fault: Any) -> FakeHandle:
        return self._fault(f"disk {n} {fault.kind}")

    def power_cut(self, nodes: Any) -> FakeHandle:
        return self._fault(f"power_cut {sorted(nodes)}")

    def corrupt_state(self, n: int, seed: int, watch_s: float = 10.0) -> FakeHandle:
        return self._fault(f"corrupt_state {n} {seed}")

    def mark_log(self, n: int) -> LogMark:
        self.calls.append(f"mark_log {n}")
        return LogMark(n, "wal-1.log", 100)

    def cut_log(self, n: int, mark: LogMark) -> FakeHandle:
        return self._fault(f"cut_log {n} {mark.size}")


def run_schedule(name: str, seed: int, seconds: float = 6.0) -> tuple[FakeTarget, list[Any]]:
    scenario = compose(name)
    target = FakeTarget()
    windows: list[FaultWindow] = []
    ctx = FaultContext(
        target,  # type: ignore[arg-type]
        random.Random(f"scenario:{seed}"),
        time.monotonic() + seconds,
        lambda w: windows.append(w) if w.end_ns is not None else None,
    )
    scenario.schedule(ctx)
    return target, windows


def test_every_schedule_injects_heals_and_repeats_itself_for_a_seed() -> None:
    results: dict[tuple[str, int], tuple[FakeTarget, list[Any]]] = {}

    def one(name: str, copy: int) -> None:
        results[(name, copy)] = run_schedule(name, seed=11)

    threads = [
        threading.Thread(target=one, args=(name, copy)) for name in SCENARIOS for copy in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in SCENARIOS:
        target, windows = results[(name, 0)]
        assert windows, f"{name} injected nothing"
        assert all(w.end_ns is not None and w.end_ns >= w.start_ns for w in windows), name
        assert not target.active, f"{name} left {target.active} in force"
        injected = [c for c in target.calls if not c.startswith("heal")]
        assert injected, name
        # The same seed makes the same choices.
        assert [w.name for w in windows] == [w.name for w in results[(name, 1)][1]], name
        assert [w.nodes for w in windows] == [w.nodes for w in results[(name, 1)][1]], name


def test_composed_scenarios_run_side_by_side_and_need_both() -> None:
    scenario = compose("network-partition+clock-skew")
    assert scenario.needs == {"partition", "clock"}
    _, windows = run_schedule("network-partition+clock-skew", seed=3, seconds=5)
    names = {w.name for w in windows}
    assert "clock-skew" in names and names & {"isolate-leader", "partition-split"}
    with pytest.raises(KeyError, match="unknown scenario nope"):
        compose("network-partition+nope")


def test_a_missing_capability_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_clock(link_proxies: bool, faultfs: bool) -> tuple[frozenset[str], dict[str, str]]:
        return ALL_KINDS - {"clock"}, {"clock": "libfaketime (scripts/system-deps.sh)"}

    monkeypatch.setattr(runner, "local_capabilities", no_clock)
    options = RunOptions("clock-skew", report_dir=tmp_path)
    with pytest.raises(RunError, match=r"needs clock.*libfaketime"):
        make_target(options, compose("clock-skew"), 3, tmp_path / "cluster")
    assert not (tmp_path / "cluster").exists()


def exchange(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange_node.cli", "chaos", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_list_prints_one_line_per_scenario() -> None:
    done = exchange("list")
    assert done.returncode == 0
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(SCENARIOS)
    assert all("[needs " in line for line in lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "unknown scenario nope"),
        (["node-failure", "--duration", "3"], "--duration must be at least"),
        (["node-failure", "--duration", "x"], "--duration must be a number"),
        (["node-failure", "--nodes", "0"], "--nodes must be >= 1"),
        (["split-brain", "--nodes", "2"], "--nodes 2: split-brain needs at least 3"),
        (["node-failure", "--target-option", "oops"], "--target-option must be KEY=VALUE"),
        (["node-failure", "--target-option", "color=red"], "--target-option color"),
    ],
)
def test_bad_run_arguments_are_named(args: list[str], message: str, tmp_path: Path) -> None:
    done = exchange("run", *args, "--report", str(tmp_path / "r"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr, done.stderr


def test_metrics_keep_the_named_series_summed_over_labels() -> None:
    text = "\n".join(
        [
            "# HELP exchange_raft_term current term",
            "exchange_raft_term 4",
            'exchange_peer_frames_rejected_total{peer="2",reason="crc"} 3',
            'exchange_peer_frames_rejected_total{peer="3",reason="tls"} 2',
            "exchange_wal_fsync_seconds_sum 0.25",
            "exchange_orders_total 99",
            "exchange_raft_commit_index not-a-number",
        ]
    )
    assert runner.parse_metrics(text) == {
        "exchange_raft_term": 4.0,
        "exchange_peer_frames_rejected_total": 5.0,
        "exchange_wal_fsync_seconds_sum": 0.25,
    }

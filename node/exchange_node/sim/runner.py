"""Run many seeds, in parallel across the machine's cores.

Each seed is independent and deterministic, so the batch result does not
depend on how seeds are spread over worker processes.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from exchange_node.sim.mutation import load_mutant, run_seed_kwargs
from exchange_node.sim.simulator import SeedResult, run_seed

DEFAULT_STEPS = 5_000


def replay_command(seed: int, nodes: str | int, steps: int, plant: str | None = None) -> str:
    """The exact command that replays ``seed`` step by step."""
    parts = ["exchange sim --seed", str(seed)]
    if plant:
        parts += ["--plant", plant]
    if str(nodes) != "mixed":
        parts += ["--nodes", str(nodes)]
    if steps != DEFAULT_STEPS:
        parts += ["--steps", str(steps)]
    parts.append("--trace")
    return " ".join(parts)


@dataclass
class BatchReport:
    seeds: int = 0
    steps: int = 0
    """Steps asked per seed."""
    total_steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    """CPU time summed over the workers: a speed figure that other load on the
    machine does not distort."""
    violations: list[dict[str, object]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    digests: dict[int, int] = field(default_factory=dict)
    plant: str | None = None
    """The planted bug the batch ran with, if any."""

    def add(self, result: SeedResult, nodes: str | int) -> None:
        self.seeds += 1
        self.total_steps += result.steps
        self.cpu_seconds += result.cpu_seconds
        self.digests[result.seed] = result.digest
        for name, value in result.stats.items():
            if name.startswith("max_"):
                self.stats[name] = max(self.stats.get(name, 0), value)
            else:
                self.stats[name] = self.stats.get(name, 0) + value
        if result.violation is not None:
            self.violations.append(
                {
                    "seed": result.seed,
                    "nodes": result.nodes,
                    "step": result.violation_step,
                    "message": result.violation,
                    "replay": replay_command(result.seed, nodes, self.steps, self.plant),
                }
            )

    def as_json(self) -> dict[str, object]:
        seconds = max(self.seconds, 1e-9)
        return {
            "seeds": self.seeds,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "violations": sorted(self.violations, key=lambda v: v["seed"]),  # type: ignore[arg-type, return-value]
            "seconds": round(self.seconds, 3),
            "seeds_per_second": round(self.seeds / seconds, 2),
            "steps_per_second": round(self.total_steps / seconds),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "steps_per_cpu_second": round(self.total_steps / max(self.cpu_seconds, 1e-9)),
            "stats": dict(sorted(self.stats.items())),
        }


def _run_one(job: tuple[int, int, str | int, str | None, bool, str | None]) -> SeedResult:
    seed, steps, nodes, raft_module, commit_rule, plant = job
    if plant is not None:
        raft_module = load_mutant(plant)  # built again in a fresh worker (cached per process)
    module = importlib.import_module(raft_module) if raft_module else None
    return run_seed(seed, steps, nodes, commit_rule=commit_rule, **run_seed_kwargs(module))


def iter_results(
    seeds: Iterable[int],
    steps: int,
    nodes: str | int,
    *,
    workers: int | None = None,
    raft_module: str | None = None,
    commit_rule: bool = True,
    plant: str | None = None,
) -> Iterator[SeedResult]:
    """Results as they finish (not in seed order). ``raft_module`` names the
    core's package (default ``exchange_node.raft``); ``plant`` a planted bug,
    whose copy of the core each worker builds itself. Workers come from a fork
    server (a fresh process): forked from a long-lived parent that holds gRPC
    threads and C extensions, they crawled or crashed in garbage collection."""
    if plant is not None:
        raft_module = None
    jobs = [(seed, steps, nodes, raft_module, commit_rule, plant) for seed in seeds]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        for job in jobs:
            yield _run_one(job)
        return
    context = multiprocessing.get_context("forkserver")
    with context.Pool(workers) as pool:
        yield from pool.imap_unordered(_run_one, jobs, chunksize=1)


def run_batch(
    seeds: Iterable[int],
    steps: int,
    nodes: str | int = "mixed",
    *,
    workers: int | None = None,
    raft_module: str | None = None,
    commit_rule: bool = True,
    stop_on_first: bool = False,
    on_result: Callable[[SeedResult], None] | None = None,
    plant: str | None = None,
) -> BatchReport:
    """Run ``seeds``; ``plant`` names a planted bug (see ``mutation``) to run against."""
    report = BatchReport(steps=steps, plant=plant)
    started = time.perf_counter()
    results = iter_results(
        seeds,
        steps,
        nodes,
        workers=workers,
        raft_module=raft_module,
        commit_rule=commit_rule,
        plant=plant,
    )
    for result in results:
        report.add(result, nodes)
        if on_result is not None:
            on_result(result)
        if stop_on_first and result.violation is not None:
            break
    report.seconds = time.perf_counter() - started
    return report

"""`exchange sim`: run deterministic simulation seeds, replay one, or soak.

exchange sim --seeds 300 --steps 5000 --nodes mixed --json
exchange sim --seed 1234 --trace          # replay one seed step by step
exchange sim --soak                       # seeds until Ctrl-C, seeds/s printed
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import sys
import time

from exchange_node.sim.mutation import PLANTED_BUGS, load_mutant, run_seed_kwargs
from exchange_node.sim.runner import DEFAULT_STEPS, replay_command, run_batch
from exchange_node.sim.simulator import print_trace, run_seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--start-seed", type=int, default=0, help="first seed of the batch")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="steps per seed")
    parser.add_argument(
        "--nodes",
        choices=("3", "5", "mixed"),
        default="mixed",
        help="cluster size; mixed: 3 nodes for even seeds, 5 for odd ones",
    )
    parser.add_argument("--seed", type=int, help="run this one seed (with --trace: replay it)")
    parser.add_argument(
        "--trace", action="store_true", help="print every step and the cluster after it"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--soak", action="store_true", help="run seeds until Ctrl-C")
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes (default: one per core)"
    )
    parser.add_argument(
        "--plant",
        choices=sorted(PLANTED_BUGS),
        help="run against a copy of the core with this known bug planted (to see it caught)",
    )


def main(args: argparse.Namespace) -> int:
    if args.seed is not None:
        return _run_one(args)
    if args.soak:
        return _soak(args)
    return _run_batch(args)


def _run_one(args: argparse.Namespace) -> int:
    trace = print_trace if args.trace else None
    mutant = importlib.import_module(load_mutant(args.plant)) if args.plant else None
    result = run_seed(args.seed, args.steps, args.nodes, trace=trace, **run_seed_kwargs(mutant))
    doc = {
        "seed": result.seed,
        "nodes": result.nodes,
        "steps": result.steps,
        "virtual_ms": result.virtual_ms,
        "digest": f"{result.digest:012x}",
        "violation": result.violation,
        "violation_step": result.violation_step,
        "stats": result.stats,
    }
    if args.json:
        print(json.dumps(doc))
    else:
        print(
            f"seed {result.seed}: {result.nodes} nodes, {result.steps} steps, "
            f"{result.virtual_ms} virtual ms, digest {doc['digest']}"
        )
        if result.violation is not None:
            print(f"VIOLATION at step {result.violation_step}: {result.violation}")
            print(f"  replay: {replay_command(result.seed, args.nodes, args.steps, args.plant)}")
    return 1 if result.violation is not None else 0


def _run_batch(args: argparse.Namespace) -> int:
    seeds = range(args.start_seed, args.start_seed + args.seeds)
    report = run_batch(
        seeds, args.steps, args.nodes, workers=args.workers or None, plant=args.plant
    )
    doc = report.as_json()
    if args.json:
        print(json.dumps(doc))
    else:
        print(
            f"{doc['seeds']} seeds x {args.steps} steps ({args.nodes} nodes): "
            f"{len(report.violations)} violations in {doc['seconds']}s "
            f"({doc['seeds_per_second']} seeds/s, {doc['steps_per_second']} steps/s; "
            f"{doc['steps_per_cpu_second']} steps per CPU-second)"
        )
        print("coverage: " + ", ".join(f"{k}={v}" for k, v in doc["stats"].items()))  # type: ignore[attr-defined]
    if not args.json:
        for violation in sorted(report.violations, key=lambda v: v["seed"]):  # type: ignore[arg-type, return-value]
            print(
                f"VIOLATION seed {violation['seed']} step {violation['step']}: "
                f"{violation['message']}\n  replay: {violation['replay']}"
            )
    return 1 if report.violations else 0


def _soak(args: argparse.Namespace) -> int:
    """Batches of seeds, one after the other, until interrupted."""
    workers = args.workers or os.cpu_count() or 1
    batch = max(workers * 8, 16)
    started = time.perf_counter()
    seeds_done = steps_done = 0
    violations = 0
    try:
        for first in itertools.count(args.start_seed, batch):
            report = run_batch(
                range(first, first + batch),
                args.steps,
                args.nodes,
                workers=workers,
                plant=args.plant,
            )
            seeds_done += report.seeds
            steps_done += report.total_steps
            elapsed = time.perf_counter() - started
            for violation in report.violations:
                violations += 1
                print(
                    f"VIOLATION seed {violation['seed']} step {violation['step']}: "
                    f"{violation['message']}\n  replay: {violation['replay']}",
                    flush=True,
                )
            print(
                f"soak: {seeds_done} seeds (up to seed {first + batch - 1}), "
                f"{seeds_done / elapsed:.1f} seeds/s, {steps_done / elapsed:,.0f} steps/s, "
                f"{violations} violations",
                flush=True,
            )
    except KeyboardInterrupt:
        print(f"soak stopped after {seeds_done} seeds, {violations} violations", file=sys.stderr)
    return 1 if violations else 0


__all__ = ["add_arguments", "main"]

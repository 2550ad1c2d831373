"""`exchange chaos check HISTORY [--json]`: check a recorded history offline.

Exit status: 0 when no check fails (a check may be ``unknown``: it says
why), 1 when any check fails, 2 when the history is malformed (the message
names the line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from exchange_node.chaos import linearizability
from exchange_node.chaos.checker import Report, check_history
from exchange_node.chaos.history import HistoryError, read_history

SHOWN_OPERATIONS = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="chaos_command", required=True, metavar="SUBCOMMAND")
    check = sub.add_parser(
        "check",
        help="check a recorded history against the exchange's guarantees",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    check.add_argument("history", metavar="HISTORY", help="a history file (JSON lines)")
    check.add_argument("--json", action="store_true", help="print the result as one JSON object")
    check.add_argument(
        "--budget",
        type=_positive_int,
        default=linearizability.DEFAULT_BUDGET,
        help="linearizability search configurations per order before 'unknown' "
        f"(default {linearizability.DEFAULT_BUDGET})",
    )
    check.set_defaults(_chaos_main=check_main)
    listing = sub.add_parser("list", help="list the chaos scenarios, one line each")
    listing.set_defaults(_chaos_main=list_main)
    run = sub.add_parser(
        "run",
        help="run a scenario against a cluster: workload, faults, checks, report",
        description="Start a cluster (--target), drive a recorded workload, inject the "
        "scenario's faults, heal, check the history and write DIR/history.jsonl, "
        "DIR/report.json and DIR/report.html. Exit 1 when a check fails, 2 when the run "
        "cannot be made. Scenarios compose with '+' (network-partition+clock-skew).",
    )
    run.add_argument("scenario", metavar="SCENARIO", help="a name from `exchange chaos list`")
    run.add_argument(
        "--target", default="local", choices=["local", "docker", "kubernetes"], help="(local)"
    )
    run.add_argument(
        "--duration",
        type=_positive_float("--duration"),
        default=20.0,
        help="seconds of workload (default 20)",
    )
    run.add_argument("--seed", type=int, default=0, help="seeds the workload and the faults")
    run.add_argument("--report", required=True, metavar="DIR", help="where the report goes")
    run.add_argument(
        "--nodes",
        type=_positive_int_flag("--nodes"),
        default=None,
        help="cluster size (default: the scenario's, 3 or 5)",
    )
    run.add_argument(
        "--rate",
        type=_positive_float("--rate"),
        default=40.0,
        help="operations per second, all clients together (default 40)",
    )
    run.add_argument(
        "--clients",
        type=_positive_int_flag("--clients"),
        default=4,
        help="clients, each its own API key (default 4)",
    )
    run.add_argument(
        "--converge-within",
        type=_positive_float("--converge-within"),
        default=30.0,
        help="seconds the replicas get to agree after healing (30)",
    )
    run.add_argument(
        "--target-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to the target (local: election_ms, heartbeat_ms, "
        "snapshot_threshold; docker/kubernetes: their constructor's arguments)",
    )
    run.add_argument(
        "--keep-cluster",
        action="store_true",
        help="keep the cluster's data directories (printed) after the run",
    )
    run.set_defaults(_chaos_main=run_main)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--budget must be >= 1, got {value}")
    return value


def _positive_float(flag: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{flag} must be > 0, got {text}")
        return value

    return parse


def _positive_int_flag(flag: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 1, got {value}")
        return value

    return parse


def list_main(args: argparse.Namespace) -> int:
    from exchange_node.chaos.scenarios import SCENARIOS

    width = max(map(len, SCENARIOS))
    for scenario in SCENARIOS.values():
        needs = ",".join(sorted(scenario.needs))
        print(f"{scenario.name:{width}}  {scenario.summary}  [needs {needs}]")
    return 0


def run_main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from exchange_node.chaos.runner import RunOptions, run

    options: dict[str, str] = {}
    for item in args.target_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(
                f"exchange chaos run: --target-option must be KEY=VALUE, got {item!r}",
                file=sys.stderr,
            )
            return 2
        options[key] = value
    return run(
        RunOptions(
            scenario=args.scenario,
            target=args.target,
            duration=args.duration,
            seed=args.seed,
            report_dir=Path(args.report),
            nodes=args.nodes,
            rate=args.rate,
            clients=args.clients,
            converge_within=args.converge_within,
            target_options=options,
            keep_cluster=args.keep_cluster,
        )
    )


def main(args: argparse.Namespace) -> int:
    result: int = args._chaos_main(args)
    return result


def check_main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        history = read_history(args.history)
    except HistoryError as exc:
        print(f"exchange chaos check: {args.history}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"exchange chaos check: cannot read {args.history}: {exc.strerror}", file=sys.stderr)
        return 2
    report = check_history(history, budget=args.budget)
    elapsed = time.perf_counter() - started
    if args.json:
        out = report.to_dict()
        out["check_seconds"] = round(elapsed, 3)
        text = json.dumps(out, indent=2, sort_keys=True)
    else:
        text = render_text(report, elapsed)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Read by `| head`: the verdict still decides the exit status.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1 if report.verdict == "fail" else 0


def render_text(report: Report, elapsed: float) -> str:
    counts = report.stats["operations"]
    lines = [
        f"{counts['attempted']} operations: {counts['acknowledged']} acknowledged, "
        f"{counts['failed']} failed, {counts['indeterminate']} indeterminate; "
        f"{report.stats['faults']} faults, {report.stats['observations']} observations "
        f"(checked in {elapsed:.2f} s)"
    ]
    width = max(len(check.name) for check in report.checks)
    for check in report.checks:
        lines.append(f"{check.verdict.upper():7} {check.name:{width}}  {check.summary}")
        for why in check.unknown_because[:3]:
            lines.append(f"          unknown: {why}")
        for anomaly in check.anomalies:
            lines.append(f"          {anomaly.kind}: {anomaly.message}")
            for op in anomaly.operations[:SHOWN_OPERATIONS]:
                lines.append(f"            {_one_line(op)}")
        hidden = check.anomaly_count - len(check.anomalies)
        if hidden > 0:
            lines.append(f"          ... and {hidden} more")
    lines.append(f"verdict: {report.verdict.upper()}")
    return "\n".join(lines)


def _one_line(op: dict[str, Any]) -> str:
    if "op" not in op:
        return json.dumps(op, sort_keys=True, separators=(",", ":"))
    text = (
        f"#{op['id']} {op['process']} ({op['client']} -> {op['node']}) {op['op']} "
        f"{json.dumps(op['args'], sort_keys=True, separators=(',', ':'))} -> {op['outcome']}"
    )
    if "status" in op:
        text += f" {op['status']}"
    if "answer" in op:
        text += " " + json.dumps(op["answer"], sort_keys=True, separators=(",", ":"))
    if "error" in op:
        text += f" ({op['error']})"
    return text

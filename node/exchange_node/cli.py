"""The `exchange` command.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``main(args) -> int``; this file only routes. Modules are imported lazily so
`exchange --help` stays fast and one broken optional dependency cannot take the
whole CLI down.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import signal
import sys
from collections.abc import Sequence

from exchange_node.grpc_io import prefer_classic_io, skip_fork_handlers

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "node": ("exchange_node.server_cli", "run one Raft exchange node"),
    "local": ("exchange_node.tools.local", "run a local cluster of node processes"),
    "demo": ("exchange_node.tools.demo", "a local 3-node cluster with trading agents"),
    "sim": ("exchange_node.sim.cli", "deterministic simulation of the consensus core"),
    "agents": ("exchange_node.agents.cli", "run trading agents against a cluster"),
    "certs": ("exchange_node.tools.certs_cli", "create a CA, member and server certificates"),
    "operator": ("exchange_operator.cli", "run the Kubernetes operator"),
    "chaos": ("exchange_node.chaos.cli", "chaos runs: list, run a scenario, check a history"),
}

# `exchange bench NAME` -> (module, one-line help)
BENCHES: dict[str, tuple[str, str]] = {
    "raft": ("exchange_node.tools.bench.raft", "commit throughput of 3 in-process cores"),
    "storage": ("exchange_node.tools.bench.storage", "WAL append, fsync and recovery"),
    "engine": ("exchange_node.tools.bench.engine", "matching engine apply and snapshot"),
    "cluster": ("exchange_node.tools.bench.cluster", "a local 3-node cluster under load"),
    "fairness": ("exchange_node.tools.bench.fairness", "a victim's latency while one client hogs"),
    "transport": ("exchange_node.tools.bench.transport", "replication between two processes"),
    "etcd": ("exchange_node.tools.bench.etcd", "etcd 3.4 measured as `bench cluster` measures us"),
    "snapshot": (
        "exchange_node.tools.bench.snapshot",
        "event-loop stalls and client p99 during snapshots of a deep book",
    ),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given ``argv``, only the modules of the commands it names are
    imported (the others are listed in --help without their options), so
    `exchange cluster status` does not pay for importing kopf and the node."""
    from exchange_node import ctl
    from exchange_node.version import version_line

    parser = argparse.ArgumentParser(prog="exchange", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version_line())
    # etcdctl style: `exchange --endpoints URL --admin-token-file F cluster status`
    ctl.add_global_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ctl.register(sub)
    for name, (module, help_text) in COMMANDS.items():
        named = argv is None or name in argv
        # find_spec imports the parent packages: only for the command that runs.
        if named and not _available(module):
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        if not named:
            continue
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    bench = sub.add_parser("bench", help="benchmarks in one shared output format")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, (module, help_text) in BENCHES.items():
        named = argv is None or name in argv
        if named and not _available(module):
            continue
        p = bench_sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        if not named:
            continue
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    # Before any subcommand's module imports grpc (see grpc_io).
    prefer_classic_io()
    skip_fork_handlers()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command == "bench":
        # A bench owns clusters of child processes, which its finally blocks and atexit
        # hooks stop; a plain SIGTERM would skip both and leave the nodes running.
        signal.signal(signal.SIGTERM, _interrupted)
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

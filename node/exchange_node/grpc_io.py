"""Which of gRPC's two I/O paths our processes use.

Since grpcio 1.80, Python's gRPC does its socket I/O on EventEngine threads
and hands every completed operation to a second thread, the asyncio
poller, which then wakes the event loop: two thread hops per message. gRPC's
classic I/O path (iomgr) lets the poller thread read the socket itself: one
hop. On two shared cores each hop costs 0.1-0.3 ms of scheduling, and a
replicated order crosses four messages, so the classic path is faster here:
`exchange bench transport --batches 1 --window 1 --entries 4000 --uvloop`
(one message in flight, a ping-pong) measured 2,065-2,100 round trips/s with
EventEngine and 2,700-2,900 with the classic path (docs/performance.md has
its share of the cluster's latency).

gRPC reads ``GRPC_EXPERIMENTS`` once, when the ``grpc`` package is first
imported, so ``prefer_classic_io`` must run before that (the ``exchange`` CLI
calls it first thing). A ``GRPC_EXPERIMENTS`` already in the environment is
the operator's choice and is left alone; an empty value keeps gRPC's defaults.
The experiments are gRPC's own rollout switches, present from grpcio 1.80 and
checked up to ``VERIFIED_BELOW``; gRPC plans to remove them, so on a release
outside that range this does nothing rather than make gRPC log an unknown
experiment at start-up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from importlib import metadata

CLASSIC_IO_EXPERIMENTS = ",".join(
    f"-{name}"
    for name in (
        "event_engine_client",
        "event_engine_listener",
        "event_engine_callback_cq",
        "event_engine_for_all_other_endpoints",
        "event_engine_fork",
    )
)
EVENT_ENGINE_DEFAULT_FROM = (1, 80)
"""The first grpcio whose Python build uses EventEngine by default."""
VERIFIED_BELOW = (1, 86)
"""The first grpcio not yet checked (see ``tests/transport/test_grpc_io.py``)."""


def grpcio_version() -> tuple[int, int] | None:
    """``(major, minor)`` of the installed grpcio, read without importing it."""
    try:
        major, minor = metadata.version("grpcio").split(".")[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def prefer_classic_io(environ: MutableMapping[str, str] | None = None) -> bool:
    """Select gRPC's classic I/O path for this process if nothing else decided.

    Returns whether it set ``GRPC_EXPERIMENTS``. It does nothing when gRPC is
    already imported (too late to matter), when the variable is already set,
    or when the installed grpcio is outside the checked range.
    """
    env = os.environ if environ is None else environ
    if "grpc" in sys.modules or "GRPC_EXPERIMENTS" in env:
        return False
    version = grpcio_version()
    if version is None or not EVENT_ENGINE_DEFAULT_FROM <= version < VERIFIED_BELOW:
        return False
    env["GRPC_EXPERIMENTS"] = CLASSIC_IO_EXPERIMENTS
    return True


def skip_fork_handlers(environ: MutableMapping[str, str] | None = None) -> bool:
    """Keep gRPC's fork handlers out of ``os.fork()`` unless the environment decided.

    A node forks to take a snapshot (server/snapshots.py); the child touches no
    gRPC and exits, so gRPC has nothing to prepare, and its handlers would make
    the forking event loop wait for gRPC's threads. Like ``GRPC_EXPERIMENTS``,
    ``GRPC_ENABLE_FORK_SUPPORT`` is read when ``grpc`` is first imported: returns
    whether it set it (not when gRPC is already imported or the variable is set).
    """
    env = os.environ if environ is None else environ
    if "grpc" in sys.modules or "GRPC_ENABLE_FORK_SUPPORT" in env:
        return False
    env["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    return True

"""`exchange bench snapshot`: what a snapshot costs the event loop and the clients.

One real node (real WAL, real engine, real gRPC listener; a single-member
cluster) runs in this process. Its book is first filled with ``--resting``
non-crossing orders (a deep book: about 10 MB of state by default). Then, while
a client submits single orders at ``--rate`` per second and a probe measures
how late the event loop wakes up (``asyncio.sleep`` of 1 ms), snapshots are
taken (``Node.snapshot_now``, which returns once the snapshot is durable),
``--snapshots`` times with ``--between-seconds`` of plain load around each.

Figures (names never change meaning):

- ``state_bytes``: size of the engine's snapshot.
- ``snapshot_seconds_mean``: from the request to the durable snapshot.
- ``loop_stall_max_ms_during`` / ``loop_stall_p99_ms_during``: event-loop
  lateness of the probes that overlap a snapshot; ``..._between`` the others.
- ``client_p99_ms_during`` / ``client_p99_ms_between``: latency of the orders
  whose request overlaps a snapshot, and of the others, each timed from when
  it was due to be sent (open loop: a stalled loop delays the send, and that
  delay counts);
  ``client_p99_ratio`` is during / between (the goal of issue 14: at most 3).
- ``client_errors``: orders that failed.
- ``wal_fsync_max_ms_during`` / ``wal_fsync_p99_ms_during`` (and ``_between``):
  the WAL's fsyncs that overlap a snapshot, and the others: a slow disk, as
  opposed to a busy loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import tempfile
import time
from pathlib import Path

from exchange_node.engine.commands import NewOrder, OrderType, Side, TimeInForce
from exchange_node.tools.bench.format import BenchResult, report

SYMBOL = "BTC-USD"
MID = 50_000
PROBE_SECONDS = 0.001


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resting", type=int, default=100_000, help="orders in the book")
    parser.add_argument("--rate", type=float, default=300.0, help="client orders per second")
    parser.add_argument("--snapshots", type=int, default=3, help="snapshots to take")
    parser.add_argument(
        "--between-seconds", type=float, default=3.0, help="plain load before each snapshot"
    )
    parser.add_argument("--batch", type=int, default=500, help="orders per request while filling")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=0.0,
        help="instead: a 3-node cluster of real processes at --rate for this long (make "
        "soak-load), printing RSS per node, snapshots, leader changes and p99 over time",
    )
    parser.add_argument(
        "--soak-snapshot-bytes",
        default="2MiB",
        help="the soak cluster's --snapshot-bytes (several snapshots in a short run)",
    )
    parser.add_argument(
        "--soak-inflight", type=int, default=64, help="soak: most requests out at once"
    )
    parser.add_argument(
        "--report-seconds", type=float, default=30.0, help="soak: one line this often"
    )
    parser.add_argument(
        "--node-arg",
        action="append",
        default=[],
        help="extra node flag (repeatable), e.g. --node-arg=--snapshot-threshold=1000",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _resting(n: int) -> NewOrder:
    buy = n % 2 == 0
    distance = 1 + (n * 7919) % 2_000
    return NewOrder(
        f"c{n % 64}",
        f"r{n}",
        SYMBOL,
        Side.BUY if buy else Side.SELL,
        OrderType.LIMIT,
        TimeInForce.GTC,
        MID - distance if buy else MID + distance,
        10,
    )


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _overlaps(start: float, end: float, windows: list[tuple[float, float]]) -> bool:
    return any(start < w_end and end > w_start for w_start, w_end in windows)


async def run(args: argparse.Namespace, data_dir: Path) -> list[BenchResult]:
    from exchange_node.engine.engine import tune_garbage_collector
    from exchange_node.server import config as node_config
    from exchange_node.server.shell import Node

    # As the node's process does (server_cli.py): otherwise full collections over the
    # deep book stall the loop for seconds between snapshots too.
    tune_garbage_collector()

    parser = argparse.ArgumentParser()
    node_config.add_arguments(parser)
    node_args = [
        "--node-id=1",
        "--name=n1",
        "--listen-host=127.0.0.1",
        f"--grpc-port={_free_port()}",
        f"--http-port={_free_port()}",
        f"--data-dir={data_dir / 'n1'}",
        "--election-ms=200",
        "--heartbeat-ms=20",
        "--insecure-peers",
        # Only the snapshots this bench asks for.
        "--snapshot-threshold=1000000000",
        *args.node_arg,
    ]
    node = Node(node_config.from_args(parser.parse_args(node_args), env={}))
    # Every WAL fsync (end time, seconds), to tell a slow disk from a busy loop.
    fsyncs: list[tuple[float, float]] = []
    on_disk_timing = node._on_disk_timing

    def timing(kind: str, seconds: float) -> None:
        if kind == "fsync":
            fsyncs.append((time.perf_counter(), seconds))
        on_disk_timing(kind, seconds)

    node._on_disk_timing = timing  # type: ignore[method-assign]
    await node.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while node.role.name != "LEADER" or SYMBOL not in node.engine.symbols():
            if loop.time() > deadline:
                raise RuntimeError("the node did not become leader with its symbols")
            await asyncio.sleep(0.02)

        # Fill the book: a few requests in flight at a time.
        sem = asyncio.Semaphore(4)

        async def fill(lo: int, hi: int) -> None:
            async with sem:
                await node.submit([_resting(n) for n in range(lo, hi)])

        await asyncio.gather(
            *(
                fill(lo, min(args.resting, lo + args.batch))
                for lo in range(0, args.resting, args.batch)
            )
        )
        state_bytes = len(node.engine.snapshot())

        stop = False
        probes: list[tuple[float, float, float]] = []  # (start, end, lateness)
        requests: list[tuple[float, float]] = []  # (start, end)
        errors = 0
        inflight: set[asyncio.Task[None]] = set()

        async def probe() -> None:
            while not stop:
                started = time.perf_counter()
                await asyncio.sleep(PROBE_SECONDS)
                ended = time.perf_counter()
                probes.append((started, ended, max(0.0, ended - started - PROBE_SECONDS)))

        async def one(n: int, started: float) -> None:
            # Latency from when the order was due, not from when a stalled loop got
            # round to sending it (no coordinated omission).
            nonlocal errors
            try:
                await node.submit([_resting(args.resting + n)])
            except Exception:
                errors += 1
            requests.append((started, time.perf_counter()))

        async def load() -> None:
            n = 0
            interval = 1.0 / args.rate
            next_at = time.perf_counter()
            while not stop:
                now = time.perf_counter()
                # Open loop: late sends go out at once (a stall queues them up).
                while next_at <= now:
                    task = asyncio.create_task(one(n, next_at))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                    n += 1
                    next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

        probe_task = asyncio.create_task(probe())
        load_task = asyncio.create_task(load())
        windows: list[tuple[float, float]] = []
        try:
            for _ in range(args.snapshots):
                await asyncio.sleep(args.between_seconds)
                started = time.perf_counter()
                await node.snapshot_now()
                windows.append((started, time.perf_counter()))
            await asyncio.sleep(args.between_seconds)
        finally:
            stop = True
            await asyncio.gather(probe_task, load_task)
            if inflight:
                await asyncio.gather(*inflight)
    finally:
        await node.stop(grace_seconds=1.0)

    stall_during = [lag for s, e, lag in probes if _overlaps(s, e, windows)]
    stall_between = [lag for s, e, lag in probes if not _overlaps(s, e, windows)]
    client_during = [e - s for s, e in requests if _overlaps(s, e, windows)]
    client_between = [e - s for s, e in requests if not _overlaps(s, e, windows)]
    p99_during, p99_between = _p99(client_during), _p99(client_between)
    fsync_during = [sec for end, sec in fsyncs if _overlaps(end - sec, end, windows)]
    fsync_between = [sec for end, sec in fsyncs if not _overlaps(end - sec, end, windows)]
    ms = 1_000.0
    return [
        BenchResult("state_bytes", state_bytes, "bytes"),
        BenchResult("resting_orders", args.resting, "orders"),
        BenchResult("snapshots", len(windows), "snapshots"),
        BenchResult(
            "snapshot_seconds_mean",
            round(statistics.fmean(e - s for s, e in windows), 3) if windows else 0.0,
            "s",
        ),
        BenchResult("loop_stall_max_ms_during", round(max(stall_during, default=0) * ms, 2), "ms"),
        BenchResult("loop_stall_p99_ms_during", round(_p99(stall_during) * ms, 2), "ms"),
        BenchResult(
            "loop_stall_max_ms_between", round(max(stall_between, default=0) * ms, 2), "ms"
        ),
        BenchResult("loop_stall_p99_ms_between", round(_p99(stall_between) * ms, 2), "ms"),
        BenchResult("client_orders_during", len(client_during), "orders"),
        BenchResult("client_p99_ms_during", round(p99_during * ms, 2), "ms"),
        BenchResult("client_orders_between", len(client_between), "orders"),
        BenchResult("client_p99_ms_between", round(p99_between * ms, 2), "ms"),
        BenchResult(
            "client_p99_ratio", round(p99_during / p99_between, 2) if p99_between else 0.0, "x"
        ),
        BenchResult("client_errors", errors, "orders"),
        BenchResult("wal_fsync_max_ms_during", round(max(fsync_during, default=0) * ms, 2), "ms"),
        BenchResult("wal_fsync_p99_ms_during", round(_p99(fsync_during) * ms, 2), "ms"),
        BenchResult("wal_fsync_max_ms_between", round(max(fsync_between, default=0) * ms, 2), "ms"),
        BenchResult("wal_fsync_p99_ms_between", round(_p99(fsync_between) * ms, 2), "ms"),
    ]


def main(args: argparse.Namespace) -> int:
    logging.getLogger("exchange").setLevel(logging.WARNING)
    if args.soak_minutes > 0:
        from exchange_node.tools.bench.snapshot_soak import soak

        with tempfile.TemporaryDirectory(prefix="soak-load-") as tmp:
            root = args.data_dir or Path(tmp)
            results = asyncio.run(soak(args, root))
        report("snapshot_soak", results, as_json=args.json)
        return 0
    if args.data_dir is not None:
        results = asyncio.run(run(args, args.data_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as tmp:
            results = asyncio.run(run(args, Path(tmp)))
    report("snapshot", results, as_json=args.json)
    return 0

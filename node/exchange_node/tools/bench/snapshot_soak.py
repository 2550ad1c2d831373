"""`exchange bench snapshot --soak-minutes M` (``make soak-load``): a 3-node cluster
of real processes (fsync on, peer mTLS) at a sustained order rate, watched from
outside.

The book is first filled with ``--resting`` orders (batches of 500); then every
second ``--rate`` requests go to the leader on a fixed schedule, alternating a new
resting order and the cancel of the order placed ``--resting`` before it, so the
state stays about the same size and memory should stay flat. Every request's
latency runs from when it was due (open loop). Each node's ``/metrics`` is read
four times a second: a snapshot is "in progress" while any node's
``exchange_snapshot_in_progress`` is 1, and a request that overlaps such a
window counts as "during". Every ``--report-seconds`` one line: RSS per node
(``/proc/PID/status``), snapshots taken per node, the log held since the last
snapshot, leader changes, and the client p99 during and between snapshots.
At most ``--soak-inflight`` requests are out at once: beyond it the schedule
waits (the wait counts in the latency), so an overloaded cluster shows as
latency rather than as an unbounded pile of connections.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path
from typing import Any

from exchange_node.tools.bench.format import BenchResult
from exchange_node.tools.local import LocalCluster

SYMBOL = "BTC-USD"
MID = 50_000
POLL_SECONDS = 0.25
_SAMPLE = re.compile(r"^(exchange_[a-z_]+)(?:\{[^}]*\})? (\S+)$", re.M)


KEYS = 8
"""The cluster's bench keys used, one client each (a client's orders in flight are
limited: a batch of 500 per key at a time)."""


def _resting(seq: int) -> dict[str, Any]:
    buy = seq % 2 == 0
    distance = 1 + (seq * 7919) % 2_000
    return {
        "symbol": SYMBOL,
        "side": "BUY" if buy else "SELL",
        "price": MID - distance if buy else MID + distance,
        "quantity": 10,
        "client_order_id": f"s{seq}",
    }


def _rss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match[1]) / 1024 if match else 0.0


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _overlaps(start: float, end: float, windows: list[tuple[float, float]]) -> bool:
    return any(start < w_end and end > w_start for w_start, w_end in windows)


class _Watch:
    """What the nodes' /metrics said, polled from outside."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.ids = [m.node_id for m in cluster.spec.members]
        self.values: dict[int, dict[str, float]] = {i: {} for i in self.ids}
        self.windows: list[tuple[float, float]] = []
        self._open: float | None = None
        self.leader: int | None = None

    async def poll(self, session: Any) -> None:
        busy = False
        for node_id in self.ids:
            url = f"http://{self.cluster.member(node_id).http}/metrics"
            try:
                async with session.get(url) as resp:
                    text = await resp.text()
            except Exception:
                continue
            values: dict[str, float] = {}
            for name, value in _SAMPLE.findall(text):
                values[name] = values.get(name, 0.0) + float(value)
            self.values[node_id] = values
            busy = busy or values.get("exchange_snapshot_in_progress", 0.0) > 0
            if values.get("exchange_raft_is_leader", 0.0) > 0:
                self.leader = node_id
        now = time.perf_counter()
        if busy and self._open is None:
            self._open = now - POLL_SECONDS / 2
        elif not busy and self._open is not None:
            self.windows.append((self._open, now - POLL_SECONDS / 2))
            self._open = None

    def close(self) -> None:
        if self._open is not None:
            self.windows.append((self._open, time.perf_counter()))
            self._open = None

    def total(self, name: str) -> dict[int, float]:
        return {i: self.values[i].get(name, 0.0) for i in self.ids}


async def soak(args: argparse.Namespace, root: Path) -> list[BenchResult]:
    import aiohttp

    cluster = LocalCluster.create(
        root / "cluster",
        3,
        election_ms=1_000,
        heartbeat_ms=100,
        snapshot_threshold=0,
        extra_args=[
            "--log-level=warning",
            f"--snapshot-bytes={args.soak_snapshot_bytes}",
            "--max-pending-proposals=200000",
            "--request-timeout-ms=10000",
            *args.node_arg,
        ],
    )
    cluster.start_all()
    try:
        await asyncio.to_thread(cluster.wait_for_leader, 60)
        await asyncio.to_thread(cluster.wait_ready, None, 60)
        return await _soak(args, cluster, aiohttp)
    finally:
        await asyncio.to_thread(cluster.stop_all, 15)


async def _soak(args: argparse.Namespace, cluster: LocalCluster, aiohttp: Any) -> list[BenchResult]:
    auth = [{"Authorization": f"Bearer {cluster.key_for(f'bench{i}')}"} for i in range(KEYS)]
    watch = _Watch(cluster)
    pids = {i: proc.pid for i, proc in cluster.procs.items()}
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=15),
    )
    async with session:
        await watch.poll(session)
        leader = watch.leader or await asyncio.to_thread(cluster.wait_for_leader, 30)

        def base() -> str:
            return f"http://{cluster.member(watch.leader or leader).http}"

        # The deep book.
        sems = [asyncio.Semaphore(1) for _ in range(KEYS)]

        async def fill(batch: int, lo: int, hi: int) -> None:
            key = batch % KEYS
            async with sems[key]:
                body = {"orders": [_resting(k) for k in range(lo, hi)]}
                answer = b""
                for _ in range(60):
                    url = f"{base()}/v1/orders/batch"
                    async with session.post(url, json=body, headers=auth[key]) as resp:
                        answer = await resp.read()
                        if resp.status == 200:
                            return
                    await asyncio.sleep(0.5)
                raise RuntimeError(f"filling the book failed: {answer[:300]!r}")

        await asyncio.gather(
            *(
                fill(batch, lo, min(args.resting, lo + 500))
                for batch, lo in enumerate(range(0, args.resting, 500))
            )
        )
        await watch.poll(session)
        start_changes = watch.total("exchange_raft_leader_changes_total")

        requests: list[tuple[float, float, bool]] = []  # (due, end, ok)
        statuses: dict[str, int] = {}
        stop = False
        inflight: set[asyncio.Task[None]] = set()

        async def one(n: int, due: float) -> None:
            seq = args.resting + n // 2
            old = seq - args.resting
            try:
                if n % 2 == 0:
                    request = session.post(
                        f"{base()}/v1/orders", json=_resting(seq), headers=auth[seq // 500 % KEYS]
                    )
                else:
                    # The order placed ``--resting`` before, by the key that placed it.
                    request = session.delete(
                        f"{base()}/v1/orders/by-client-id/s{old}", headers=auth[old // 500 % KEYS]
                    )
                async with request as resp:
                    await resp.read()
                    ok = resp.status < 500
                    kind = f"{resp.status // 100}xx"
            except Exception:
                ok = False
                kind = "failed"
            statuses[kind] = statuses.get(kind, 0) + 1
            requests.append((due, time.perf_counter(), ok))

        window = asyncio.Semaphore(args.soak_inflight)

        async def bounded(n: int, due: float) -> None:
            try:
                await one(n, due)
            finally:
                window.release()

        async def load() -> None:
            n = 0
            interval = 1.0 / args.rate
            next_at = time.perf_counter()
            while not stop:
                now = time.perf_counter()
                while next_at <= now and not stop:
                    # At most --soak-inflight requests out: a late one still counts
                    # from when it was due.
                    await window.acquire()
                    task = asyncio.create_task(bounded(n, next_at))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                    n += 1
                    next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

        async def poller() -> None:
            while not stop:
                await watch.poll(session)
                await asyncio.sleep(POLL_SECONDS)

        rss: dict[int, list[float]] = {i: [_rss_mb(pid)] for i, pid in pids.items()}
        started = time.perf_counter()
        tasks = [asyncio.create_task(load()), asyncio.create_task(poller())]
        deadline = started + args.soak_minutes * 60
        last_line = started
        print(
            "  t_s  rss_mb(n1/n2/n3)         snapshots  log_kib(n1/n2/n3)   "
            "eo_keys_k(n1/n2/n3)  leader_chg  p99_ms_during  p99_ms_between  errors",
            flush=True,
        )
        try:
            while time.perf_counter() < deadline:
                await asyncio.sleep(min(args.report_seconds, deadline - time.perf_counter()))
                now = time.perf_counter()
                for i, pid in pids.items():
                    rss[i].append(_rss_mb(pid))
                # Requests answered since the last line, each timed from when it was
                # due: a cluster that falls behind shows as late answers, not as none.
                recent = [r for r in requests if last_line <= r[1] < now]
                windows = [*watch.windows]
                if watch._open is not None:
                    windows.append((watch._open, now))
                during = [e - d for d, e, _ in recent if _overlaps(d, e, windows)]
                between = [e - d for d, e, _ in recent if not _overlaps(d, e, windows)]
                snaps = watch.total("exchange_snapshots_total")
                logs = watch.total("exchange_memory_log_bytes")
                # The exactly-once table grows until its cap: RSS follows it, then stops.
                keys = watch.total("exchange_memory_exactly_once_keys")
                changes = watch.total("exchange_raft_leader_changes_total")
                print(
                    f"{now - started:5.0f}  "
                    + "/".join(f"{rss[i][-1]:.0f}" for i in pids).ljust(24)
                    + "/".join(f"{snaps[i]:.0f}" for i in pids).rjust(10)
                    + "  "
                    + "/".join(f"{logs[i] / 1024:.0f}" for i in pids).ljust(20)
                    + "/".join(f"{keys[i] / 1000:.0f}" for i in pids).ljust(21)
                    + f"{max(changes[i] - start_changes[i] for i in pids):9.0f}  "
                    + f"{_p99(during) * 1000:13.1f}  {_p99(between) * 1000:14.1f}  "
                    + f"{sum(1 for r in recent if not r[2]):6d}",
                    flush=True,
                )
                last_line = now
        finally:
            stop = True
            await asyncio.gather(*tasks)
            if inflight:
                await asyncio.gather(*inflight)
            watch.close()
    windows = watch.windows
    during = [e - d for d, e, _ in requests if _overlaps(d, e, windows)]
    between = [e - d for d, e, _ in requests if not _overlaps(d, e, windows)]
    snaps = watch.total("exchange_snapshots_total")
    changes = watch.total("exchange_raft_leader_changes_total")
    p99_during, p99_between = _p99(during), _p99(between)
    results = [
        BenchResult("minutes", args.soak_minutes, "min"),
        BenchResult("rate", args.rate, "requests/s"),
        BenchResult("requests", len(requests), "requests"),
        BenchResult("errors", sum(1 for r in requests if not r[2]), "requests"),
        BenchResult("snapshots", int(sum(snaps.values())), "snapshots (all nodes)"),
        BenchResult("snapshot_windows", len(windows), "windows"),
        BenchResult(
            "leader_changes", int(max(changes[i] - start_changes[i] for i in pids)), "changes"
        ),
        BenchResult("client_p99_ms_during", round(p99_during * 1000, 2), "ms"),
        BenchResult("client_p99_ms_between", round(p99_between * 1000, 2), "ms"),
        BenchResult(
            "client_p99_ratio", round(p99_during / p99_between, 2) if p99_between else 0.0, "x"
        ),
    ]
    for kind in ("2xx", "4xx", "5xx", "failed"):
        results.append(BenchResult(f"answers_{kind}", statuses.get(kind, 0), "requests"))
    for i in pids:
        results.append(BenchResult(f"rss_mb_first_n{i}", round(rss[i][0], 1), "MiB"))
        results.append(BenchResult(f"rss_mb_last_n{i}", round(rss[i][-1], 1), "MiB"))
        results.append(BenchResult(f"rss_mb_max_n{i}", round(max(rss[i]), 1), "MiB"))
    return results

"""`exchange bench storage`: durable append throughput, fsync latency and recovery.

Every figure uses 100-byte entries and a fresh directory on the same disk as
the data (``--dir``, default: a temporary directory under the current one).

* ``append_throughput_batch_N``: entries per second through ``save()`` with
  batches of N entries, each batch one write and one fdatasync.
* ``append_fsync_p50_ms`` / ``_p99_ms``: latency of one ``save()`` of 256
  entries (encode + write + fdatasync).
* ``recovery_seconds_1m``: ``open_storage`` + ``recover()`` of a log of
  1,000,000 entries, in a fresh process.
* ``recovery_cpu_seconds_1m``: the CPU time of that recovery (what it costs
  on an idle core; the wall time above also shows contention).
* ``recovery_peak_mb_1m``: that process's peak resident set size (VmHWM,
  interpreter included; ``recovery_baseline_mb`` is the same process just
  before recovery starts, so the difference is what recovery itself costs).
  Most of it is the ``RecoveredState.entries`` list the contract returns.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from exchange_node.raft.types import Entry, HardState
from exchange_node.storage.wal import open_storage
from exchange_node.tools.bench.format import BenchResult, report

ENTRY_BYTES = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        default=".",
        help="directory on the disk to measure (a temporary subdirectory is made there)",
    )
    parser.add_argument(
        "--recovery-entries",
        type=int,
        default=1_000_000,
        help="entries in the log whose recovery is timed (default 1,000,000)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="approximate time spent on each append throughput figure",
    )
    parser.add_argument(
        "--no-promise",
        action="store_true",
        help="append without the promise slot (promise_sync='off', benchmarks only): the "
        "WAL's cost without protocol-aware recovery (docs/recovery.md)",
    )


_PROMISE = ["on"]
"""``promise_sync`` of the stores the append figures open (``--no-promise``: off)."""


def _entries(first: int, count: int, payload: bytes) -> list[Entry]:
    return [Entry(1, index, payload) for index in range(first, first + count)]


def _append_throughput(root: str, batch: int, seconds: float) -> tuple[float, list[float]]:
    """Entries/s for batches of ``batch``; also each save's latency in seconds."""
    payload = os.urandom(ENTRY_BYTES)
    data_dir = tempfile.mkdtemp(prefix=f"append-{batch}-", dir=root)
    storage = open_storage(data_dir, promise_sync=_PROMISE[0])
    try:
        # Build batches ahead of time: the figure is the storage's, not Entry()'s.
        batches = [_entries(1 + k * batch, batch, payload) for k in range(64)]
        latencies: list[float] = []
        written = 0
        k = 0
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            entries = batches[k % 64]
            if k >= 64:
                entries = _entries(1 + k * batch, batch, payload)
            before = time.perf_counter()
            storage.save(entries=entries, hard_state=HardState(1, 1, written))
            after = time.perf_counter()
            latencies.append(after - before)
            written += batch
            k += 1
            if after >= deadline and k >= 20:
                break
        elapsed = sum(latencies)
        return written / elapsed, latencies
    finally:
        storage.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _build_log(data_dir: str, count: int) -> None:
    payload = os.urandom(ENTRY_BYTES)
    with open_storage(data_dir) as storage:
        index = 1
        while index <= count:
            n = min(1024, count - index + 1)
            storage.save(entries=_entries(index, n, payload), hard_state=HardState(1, 1, index))
            index += n


_RECOVERY_CHILD = """
import json, resource, sys, time
from exchange_node.storage.wal import open_storage

def peak_kb():
    # VmHWM belongs to this program's address space; ru_maxrss would also count
    # the parent's resident memory at fork time.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

baseline = peak_kb()
started, cpu_started = time.perf_counter(), time.process_time()
storage = open_storage(sys.argv[1])
state = storage.recover()
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
assert len(state.entries) == int(sys.argv[2]), len(state.entries)
peak = peak_kb()
storage.close()
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "peak_kb": peak, "baseline_kb": baseline}))
"""


def _recovery(root: str, count: int) -> dict[str, float]:
    data_dir = tempfile.mkdtemp(prefix="recovery-", dir=root)
    try:
        _build_log(data_dir, count)
        out = subprocess.run(
            [sys.executable, "-c", _RECOVERY_CHILD, data_dir, str(count)],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout)  # type: ignore[no-any-return]
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main(args: argparse.Namespace) -> int:
    _PROMISE[0] = "off" if args.no_promise else "on"
    root = tempfile.mkdtemp(prefix="exchange-bench-storage-", dir=args.dir)
    try:
        results: list[BenchResult] = []
        for batch in (1, 16, 256, 1024):
            rate, latencies = _append_throughput(root, batch, args.seconds)
            results.append(
                BenchResult(f"append_throughput_batch_{batch}", round(rate), "entries/s")
            )
            if batch == 256:
                p50 = _percentile(latencies, 0.50) * 1000
                p99 = _percentile(latencies, 0.99) * 1000
        results.append(BenchResult("append_fsync_p50_ms", round(p50, 3), "ms"))
        results.append(BenchResult("append_fsync_p99_ms", round(p99, 3), "ms"))
        recovery = _recovery(root, args.recovery_entries)
        suffix = "1m" if args.recovery_entries == 1_000_000 else str(args.recovery_entries)
        results.append(
            BenchResult(f"recovery_seconds_{suffix}", round(recovery["seconds"], 3), "s")
        )
        results.append(
            BenchResult(f"recovery_cpu_seconds_{suffix}", round(recovery["cpu_seconds"], 3), "s")
        )
        results.append(
            BenchResult(f"recovery_peak_mb_{suffix}", round(recovery["peak_kb"] / 1024, 1), "MB")
        )
        results.append(
            BenchResult("recovery_baseline_mb", round(recovery["baseline_kb"] / 1024, 1), "MB")
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report("storage", results, as_json=args.json)
    return 0

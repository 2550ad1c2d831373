"""`exchange bench engine`: apply throughput and latency, memory per order, snapshot times.

The workload is generated before any timing from a seeded RNG: about 60%
limit orders, 25% cancels (by client order id, some of orders already gone),
15% market or IOC orders, over 4 symbols whose mid prices random-walk; limit
prices cluster around the mid, most passive, some crossing.

Figures (names never change meaning). The machine may be shared, so wall-clock
figures come with the process's CPU-time equivalents; throughput is the best of
``--repeat`` runs. The process runs with ``tune_garbage_collector()`` (as the
node does); ``apply_throughput_default_gc`` shows CPython's default thresholds.

- ``apply_throughput`` / ``apply_throughput_cpu``: commands/s through
  ``Engine.apply`` on one core (wall clock / process CPU time).
- ``apply_throughput_default_gc``: the same with CPython's default GC thresholds.
- ``apply_entry_throughput``: commands/s through ``Engine.apply_entry`` with
  encoded batches of ``--batch`` commands (decoding included).
- ``apply_p50_us`` / ``apply_p99_us``: per-command latency of ``apply``.
- ``bytes_per_resting_order``: traced heap growth per resting order (book,
  indexes, positions; the bounded retention tables excluded).
- ``snapshot_write_seconds_1m`` / ``snapshot_restore_seconds_1m`` (and ``_cpu_``):
  ``snapshot()`` and ``Engine.restore()`` with ``--resting`` (default
  1,000,000) resting orders; ``state_hash_seconds_1m`` for the hash.
- ``snapshot_bytes_per_order``: snapshot size per resting order.
- ``apply_instructions_per_command`` (only with ``--instructions``, needs valgrind):
  machine instructions per command of ``apply`` over the first ``--instruction-commands``
  commands of the workload, counted by callgrind (a run that only builds the workload
  is subtracted). Unlike the timings it does not move with the host's other load, so
  it is the figure to compare two versions of the engine on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import shutil
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable

from exchange_node.engine.commands import (
    AddSymbol,
    Cancel,
    Command,
    NewOrder,
    OrderType,
    Side,
    TimeInForce,
    encode_batch,
)
from exchange_node.engine.engine import Engine, tune_garbage_collector
from exchange_node.limits import ENGINE_DEDUP_MAX_KEYS
from exchange_node.tools.bench.format import BenchResult, report

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
START_MID = 10_000
BASE_TIME_NS = 1_700_000_000_000_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--commands", type=int, default=300_000, help="mixed-workload commands")
    parser.add_argument("--resting", type=int, default=1_000_000, help="orders in the snapshot")
    parser.add_argument("--batch", type=int, default=64, help="commands per log entry")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5, help="throughput runs (best kept)")
    parser.add_argument("--skip-snapshot", action="store_true", help="skip the 1M snapshot part")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per command under valgrind (slow, load-independent)",
    )
    parser.add_argument("--instruction-commands", type=int, default=40_000)
    parser.add_argument(
        "--exactly-once-max-keys",
        type=int,
        default=None,
        help="the engine's exactly-once cap (default: the node's, 262,144); 65536 measures "
        "the state of 3d038d2, whose count window held that many",
    )


_MAX_KEYS = [ENGINE_DEDUP_MAX_KEYS]
"""The exactly-once cap of the engines measured (``--exactly-once-max-keys``)."""


def new_engine() -> Engine:
    return Engine(
        [AddSymbol(symbol, 1, 1, 2_000, START_MID) for symbol in SYMBOLS],
        dedup_max_keys=_MAX_KEYS[0],
    )


def mixed_workload(count: int, *, seed: int, clients: int) -> list[Command]:
    """The mixed command stream, deterministic for a seed."""
    rng = random.Random(seed)
    mids = dict.fromkeys(SYMBOLS, START_MID)
    placed: list[tuple[str, str]] = []
    commands: list[Command] = []
    buy, sell = Side.BUY, Side.SELL
    for n in range(count):
        symbol = SYMBOLS[rng.randrange(len(SYMBOLS))]
        if rng.random() < 0.05:
            mids[symbol] = max(1_000, mids[symbol] + rng.choice((-1, 1)) * rng.randint(1, 3))
        mid = mids[symbol]
        client_id = f"c{rng.randrange(clients)}"
        roll = rng.random()
        if roll < 0.60:
            side = buy if rng.random() < 0.5 else sell
            offset = int(rng.expovariate(1 / 6)) - 1  # mostly passive, sometimes crossing
            price = mid - offset if side is buy else mid + offset
            client_order_id = f"o{n}"
            placed.append((client_id, client_order_id))
            commands.append(
                NewOrder(
                    client_id,
                    client_order_id,
                    symbol,
                    side,
                    OrderType.LIMIT,
                    TimeInForce.GTC,
                    max(1, price),
                    rng.randint(1, 20) * 5,
                )
            )
        elif roll < 0.85 and placed:
            index = len(placed) - 1 - min(len(placed) - 1, int(rng.expovariate(1 / 200)))
            owner, client_order_id = placed[index]
            commands.append(Cancel(owner, None, client_order_id))
        else:
            side = buy if rng.random() < 0.5 else sell
            if rng.random() < 0.5:
                order_type, time_in_force, price = OrderType.MARKET, TimeInForce.IOC, 0
            else:
                reach = rng.randint(0, 4)
                price = mid + reach if side is buy else mid - reach
                order_type, time_in_force = OrderType.LIMIT, TimeInForce.IOC
            commands.append(
                NewOrder(
                    client_id,
                    f"o{n}",
                    symbol,
                    side,
                    order_type,
                    time_in_force,
                    price,
                    rng.randint(1, 20) * 5,
                )
            )
    return commands


def resting_workload(count: int, *, clients: int) -> list[Command]:
    """``count`` non-crossing GTC limit orders spread over the symbols and 200 levels a side."""
    commands: list[Command] = []
    for n in range(count):
        symbol = SYMBOLS[n % len(SYMBOLS)]
        side = Side.BUY if (n // len(SYMBOLS)) % 2 == 0 else Side.SELL
        distance = 1 + (n * 7919) % 200
        price = START_MID - distance if side is Side.BUY else START_MID + distance
        commands.append(
            NewOrder(
                f"c{n % clients}",
                f"r{n}",
                symbol,
                side,
                OrderType.LIMIT,
                TimeInForce.GTC,
                price,
                10,
            )
        )
    return commands


def _apply_all(engine: Engine, commands: list[Command], first_index: int = 1) -> None:
    apply = engine.apply
    index = first_index
    for command in commands:
        apply(command, index, BASE_TIME_NS + index * 1_000)
        index += 1


def _timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call, after a full collection."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_throughput(commands: list[Command], repeat: int) -> tuple[float, float]:
    """Best (commands/s wall, commands/s CPU) over ``repeat`` runs on fresh engines."""
    best_wall = best_cpu = 0.0
    for _ in range(repeat):
        engine = new_engine()
        wall, cpu = _timed(lambda engine=engine: _apply_all(engine, commands))  # type: ignore[misc]
        best_wall = max(best_wall, len(commands) / wall)
        best_cpu = max(best_cpu, len(commands) / cpu)
    return best_wall, best_cpu


def measure_latency(commands: list[Command]) -> tuple[float, float]:
    """(p50 us, p99 us) of single ``apply`` calls."""
    engine = new_engine()
    apply = engine.apply
    clock = time.perf_counter_ns
    samples = [0] * len(commands)
    gc.collect()
    for i, command in enumerate(commands):
        begin = clock()
        apply(command, log_index=i + 1, timestamp_ns=BASE_TIME_NS + i * 1_000)
        samples[i] = clock() - begin
    samples.sort()
    p50 = samples[len(samples) // 2] / 1_000
    p99 = samples[min(len(samples) - 1, (len(samples) * 99) // 100)] / 1_000
    return p50, p99


def measure_apply_entry(commands: list[Command], batch: int) -> float:
    entries = [
        encode_batch(BASE_TIME_NS + i, commands[i : i + batch])
        for i in range(0, len(commands), batch)
    ]
    engine = new_engine()

    def run() -> None:
        for index, entry in enumerate(entries, start=1):
            engine.apply_entry(index, entry)

    wall, _cpu = _timed(run)
    return len(commands) / wall


def measure_bytes_per_order(count: int, clients: int) -> float:
    commands = resting_workload(count, clients=clients)
    engine = new_engine()
    # Only the book state counts: keep the results table and finished ring out of it.
    engine.state.dedup_max_keys = 1
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    _apply_all(engine, commands)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / max(1, engine.resting_order_count())


def measure_snapshot(count: int, clients: int) -> dict[str, float]:
    engine = new_engine()
    _apply_all(engine, resting_workload(count, clients=clients))
    if engine.resting_order_count() != count:
        raise AssertionError("the resting workload traded")
    snapshot = b""

    def write() -> None:
        nonlocal snapshot
        snapshot = engine.snapshot()

    write_wall, write_cpu = _timed(write)
    restored: list[Engine] = []
    restore_wall, restore_cpu = _timed(lambda: restored.append(Engine.restore(snapshot)))
    if restored[0].resting_order_count() != count:
        raise AssertionError("restore lost orders")
    hash_wall, _ = _timed(restored[0].state_hash)
    return {
        "write_wall": write_wall,
        "write_cpu": write_cpu,
        "restore_wall": restore_wall,
        "restore_cpu": restore_cpu,
        "hash_wall": hash_wall,
        "bytes_per_order": len(snapshot) / count,
    }


def _instruction_child(mode: str, count: int, seed: int, clients: int) -> None:
    """Run under callgrind: build the workload, then apply it (``mode == "apply"``)."""
    tune_garbage_collector()
    commands = mixed_workload(count, seed=seed, clients=clients)
    engine = new_engine()
    gc.collect()
    if mode == "apply":
        _apply_all(engine, commands)
    sys.stdout.flush()
    os._exit(0)  # interpreter teardown would be counted too


def measure_instructions(count: int, seed: int, clients: int) -> float:
    """Instructions per command of ``apply`` (callgrind; workload building subtracted)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("exchange bench engine: --instructions needs valgrind on the PATH")
    totals = {}
    for mode in ("build", "apply"):
        code = (
            "from exchange_node.tools.bench.engine import _instruction_child; "
            f"_instruction_child({mode!r}, {count}, {seed}, {clients})"
        )
        run = subprocess.run(
            [
                valgrind,
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                "-c",
                code,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            check=False,
        )
        found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
        if run.returncode != 0 or found is None:
            raise SystemExit(f"exchange bench engine: callgrind failed:\n{run.stderr[-2000:]}")
        totals[mode] = int(found.group(1).replace(",", ""))
    return (totals["apply"] - totals["build"]) / count


def main(args: argparse.Namespace) -> int:
    if args.exactly_once_max_keys is not None:
        if args.exactly_once_max_keys < 1:
            print("exchange bench engine: --exactly-once-max-keys must be >= 1", file=sys.stderr)
            return 2
        _MAX_KEYS[0] = args.exactly_once_max_keys
    tune_garbage_collector()
    commands = mixed_workload(args.commands, seed=args.seed, clients=args.clients)
    throughput, throughput_cpu = measure_throughput(commands, args.repeat)
    p50, p99 = measure_latency(commands)
    entry_throughput = measure_apply_entry(commands, args.batch)
    gc.set_threshold(700, 10, 10)  # CPython's defaults, for comparison
    default_gc_throughput, _ = measure_throughput(commands, 1)
    tune_garbage_collector()
    results = [
        BenchResult("apply_throughput", round(throughput), "commands/s"),
        BenchResult("apply_throughput_cpu", round(throughput_cpu), "commands/s"),
        BenchResult("apply_throughput_default_gc", round(default_gc_throughput), "commands/s"),
        BenchResult("apply_entry_throughput", round(entry_throughput), "commands/s"),
        BenchResult("apply_p50_us", round(p50, 2), "us"),
        BenchResult("apply_p99_us", round(p99, 2), "us"),
        BenchResult(
            "bytes_per_resting_order",
            round(measure_bytes_per_order(min(100_000, args.resting), args.clients)),
            "bytes",
        ),
    ]
    if not args.skip_snapshot:
        snapshot = measure_snapshot(args.resting, args.clients)
        results += [
            BenchResult("snapshot_write_seconds_1m", round(snapshot["write_wall"], 3), "s"),
            BenchResult("snapshot_restore_seconds_1m", round(snapshot["restore_wall"], 3), "s"),
            BenchResult("snapshot_write_cpu_seconds_1m", round(snapshot["write_cpu"], 3), "s"),
            BenchResult("snapshot_restore_cpu_seconds_1m", round(snapshot["restore_cpu"], 3), "s"),
            BenchResult("state_hash_seconds_1m", round(snapshot["hash_wall"], 3), "s"),
            BenchResult("snapshot_bytes_per_order", round(snapshot["bytes_per_order"], 1), "bytes"),
            BenchResult("snapshot_orders", args.resting, "orders"),
        ]
    if args.instructions:
        per_command = measure_instructions(args.instruction_commands, args.seed, args.clients)
        results.append(
            BenchResult("apply_instructions_per_command", round(per_command), "instructions")
        )
    report("engine", results, as_json=args.json)
    return 0

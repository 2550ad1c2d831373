"""Snapshots restore the exact state; the same log gives the same state everywhere."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from engine_workload import CLIENTS, SYMBOLS, random_commands
from exchange_node.engine.commands import (
    NewOrder,
    OrderType,
    Side,
    TimeInForce,
    encode_batch,
)
from exchange_node.engine.engine import Engine
from exchange_node.engine.snapshot import SnapshotError
from hypothesis import given, settings
from hypothesis import strategies as st


def new_engine() -> Engine:
    return Engine(SYMBOLS, dedup_max_keys=64, finished_window=64, trade_history=20)


def apply_all(engine: Engine, commands: list, first_index: int = 1) -> list[dict]:
    results = []
    for offset, command in enumerate(commands):
        index = first_index + offset
        result = engine.apply(command, log_index=index, timestamp_ns=index * 250_000_000)
        results.append(result.to_dict())
    return results


def query_everything(engine: Engine) -> dict:
    symbols = sorted(engine.symbols())
    return {
        "symbols": {name: spec for name, spec in engine.symbols().items()},
        "bbo": [engine.best_bid_offer(s) for s in symbols],
        "depth": [engine.depth(s, 50) for s in symbols],
        "trades": [[t.to_dict() for t in engine.recent_trades(s, 1_000)] for s in symbols],
        "analytics": [engine.analytics(s) for s in symbols],
        "positions": [engine.positions(c) for c in CLIENTS],
        "orders": [engine.order(i) for i in range(1, engine.state.next_order_id + 1)],
        "open": [engine.open_orders(c) for c in CLIENTS],
        "limits": [engine.risk_limits(c) for c in [None, *CLIENTS]],
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_restored_engine_answers_the_next_thousand_commands_like_the_original(seed: int):
    commands = random_commands(seed, 1_600)
    original = new_engine()
    apply_all(original, commands[:600])
    snapshot = original.snapshot()
    restored = Engine.restore(snapshot)
    assert restored.state_hash() == original.state_hash()
    assert restored.snapshot() == snapshot
    assert query_everything(restored) == query_everything(original)

    expected = apply_all(original, commands[600:], first_index=601)
    got = apply_all(restored, commands[600:], first_index=601)
    assert got == expected
    assert restored.state_hash() == original.state_hash()
    assert query_everything(restored) == query_everything(original)


@settings(settings.get_profile("engine"), max_examples=25)
@given(st.integers(0, 10_000), st.integers(0, 300))
def test_snapshot_at_any_point_round_trips(seed: int, cut: int):
    commands = random_commands(seed, 400)
    original = new_engine()
    apply_all(original, commands[:cut])
    restored = Engine.restore(original.snapshot())
    assert restored.state_hash() == original.state_hash()
    tail = commands[cut:]
    assert apply_all(restored, tail, cut + 1) == apply_all(original, tail, cut + 1)
    assert restored.snapshot() == original.snapshot()


def test_the_same_sequence_twice_gives_the_same_hash():
    commands = random_commands(5, 2_000)
    first, second = new_engine(), new_engine()
    assert apply_all(first, commands) == apply_all(second, commands)
    assert first.state_hash() == second.state_hash()
    other = new_engine()
    apply_all(other, commands[:-1])
    assert other.state_hash() != first.state_hash()


_HASH_SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from engine_workload import SYMBOLS, random_commands
from exchange_node.engine.engine import Engine
engine = Engine(SYMBOLS, dedup_max_keys=64, finished_window=64, trade_history=20)
for index, command in enumerate(random_commands(5, 2_000), start=1):
    engine.apply(command, log_index=index, timestamp_ns=index * 250_000_000)
print(engine.state_hash())
"""


def test_two_processes_with_different_hash_seeds_agree():
    engine = new_engine()
    apply_all(engine, random_commands(5, 2_000))
    script = _HASH_SCRIPT.format(here=str(Path(__file__).parent))
    hashes = set()
    for hash_seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        hashes.add(out.stdout.strip())
    assert hashes == {engine.state_hash()}


def test_apply_entry_batches_equal_command_by_command_application():
    commands = random_commands(8, 900)
    by_entry, by_command = new_engine(), new_engine()
    rng = random.Random(3)
    position = 0
    log_index = 0
    while position < len(commands):
        size = rng.randint(1, 40)
        batch = commands[position : position + size]
        log_index += 1
        timestamp_ns = 1_000_000 * log_index
        entry_results = by_entry.apply_entry(log_index, encode_batch(timestamp_ns, batch))
        command_results = [
            by_command.apply(command, log_index=log_index, timestamp_ns=timestamp_ns)
            for command in batch
        ]
        assert [r.to_dict() for r in entry_results] == [r.to_dict() for r in command_results]
        position += size
    assert by_entry.state_hash() == by_command.state_hash()
    assert by_entry.applied_index == log_index


def test_restore_then_replaying_old_entries_changes_nothing():
    engine = new_engine()
    entries = [
        encode_batch(i * 1_000, random_commands(i, 20)) for i in range(1, 11)
    ]  # ten log entries
    for index, entry in enumerate(entries[:6], start=1):
        engine.apply_entry(index, entry)
    restored = Engine.restore(engine.snapshot())
    before = restored.state_hash()
    for index, entry in enumerate(entries[:6], start=1):
        assert restored.apply_entry(index, entry) == []
    assert restored.state_hash() == before
    for index, entry in enumerate(entries[6:], start=7):
        restored.apply_entry(index, entry)
        engine.apply_entry(index, entry)
    assert restored.state_hash() == engine.state_hash()


def test_corrupt_snapshots_raise_snapshot_error():
    engine = new_engine()
    apply_all(engine, random_commands(9, 300))
    snapshot = engine.snapshot()
    with pytest.raises(SnapshotError):
        Engine.restore(b"")
    with pytest.raises(SnapshotError):
        Engine.restore(b"XXXX" + snapshot[4:])
    with pytest.raises(SnapshotError):
        Engine.restore(snapshot[:4] + b"\x63" + snapshot[5:])
    with pytest.raises(SnapshotError):
        Engine.restore(snapshot + b"\x00")
    for cut in range(0, len(snapshot), max(1, len(snapshot) // 300)):
        with pytest.raises(SnapshotError):
            Engine.restore(snapshot[:cut])
    rng = random.Random(1)
    for _ in range(300):
        damaged = bytearray(snapshot)
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        with contextlib.suppress(SnapshotError):
            Engine.restore(bytes(damaged))


def test_snapshot_preserves_priority_inside_a_level():
    engine = new_engine()
    for n, client in enumerate(["alice", "bob", "carol", "dave"]):
        engine.apply(
            NewOrder(client, f"o{n}", "AAA", Side.SELL, OrderType.LIMIT, TimeInForce.GTC, 101, 5),
            log_index=n + 1,
            timestamp_ns=0,
        )
    restored = Engine.restore(engine.snapshot())
    result = restored.apply(
        NewOrder("eve", "x", "AAA", Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 101, 20),
        log_index=9,
        timestamp_ns=0,
    )
    makers = [e.maker_client_id for e in result.events if e.kind == "fill"]
    assert makers == ["alice", "bob", "carol", "dave"]

"""Exactly-once retention: a horizon in replicated entry time, bounded by a cap on keys.

What is checked: a retry inside the horizon returns the original result (the
same object: nothing applied twice) and one at or past it is a new command;
the cap bounds the table and counts what it drops early; two replicas fed the
same entries forget the same keys at the same entry, and so does one restored
from a snapshot; snapshots of versions 2 and 3 (written before the horizon)
are still read. ``check_exactly_once`` is the oracle; the planted engines at
the end show it failing on eviction by count, by log index and off by one.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_workload import SYMBOLS, random_commands
from exchange_node.engine.commands import (
    AddSymbol,
    Command,
    NewOrder,
    OrderType,
    Side,
    TimeInForce,
    encode_batch,
)
from exchange_node.engine.engine import Engine
from exchange_node.engine.events import CommandResult, Status
from exchange_node.engine.snapshot import SNAPSHOT_VERSION, SnapshotError, encode_snapshot
from exchange_node.engine.state import EngineState
from exchange_node.limits import ENGINE_DEDUP_HORIZON_NS, ENGINE_DEDUP_MAX_KEYS
from hypothesis import given, settings
from hypothesis import strategies as st

DATA = Path(__file__).parent / "fixtures"
HORIZON = 1_000
"""A short horizon (ns) for the tests: entries below are stamped a few ns to a few horizons apart."""
AAA = [AddSymbol("AAA", 1, 1, 0, 100)]

Entry = tuple[int, list[str]]
"""(stamp in ns, client order ids of the IOC orders the entry carries; client "c")."""


def ioc(client_order_id: str, client_id: str = "c") -> NewOrder:
    """An IOC buy into an empty book: it expires at once, so its key never names a live order."""
    return NewOrder(
        client_id, client_order_id, "AAA", Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 100, 1
    )


def check_exactly_once(
    engine: Engine, entries: list[Entry], horizon: int, first_index: int = 1
) -> None:
    """Apply ``entries`` and check every answer against the horizon rule (no cap in play).

    The engine clock is the highest stamp so far. A key last applied (as a new command)
    at clock ``t`` is answered with that same result object while the clock at the
    retry's entry is below ``t + horizon``, and is a new command (a result of the retry's
    own entry) from ``t + horizon`` on.
    """
    remembered: dict[str, tuple[CommandResult, int]] = {}
    clock = engine.state.now
    for offset, (stamp, keys) in enumerate(entries):
        index = first_index + offset
        clock = max(clock, stamp)
        results = engine.apply_entry(index, encode_batch(stamp, [ioc(key) for key in keys]))
        for key, result in zip(keys, results, strict=True):
            known = remembered.get(key)
            if known is not None and clock < known[1] + horizon:
                assert result is known[0], f"entry {index}: retry of {key} applied again"
            else:
                assert result.log_index == index and result.status is Status.EXPIRED, (
                    f"entry {index}: {key} (retained at {known and known[1]}, clock {clock}) "
                    "answered from the past"
                )
                remembered[key] = (result, clock)


keys = st.lists(st.sampled_from(["k0", "k1", "k2", "k3", "k4"]), min_size=0, max_size=4)
gaps = st.sampled_from([0, 0, 1, 7, HORIZON - 1, HORIZON, HORIZON + 1, 3 * HORIZON, -5])


def to_entries(steps: list[tuple[int, list[str]]]) -> list[Entry]:
    stamp = 10_000
    entries = []
    for gap, entry_keys in steps:
        stamp += gap
        entries.append((stamp, entry_keys))
    return entries


@settings(settings.get_profile("engine"), max_examples=300)
@given(st.lists(st.tuples(gaps, keys), min_size=1, max_size=40))
def test_a_retry_inside_the_horizon_is_never_applied_twice_and_after_it_is_new(steps) -> None:
    engine = Engine(AAA, dedup_horizon_ns=HORIZON)
    check_exactly_once(engine, to_entries(steps), HORIZON)
    engine.state.check_invariants()


def test_the_boundary_is_exact_and_a_late_stamp_moves_nothing() -> None:
    engine = Engine(AAA, dedup_horizon_ns=HORIZON)
    first = engine.apply_entry(1, encode_batch(5_000, [ioc("a")]))[0]
    # A new leader with a slower clock: its stamp does not move the engine clock back.
    assert engine.apply_entry(2, encode_batch(100, [ioc("a")]))[0] is first
    assert engine.apply_entry(3, encode_batch(5_000 + HORIZON - 1, [ioc("a")]))[0] is first
    again = engine.apply_entry(4, encode_batch(5_000 + HORIZON, [ioc("a")]))[0]
    assert again is not first and again.log_index == 4
    assert engine.retention_stats()["exactly_once_expired"] == 1
    # The key was retained again by entry 4, at its clock.
    assert engine.apply_entry(5, encode_batch(5_000 + 2 * HORIZON - 1, [ioc("a")]))[0] is again


def test_a_forgotten_key_naming_a_live_order_is_rejected_not_placed_twice() -> None:
    engine = Engine(AAA, dedup_horizon_ns=HORIZON)
    gtc = NewOrder("c", "live", "AAA", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 99, 1)
    placed = engine.apply_entry(1, encode_batch(1, [gtc]))[0]
    retry = engine.apply_entry(2, encode_batch(1 + HORIZON, [gtc]))[0]
    assert placed.status is Status.NEW and retry.status is Status.REJECTED
    assert retry.events[0].reason.name == "DUPLICATE_CLIENT_ORDER_ID"
    assert engine.resting_order_count() == 1


# ---------------------------------------------------------------- the cap


@settings(settings.get_profile("engine"), max_examples=100)
@given(st.integers(1, 12), st.lists(st.tuples(gaps, keys), min_size=1, max_size=40))
def test_the_cap_bounds_the_table_and_counts_every_early_eviction(cap, steps) -> None:
    engine = Engine(AAA, dedup_horizon_ns=HORIZON, dedup_max_keys=cap)
    retained = 0
    for index, (stamp, entry_keys) in enumerate(to_entries(steps), start=1):
        results = engine.apply_entry(index, encode_batch(stamp, [ioc(key) for key in entry_keys]))
        # Every new keyed command is retained (a repeat inside the entry returns the first).
        retained += len({id(r) for r in results if r.log_index == index})
        assert len(engine.state.results) <= cap
        engine.state.check_invariants()
    stats = engine.retention_stats()
    # Every key ever retained is still held, or was forgotten at its horizon, or dropped
    # early by the cap: nothing leaves uncounted.
    assert retained == (
        stats["exactly_once_keys"]
        + stats["exactly_once_expired"]
        + stats["exactly_once_evicted_by_cap"]
    )


def test_the_cap_evicts_oldest_first_and_the_stats_say_so() -> None:
    engine = Engine(AAA, dedup_horizon_ns=10 * HORIZON, dedup_max_keys=3)
    for index, key in enumerate(["a", "b", "c", "d", "e"], start=1):
        engine.apply_entry(index, encode_batch(index * 10, [ioc(key)]))
    assert list(engine.state.result_fifo) == [("c", "c"), ("c", "d"), ("c", "e")]
    assert engine.retention_stats() == {
        "exactly_once_keys": 3,
        "exactly_once_max_keys": 3,
        "exactly_once_horizon_ns": 10 * HORIZON,
        "exactly_once_evicted_by_cap": 2,
        "exactly_once_expired": 0,
        "exactly_once_oldest_ns": 30,
        "exactly_once_covered_ns": 20,
        "finished_orders": 5,
        "finished_max_orders": engine.state.finished_window,
        "engine_clock_ns": 50,
    }
    # "a" was dropped early: a retry of it is a new command, as after its horizon.
    assert engine.apply_entry(6, encode_batch(60, [ioc("a")]))[0].log_index == 6
    engine.apply_entry(7, encode_batch(60 + 10 * HORIZON, []))
    stats = engine.retention_stats()
    assert stats["exactly_once_keys"] == 0 and stats["exactly_once_oldest_ns"] == 0
    assert stats["exactly_once_expired"] == 3 and stats["exactly_once_evicted_by_cap"] == 3


def _growth(engine: Engine) -> int:
    """Traced heap growth over 6,000 keyed commands, after 2,000 that fill every table."""

    def run(first: int, count: int) -> None:
        for index in range(first, first + count):
            engine.apply_entry(index, encode_batch(index, [ioc(f"k{index}")]))

    run(1, 2_000)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run(2_001, 6_000)
        gc.collect()
        return int(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_at_the_cap() -> None:
    capped = Engine(AAA, dedup_max_keys=500, finished_window=50)
    grown = _growth(capped)
    assert len(capped.state.results) == 500
    assert capped.retention_stats()["exactly_once_evicted_by_cap"] == 7_500
    uncapped = Engine(AAA, dedup_max_keys=1 << 30, finished_window=50)
    unbounded = _growth(uncapped)
    assert len(uncapped.state.results) == 8_000
    # What is left of the growth is dict and deque slack (tables resize by powers of two).
    assert grown * 5 < unbounded, (grown, unbounded)


# ---------------------------------------------------------------- replicas and snapshots


def replica_entries(seed: int, count: int) -> list[tuple[int, bytes]]:
    """The random workload in entries of 1-4 commands whose stamps sometimes jump a horizon
    or go back (a new leader's slower clock)."""
    commands = random_commands(seed, count)
    entries = []
    stamp = 1_000_000
    position = 0
    index = 0
    while position < len(commands):
        index += 1
        size = 1 + (seed * 7 + index * 13) % 4
        jump = (seed + index * 31) % 9
        stamp += (0, 0, 1, 10, 100, HORIZON // 3, HORIZON, -50, 3)[jump]
        entries.append((stamp, encode_batch(stamp, commands[position : position + size])))
        position += size
    return entries


def small_engine() -> Engine:
    return Engine(SYMBOLS, dedup_horizon_ns=HORIZON, dedup_max_keys=6, finished_window=16)


def retention_of(engine: Engine) -> tuple[object, ...]:
    st_ = engine.state
    return (
        list(st_.result_fifo),
        list(st_.result_times),
        st_.results_evicted_by_cap,
        st_.results_expired,
        [r.to_dict() for r in st_.results.values()],
    )


@settings(settings.get_profile("engine"), max_examples=25)
@given(st.integers(0, 10_000), st.integers(0, 150))
def test_replicas_and_a_restored_replica_forget_the_same_keys_at_the_same_entry(seed, cut) -> None:
    entries = replica_entries(seed, 500)
    first, second = small_engine(), small_engine()
    restored: Engine | None = None
    for index, (_stamp, data) in enumerate(entries, start=1):
        answers = [r.to_dict() for r in first.apply_entry(index, data)]
        assert [r.to_dict() for r in second.apply_entry(index, data)] == answers
        if restored is not None:
            assert [r.to_dict() for r in restored.apply_entry(index, data)] == answers
            assert retention_of(restored) == retention_of(first), f"entry {index}"
        assert retention_of(second) == retention_of(first), f"entry {index}"
        if index == cut:
            restored = Engine.restore(first.snapshot())
            assert retention_of(restored) == retention_of(first)
    assert first.state.results_expired and first.state.results_evicted_by_cap  # both in play
    assert first.state_hash() == second.state_hash()
    if restored is not None:
        assert restored.state_hash() == first.state_hash()
        assert restored.snapshot() == first.snapshot()


def test_the_snapshot_carries_the_horizon_the_cap_the_times_and_the_counters() -> None:
    engine = Engine(AAA, dedup_horizon_ns=HORIZON, dedup_max_keys=4)
    for index, (stamp, key) in enumerate([(10, "a"), (10, "b"), (20, "c"), (900, "d"), (990, "e")]):
        engine.apply_entry(index + 1, encode_batch(stamp, [ioc(key)]))
    engine.apply_entry(6, encode_batch(1_015, [ioc("f")]))  # "b" and "c" drop at 1,010 and 1,020
    data = engine.snapshot()
    assert data[4] == SNAPSHOT_VERSION == 5
    restored = Engine.restore(data)
    st_ = restored.state
    assert (st_.dedup_horizon_ns, st_.dedup_max_keys) == (HORIZON, 4)
    assert list(st_.result_times) == [20, 900, 990, 1_015]
    assert (st_.results_evicted_by_cap, st_.results_expired) == (1, 1)
    assert restored.retention_stats() == engine.retention_stats()
    # The restored replica forgets "c" at the same entry as the original.
    for replica in (engine, restored):
        assert replica.apply_entry(7, encode_batch(1_019, [ioc("c")]))[0].log_index == 3
        assert replica.apply_entry(8, encode_batch(1_020, [ioc("c")]))[0].log_index == 8


def _times(*times: int) -> bytes:
    """The keys' times column of a version 5 exactly-once block: i64 per key."""
    return b"".join(t.to_bytes(8, "little", signed=True) for t in times)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(_times(10, 20, 10), id="times not rising"),
        pytest.param(_times(-2_000, -2_000, 20), id="beyond the horizon"),
    ],
)
def test_a_snapshot_with_bad_retention_times_is_refused(bad: bytes) -> None:
    engine = Engine(AAA, dedup_horizon_ns=HORIZON)
    engine.apply_entry(1, encode_batch(10, [ioc("a"), ioc("b")]))
    engine.apply_entry(2, encode_batch(20, [ioc("c")]))
    data = encode_snapshot(engine.state, compress=False)  # the block stored as is
    good = _times(10, 10, 20)
    at = data.index(good)
    assert Engine.restore(data[:at] + good + data[at + len(good) :]).state_hash()
    with pytest.raises(SnapshotError):
        Engine.restore(data[:at] + bad + data[at + len(good) :])


def test_a_version_4_snapshot_is_still_read() -> None:
    """``fixtures/snapshot_v4.bin`` was written by the engine of commit c921c19 (version 4,
    the keys' times run-length coded): ``Engine(SYMBOLS, dedup_horizon_ns=10 s,
    dedup_max_keys=64, finished_window=64, trade_history=20)`` applying
    ``random_commands(21, 300)`` and ``SetOrderLimits(None, 40)`` one per log index,
    stamped ``(index // 2) * 250 ms`` (43 keys retained, 128 forgotten at the horizon)."""
    from exchange_node.engine.commands import SetOrderLimits

    data = (DATA / "snapshot_v4.bin").read_bytes()
    assert data[4] == 4
    old = Engine.restore(data)
    commands: list[Command] = [*random_commands(21, 300), SetOrderLimits(None, 40)]
    replayed = Engine(
        SYMBOLS,
        dedup_horizon_ns=10_000_000_000,
        dedup_max_keys=64,
        finished_window=64,
        trade_history=20,
    )
    for index, command in enumerate(commands, start=1):
        replayed.apply(command, log_index=index, timestamp_ns=(index // 2) * 250_000_000)
    st_ = old.state
    assert len(st_.result_fifo) == 43 and st_.results_expired == 128
    assert list(st_.result_times) == list(replayed.state.result_times)
    st_.check_invariants()
    # The whole state is the replayed one: the same version 5 bytes and hash.
    assert old.snapshot() == replayed.snapshot()
    assert old.state_hash() == replayed.state_hash()


@pytest.mark.parametrize("version", [2, 3])
def test_snapshots_written_before_the_horizon_are_still_read(version: int) -> None:
    """``fixtures/snapshot_v{2,3}.bin`` were written by the engine of commit 7d6f30e (a count
    window of 64 keys): ``Engine(SYMBOLS, dedup_window=64, finished_window=64,
    trade_history=20)`` applying ``random_commands(21, 300)`` (plus ``SetOrderLimits(None,
    40)`` for version 3) one per log index, stamped ``index * 250 ms``."""
    from exchange_node.engine.commands import SetOrderLimits

    data = (DATA / f"snapshot_v{version}.bin").read_bytes()
    assert data[4] == version
    old = Engine.restore(data)
    commands: list[Command] = list(random_commands(21, 300))
    if version == 3:
        commands.append(SetOrderLimits(None, 40))
    # The same log applied by this engine with the old window as its cap (no key reaches
    # 24 h): the same books, orders, results and the same 64 keys in the same order.
    replayed = Engine(SYMBOLS, dedup_max_keys=64, finished_window=64, trade_history=20)
    for index, command in enumerate(commands, start=1):
        replayed.apply(command, log_index=index, timestamp_ns=index * 250_000_000)
    st_, expected = old.state, replayed.state
    assert list(st_.result_fifo) == list(expected.result_fifo) and len(st_.result_fifo) == 64
    assert [r.to_dict() for r in st_.results.values()] == [
        r.to_dict() for r in expected.results.values()
    ]
    assert st_.orders.keys() == expected.orders.keys()
    assert st_.finished.keys() == expected.finished.keys()
    assert old.max_open_orders() == (40 if version == 3 else 0)
    assert [old.positions(c) for c in ("alice", "bob")] == [
        replayed.positions(c) for c in ("alice", "bob")
    ]
    # Read with the default horizon and cap; the keys count from the snapshot's clock.
    assert st_.dedup_horizon_ns == ENGINE_DEDUP_HORIZON_NS
    assert st_.dedup_max_keys == ENGINE_DEDUP_MAX_KEYS
    assert set(st_.result_times) == {st_.now} and st_.now == len(commands) * 250_000_000
    st_.check_invariants()
    # A retry of a retained key is answered; the engine writes version 4 and reads it back.
    key = st_.result_fifo[-1]
    retry = NewOrder(key[0], key[1], "AAA", Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 100, 1)
    assert (
        old.apply(retry, log_index=len(commands) + 1, timestamp_ns=st_.now + 1)
        is (st_.results[key])
    )
    again = Engine.restore(old.snapshot())
    assert again.snapshot()[4] == 5 and again.state_hash() == old.state_hash()


# ---------------------------------------------------------------- planted faults


def _by_count(self: EngineState) -> None:
    """Planted: forget by how many keys came since (a local count), not by time."""
    while len(self.result_fifo) > 3:
        self.result_times.popleft()
        del self.results[self.result_fifo.popleft()]
        self.results_expired += 1


def _by_log_index(self: EngineState) -> None:
    """Planted: treat the log index as the time."""
    times = self.result_times
    while times and self.results[self.result_fifo[0]].log_index <= self.log_index - 3:
        times.popleft()
        del self.results[self.result_fifo.popleft()]
        self.results_expired += 1


def _off_by_one(self: EngineState) -> None:
    """Planted: keep a key one nanosecond past its horizon."""
    times = self.result_times
    while times and times[0] < self.now - self.dedup_horizon_ns:
        times.popleft()
        del self.results[self.result_fifo.popleft()]
        self.results_expired += 1


PLANTS: dict[str, Callable[[EngineState], None]] = {
    "evict by local count": _by_count,
    "evict by log index": _by_log_index,
    "off by one": _off_by_one,
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_the_oracle_catches_planted_eviction_rules(
    plant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = [(0, ["k0", "k1", "k2", "k3"]), (1, ["k0"]), (HORIZON - 1, ["k1"]), (0, ["k2"])]
    steps += [(1, ["k3", "k4"]), (HORIZON, ["k4"]), (5, ["k0", "k1"])]
    steps += [(1, ["k5"]), (1, []), (1, []), (1, []), (1, ["k5"])]
    check_exactly_once(Engine(AAA, dedup_horizon_ns=HORIZON), to_entries(steps), HORIZON)
    monkeypatch.setattr(EngineState, "expire_results", PLANTS[plant])
    # The engine only calls expire_results once the oldest key's horizon is reached; a rule
    # by count or index would run on every entry, so the plant runs there too.
    original = Engine.apply_entry

    def apply_entry(self: Engine, log_index: int, data: bytes) -> list[CommandResult]:
        self.state.expire_results()
        return original(self, log_index, data)

    monkeypatch.setattr(Engine, "apply_entry", apply_entry)
    with pytest.raises(AssertionError):
        check_exactly_once(Engine(AAA, dedup_horizon_ns=HORIZON), to_entries(steps), HORIZON)

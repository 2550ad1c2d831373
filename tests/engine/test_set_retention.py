"""SetRetention: the exactly-once horizon and cap and the finished-order window, set
through the log (so every replica holds the same), in force at the entry that sets them.

What is checked: a lowered cap or window forgets the oldest entries at once and
counts the dropped keys as cap evictions; a shortened horizon forgets what it no
longer covers at once, and a lengthened one keeps answering retries it covers;
out-of-range values are rejected and change nothing; the settings survive a
snapshot, and a replica restored from one agrees with one that replayed the log.
"""

from __future__ import annotations

from exchange_node.engine.commands import (
    AddSymbol,
    Command,
    NewOrder,
    OrderType,
    RejectReason,
    SetRetention,
    Side,
    TimeInForce,
    encode_batch,
)
from exchange_node.engine.engine import Engine
from exchange_node.engine.events import CommandResult, Rejected, Status

HOUR = 3_600 * 10**9


def ioc(key: str) -> NewOrder:
    """An IOC buy into an empty book: it expires at once (its key names no live order)."""
    return NewOrder("c", key, "AAA", Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 100, 1)


class Log:
    """One engine fed one entry per call, through the wire encoding."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.index = 0
        self.apply(0, [AddSymbol("AAA", 1, 1, 0, 100)])

    def apply(self, stamp: int, commands: list[Command]) -> list[CommandResult]:
        self.index += 1
        return self.engine.apply_entry(self.index, encode_batch(stamp, commands))


def settings_of(engine: Engine) -> tuple[int, int, int]:
    stats = engine.retention_stats()
    return (
        stats["exactly_once_horizon_ns"],
        stats["exactly_once_max_keys"],
        stats["finished_max_orders"],
    )


def test_a_lowered_cap_and_window_forget_the_oldest_at_once_and_count_it() -> None:
    log = Log()
    first = log.apply(1, [ioc(f"k{i}") for i in range(10)])
    (result,) = log.apply(2, [SetRetention(HOUR, 4, 3)])
    assert result.status is Status.ACCEPTED
    stats = log.engine.retention_stats()
    assert settings_of(log.engine) == (HOUR, 4, 3)
    assert stats["exactly_once_keys"] == 4
    assert stats["exactly_once_evicted_by_cap"] == 6
    assert stats["finished_orders"] == 3
    # The four newest keys are still answered from the past; the oldest are new commands.
    retries = log.apply(3, [ioc("k9"), ioc("k6"), ioc("k5"), ioc("k0")])
    assert retries[0] is first[9] and retries[1] is first[6]
    assert [r.log_index for r in retries[2:]] == [log.index, log.index]
    log.engine.state.check_invariants()


def test_a_shorter_horizon_forgets_at_once_and_a_longer_one_keeps_answering() -> None:
    log = Log()
    old = log.apply(1_000, [ioc("old")])
    young = log.apply(5_000, [ioc("young")])
    # Horizon 2 us at clock 5 us: "old" (1 us) is past it, "young" is not.
    log.apply(5_000, [SetRetention(2_000, 1_000, 1_000)])
    assert log.engine.retention_stats()["exactly_once_keys"] == 1
    (again,) = log.apply(5_500, [ioc("young")])
    assert again is young[0]
    (fresh,) = log.apply(5_500, [ioc("old")])
    assert fresh is not old[0] and fresh.log_index == log.index
    # Lengthened: "young" (5 us) is still answered at 9 us, past the old 2 us horizon.
    log.apply(5_600, [SetRetention(10_000, 1_000, 1_000)])
    (later,) = log.apply(9_000, [ioc("young")])
    assert later is young[0]


def test_out_of_range_settings_are_rejected_and_change_nothing() -> None:
    log = Log()
    before = settings_of(log.engine)
    for bad in (
        SetRetention(0, 10, 10),
        SetRetention(HOUR, 0, 10),
        SetRetention(HOUR, 10, 0),
        SetRetention(HOUR, 1 << 32, 10),
        SetRetention(400 * 24 * HOUR, 10, 10),
    ):
        (result,) = log.apply(1, [bad])
        assert result.status is Status.REJECTED
        rejected = next(e for e in result.events if isinstance(e, Rejected))
        assert rejected.reason is RejectReason.INVALID_FIELD
        assert settings_of(log.engine) == before


def test_the_settings_survive_a_snapshot_and_replicas_agree() -> None:
    replayed, other = Log(), Log()
    for log in (replayed, other):
        log.apply(1, [ioc(f"a{i}") for i in range(50)])
        log.apply(2, [SetRetention(7 * HOUR, 20, 5)])
        log.apply(3, [ioc(f"b{i}") for i in range(30)])
    restored = Engine.restore(replayed.engine.snapshot())
    assert settings_of(restored) == settings_of(other.engine) == (7 * HOUR, 20, 5)
    assert restored.state_hash() == other.engine.state_hash() == replayed.engine.state_hash()
    # And they go on alike: the cap of 20 holds on every copy.
    for engine in (restored, other.engine):
        engine.apply_entry(replayed.index + 1, encode_batch(4, [ioc(f"c{i}") for i in range(9)]))
        assert engine.retention_stats()["exactly_once_keys"] == 20
    assert restored.state_hash() == other.engine.state_hash()

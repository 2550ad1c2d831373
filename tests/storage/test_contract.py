"""One conformance suite for every ``RaftStorage``: the real WAL and the simulator's disk.

The simulator trusts ``SimStorage`` to behave like the real storage; these
scenarios hold it to that. Each runs against both through a small harness that
knows how to crash each kind ("durable state only" after a crash) and which
exception each raises for a compacted read or a broken contract.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
from exchange_node.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from exchange_node.storage import LogCompactedError, LogContractError, RaftStorage, open_storage
from storage_workload import Workload, make_entry, state_key

SEGMENT_BYTES = 8 << 10


class WalHarness:
    name = "wal"
    compacted_error: type[Exception] = LogCompactedError
    contract_error: type[Exception] = LogContractError

    def __init__(self, tmp_path) -> None:
        self.data_dir = str(tmp_path / "data")
        self.storage = self._open()

    def _open(self) -> Any:
        return open_storage(self.data_dir, segment_bytes=SEGMENT_BYTES, keep_snapshots=2)

    def crash(self) -> RaftStorage:
        """The process dies and restarts: only what reached the disk remains."""
        # save() returns only after fdatasync, so there is nothing unsynced to lose;
        # closing releases the lock the way the kernel does for a dead process.
        self.storage.close()
        self.storage = self._open()
        return self.storage

    def crash_during_save(self, rng: random.Random | None = None, **save: Any) -> RaftStorage:
        """A save whose write never fully reached the disk (a prefix of it may have)."""
        segment = self.storage._segments[-1].path
        before = os.path.getsize(segment)
        self.storage.save(**save)
        assert self.storage._segments[-1].path == segment
        after = os.path.getsize(segment)
        self.storage.close()
        keep = rng.randrange(after - before) if rng else 0
        os.truncate(segment, before + keep)
        self.storage = self._open()
        return self.storage

    def close(self) -> None:
        self.storage.close()


class SimHarness:
    name = "sim"

    def __init__(self, tmp_path) -> None:
        from exchange_node.sim.disk import SimStorage, StorageError

        self.compacted_error = StorageError
        self.contract_error = StorageError
        self.storage = SimStorage()

    def crash(self) -> RaftStorage:
        self.storage.crash()
        return self.storage

    def crash_during_save(self, rng: random.Random | None = None, **save: Any) -> RaftStorage:
        self.storage.write(**save)
        self.storage.crash(rng)
        return self.storage

    def close(self) -> None:
        self.storage.close()


def _sim_available() -> bool:
    try:
        import exchange_node.sim.disk  # noqa: F401
    except ImportError:
        return False
    return True


HARNESSES = [
    pytest.param(WalHarness, id="wal"),
    pytest.param(
        SimHarness,
        id="sim",
        marks=pytest.mark.skipif(not _sim_available(), reason="exchange_node.sim.disk missing"),
    ),
]


@pytest.fixture(params=HARNESSES)
def harness(request, tmp_path) -> Iterator[Any]:
    h = request.param(tmp_path)
    yield h
    h.close()


def entries(first: int, last: int, term: int) -> list[Entry]:
    return [make_entry(i, term) for i in range(first, last + 1)]


def snapshot(index: int, term: int, data: bytes = b"app state") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState((1, 2, 3), (4,))), data)


def durable(storage: RaftStorage) -> tuple:
    state = storage.recover()
    return state_key(state.hard_state, state.snapshot, state.entries)


def test_empty_storage(harness):
    storage = harness.storage
    state = storage.recover()
    assert state.hard_state == HardState() and state.snapshot is None and state.entries == []
    assert (storage.first_index(), storage.last_index()) == (1, 0)
    assert storage.entries(1, 10) == []
    storage = harness.crash()
    assert durable(storage) == state_key(HardState(), None, [])


def test_appends_are_read_back_and_survive_a_crash(harness):
    storage = harness.storage
    storage.recover()
    storage.save(entries=entries(1, 3, 1), hard_state=HardState(1, 1, 0))
    storage.save(entries=entries(4, 4, 1))
    storage.save(entries=entries(5, 60, 1), hard_state=HardState(1, 1, 4))
    assert (storage.first_index(), storage.last_index()) == (1, 60)
    assert storage.entries(1, 61) == entries(1, 60, 1)
    assert storage.entries(10, 13) == entries(10, 12, 1)
    assert storage.entries(58, 1000) == entries(58, 60, 1)  # clamped at the end
    assert storage.entries(61, 70) == []
    storage = harness.crash()
    assert durable(storage) == state_key(HardState(1, 1, 4), None, entries(1, 60, 1))
    assert storage.entries(30, 32) == entries(30, 31, 1)
    storage.save(entries=entries(61, 62, 1))  # appending goes on after a crash
    assert storage.last_index() == 62


def test_overwriting_a_suffix_replaces_it_durably(harness):
    storage = harness.storage
    storage.recover()
    storage.save(entries=entries(1, 40, 1), hard_state=HardState(1, 1, 10))
    storage.save(entries=entries(25, 27, 2), hard_state=HardState(2, 2, 10))
    expected = entries(1, 24, 1) + entries(25, 27, 2)
    assert storage.last_index() == 27
    assert storage.entries(1, 100) == expected
    storage = harness.crash()
    assert durable(storage) == state_key(HardState(2, 2, 10), None, expected)
    # Overwrite again, right after the crash, at the very end and further back.
    storage.save(entries=entries(27, 28, 3))
    storage.save(entries=entries(12, 12, 4))
    expected = entries(1, 11, 1) + entries(12, 12, 4)
    storage = harness.crash()
    assert durable(storage) == state_key(HardState(2, 2, 10), None, expected)


def test_hard_state_alone_is_durable(harness):
    storage = harness.storage
    storage.recover()
    storage.save(hard_state=HardState(5, 3, 0))
    storage = harness.crash()
    assert storage.recover().hard_state == HardState(5, 3, 0)
    storage.save(hard_state=HardState(5, 3, 0))  # unchanged: nothing to write
    storage.save(entries=entries(1, 2, 5), hard_state=HardState(6, 0, 2))
    storage = harness.crash()
    assert storage.recover().hard_state == HardState(6, 0, 2)


def test_leader_snapshot_replaces_the_whole_log(harness):
    storage = harness.storage
    storage.recover()
    storage.save(entries=entries(1, 10, 1), hard_state=HardState(1, 1, 3))
    storage.save(
        snapshot=snapshot(20, 3), entries=entries(21, 25, 3), hard_state=HardState(3, 0, 20)
    )
    assert (storage.first_index(), storage.last_index()) == (21, 25)
    with pytest.raises(harness.compacted_error):
        storage.entries(5, 22)
    storage = harness.crash()
    assert durable(storage) == state_key(HardState(3, 0, 20), snapshot(20, 3), entries(21, 25, 3))
    # Even a snapshot inside the log replaces all of it (the leader only sends one
    # when the logs disagree).
    storage.save(snapshot=snapshot(22, 4), hard_state=HardState(4, 0, 22))
    assert (storage.first_index(), storage.last_index()) == (23, 22)
    storage = harness.crash()
    assert durable(storage) == state_key(HardState(4, 0, 22), snapshot(22, 4), [])
    storage.save(entries=entries(23, 24, 4))
    assert storage.entries(23, 25) == entries(23, 24, 4)


def test_application_snapshot_compacts_only_the_prefix(harness):
    storage = harness.storage
    storage.recover()
    for first in range(1, 301, 30):
        storage.save(entries=entries(first, first + 29, 2), hard_state=HardState(2, 1, first))
    storage.save_snapshot(snapshot(150, 2, b"x" * 3000))
    assert (storage.first_index(), storage.last_index()) == (151, 300)
    assert storage.entries(151, 153) == entries(151, 152, 2)
    with pytest.raises(harness.compacted_error):
        storage.entries(150, 152)
    storage.save_snapshot(snapshot(100, 2))  # older than the one in force: ignored
    assert storage.first_index() == 151
    with pytest.raises(harness.contract_error):
        storage.save_snapshot(snapshot(301, 2))  # beyond the log
    storage = harness.crash()
    expected = state_key(HardState(2, 1, 271), snapshot(150, 2, b"x" * 3000), entries(151, 300, 2))
    assert durable(storage) == expected
    storage.save_snapshot(snapshot(300, 2))
    assert (storage.first_index(), storage.last_index()) == (301, 300)
    storage = harness.crash()
    assert durable(storage) == state_key(HardState(2, 1, 271), snapshot(300, 2), [])


def test_a_gap_is_refused_and_changes_nothing(harness):
    storage = harness.storage
    storage.recover()
    storage.save(entries=entries(1, 5, 1))
    with pytest.raises(harness.contract_error):
        storage.save(entries=entries(7, 8, 1))
    assert storage.last_index() == 5
    storage = harness.crash()
    assert durable(storage) == state_key(HardState(), None, entries(1, 5, 1))


def test_a_save_that_never_reached_the_disk_vanishes_on_crash(harness):
    storage = harness.storage
    storage.recover()
    storage.save(entries=entries(1, 20, 1), hard_state=HardState(1, 1, 5))
    before = durable(storage)
    storage = harness.crash_during_save(entries=entries(15, 30, 2), hard_state=HardState(2, 2, 5))
    assert durable(storage) == before
    assert storage.last_index() == 20


@pytest.mark.parametrize("seed", range(6))
def test_a_torn_save_leaves_a_state_the_log_may_hold(harness, seed):
    """Both may keep part of a torn batch (the WAL keeps none of it: its batches are
    atomic); neither may keep anything else."""
    storage = harness.storage
    storage.recover()
    old = entries(1, 20, 1)
    storage.save(entries=old, hard_state=HardState(1, 1, 5))
    new = entries(15, 30, 2)
    storage = harness.crash_during_save(
        random.Random(seed), entries=new, hard_state=HardState(2, 2, 5)
    )
    state = storage.recover()
    kept = state.entries[14:]
    assert state.entries[:14] == old[:14]
    assert kept == old[14:] or kept == new[: len(kept)]
    if state.hard_state != HardState(1, 1, 5):
        assert state.hard_state == HardState(2, 2, 5) and kept == new


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_seeded_workload_with_crashes_matches_the_model(harness, seed):
    workload = Workload(seed, big_snapshots=False)
    rng = random.Random(seed)
    storage = harness.storage
    storage.recover()
    for _ in range(150):
        workload.next_op().apply(storage)
        model = workload.model
        if rng.random() < 0.15:
            storage = harness.crash()
            assert durable(storage) == model.key()
        assert (storage.first_index(), storage.last_index()) == (model.base + 1, model.last)
        if model.last > model.base:
            lo = rng.randint(model.base + 1, model.last)
            hi = rng.randint(lo, model.last + 3)
            assert (
                storage.entries(lo, hi) == model.entries[lo - model.base - 1 : hi - model.base - 1]
            )
    storage = harness.crash()
    assert durable(storage) == workload.model.key()

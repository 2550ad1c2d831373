"""The simulator's disk model: durable means synced; a crash loses the rest."""

import random

import pytest
from exchange_node.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from exchange_node.sim.disk import SimStorage, StorageError
from exchange_node.storage.verdict import VerdictKind


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, b"e%d" % i) for i in range(first, last + 1)]


def snapshot(index: int, term: int = 1) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState((1, 2, 3))), b"state@%d" % index)


def test_a_fresh_disk_recovers_nothing():
    disk = SimStorage()
    state = disk.recover()
    assert state.hard_state == HardState()
    assert state.snapshot is None
    assert state.entries == []
    assert (disk.first_index(), disk.last_index()) == (1, 0)


def test_save_is_durable_across_a_crash():
    disk = SimStorage()
    disk.save(entries=entries(1, 3), hard_state=HardState(1, 2, 3))
    disk.crash(random.Random(1))
    state = disk.recover()
    assert state.hard_state == HardState(1, 2, 3)
    assert [e.index for e in state.entries] == [1, 2, 3]


def test_unsynced_writes_vanish_on_crash():
    disk = SimStorage()
    disk.save(entries=entries(1, 2), hard_state=HardState(1, 0, 1))
    disk.write(entries=entries(3, 5), hard_state=HardState(2, 3, 4))
    assert disk.last_index() == 5  # the page cache serves reads before the sync
    assert disk.unsynced == 2
    disk.crash()
    state = disk.recover()
    assert state.hard_state == HardState(1, 0, 1)
    assert [e.index for e in state.entries] == [1, 2]


def test_an_unsynced_truncation_is_undone_by_a_crash():
    disk = SimStorage()
    disk.save(entries=entries(1, 5, term=1))
    disk.write(entries=entries(3, 3, term=2))
    assert [e.term for e in disk.entries(1, 6)] == [1, 1, 2]
    disk.crash()
    assert [(e.index, e.term) for e in disk.recover().entries] == [(i, 1) for i in range(1, 6)]


def test_a_torn_crash_keeps_a_prefix_of_the_unsynced_writes_in_order():
    for seed in range(200):
        disk = SimStorage()
        disk.save(entries=entries(1, 2), hard_state=HardState(1, 0, 2))
        disk.write(entries=entries(3, 6), hard_state=HardState(1, 0, 6))
        disk.crash(random.Random(seed))
        state = disk.recover()
        indexes = [e.index for e in state.entries]
        assert indexes == list(range(1, len(indexes) + 1)) and len(indexes) >= 2
        # The hard state is written last: if it survived, so did every entry.
        if state.hard_state.commit == 6:
            assert indexes[-1] == 6
        else:
            assert state.hard_state == HardState(1, 0, 2)


def test_a_snapshot_from_the_leader_replaces_the_whole_log():
    disk = SimStorage()
    disk.save(entries=entries(1, 4))
    disk.save(snapshot=snapshot(10, term=3), entries=entries(11, 12, term=3))
    state = disk.recover()
    assert state.snapshot is not None and state.snapshot.meta.index == 10
    assert [e.index for e in state.entries] == [11, 12]
    assert (disk.first_index(), disk.last_index()) == (11, 12)
    assert disk.term_at(10) == 3 and disk.term_at(9) is None


def test_an_application_snapshot_compacts_the_covered_log():
    disk = SimStorage()
    disk.save(entries=entries(1, 6))
    disk.save_snapshot(snapshot(4))
    assert disk.first_index() == 5
    assert [e.index for e in disk.entries(5, 7)] == [5, 6]
    with pytest.raises(StorageError):
        disk.entries(3, 5)
    disk.save_snapshot(snapshot(2))  # older than what we have: ignored
    assert disk.first_index() == 5
    disk.crash()
    assert disk.recover().snapshot == snapshot(4)


def test_an_append_that_leaves_a_gap_is_refused():
    disk = SimStorage()
    disk.save(entries=entries(1, 2))
    with pytest.raises(StorageError):
        disk.save(entries=entries(5, 6))


def test_durable_holds_answers_what_a_power_cut_now_would_keep():
    """``durable_holds`` (the acknowledgement checker's question) against the
    reference: a copy of the disk that loses its unsynced writes."""
    import copy

    rng = random.Random(7)
    for _ in range(300):
        disk = SimStorage()
        for _ in range(rng.randint(1, 10)):
            roll = rng.random()
            if roll < 0.6:
                first = rng.randint(disk.first_index(), disk.last_index() + 1)
                term = rng.randint(1, 4)
                disk.write(entries=[Entry(term, first + i, b"x") for i in range(rng.randint(1, 3))])
            elif roll < 0.75:
                at = rng.randint(disk.last_index(), disk.last_index() + 3)
                meta = SnapshotMeta(at, rng.randint(1, 4), ConfState())
                disk.write(snapshot=Snapshot(meta, b""))
            elif roll < 0.85:
                disk.write(hard_state=HardState(rng.randint(1, 9), 0, 0))
            else:
                disk.sync()
        survivor = copy.deepcopy(disk)
        survivor.crash()
        for index in range(1, disk.last_index() + 3):
            for term in range(1, 5):
                if index <= survivor.snapshot_index:
                    kept = survivor.snapshot_index > 0
                else:
                    kept = survivor.term_at(index) == term
                assert disk.durable_holds(index, term) == kept, (index, term)


# -- lost tails: a disk fault loses synced entries; the promise tells it from a torn write


def test_a_lost_tail_is_told_from_a_clean_start_by_the_promise():
    disk = SimStorage()
    disk.save(entries=entries(1, 10, term=2), hard_state=HardState(2, 1, 8))
    assert disk.recovery_verdict().kind is VerdictKind.CLEAN
    assert disk.lose_tail(4) == 4
    state = disk.recover()
    assert [e.index for e in state.entries] == list(range(1, 7))
    assert state.hard_state == HardState(2, 1, 6)  # commit falls back with the log; term/vote stay
    verdict = disk.recovery_verdict()
    assert verdict.kind is VerdictKind.LOST and verdict.must_recover
    assert (verdict.promised_index, verdict.promised_term, verdict.promised_last_term) == (10, 2, 2)
    assert disk.owes
    assert disk.holds_or_owes(9, 2) and not disk.holds_or_owes(9, 3)
    assert not disk.durable_holds(9, 2)


def test_the_debt_survives_restarts_until_the_log_is_back():
    disk = SimStorage()
    disk.save(entries=entries(1, 10), hard_state=HardState(1, 0, 10))
    disk.lose_tail(5)
    assert disk.recovery_verdict().kind is VerdictKind.LOST
    disk.save(entries=entries(6, 8), hard_state=HardState(1, 0, 8))
    disk.crash(random.Random(3))
    assert disk.recovery_verdict().promised_index == 10  # still owed after another restart
    disk.save(entries=entries(9, 10), hard_state=HardState(1, 0, 10))
    assert not disk.owes
    assert disk.recovery_verdict().kind is VerdictKind.CLEAN


def test_a_torn_batch_is_not_a_lost_tail():
    # A conflicting append cut short by the crash leaves the log shorter than the
    # promise: the batch that replaced the tail was being written, never acknowledged.
    torn_seen = False
    for seed in range(50):
        disk = SimStorage()
        disk.save(entries=entries(1, 10, term=1), hard_state=HardState(1, 0, 5))
        disk.write(entries=entries(7, 12, term=2), hard_state=HardState(2, 0, 5))
        disk.crash(random.Random(seed))
        disk.recover()
        verdict = disk.recovery_verdict()
        assert not verdict.must_recover, (seed, verdict)
        torn_seen = torn_seen or (verdict.kind is VerdictKind.TORN and disk.last_index() < 10)
    assert torn_seen


def test_lose_tail_never_cuts_into_the_snapshot_and_needs_a_crash_first():
    disk = SimStorage()
    disk.save(entries=entries(1, 6), hard_state=HardState(1, 0, 6))
    disk.save_snapshot(snapshot(4))
    assert disk.lose_tail(10) == 2
    assert disk.last_index() == 4
    disk.write(entries=entries(5, 5))
    with pytest.raises(StorageError):
        disk.lose_tail(1)

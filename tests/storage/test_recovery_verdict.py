"""The recovery verdict on real files: clean, torn never-acknowledged batch, lost
acknowledged tail, corruption (docs/recovery.md).

Each test writes a real data directory through ``open_storage`` (real fsyncs),
damages it the way a crash or a bad disk would (cut at record boundaries and
mid-record, flipped bytes, a deleted promise file), and reopens it.
"""

from __future__ import annotations

import logging
import os

import pytest
from exchange_node.raft.types import Entry, HardState
from exchange_node.storage import StorageCorruptionError, WalStorage, open_storage
from exchange_node.storage.files import NEWEST_SEGMENT_FILE
from exchange_node.storage.promise import PROMISE_FILE, SLOT_OFFSETS, read_promise
from exchange_node.storage.verdict import VerdictKind


def _entries(first: int, count: int, term: int) -> list[Entry]:
    return [Entry(term, i, b"order-%d" % i) for i in range(first, first + count)]


def _write(data_dir, batches: int = 6, per_batch: int = 5) -> tuple[str, list[int]]:
    """``batches`` batches of entries (term 2, after a vote in term 2); returns the
    segment's path and its size after each batch (index 0: before the first)."""
    with open_storage(data_dir) as storage:
        storage.save(hard_state=HardState(2, 1, 0))
        path = storage._segments[-1].path
        sizes = [os.path.getsize(path)]
        for b in range(batches):
            storage.save(
                entries=_entries(1 + b * per_batch, per_batch, 2),
                hard_state=HardState(2, 1, b * per_batch),
            )
            sizes.append(os.path.getsize(path))
    return path, sizes


def _cut(path: str, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def test_a_clean_log_is_clean(tmp_path):
    _write(tmp_path)
    with open_storage(tmp_path) as storage:
        verdict = storage.recovery_verdict
        assert verdict.kind is VerdictKind.CLEAN and not verdict.must_recover
        assert verdict.promised_index == verdict.log_last_index == 30
        assert storage.promise is not None and storage.promise.last_index == 30


def test_a_batch_cut_mid_record_is_a_torn_never_acknowledged_batch(tmp_path, caplog):
    path, sizes = _write(tmp_path)
    _cut(path, sizes[-1] - 7)
    caplog.set_level(logging.WARNING)
    with open_storage(tmp_path) as storage:
        verdict = storage.recovery_verdict
        assert verdict.kind is VerdictKind.TORN and not verdict.must_recover
        assert storage.last_index() == 25
    assert "torn write" in caplog.text and "never acknowledged" in caplog.text


def test_the_last_batch_cut_at_its_boundary_is_torn_not_lost(tmp_path):
    # A crash can leave the promise durable and its batch not: one batch is ambiguous.
    path, sizes = _write(tmp_path)
    _cut(path, sizes[-2])
    with open_storage(tmp_path) as storage:
        verdict = storage.recovery_verdict
        assert verdict.kind is VerdictKind.TORN
        assert "batch 7 (to index 30) was promised but left no bytes" in verdict.message
        assert storage.owed_index == 0


@pytest.mark.parametrize("mid_record", [False, True])
def test_durable_batches_missing_below_the_promise_are_a_lost_acknowledged_tail(
    tmp_path, caplog, mid_record
):
    path, sizes = _write(tmp_path)
    _cut(path, sizes[2] + (11 if mid_record else 0))
    caplog.set_level(logging.WARNING)
    with open_storage(tmp_path) as storage:
        verdict = storage.recovery_verdict
        assert verdict.kind is VerdictKind.LOST and verdict.must_recover
        assert (verdict.log_last_index, verdict.promised_index, verdict.promised_term) == (
            10,
            30,
            2,
        )
        assert verdict.promised_last_term == 2
        assert storage.owed_index == 30
        # The term and vote the lost tail held survive through the promise.
        assert storage.recover().hard_state[:2] == (2, 1)
    assert "lost acknowledged tail: this node promised up to index 30" in caplog.text
    assert "batches 4..6" in caplog.text
    # Still owed after another restart, until entries bring the log back to 30.
    with open_storage(tmp_path) as storage:
        assert storage.recovery_verdict.must_recover and storage.owed_index == 30
        assert storage.recovery_verdict.promised_last_term == 2
        storage.save(hard_state=HardState(3, 0, 10))  # a new term alone pays nothing
        assert storage.owed_index == 30
        storage.save(entries=_entries(11, 15, 3))
        assert storage.owed_index == 30
        storage.save(entries=_entries(26, 5, 3))
        assert storage.owed_index == 0
    with open_storage(tmp_path) as storage:
        assert storage.recovery_verdict.kind is VerdictKind.CLEAN


def test_a_lost_tail_that_held_a_vote_gives_the_vote_back(tmp_path):
    path, sizes = _write(tmp_path, batches=3)
    with open_storage(tmp_path) as storage:
        storage.save(hard_state=HardState(5, 3, 10))
        storage.save(entries=_entries(16, 5, 5))
    _cut(path, sizes[1])
    with open_storage(tmp_path) as storage:
        assert storage.recovery_verdict.kind is VerdictKind.LOST
        assert storage.recover().hard_state == HardState(5, 3, 0)
    with open_storage(tmp_path) as storage:  # now in the WAL as well
        assert storage.hard_state == HardState(5, 3, 0)


def test_a_deleted_promise_file_is_a_possible_loss(tmp_path):
    _write(tmp_path)
    os.unlink(tmp_path / PROMISE_FILE)
    with open_storage(tmp_path) as storage:
        verdict = storage.recovery_verdict
        assert verdict.kind is VerdictKind.LOST and verdict.must_recover
        assert "promise file is missing" in verdict.message
        assert verdict.promised_index == 30
    assert read_promise(str(tmp_path)) is not None


def test_a_directory_from_before_promises_gets_one_quietly(tmp_path):
    _write(tmp_path)
    os.unlink(tmp_path / PROMISE_FILE)
    newest = tmp_path / NEWEST_SEGMENT_FILE
    newest.write_text(newest.read_text().split()[0] + "\n")  # the older format
    with open_storage(tmp_path) as storage:
        assert storage.recovery_verdict.kind is VerdictKind.CLEAN
    assert newest.read_text().split()[1] == "promise"
    assert read_promise(str(tmp_path)).last_index == 30


def test_one_torn_promise_slot_leaves_the_other_in_force_and_two_are_corruption(tmp_path):
    _write(tmp_path)
    promise_path = tmp_path / PROMISE_FILE
    before = read_promise(str(tmp_path))
    raw = bytearray(promise_path.read_bytes())
    newest_at = max(SLOT_OFFSETS, key=lambda at: int.from_bytes(raw[at + 16 : at + 24], "little"))
    raw[newest_at + 20] ^= 0xFF
    promise_path.write_bytes(bytes(raw))
    older = read_promise(str(tmp_path))
    assert older is not None and older.batch_seq == before.batch_seq - 1
    other = SLOT_OFFSETS[1] if newest_at == SLOT_OFFSETS[0] else SLOT_OFFSETS[0]
    raw[other + 20] ^= 0xFF
    promise_path.write_bytes(bytes(raw))
    with pytest.raises(StorageCorruptionError, match="neither slot of the promise file"):
        open_storage(tmp_path)


def test_a_flipped_byte_before_the_last_batch_is_corruption(tmp_path, caplog):
    path, sizes = _write(tmp_path)
    with open(path, "r+b") as f:
        f.seek(sizes[3] + 40)
        byte = f.read(1)
        f.seek(sizes[3] + 40)
        f.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(StorageCorruptionError, match="may have been acknowledged"):
        open_storage(tmp_path)
    caplog.set_level(logging.WARNING)
    with open_storage(tmp_path, repair_corruption=True) as storage:
        verdict = storage.recovery_verdict
        assert verdict.kind is VerdictKind.CORRUPTION and verdict.must_recover
        assert verdict.log_last_index == 15 and verdict.promised_index == 30
        assert storage.last_index() == 15 and storage.owed_index == 30
    assert f"corruption in {path} at byte offset " in caplog.text
    assert "the log was cut back to index 15" in caplog.text
    assert os.path.exists(f"{path}.cut-{sizes[3]}")
    with open_storage(tmp_path) as storage:  # cut for good, still owed
        assert storage.recovery_verdict.kind is VerdictKind.LOST
        assert storage.owed_index == 30


def test_every_batch_that_promises_something_writes_the_promise(tmp_path):
    with open_storage(tmp_path) as storage:
        storage.save(entries=_entries(1, 3, 1), hard_state=HardState(1, 0, 0))
        storage.save(entries=_entries(4, 3, 1))
        assert storage.promise is not None
        assert (storage.promise.batch_seq, storage.promise.last_index) == (2, 6)
        storage.save(hard_state=HardState(1, 0, 6))  # commit only: promises nothing new
        assert storage.promise.batch_seq == 2
        storage.save(hard_state=HardState(1, 2, 6))  # a vote does
        assert storage.promise.batch_seq == 4


def test_planted_fault_a_store_that_skips_promises_takes_a_lost_tail_for_torn(
    tmp_path, monkeypatch
):
    """What the LOST test above guards against: without the promise of every batch,
    a tail cut back by whole batches looks like a torn write."""
    monkeypatch.setattr(WalStorage, "_next_promise", lambda self, *args: None)
    path, sizes = _write(tmp_path)
    _cut(path, sizes[2])
    monkeypatch.undo()
    with open_storage(tmp_path) as storage:
        assert storage.recovery_verdict.kind is not VerdictKind.LOST


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_both_flush_modes_write_the_same_promise(tmp_path, mode):
    with open_storage(tmp_path, promise_sync=mode) as storage:
        storage.save(entries=_entries(1, 3, 1), hard_state=HardState(1, 1, 0))
    assert read_promise(str(tmp_path)) == (1, 1, 1, 3, 1, 0, 0)

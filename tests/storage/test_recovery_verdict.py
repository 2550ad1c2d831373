"""The recovery verdict on real files: clean, torn never-acknowledged batch, lost
acknowledged tail, corruption (docs/recovery.md).

Each test writes a real data directory through ``open_storage`` (real fsyncs),
damages it the way a crash or a bad disk would (cut at record boundaries and
mid-record, flipped bytes, torn promise slots, an older version's deleted promise
file), and reopens it.
"""

from __future__ import annotations

import logging
import os

import pytest
from exchange_node.raft.types import Entry, HardState
from exchange_node.storage import StorageCorruptionError, WalStorage, open_storage, wal
from exchange_node.storage import format as fmt
from exchange_node.storage.files import NEWEST_SEGMENT_FILE
from exchange_node.storage.promise import (
    FILE_SIZE as PROMISE_FILE_SIZE,
)
from exchange_node.storage.promise import (
    PROMISE_FILE,
    SLOT_OFFSETS,
    Promise,
    encode_slot,
    read_segment_slots,
)
from exchange_node.storage.verdict import VerdictKind


def _entries(first: int, count: int, term: int) -> list[Entry]:
    return [Entry(term, i, b"order-%d" % i) for i in range(first, first + count)]


def _write(
    data_dir, batches: int = 6, per_batch: int = 5, promise_sync: str = "on"
) -> tuple[str, list[int]]:
    """``batches`` batches of entries (term 2, after a vote in term 2); returns the
    segment's path and its size after each batch (index 0: before the first)."""
    with open_storage(data_dir, promise_sync=promise_sync) as storage:
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


def _slots(path: str, *, newest: bool = True):
    with open(path, "rb") as f:
        return read_segment_slots(path, f.read(fmt.SLOTS_RECORDS_START), newest=newest)


_LAST_PROMISE = Promise(2, 1, 7, 30, 2)
"""What ``_write``'s last batch promises: batch 7 (a vote batch, then six of entries)
up to index 30."""


def _old_version_dir(
    data_dir, *, promise_file: bool, promise: Promise = _LAST_PROMISE
) -> tuple[str, list[int]]:
    """A directory as the versions before promise slots left it: version-1 segments,
    and (``promise_file``) the promise in ``PROMISE`` with ``NEWEST_SEGMENT`` tagged,
    or (not) no promise at all, as before promises existed."""
    path, sizes = _write(data_dir, promise_sync="off")
    newest = data_dir / NEWEST_SEGMENT_FILE
    assert newest.read_text().split() == ["1"]
    if promise_file:
        slot = encode_slot(9, promise)
        raw = bytearray(PROMISE_FILE_SIZE)
        raw[SLOT_OFFSETS[1] : SLOT_OFFSETS[1] + len(slot)] = slot
        (data_dir / PROMISE_FILE).write_bytes(bytes(raw))
        newest.write_text("1 promise\n")
    return path, sizes


def test_a_directory_from_before_promises_gets_one_quietly(tmp_path):
    _old_version_dir(tmp_path, promise_file=False)
    with open_storage(tmp_path) as storage:
        assert storage.recovery_verdict.kind is VerdictKind.CLEAN
        active = storage._segments[-1]
        assert (active.seq, active.version) == (2, fmt.SEGMENT_VERSION_SLOTS)
    assert (tmp_path / NEWEST_SEGMENT_FILE).read_text().split() == ["2", "promise"]
    assert _slots(active.path).promise.last_index == 30


def test_a_promise_file_of_an_older_version_is_read_then_replaced_by_slots(tmp_path):
    path, sizes = _old_version_dir(tmp_path, promise_file=True)
    _cut(path, sizes[2])
    with open_storage(tmp_path) as storage:
        verdict = storage.recovery_verdict
        assert verdict.kind is VerdictKind.LOST and verdict.promised_index == 30
        assert storage.owed_index == 30
        active = storage._segments[-1]
        assert active.version == fmt.SEGMENT_VERSION_SLOTS
    # The promise (and what is owed) moved into the new segment; PROMISE is gone.
    assert not (tmp_path / PROMISE_FILE).exists()
    assert _slots(active.path).promise.owed_index == 30
    with open_storage(tmp_path) as storage:
        assert storage.recovery_verdict.kind is VerdictKind.LOST
        assert storage.owed_index == 30


def test_a_crash_while_moving_an_older_directory_to_slots_keeps_the_promised_vote(
    tmp_path, monkeypatch
):
    # The PROMISE file holds a vote (term 5, for 3) that the lost WAL tail held.
    path, sizes = _old_version_dir(tmp_path, promise_file=True, promise=Promise(5, 3, 7, 30, 2))
    _cut(path, sizes[2])

    def crash(*args, **kwargs):
        raise OSError("planted crash after the new segment, before the vote batch")

    monkeypatch.setattr(WalStorage, "_write_batch", crash)
    with pytest.raises(OSError, match="planted crash"):
        open_storage(tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / PROMISE_FILE).exists()  # only the new segment's slot has it now
    with open_storage(tmp_path) as storage:
        assert storage.recovery_verdict.kind is VerdictKind.LOST
        assert storage.recover().hard_state[:2] == (5, 3)


def test_a_deleted_promise_file_of_an_older_version_is_a_possible_loss(tmp_path):
    _old_version_dir(tmp_path, promise_file=True)
    os.unlink(tmp_path / PROMISE_FILE)
    with open_storage(tmp_path) as storage:
        verdict = storage.recovery_verdict
        assert verdict.kind is VerdictKind.LOST and verdict.must_recover
        assert "promise file is missing" in verdict.message
        assert verdict.promised_index == 30
        assert _slots(storage._segments[-1].path).promise.owed_index == 30


def _flip_slot(path: str, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at + 20)
        byte = f.read(1)
        f.seek(at + 20)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_one_torn_promise_slot_leaves_the_other_in_force_and_two_are_corruption(tmp_path):
    path, _ = _write(tmp_path)
    before = _slots(path)
    newest_at = fmt.PROMISE_SLOT_OFFSETS[before.write_seq % 2]
    _flip_slot(path, newest_at)
    older = _slots(path)
    assert older.torn and older.promise.batch_seq == before.promise.batch_seq - 1
    other = fmt.PROMISE_SLOT_OFFSETS[(before.write_seq + 1) % 2]
    _flip_slot(path, other)
    with pytest.raises(StorageCorruptionError, match="neither promise slot of the segment"):
        open_storage(tmp_path)


def test_a_torn_slot_is_rewritten_at_open_so_no_older_segment_keeps_one(tmp_path):
    path, _ = _write(tmp_path)
    before = _slots(path)
    # The older slot damaged: what a crash leaves when the next batch's slot write was
    # cut short and that batch left no bytes. The promise in force is still current.
    _flip_slot(path, fmt.PROMISE_SLOT_OFFSETS[(before.write_seq + 1) % 2])
    assert _slots(path).torn
    with open_storage(tmp_path, segment_bytes=fmt.SEGMENT_HEADER_SIZE) as storage:
        assert storage.recovery_verdict.kind is VerdictKind.CLEAN
        assert storage.promise == before.promise
        assert not _slots(path).torn
        storage.save(entries=_entries(31, 1, 2))  # rotates: path is an older segment now
        assert storage._segments[-1].path != path
    with open_storage(tmp_path) as storage:
        assert storage.last_index() == 31
    assert not _slots(path, newest=False).torn


def test_damage_in_an_older_segments_slots_or_padding_is_corruption(tmp_path):
    with open_storage(tmp_path, segment_bytes=fmt.SEGMENT_HEADER_SIZE) as storage:
        storage.save(entries=_entries(1, 2, 1), hard_state=HardState(1, 1, 0))
        storage.save(entries=_entries(3, 2, 1))
        older = storage._segments[-2].path
    for where, offset in (("slot", fmt.PROMISE_SLOT_OFFSETS[0] + 30), ("padding", 5000)):
        with open(older, "r+b") as f:
            raw = f.read()
        damaged = bytearray(raw)
        damaged[offset] ^= 0x04
        with open(older, "wb") as f:
            f.write(bytes(damaged))
        with pytest.raises(StorageCorruptionError) as info:
            open_storage(tmp_path)
        assert info.value.path == older, where
        with open(older, "wb") as f:
            f.write(raw)
    with open_storage(tmp_path) as storage:
        assert storage.last_index() == 4


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


def test_a_save_that_promises_is_one_write_to_the_segment_and_one_flush(tmp_path, monkeypatch):
    """The promise goes into the batch's own segment, so one fdatasync covers both:
    no second file, no second flush (what issue 13 measured as the slowdown)."""
    flushed: list[int] = []
    flush = wal._fdatasync

    def counting(fd: int) -> None:
        flushed.append(fd)
        flush(fd)

    with open_storage(tmp_path) as storage:
        monkeypatch.setattr(wal, "_fdatasync", counting)
        storage.save(entries=_entries(1, 3, 1), hard_state=HardState(1, 1, 0))
        storage.save(entries=_entries(4, 3, 1), hard_state=HardState(1, 1, 3))
        assert flushed == [storage._write_fd] * 2
        path = storage._segments[-1].path
    promise = _slots(path).promise
    assert promise == (1, 1, 2, 6, 1, 0, 0)

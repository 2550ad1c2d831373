"""Torn and corrupt files: recovery gives a clean prefix or refuses, never bad data.

Each test builds a real data directory with a seeded workload, keeps its
files' bytes, and then damages a copy: truncation at every byte offset of the
last records, single bit flips at random (seeded) positions, a corrupt or
missing snapshot, a missing segment.
"""

from __future__ import annotations

import logging
import os
import pathlib
import random
import shutil
import tempfile

import pytest
from exchange_node.raft.types import HardState
from exchange_node.storage import StorageCorruptionError, open_storage
from exchange_node.storage import format as fmt
from exchange_node.storage.format import RECORD_HEAD_SIZE
from exchange_node.storage.promise import SLOT_SIZE, decode_slot
from storage_workload import Model, Op, Workload, make_entry, state_key

SEGMENT_BYTES = 16 << 10


class Built:
    """A data directory after a workload, its files' bytes, and the model states."""

    def __init__(self, data_dir: str, files: dict[str, bytes], states: list[tuple]) -> None:
        self.data_dir = data_dir
        self.files = files
        self.states = states
        """``states[k]``: the state key after k ops."""
        self.tail_ends: list[int] = []
        """Size of the last segment after each op of the final tail."""

    def restore(self, files: dict[str, bytes] | None = None) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        os.makedirs(self.data_dir)
        for name, raw in (files or self.files).items():
            with open(os.path.join(self.data_dir, name), "wb") as f:
                f.write(raw)

    @property
    def segments(self) -> list[str]:
        return sorted(n for n in self.files if n.startswith("wal-"))

    @property
    def snapshots(self) -> list[str]:
        return sorted(n for n in self.files if n.startswith("snap-"))


def newest_slot(segment: bytes) -> bytes:
    """The bytes of the intact promise slot with the highest write_seq."""
    slots = [segment[at : at + SLOT_SIZE] for at in fmt.PROMISE_SLOT_OFFSETS]
    return max((s for s in slots if decode_slot(s)), key=lambda s: decode_slot(s)[0])


def recovered_key(data_dir: str, *, read_back: bool = True) -> tuple:
    with open_storage(data_dir, segment_bytes=SEGMENT_BYTES, tail_cache_entries=0) as storage:
        state = storage.recover()
        if not read_back:
            return state_key(state.hard_state, state.snapshot, state.entries)
        # Read everything back through the disk path too: it must verify as well.
        again = storage.entries(storage.first_index(), storage.last_index() + 1)
        assert [(e.index, e.term, e.data) for e in again] == [
            (e.index, e.term, e.data) for e in state.entries
        ]
        return state_key(state.hard_state, state.snapshot, state.entries)


def tail_ops(model: Model) -> list[Op]:
    """Plain batches (no snapshot, so no compaction) to end the log with."""
    last, term, commit = model.last, model.hard_state.term + 1, model.hard_state.commit
    return [
        Op("append", [make_entry(i, term) for i in range(last + 1, last + 4)], None),
        Op("hard_state", hard_state=HardState(term, 2, commit)),
        Op("append", [make_entry(last + 4, term)], HardState(term, 2, last + 2)),
        Op(
            "overwrite",
            [make_entry(i, term + 1) for i in (last + 4, last + 5)],
            HardState(term + 1, 3, last + 2),
        ),
        Op("append", [make_entry(i, term + 1) for i in range(last + 6, last + 9)], None),
    ]


def build(tmp_path, seed: int, ops: int = 120) -> Built:
    data_dir = str(tmp_path / "data")
    workload = Workload(seed, big_snapshots=False)
    states = [workload.model.key()]
    with open_storage(data_dir, segment_bytes=SEGMENT_BYTES, keep_snapshots=2) as storage:
        for _ in range(ops):
            workload.next_op().apply(storage)
            states.append(workload.model.key())
        # Start the tail in a fresh segment so that it is all in the last one.
        storage._rotate()
        last_segment = storage._segments[-1].path
        tail_ends = [os.path.getsize(last_segment)]
        for op in tail_ops(workload.model):
            op.apply(storage)
            workload.model.apply(op)
            states.append(workload.model.key())
            assert storage._segments[-1].path == last_segment
            tail_ends.append(os.path.getsize(last_segment))
    files = {}
    for name in os.listdir(data_dir):
        if name != "LOCK":
            with open(os.path.join(data_dir, name), "rb") as f:
                files[name] = f.read()
    built = Built(data_dir, files, states)
    built.tail_ends = tail_ends
    assert len(built.snapshots) >= 1 and len(built.segments) >= 2
    return built


@pytest.fixture(scope="module")
def memory_dir(tmp_path_factory):
    """A directory on tmpfs when there is one: these tests are about parsing, not the
    disk, and they rewrite and truncate files thousands of times."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = tempfile.mkdtemp(prefix="storage-corruption-", dir="/dev/shm")
        yield pathlib.Path(path)
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("built")


@pytest.fixture(scope="module")
def built(memory_dir) -> Built:
    return build(memory_dir, seed=7)


def test_truncating_the_last_segment_at_every_byte_gives_a_clean_prefix(built, caplog, monkeypatch):
    # What is checked here is parsing; durability of the cut is the crash tests' job,
    # and a thousand fsyncs would only make this test slow.
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    caplog.set_level(logging.WARNING)
    last = built.segments[-1]
    ends = built.tail_ends
    tail_ops_count = len(ends) - 1
    final = len(built.states) - 1
    final_term_vote = built.states[final][0][:2]
    seen = set()
    for size in range(ends[0], ends[-1] + 1):
        built.restore()
        with open(os.path.join(built.data_dir, last), "wb") as f:
            f.write(built.files[last][:size])
        complete = sum(1 for end in ends[1:] if end <= size)
        expected = built.states[final - tail_ops_count + complete]
        found = recovered_key(built.data_dir, read_back=False)
        seen.add(complete)
        if complete >= tail_ops_count - 1:
            # At most the batch in flight is missing: a torn write, never acknowledged.
            assert found == expected, f"cut at {size}"
            if size not in ends:
                assert "torn write" in caplog.text
            # Recovery cut the torn bytes off for good.
            assert os.path.getsize(os.path.join(built.data_dir, last)) == ends[complete]
        else:
            # Whole durable batches are gone: the promise file tells, and keeps the term
            # and vote the lost tail held (the entries are the clean prefix).
            assert found[1:] == expected[1:], f"cut at {size}"
            assert found[0] == (*final_term_vote, expected[0][2]), f"cut at {size}"
            assert "lost acknowledged tail" in caplog.text
        caplog.clear()
    assert seen == set(range(tail_ops_count + 1))


def test_zero_filled_tail_after_power_loss_is_torn(built):
    files = dict(built.files)
    last = built.segments[-1]
    files[last] = built.files[last][:-7] + bytes(4096)
    built.restore(files)
    assert recovered_key(built.data_dir) == built.states[-2]


def test_truncated_older_segment_is_corruption(built):
    files = dict(built.files)
    victim = built.segments[-2]
    files[victim] = built.files[victim][:-1]
    built.restore(files)
    with pytest.raises(StorageCorruptionError) as info:
        recovered_key(built.data_dir)
    assert victim in str(info.value) and "not the last segment" in str(info.value)
    assert "re-add" in str(info.value)


def test_bad_record_followed_by_an_intact_batch_is_corruption_not_a_torn_tail(built):
    files = dict(built.files)
    last = built.segments[-1]
    raw = bytearray(built.files[last])
    # The first entry of the tail: later batches in the same file are intact.
    raw[built.tail_ends[0] + RECORD_HEAD_SIZE + 20] ^= 0x10
    files[last] = bytes(raw)
    built.restore(files)
    with pytest.raises(StorageCorruptionError) as info:
        recovered_key(built.data_dir)
    message = str(info.value)
    assert last in message and f"offset {built.tail_ends[0]}" in message
    assert "intact batch COMMIT" in message


def test_bad_record_inside_the_last_batch_with_its_commit_intact_is_corruption(built):
    """The final batch's own COMMIT made it to disk: it may have been acknowledged."""
    files = dict(built.files)
    last = built.segments[-1]
    raw = bytearray(built.files[last])
    raw[built.tail_ends[-2] + RECORD_HEAD_SIZE + 20] ^= 0x01  # first record of the last batch
    files[last] = bytes(raw)
    built.restore(files)
    with pytest.raises(StorageCorruptionError, match="intact batch COMMIT"):
        recovered_key(built.data_dir)


def test_bad_commit_record_of_the_last_batch_is_cut_as_torn(built, caplog):
    """The one case indistinguishable from a torn write: it is cut, and logged."""
    files = dict(built.files)
    last = built.segments[-1]
    raw = bytearray(built.files[last])
    raw[-3] ^= 0x01
    files[last] = bytes(raw)
    built.restore(files)
    caplog.set_level(logging.WARNING)
    assert recovered_key(built.data_dir) == built.states[-2]
    assert "torn write" in caplog.text


@pytest.mark.parametrize("seed", range(3))
def test_single_bit_flips_are_detected_or_cut_as_torn_never_served(built, seed):
    rng = random.Random(seed)
    names = built.segments + built.snapshots
    sizes = [len(built.files[n]) for n in names]
    last = built.segments[-1]
    final = built.states[-1]
    outcomes = {"detected": 0, "torn": 0, "unused": 0}
    for _ in range(120):
        name = rng.choices(names, weights=sizes)[0]
        offset = rng.randrange(len(built.files[name]))
        bit = rng.randrange(8)
        raw = bytearray(built.files[name])
        raw[offset] ^= 1 << bit
        built.restore({**built.files, name: bytes(raw)})
        where = f"{name} byte {offset} bit {bit}"
        try:
            found = recovered_key(built.data_dir)
        except StorageCorruptionError as exc:
            assert exc.path.endswith(name) or name in str(exc), where
            outcomes["detected"] += 1
            continue
        if found == final:
            # Only a snapshot file that is no longer in force may go unread, and the
            # newest segment's older promise slot: damage there is what a crash during
            # the next slot write leaves (the other slot is in force).
            older_slot = name == last and any(
                at <= offset < at + SLOT_SIZE
                for at in fmt.PROMISE_SLOT_OFFSETS
                if built.files[last][at : at + SLOT_SIZE] != newest_slot(built.files[last])
            )
            assert name in built.snapshots[:-1] or older_slot, where
            outcomes["unused"] += 1
        else:
            # Only the final batch's COMMIT record is indistinguishable from a torn write.
            assert found == built.states[-2], where
            assert name == last and offset >= len(built.files[last]) - 21, where
            outcomes["torn"] += 1
    assert outcomes["detected"] > 100


def test_corrupt_snapshot_is_reported_with_its_file(built):
    name = built.snapshots[-1]
    raw = bytearray(built.files[name])
    raw[len(raw) // 2] ^= 0x01
    built.restore({**built.files, name: bytes(raw)})
    with pytest.raises(StorageCorruptionError) as info:
        recovered_key(built.data_dir)
    assert name in str(info.value) and "checksum" in str(info.value)


def test_missing_snapshot_in_force_is_reported(built):
    files = dict(built.files)
    del files[built.snapshots[-1]]
    built.restore(files)
    with pytest.raises(StorageCorruptionError, match=r"snapshot in force .* is missing"):
        recovered_key(built.data_dir)


def test_missing_middle_segment_is_reported(memory_dir):
    built = build(memory_dir / "seed11", seed=11, ops=60)
    segments = built.segments
    assert len(segments) >= 3
    files = dict(built.files)
    del files[segments[1]]
    built.restore(files)
    with pytest.raises(StorageCorruptionError, match="missing") as info:
        recovered_key(built.data_dir)
    assert segments[0] in str(info.value) and segments[2] in str(info.value)


def test_missing_newest_segment_is_reported(built):
    files = dict(built.files)
    del files[built.segments[-1]]
    built.restore(files)
    with pytest.raises(StorageCorruptionError, match="newest segment"):
        recovered_key(built.data_dir)


def test_missing_oldest_segments_are_reported(built):
    files = dict(built.files)
    del files[built.segments[0]]
    built.restore(files)
    with pytest.raises(StorageCorruptionError, match=r"log starts after index|missing"):
        recovered_key(built.data_dir)


def test_leftovers_of_interrupted_writes_are_removed(built, caplog):
    caplog.set_level(logging.INFO)
    files = dict(built.files)
    files["wal-00000000000000ff-0000000000000001.log.tmp"] = b"half a header"
    files["snap-0000000000ffffff-0000000000000099.snap"] = built.files[built.snapshots[-1]]
    files["snap-0000000000fffffe-0000000000000099.snap.tmp"] = b"partial"
    built.restore(files)
    assert recovered_key(built.data_dir) == built.states[-1]
    assert sorted(os.listdir(built.data_dir)) == sorted([*built.files, "LOCK"])
    assert "never completed" in caplog.text

"""What only the real WAL has: the directory lock, files on disk, failures, metrics hooks."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys

import pytest
from exchange_node.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from exchange_node.storage import (
    DataDirLockedError,
    SaveStats,
    StorageCorruptionError,
    StorageFailedError,
    open_storage,
    wal,
)
from exchange_node.storage import format as fmt
from storage_workload import Workload, make_entry


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [make_entry(i, term) for i in range(first, last + 1)]


def snapshot(index: int, term: int = 1) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState((1, 2, 3), ())), b"s" * 100)


def listing(data_dir) -> list[str]:
    return sorted(os.listdir(data_dir))


# -- the data-directory lock ---------------------------------------------------------


def test_second_open_in_the_same_process_is_refused(tmp_path):
    with open_storage(tmp_path) as first:
        with pytest.raises(DataDirLockedError) as info:
            open_storage(tmp_path)
        assert str(tmp_path) in str(info.value)
        assert f"process {os.getpid()}" in str(info.value)
        first.save(entries=entries(1, 1))  # the holder is unaffected
    with open_storage(tmp_path) as again:  # released on close
        assert again.last_index() == 1


def test_open_from_another_process_is_refused_and_names_its_pid(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from exchange_node.storage import open_storage; "
            "s = open_storage(sys.argv[1]); print('HELD', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "HELD"
        with pytest.raises(DataDirLockedError) as info:
            open_storage(tmp_path)
        assert info.value.holder_pid == holder.pid
        assert f"process {holder.pid}" in str(info.value) and str(tmp_path) in str(info.value)
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()  # type: ignore[union-attr]
        holder.stdout.close()  # type: ignore[union-attr]
    # The kernel dropped the dead holder's lock: no stale lock to clean up by hand.
    open_storage(tmp_path).close()


# -- files on disk ---------------------------------------------------------------------


def test_segments_rotate_and_compaction_deletes_covered_ones(tmp_path):
    with open_storage(tmp_path, segment_bytes=4096, keep_snapshots=2) as storage:
        for first in range(1, 400, 20):
            storage.save(entries=entries(first, first + 19), hard_state=HardState(1, 1, first))
        segments = [n for n in listing(tmp_path) if n.startswith("wal-")]
        assert len(segments) > 5
        assert segments[0] == "wal-0000000000000001-0000000000000001.log"
        for index in (100, 200, 300):
            storage.save_snapshot(snapshot(index))
        names = listing(tmp_path)
        assert [n for n in names if n.startswith("snap-")] == [
            wal.snapshot_name(200, 1),
            wal.snapshot_name(300, 1),
        ]
        remaining = [n for n in names if n.startswith("wal-")]
        assert len(remaining) < len(segments)
        # Every segment left still holds an entry above the snapshot, or is the active one.
        first_indexes = [int(n.split("-")[2].split(".")[0], 16) for n in remaining]
        assert first_indexes[0] <= 301 and (len(first_indexes) == 1 or first_indexes[1] > 301)
        assert storage.entries(301, 401) == entries(301, 400)
    with open_storage(tmp_path, segment_bytes=4096) as storage:
        state = storage.recover()
        assert state.snapshot == snapshot(300) and state.entries == entries(301, 400)


def test_reads_from_disk_span_segments_and_verify(tmp_path):
    with open_storage(tmp_path, segment_bytes=2048, tail_cache_entries=0) as storage:
        for first in range(1, 200, 7):
            storage.save(entries=entries(first, first + 6))
        storage.save(entries=entries(50, 60, 2))  # dead records now sit among live ones
        expected = entries(1, 49) + entries(50, 60, 2)
        assert storage.entries(1, 61) == expected
        assert storage.entries(45, 55) == expected[44:54]
        assert storage.term(49) == 1 and storage.term(50) == 2
    with open_storage(tmp_path, tail_cache_entries=0) as storage:
        assert storage.entries(1, 61) == expected


def test_read_of_a_record_damaged_after_open_is_reported(tmp_path):
    with open_storage(tmp_path, tail_cache_entries=0) as storage:
        storage.save(entries=entries(1, 10))
        segment = storage._segments[-1].path
        position = storage._positions[4] & ((1 << 40) - 1)
        with open(segment, "r+b") as f:
            f.seek(position + 30)
            byte = f.read(1)
            f.seek(position + 30)
            f.write(bytes([byte[0] ^ 0x40]))
        with pytest.raises(StorageCorruptionError, match="entry 5 fails its checksum"):
            storage.entries(1, 11)


def test_files_written_with_zlib_crc_are_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "WRITE_CHECKSUM", fmt.CHECKSUM_CRC32)
    with open_storage(tmp_path) as storage:
        storage.save(entries=entries(1, 5), hard_state=HardState(1, 1, 5))
        storage.save_snapshot(snapshot(3))
    monkeypatch.undo()
    with open_storage(tmp_path, segment_bytes=200) as storage:
        state = storage.recover()
        assert state.snapshot == snapshot(3) and state.entries == entries(4, 5)
        storage.save(entries=entries(6, 40))  # rotates into a CRC-32C segment
        storage.save(entries=entries(41, 41))
    with open_storage(tmp_path) as storage:
        assert storage.recover().entries == entries(4, 41)


# -- failures ------------------------------------------------------------------------


def test_failed_write_is_undone_and_the_store_refuses_further_work(tmp_path, monkeypatch):
    storage = open_storage(tmp_path)
    storage.save(entries=entries(1, 5), hard_state=HardState(1, 1, 2))

    def half_then_enospc(fd: int, buf) -> None:
        os.write(fd, bytes(buf[: len(buf) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wal, "_write_all", half_then_enospc)
    with pytest.raises(OSError, match="No space"):
        storage.save(entries=entries(6, 9))
    monkeypatch.undo()
    with pytest.raises(StorageFailedError, match="restart the node"):
        storage.save(entries=entries(6, 6))
    storage.close()
    with open_storage(tmp_path) as reopened:
        state = reopened.recover()
        assert state.entries == entries(1, 5) and state.hard_state == HardState(1, 1, 2)
        reopened.save(entries=entries(6, 6))


def test_failed_fsync_poisons_the_store(tmp_path, monkeypatch):
    storage = open_storage(tmp_path)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(wal, "_fdatasync", eio)
    with pytest.raises(OSError, match="Input/output"):
        storage.save(entries=entries(1, 1))
    with pytest.raises(StorageFailedError):
        storage.entries(1, 2)
    storage.close()


def test_committed_index_beyond_the_log_stops_recovery(tmp_path):
    with open_storage(tmp_path) as storage:
        storage.save(entries=entries(1, 3), hard_state=HardState(1, 1, 3))
        segment = storage._segments[-1].path
        size_with_three = os.path.getsize(segment)
        storage.save(entries=entries(4, 6), hard_state=HardState(1, 1, 6))
    # Lose the whole second batch but keep a later hard state saying 6 is committed:
    # as if a middle batch vanished. Recovery must not serve a log shorter than commit.
    with open(segment, "rb") as f:
        raw = f.read()
    second = raw[size_with_three:]
    hard = fmt.record(
        fmt.CHECKSUMS[fmt.WRITE_CHECKSUM], fmt.RT_HARD_STATE, fmt.HARD_STATE_BODY.pack(1, 1, 6)
    )
    commit = second[-fmt.COMMIT_RECORD_SIZE :]
    with open(segment, "wb") as f:
        f.write(raw[:size_with_three] + hard + commit)
    with pytest.raises(StorageCorruptionError, match="committed entries are missing"):
        open_storage(tmp_path)


# -- metrics hooks -------------------------------------------------------------------


def test_save_reports_its_costs(tmp_path):
    seen: list[SaveStats] = []
    with open_storage(tmp_path, on_save=seen.append) as storage:
        storage.save(entries=entries(1, 16), hard_state=HardState(1, 1, 0))
        storage.save(hard_state=HardState(1, 1, 0))  # unchanged: no write at all
        storage.save(hard_state=HardState(2, 0, 0))
        assert [s.entries for s in seen] == [16, 0]
        assert seen[0].bytes_written > 16 * fmt.ENTRY_OVERHEAD
        assert all(s.append_seconds >= 0 and s.fsync_seconds >= 0 for s in seen)
        assert storage.last_fsync_seconds == seen[-1].fsync_seconds
        assert storage.last_append_seconds == seen[-1].append_seconds


def test_contract_errors(tmp_path):
    with open_storage(tmp_path) as storage:
        storage.save(entries=entries(1, 5))
        with pytest.raises(ValueError, match="not contiguous"):
            storage.save(entries=[make_entry(6, 1), make_entry(8, 1)])
        with pytest.raises(ValueError, match="has term"):
            storage.save_snapshot(snapshot(3, term=9))
        storage.save(snapshot=snapshot(10, 2))
        with pytest.raises(ValueError, match="older"):
            storage.save(snapshot=snapshot(8, 2))
        with pytest.raises(IndexError):
            storage.entries(5, 12)
        assert storage.last_index() == 10


@pytest.mark.skipif(
    fmt.CHECKSUM_CRC32C not in fmt.CHECKSUMS, reason="crc32c not installed: no CRC-32C files"
)
def test_without_crc32c_new_files_use_zlib_and_crc32c_files_are_refused_as_config(tmp_path):
    with open_storage(tmp_path / "crc32c") as storage:
        storage.save(entries=entries(1, 3))
    script = (
        "import sys; sys.modules['crc32c'] = None\n"
        "from exchange_node.storage import CHECKSUM_IN_USE, ChecksumUnavailableError, open_storage\n"
        "print(CHECKSUM_IN_USE)\n"
        "open_storage(sys.argv[2]).close()\n"
        "try:\n"
        "    open_storage(sys.argv[1])\n"
        "except ChecksumUnavailableError as exc:\n"
        "    print('REFUSED', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "crc32c"), str(tmp_path / "zlib")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines()[0] == "CRC-32 (zlib)"
    assert "REFUSED" in out and "pip install crc32c" in out
    with open_storage(tmp_path / "zlib") as storage:  # and we read what it wrote
        storage.save(entries=entries(1, 1))


def test_recovery_finishes_a_compaction_the_crash_interrupted(tmp_path, monkeypatch):
    with open_storage(tmp_path, segment_bytes=2048) as storage:
        for first in range(1, 200, 10):
            storage.save(entries=entries(first, first + 9), hard_state=HardState(1, 1, first))
        before = [n for n in listing(tmp_path) if n.startswith("wal-")]
        # The leader's snapshot is durable, then the process dies before deleting anything.
        monkeypatch.setattr(wal.os, "unlink", lambda path: None)
        storage.save(snapshot=snapshot(150, 2), hard_state=HardState(2, 0, 150))
        monkeypatch.undo()
    during = [n for n in listing(tmp_path) if n.startswith("wal-")]
    assert set(before) <= set(during) and len(before) > 3
    with open_storage(tmp_path, segment_bytes=2048) as storage:
        state = storage.recover()
        assert state.snapshot == snapshot(150, 2) and state.entries == []
        assert state.hard_state == HardState(2, 0, 150)
    # Only the segment holding the RESET is left.
    assert [n for n in listing(tmp_path) if n.startswith("wal-")] == during[-1:]


@pytest.mark.parametrize("cache", [0, 3, 50])
def test_reads_across_the_memory_and_disk_boundary_match_the_model(tmp_path, cache):
    """Truncations and snapshots move the boundary of the in-memory tail; every range
    and every term read must still match the model, before and after a reopen."""
    rng = random.Random(cache)
    workload = Workload(cache, big_snapshots=False)
    storage = open_storage(tmp_path, segment_bytes=4096, tail_cache_entries=cache)
    try:
        for step in range(120):
            workload.next_op().apply(storage)
            model = workload.model
            if step % 40 == 39:
                storage.close()
                storage = open_storage(tmp_path, segment_bytes=4096, tail_cache_entries=cache)
            if model.last == model.base:
                continue
            for _ in range(3):
                lo = rng.randint(model.base + 1, model.last)
                hi = rng.randint(lo, model.last + 2)
                expected = model.entries[lo - model.base - 1 : hi - model.base - 1]
                assert storage.entries(lo, hi) == expected
                assert storage.term(lo) == model.term_at(lo)
            assert storage.term(model.base) == model.term_at(model.base)
    finally:
        storage.close()

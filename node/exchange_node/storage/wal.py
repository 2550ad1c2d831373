"""The node's durable storage: a segmented write-ahead log plus snapshot files.

``open_storage(data_dir)`` locks the directory, recovers, and returns a
``WalStorage`` implementing ``RaftStorage``. The byte layout is in
``format.py``, file names and durable file writes in ``files.py``, the
recovery rules in ``recovery.py``; this module holds the writing rules.

Directory
---------
``LOCK`` (flock, holder's pid), ``wal-<seq>-<first_index>.log`` segments,
``snap-<index>-<term>.snap`` snapshots, ``NEWEST_SEGMENT`` (the sequence
number of the newest segment ever created, written durably after each
rotation) and transient ``*.tmp`` files.

Writing
-------
* ``save(entries, hard_state, snapshot)`` encodes one batch (SNAPSHOT marker,
  TRUNCATE, ENTRY..., HARD_STATE, COMMIT) into one buffer, issues one
  ``write`` and one ``fdatasync`` (which on Linux also flushes the file size,
  so it is safe for appends), and only then updates the in-memory view.
* Overwriting a conflicting suffix is a TRUNCATE record in the same batch as
  the new entries: durable with the same single fsync, no rewrite of the log.
* Hard state lives in the WAL: a HARD_STATE record in the batch, and a copy in
  every segment header. Because recovery applies a batch only when its COMMIT
  record is intact and every record is checksummed, a torn write leaves the
  previous (term, vote, commit) in force and can never produce a vote that was
  not cast. This costs no extra fsync, where a separate file (temp + fsync +
  rename + directory fsync) would cost three on every change of ``commit``.
* The promise (``promise.py``, design in ``docs/recovery.md``): a batch that
  changes what the node promises (new entries, a new term or vote, a snapshot
  from the leader) also overwrites one of the two promise slots in the active
  segment's header area (a ``pwrite`` before the records' end), so the
  batch's one ``fdatasync`` makes both durable: no second file, no second
  flush, no helper thread. A batch that promises nothing new (a commit-only
  hard state, the application's snapshot) writes no slot. Recovery compares
  the promise with the records to tell a lost tail from a torn write
  (``recovery_verdict``). ``promise_sync="off"`` writes version-1 segments
  without slots (for benchmarks only).
* A segment rotates when it has reached ``segment_bytes`` (promise slots not
  counted) before a batch (so a
  segment exceeds the limit by at most one batch). The new segment is written
  to ``.tmp`` (header, and the promise current then in its first slot),
  fsynced, renamed, and the directory fsynced.
* Snapshots: file written to ``.tmp``, fsynced, renamed, directory fsynced;
  then a SNAPSHOT marker batch in the WAL makes it *the* snapshot. A snapshot
  from the leader (``save(snapshot=...)``) is a RESET marker: the whole log is
  replaced. One the application took (``save_snapshot``) is a KEEP marker:
  entries up to its index go, the rest stay. Then, and only then, segments
  whose every entry is covered (all older segments after a RESET) are deleted
  oldest first, each deletion made durable (directory fsync) before the next,
  then snapshots beyond the newest ``keep_snapshots`` are deleted and the
  directory is fsynced once more.
* Compaction never deletes the segment holding the SNAPSHOT marker in force,
  nor any newer one: that marker is the only record of which snapshot is in
  force (segment headers carry the hard state, not the snapshot). A marker
  batch that fills its segment (an idle replica snapshotting at its last
  index, a leader's snapshot with no entries after it) therefore keeps that
  segment, covered entries and all (and any newer segment, even one holding
  only hard-state batches), until a newer marker lands in a newer segment. Because deletions go oldest first and each one is
  durable before the next, the segments left after a crash mid-compaction are
  always contiguous (no gap for recovery to explain).
* If a write or fsync fails, the store refuses all further work
  (``StorageFailedError``): after a failed fsync the page cache cannot be
  trusted, so the node must restart and recover from what is on disk. A
  failed write is first cut back off the file, so no partial batch sits in
  front of later ones.

Reading
-------
The index is one ``array('Q')`` of packed (segment seq << 40 | byte offset),
one slot per live entry (8 bytes an entry). ``entries(lo, hi)`` serves the
newest ``tail_cache_entries`` (up to twice that) from memory and reads older
ones with one ``pread`` per segment touched, verifying every record's
checksum again on the way. ``entries`` clamps ``hi`` to the end of the log and
raises ``LogCompactedError`` below the first index, like the simulator's disk.

Recovery
--------
The rules by which a directory is read back are in ``recovery.py``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from array import array
from collections.abc import Callable, Sequence
from typing import NamedTuple

from exchange_node.limits import WAL_KEEP_SNAPSHOTS, WAL_SEGMENT_BYTES, WAL_TAIL_CACHE_ENTRIES
from exchange_node.raft.types import Entry, HardState, Snapshot, SnapshotMeta

from . import format as fmt
from .errors import (
    LogCompactedError,
    LogContractError,
    StorageCorruptionError,
    StorageError,
    StorageFailedError,
)
from .files import (
    NEWEST_SEGMENT_FILE,
    OFFSET_BITS,
    OFFSET_MASK,
    Segment,
    fsync_dir,
    list_snapshots,
    load_snapshot,
    newest_segment_record,
    segment_name,
    snapshot_name,
    write_file_durably,
)
from .files import fdatasync as _fdatasync
from .files import pwrite_all as _pwrite_all
from .files import write_all as _write_all
from .interface import RecoveredState
from .lock import DataDirLock
from .promise import PROMISE_FILE, Promise, SegmentSlots, SlotWriter
from .recovery import recover_directory
from .verdict import RecoveryVerdict, VerdictKind

log = logging.getLogger(__name__)

_NO_HARD_STATE = HardState()
_SLOT_AREA = fmt.slot_area(fmt.SEGMENT_VERSION_SLOTS)


def write_snapshot_file(data_dir: str, snapshot: Snapshot) -> str:
    """The snapshot's file, durably (temp file, fsync, rename, directory fsync); not yet
    in force: only the WAL's marker record puts it there. Returns its path."""
    meta = snapshot.meta
    return write_file_durably(
        data_dir, snapshot_name(meta.index, meta.term), fmt.encode_snapshot(snapshot)
    )


class SaveStats(NamedTuple):
    """What one ``save`` cost, handed to the ``on_save`` observer (for metrics)."""

    entries: int
    bytes_written: int
    append_seconds: float
    """Encoding the batch and the ``write`` call."""
    fsync_seconds: float
    """The ``fdatasync`` call."""


SaveObserver = Callable[[SaveStats], None]


class WalStorage:
    """``RaftStorage`` on a segmented WAL. Build it with ``open_storage``.

    Not thread-safe: the node's I/O shell calls it from one thread (or one
    executor thread at a time).

    ``last_append_seconds`` and ``last_fsync_seconds`` hold the costs of the
    latest ``save``; ``on_save`` (if given) receives a ``SaveStats`` after
    every durable batch.
    """

    def __init__(
        self,
        data_dir: str,
        lock: DataDirLock,
        *,
        segment_bytes: int,
        keep_snapshots: int,
        tail_cache_entries: int,
        on_save: SaveObserver | None,
        promise_sync: str = "on",
        repair_corruption: bool = False,
    ) -> None:
        if promise_sync not in ("on", "off"):
            raise ValueError("promise_sync must be on or off")
        if segment_bytes < fmt.SEGMENT_HEADER_SIZE:
            raise ValueError("segment_bytes is smaller than a segment header")
        if keep_snapshots < 1:
            raise ValueError("keep_snapshots must be at least 1")
        self.data_dir = data_dir
        self._lock: DataDirLock | None = lock
        self.segment_bytes = segment_bytes
        self.keep_snapshots = keep_snapshots
        self.on_save = on_save
        self.last_append_seconds = 0.0
        self.last_fsync_seconds = 0.0
        self._tail_cap = max(tail_cache_entries, 0)
        self._failed: BaseException | None = None
        self._closed = False
        self._segments: list[Segment] = []
        self._by_seq: dict[int, Segment] = {}
        self._write_fd = -1
        self._crc: fmt.ChecksumFn = fmt.CHECKSUMS[fmt.WRITE_CHECKSUM]
        self._base_index = 0
        self._base_term = 0
        self._last_term = 0
        self._positions = array("Q")
        """Packed (segment seq << 40 | offset) of entries base+1 .. last."""
        self._hard_state = _NO_HARD_STATE
        self._batch_seq = 0
        self._snapshot_meta: SnapshotMeta | None = None
        self._snapshot: Snapshot | None = None
        self._marker_seq = 0
        """Segment holding the SNAPSHOT marker in force (0: none): compaction stops there."""
        self._tail: list[Entry] = []
        self._tail_first = 1
        self._recovered: RecoveredState | None = None
        self._promises_on = promise_sync == "on"
        self._repair_corruption = repair_corruption
        self._promise: SlotWriter | None = None
        """The active segment's promise slots (None with ``promise_sync="off"``)."""
        self._owed = 0
        """Nonzero while recovering: the index the log must reach again (see verdict)."""
        self._owed_last_term = 0
        self.recovery_verdict = RecoveryVerdict(VerdictKind.CLEAN, "clean: a new log", 0)
        """What recovery concluded at open (``verdict.py``)."""

    # -- RaftStorage ----------------------------------------------------------

    def recover(self) -> RecoveredState:
        self._check_usable()
        state, self._recovered = self._recovered, None
        if state is not None:
            return state
        return RecoveredState(
            hard_state=self._hard_state,
            snapshot=self._load_current_snapshot(),
            entries=self.entries(self.first_index(), self.last_index() + 1),
        )

    def save(
        self,
        *,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
    ) -> None:
        self._check_usable()
        if hard_state is not None and hard_state == self._hard_state:
            hard_state = None
        if not entries and hard_state is None and snapshot is None:
            return
        if snapshot is not None:
            meta = snapshot.meta
            if self._snapshot_meta is not None and meta.index < self._snapshot_meta.index:
                raise LogContractError(
                    f"snapshot at {meta.index} is older than the stored one at "
                    f"{self._snapshot_meta.index}"
                )
            base_after, last_after = meta.index, meta.index
        else:
            base_after, last_after = self._base_index, self.last_index()
        if entries:
            first = entries[0].index
            if first <= base_after or first > last_after + 1:
                raise LogContractError(
                    f"append at {first} leaves a gap or overwrites the snapshot "
                    f"(first index {base_after + 1}, last {last_after})"
                )
        if self._segment_full():
            self._rotate()
        self._write_batch(entries, hard_state, snapshot, fmt.SNAPSHOT_RESET)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self._save_snapshot(snapshot, write_file=True)

    def snapshot_file(self, index: int, term: int) -> str:
        """Where the snapshot at (index, term) lives: another process may write it there
        durably (temp file, fsync, rename, directory fsync) for ``save_written_snapshot``."""
        return os.path.join(self.data_dir, snapshot_name(index, term))

    def save_written_snapshot(self, index: int, term: int) -> Snapshot:
        """Put in force a snapshot whose file is already durable at ``snapshot_file``
        (written by a forked child, server/snapshots.py): read it back and verify it, then
        as ``save_snapshot`` without writing the file again. Returns the snapshot read."""
        self._check_usable()
        snapshot = load_snapshot(self.data_dir, index, term)
        self._save_snapshot(snapshot, write_file=False)
        return snapshot

    def _save_snapshot(self, snapshot: Snapshot, *, write_file: bool) -> None:
        self._check_usable()
        meta = snapshot.meta
        if self._snapshot_meta is not None and meta.index <= self._snapshot_meta.index:
            return
        if meta.index > self.last_index():
            raise LogContractError(
                f"snapshot at {meta.index} is beyond the last stored index {self.last_index()}"
            )
        stored_term = self.term(meta.index)
        if stored_term != meta.term:
            raise LogContractError(
                f"snapshot at {meta.index} has term {meta.term}, the log has {stored_term}"
            )
        if self._segment_full():
            self._rotate()
        self._write_batch((), None, snapshot, fmt.SNAPSHOT_KEEP, write_snapshot_file=write_file)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        self._check_usable()
        first = self._base_index + 1
        if lo < first:
            raise LogCompactedError(f"entries from {lo} are compacted (first index {first})")
        hi = min(hi, self.last_index() + 1)
        if lo >= hi:
            return []
        tail_first = self._tail_first
        if lo >= tail_first:
            return self._tail[lo - tail_first : hi - tail_first]
        from_disk = self._read_entries(lo, min(hi, tail_first))
        if hi > tail_first:
            from_disk.extend(self._tail[: hi - tail_first])
        return from_disk

    def first_index(self) -> int:
        return self._base_index + 1

    def last_index(self) -> int:
        return self._base_index + len(self._positions)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for segment in self._segments:
            self._close_read_fd(segment)
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- extras for the node ----------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._snapshot_meta

    @property
    def promise(self) -> Promise | None:
        """The promise last written (None with ``promise_sync="off"``)."""
        return self._promise.promise if self._promise is not None else None

    @property
    def owed_index(self) -> int:
        """Nonzero while the log has not yet caught up after a lost tail or corruption."""
        return self._owed

    def term(self, index: int) -> int:
        """Term of the entry at ``index`` (or of the snapshot, at its index)."""
        if index == self._base_index:
            return self._base_term
        if index < self._base_index or index > self.last_index():
            raise LogCompactedError(f"no entry at {index}")
        if index == self.last_index():
            return self._last_term
        if index >= self._tail_first:
            return self._tail[index - self._tail_first].term
        return self._read_entries(index, index + 1)[0].term

    def __enter__(self) -> WalStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------

    @property
    def _active(self) -> Segment:
        return self._segments[-1]

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise StorageFailedError(
                f"storage in {self.data_dir} failed earlier ({self._failed}); restart the node"
            ) from self._failed
        if self._closed:
            raise StorageError(f"storage in {self.data_dir} is closed")

    def _write_batch(
        self,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        snapshot_mode: int,
        *,
        write_snapshot_file: bool = True,
    ) -> None:
        started = time.perf_counter()
        crc = self._crc
        segment = self._active
        buf = bytearray()
        if snapshot is not None:
            meta = snapshot.meta
            body = fmt.SNAPSHOT_BODY.pack(meta.index, meta.term, snapshot_mode)
            buf += fmt.record(crc, fmt.RT_SNAPSHOT, body)
            last = meta.index if snapshot_mode == fmt.SNAPSHOT_RESET else self.last_index()
        else:
            last = self.last_index()
        new_positions = array("Q")
        truncate_at = 0
        if entries:
            first = entries[0].index
            if first <= last:
                # Only without a snapshot: save() checked that entries follow a snapshot.
                truncate_at = first
                body = fmt.TRUNCATE_BODY.pack(first, self.term(first - 1))
                buf += fmt.record(crc, fmt.RT_TRUNCATE, body)
            seq_bits = segment.seq << OFFSET_BITS
            position = segment.size + len(buf)
            pack_head = fmt.ENTRY_HEAD.pack
            pack_u32 = fmt.U32.pack
            add_position = new_positions.append
            expected = first
            for entry in entries:
                if entry.index != expected:
                    raise LogContractError(
                        f"entries are not contiguous: {entry.index} follows {expected - 1}"
                    )
                data = entry.data
                size = len(data)
                head = pack_head(size + 17, 1, entry.term, expected, entry.type)
                add_position(seq_bits | position)
                position += size + 26
                buf += pack_u32(crc(data, crc(head)))
                buf += head
                buf += data
                expected += 1
        if hard_state is not None:
            buf += fmt.record(crc, fmt.RT_HARD_STATE, fmt.HARD_STATE_BODY.pack(*hard_state))
        buf += fmt.commit_record(crc, self._batch_seq + 1)
        if snapshot is not None and write_snapshot_file:
            # The file first: the marker in this batch is what puts it in force.
            writing_snapshot = time.perf_counter()
            self._write_snapshot_file(snapshot)
            started += time.perf_counter() - writing_snapshot  # not part of the append
        promise = self._next_promise(entries, hard_state, snapshot, snapshot_mode)

        fd = self._write_fd
        try:
            _write_all(fd, buf)  # at the file position: the end of the records
            if promise is not None:
                # Into the same file: the one fdatasync below covers the slot too.
                assert self._promise is not None
                slot, slot_at = self._promise.next_slot(promise)
                done = os.pwrite(fd, slot, slot_at)
                if done != len(slot):
                    _pwrite_all(fd, slot[done:], slot_at + done)
        except OSError as exc:
            self._fail(exc, undo_to=segment.size)
            raise
        wrote = time.perf_counter()
        try:
            _fdatasync(fd)
        except OSError as exc:
            # The batch was never acknowledged, but its bytes may sit in the page cache
            # (Linux marks them clean after a failed fsync): cut them off, or a restart
            # without a power cut would replay a vote this disk never stored.
            self._fail(exc, undo_to=segment.size)
            raise
        synced = time.perf_counter()
        if promise is not None:
            assert self._promise is not None
            self._promise.written(promise)
            self._owed = promise.owed_index
            self._owed_last_term = promise.owed_last_term

        # Durable: now the in-memory view follows.
        segment.size += len(buf)
        self._batch_seq += 1
        if snapshot is not None:
            self._apply_snapshot(snapshot, snapshot_mode)
            self._marker_seq = segment.seq
        if entries:
            if truncate_at:
                self._truncate_from(truncate_at)
            self._positions.extend(new_positions)
            self._last_term = entries[-1].term
            segment.max_index = max(segment.max_index, entries[-1].index)
            self._cache_append(entries)
        if hard_state is not None:
            self._hard_state = hard_state
        self.last_append_seconds = wrote - started
        self.last_fsync_seconds = synced - wrote
        if self.on_save is not None:
            self.on_save(SaveStats(len(entries), len(buf), wrote - started, synced - wrote))
        if snapshot is not None:
            reset = snapshot_mode == fmt.SNAPSHOT_RESET
            self._compact(snapshot.meta.index, dead_before_seq=segment.seq if reset else 0)

    def _next_promise(
        self,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        snapshot_mode: int,
    ) -> Promise | None:
        """The promise to write with this batch, or None when it promises nothing new
        (a commit-only hard state, an application snapshot)."""
        writer = self._promise
        if writer is None:
            return None
        if entries:
            last_index, last_term = entries[-1].index, entries[-1].term
        else:
            if snapshot is not None and snapshot_mode == fmt.SNAPSHOT_RESET:
                last_index, last_term = snapshot.meta.index, snapshot.meta.term
            else:
                last_index, last_term = self.last_index(), self._last_term
            snapshot_mode = snapshot_mode if snapshot is not None else 0
        hs = hard_state if hard_state is not None else self._hard_state
        # Only entries or a snapshot from a leader (a recovering node leads nothing)
        # pay the debt; a new term or vote alone does not.
        caught_up = (entries or snapshot_mode == fmt.SNAPSHOT_RESET) and last_index >= self._owed
        owed = 0 if caught_up else self._owed
        promise = Promise(
            hs.term,
            hs.vote,
            self._batch_seq + 1,
            last_index,
            last_term,
            owed,
            self._owed_last_term if owed else 0,
        )
        current = writer.promise
        # Unchanged but for the batch number: nothing new is promised.
        if current is not None and current[:2] == promise[:2] and current[3:] == promise[3:]:
            return None
        return promise

    def _fail(self, exc: BaseException, *, undo_to: int | None) -> None:
        self._failed = exc
        if undo_to is not None:
            # A partial or unsynced batch must not sit in front of the next batch,
            # nor come back at the next start; best effort, the disk is failing.
            with contextlib.suppress(OSError):
                os.ftruncate(self._write_fd, undo_to)
                _fdatasync(self._write_fd)
        log.error("storage in %s failed: %s; refusing further writes", self.data_dir, exc)

    def _apply_snapshot(self, snapshot: Snapshot, mode: int) -> None:
        meta = snapshot.meta
        if mode == fmt.SNAPSHOT_RESET:
            del self._positions[:]
            self._tail = []
            self._tail_first = meta.index + 1
            self._last_term = meta.term
        else:
            drop = meta.index - self._base_index
            del self._positions[:drop]
            if self._tail_first <= meta.index:
                del self._tail[: meta.index + 1 - self._tail_first]
                self._tail_first = meta.index + 1
            if not self._positions:
                self._last_term = meta.term
        self._base_index = meta.index
        self._base_term = meta.term
        self._snapshot_meta = meta
        self._snapshot = snapshot

    def _truncate_from(self, index: int) -> None:
        keep = index - self._base_index - 1
        del self._positions[keep:]
        if index >= self._tail_first:
            del self._tail[index - self._tail_first :]
        else:
            self._tail = []
            self._tail_first = index

    def _cache_append(self, entries: Sequence[Entry]) -> None:
        cap = self._tail_cap
        tail = self._tail
        if not cap:
            self._tail_first = self.last_index() + 1
            return
        tail.extend(entries)
        if len(tail) > 2 * cap:
            drop = len(tail) - cap
            del tail[:drop]
            self._tail_first += drop

    def _segment_full(self) -> bool:
        """The active segment has reached ``segment_bytes`` (its promise slots and their
        padding not counted: the limit means the same for both versions)."""
        active = self._active
        slots = _SLOT_AREA if active.version == fmt.SEGMENT_VERSION_SLOTS else 0
        return active.size - slots >= self.segment_bytes

    def _rotate(self, promise: Promise | None = None) -> None:
        self._create_segment(self._active.seq + 1, self.last_index() + 1, self._last_term, promise)

    def _create_segment(
        self, seq: int, first_index: int, prev_term: int, promise: Promise | None = None
    ) -> None:
        """A new active segment, durably. With promises on it is version 2 and its slot
        holds ``promise`` (default: the promise as of now)."""
        version = fmt.SEGMENT_VERSION_SLOTS if self._promise is not None else 1
        header = fmt.encode_segment_header(
            fmt.WRITE_CHECKSUM,
            seq,
            first_index,
            prev_term,
            (self._hard_state.term, self._hard_state.vote, self._hard_state.commit),
            self._batch_seq,
            version,
        )
        if self._promise is not None:
            promise = promise if promise is not None else self._current_promise()
            header = self._promise.segment_head(header, promise)
        name = segment_name(seq, first_index)
        path = write_file_durably(self.data_dir, name, [header])
        if self._promise is not None:
            assert promise is not None
            self._promise.written(promise)
        # Only after the segment exists: the record may lag the newest segment, never lead.
        write_file_durably(self.data_dir, NEWEST_SEGMENT_FILE, [self._newest_record(seq)])
        fd = _open_for_writing(path)
        if self._write_fd >= 0:
            os.close(self._write_fd)
        self._write_fd = fd
        segment = Segment(seq, first_index, path, fmt.WRITE_CHECKSUM, len(header), version)
        self._segments.append(segment)
        self._by_seq[seq] = segment
        self._crc = fmt.checksum_fn(fmt.WRITE_CHECKSUM)

    def _newest_record(self, seq: int) -> bytes:
        if self._promise is None:
            return f"{seq}\n".encode()
        return newest_segment_record(seq)

    def _current_promise(self) -> Promise:
        hs = self._hard_state
        return Promise(
            hs.term,
            hs.vote,
            self._batch_seq,
            self.last_index(),
            self._last_term,
            self._owed,
            self._owed_last_term if self._owed else 0,
        )

    def _write_snapshot_file(self, snapshot: Snapshot) -> None:
        write_snapshot_file(self.data_dir, snapshot)

    def _compact(self, snapshot_index: int, *, dead_before_seq: int = 0) -> None:
        """Delete, oldest first, segments the snapshot covers (every entry ever written in
        them is at or below its index) or that a RESET in segment ``dead_before_seq``
        made dead; then snapshots beyond the newest ``keep_snapshots``.

        Never the segment holding the marker in force (``_marker_seq``) or any newer one
        (so never the active segment): recovery must find that marker again. Each segment
        deletion is made durable before the next, so a crash leaves no gap."""
        removed = False
        segments = self._segments
        keep_from = self._marker_seq
        assert keep_from > 0, "compaction without a snapshot marker in force"
        while (
            len(segments) > 1
            and segments[0].seq < keep_from
            and (segments[0].seq < dead_before_seq or segments[0].max_index <= snapshot_index)
        ):
            segment = segments[0]
            os.unlink(segment.path)
            self._close_read_fd(segment)
            del segments[0]
            del self._by_seq[segment.seq]
            # Durable before the next deletion: the survivors stay contiguous.
            fsync_dir(self.data_dir)
            log.debug("compaction removed %s", segment.path)
        current = self._snapshot_meta
        assert current is not None
        for index, term, name in list_snapshots(self.data_dir)[: -self.keep_snapshots]:
            if (index, term) == (current.index, current.term):
                continue
            os.unlink(os.path.join(self.data_dir, name))
            removed = True
        if removed:
            fsync_dir(self.data_dir)

    # -- reading ------------------------------------------------------------------

    def _read_fd(self, segment: Segment) -> int:
        fd = segment.read_fd
        if fd is None:
            fd = segment.read_fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    @staticmethod
    def _close_read_fd(segment: Segment) -> None:
        if segment.read_fd is not None:
            os.close(segment.read_fd)
            segment.read_fd = None

    def _read_entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries lo..hi-1 from disk: one pread per segment touched."""
        positions = self._positions
        first = self._base_index + 1
        out: list[Entry] = []
        i = lo
        while i < hi:
            seq = positions[i - first] >> OFFSET_BITS
            j = i
            while j + 1 < hi and positions[j + 1 - first] >> OFFSET_BITS == seq:
                j += 1
            segment = self._by_seq[seq]
            start = positions[i - first] & OFFSET_MASK
            last_at = positions[j - first] & OFFSET_MASK
            fd = self._read_fd(segment)
            head = os.pread(fd, fmt.RECORD_HEAD_SIZE, last_at)
            if len(head) < fmt.RECORD_HEAD_SIZE:
                raise StorageCorruptionError(
                    segment.path, last_at, "segment is shorter than its index says"
                )
            stop = last_at + fmt.RECORD_HEAD_SIZE + fmt.RECORD_HEAD.unpack(head)[1]
            raw = os.pread(fd, stop - start, start)
            if len(raw) != stop - start:
                raise StorageCorruptionError(
                    segment.path, start + len(raw), "segment is shorter than its index says"
                )
            crc = fmt.checksum_fn(segment.checksum)
            view = memoryview(raw)
            unpack_head = fmt.RECORD_HEAD.unpack_from
            unpack_body = fmt.ENTRY_BODY.unpack_from
            for k in range(i, j + 1):
                p = (positions[k - first] & OFFSET_MASK) - start
                stored, length, rtype = unpack_head(raw, p)
                end = p + 9 + length
                if rtype != fmt.RT_ENTRY or crc(view[p + 4 : end]) != stored:
                    raise StorageCorruptionError(
                        segment.path, start + p, f"entry {k} fails its checksum on read"
                    )
                term, index, entry_type = unpack_body(raw, p + 9)
                if index != k:
                    raise StorageCorruptionError(
                        segment.path, start + p, f"expected entry {k}, found {index}"
                    )
                out.append(Entry(term, index, raw[p + 26 : end], entry_type))
            i = j + 1
        return out

    def _load_current_snapshot(self) -> Snapshot | None:
        meta = self._snapshot_meta
        if meta is None:
            return None
        if self._snapshot is None:
            self._snapshot = load_snapshot(self.data_dir, meta.index, meta.term)
        return self._snapshot

    # -- recovery -------------------------------------------------------------------

    def _recover_from_disk(self) -> None:
        found = recover_directory(self.data_dir, repair_corruption=self._repair_corruption)
        if found is None:
            if self._promises_on:
                self._promise = SlotWriter(0, None)
            self._create_segment(1, 1, 0)
            self._recovered = RecoveredState()
            log.info("initialised an empty log in %s", self.data_dir)
            return
        replay, snapshot = found.replay, found.snapshot
        self._segments = found.segments
        self._by_seq = {segment.seq: segment for segment in found.segments}
        active = self._segments[-1]
        self._crc = fmt.checksum_fn(active.checksum)
        self._write_fd = _open_for_writing(active.path)
        self._base_index, self._base_term = replay.base_index, replay.base_term
        self._positions = replay.positions
        entries = replay.entries
        last_index = replay.last_index()
        self._last_term = entries[-1].term if entries else replay.base_term
        self._hard_state = HardState(*replay.hard_state)
        self._batch_seq = replay.batch_seq
        if snapshot is not None:
            self._snapshot_meta, self._snapshot = snapshot.meta, snapshot
        self._marker_seq = replay.marker_seq
        keep = min(len(entries), self._tail_cap)
        self._tail = entries[len(entries) - keep :]
        self._tail_first = last_index + 1 - keep
        verdict = self.recovery_verdict = found.verdict
        if verdict.must_recover:
            self._owed = max(verdict.promised_index, 1)
            self._owed_last_term = verdict.promised_last_term or 0
        promise = found.promise
        if (
            verdict.must_recover
            and promise is not None
            and (
                promise.term > self._hard_state.term
                or (promise.term == self._hard_state.term and not self._hard_state.vote)
            )
        ):
            # The tail that held a newer term or vote was lost; the promise kept it. (After a
            # torn batch, the promise's term and vote are that batch's, never sent: dropped.)
            self._hard_state = self._hard_state._replace(term=promise.term, vote=promise.vote)
        if replay.marker is not None:
            # Finish a compaction a crash may have interrupted.
            self._compact(replay.marker[0], dead_before_seq=replay.reset_seq)
        if self._promises_on:
            self._open_promise(found.slots, found.promise, HardState(*replay.hard_state))
        self._recovered = RecoveredState(
            hard_state=self._hard_state, snapshot=snapshot, entries=entries
        )
        log.info(
            "recovered %s: %d segment(s), snapshot at %s, entries %d..%d, %s, in %.3f s",
            self.data_dir,
            len(self._segments),
            replay.marker[0] if replay.marker else "none",
            replay.base_index + 1,
            last_index,
            self._hard_state,
            found.seconds,
        )

    def _open_promise(
        self, slots: SegmentSlots | None, found: Promise | None, wal_hard_state: HardState
    ) -> None:
        """Open the promise slots after recovery: bring the promise up to date with what
        was recovered (and the owed index), and the WAL's hard state up to the promise's.

        A directory whose newest segment is version 1 (written before promise slots, with
        or without a ``PROMISE`` file) moves to a new version-2 segment first, its slot
        holding the promise; then the ``PROMISE`` file, stale from there on, goes."""
        current = self._current_promise()
        hs, self._hard_state = self._hard_state, wal_hard_state
        if self._active.version != fmt.SEGMENT_VERSION_SLOTS:
            self._promise = SlotWriter(0, None)
            # Durable before PROMISE goes: the new segment's slot has its term, vote, owed.
            self._rotate(current)
            legacy = os.path.join(self.data_dir, PROMISE_FILE)
            if os.path.exists(legacy):
                os.unlink(legacy)
                fsync_dir(self.data_dir)
        else:
            assert slots is not None
            self._promise = SlotWriter(slots.write_seq, slots.promise)
            if slots.torn:
                # The damaged slot is the next one written: made whole at once, before a
                # rotation could leave it in an older segment (where it reads as damage).
                self._write_promise(slots.promise)
        if hs != wal_hard_state:
            # One batch: the WAL holds the term and vote the node must keep (and the
            # promise written with it keeps the owed index).
            if self._segment_full():
                self._rotate()
            self._write_batch((), hs, None, fmt.SNAPSHOT_RESET)
        elif self._promise.promise != current:
            self._write_promise(current)

    def _write_promise(self, promise: Promise) -> None:
        """The promise alone, durably, into the active segment's next slot."""
        assert self._promise is not None
        slot, at = self._promise.next_slot(promise)
        try:
            _pwrite_all(self._write_fd, slot, at)
            _fdatasync(self._write_fd)
        except OSError as exc:
            self._fail(exc, undo_to=None)
            raise
        self._promise.written(promise)


def _open_for_writing(path: str) -> int:
    """The active segment's descriptor, positioned at its end. Not ``O_APPEND``: the
    promise slots are overwritten with ``pwrite``, which ``O_APPEND`` would append."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    os.lseek(fd, 0, os.SEEK_END)
    return fd


def open_storage(
    data_dir: str | os.PathLike[str],
    *,
    segment_bytes: int = WAL_SEGMENT_BYTES,
    keep_snapshots: int = WAL_KEEP_SNAPSHOTS,
    tail_cache_entries: int = WAL_TAIL_CACHE_ENTRIES,
    on_save: SaveObserver | None = None,
    promise_sync: str = "on",
    repair_corruption: bool = False,
) -> WalStorage:
    """Lock ``data_dir`` (created if absent), recover it, and return the store.

    ``tail_cache_entries``: how many of the newest entries ``entries()`` serves
    from memory (between this and twice this many are kept).
    ``promise_sync``: "on" keeps the promise in the segments' slots (flushed with each
    batch), "off" keeps none (version-1 segments; for benchmarks only).
    ``repair_corruption``: damage in the last segment cuts the log back instead of
    raising (verdict ``CORRUPTION``; the node must then recover from its peers).
    Raises ``DataDirLockedError`` if another open holds the directory and
    ``StorageCorruptionError`` if recovery finds damage it must not repair.
    ``recovery_verdict`` says what recovery concluded.
    """
    path = os.fspath(data_dir)
    os.makedirs(path, exist_ok=True)
    lock = DataDirLock(path)
    storage = WalStorage(
        path,
        lock,
        segment_bytes=segment_bytes,
        keep_snapshots=keep_snapshots,
        tail_cache_entries=tail_cache_entries,
        on_save=on_save,
        promise_sync=promise_sync,
        repair_corruption=repair_corruption,
    )
    # Replay builds a million objects and no cycles; the cyclic collector would
    # rescan them over and over (measured: a third of recovery time). Pause it.
    collecting = gc.isenabled()
    gc.disable()
    try:
        storage._recover_from_disk()
    except BaseException:
        storage.close()
        raise
    finally:
        if collecting:
            gc.enable()
    return storage

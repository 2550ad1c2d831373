"""The node's durable storage: a segmented write-ahead log plus snapshot files.

``open_storage(data_dir)`` locks the directory, recovers, and returns a
``WalStorage`` implementing ``RaftStorage``. The byte layout is in
``format.py``; this module holds the rules.

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
* A segment rotates when it has reached ``segment_bytes`` before a batch (so a
  segment exceeds the limit by at most one batch). The new segment is written
  to ``.tmp``, fsynced, renamed, and the directory fsynced.
* Snapshots: file written to ``.tmp``, fsynced, renamed, directory fsynced;
  then a SNAPSHOT marker batch in the WAL makes it *the* snapshot. A snapshot
  from the leader (``save(snapshot=...)``) is a RESET marker: the whole log is
  replaced. One the application took (``save_snapshot``) is a KEEP marker:
  entries up to its index go, the rest stay. Then, and only then, segments
  whose every entry is covered (all older segments after a RESET) are deleted
  oldest first, snapshots beyond the newest ``keep_snapshots`` are deleted,
  and the directory is fsynced.
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

Recovery rules
--------------
1. ``*.tmp`` files are leftovers of an interrupted create or rename: removed.
2. Segment sequence numbers must be contiguous; a gap is a missing segment:
   ``StorageCorruptionError``. So is a newest segment older than the one
   ``NEWEST_SEGMENT`` records (the newest segments were lost), or a directory
   with snapshots or that record but no segment at all. Every segment header
   must verify and chain on from the previous segment (first index, previous
   term, hard state, batch sequence).
3. Records are replayed batch by batch; a batch takes effect at its intact
   COMMIT record. Entries must be contiguous; a TRUNCATE's ``prev_term`` must
   match the log. Replay starts from the oldest surviving segment's header
   (first index, previous term); a TRUNCATE or a KEEP marker may point below
   that start, into segments compaction has removed, and then the log below
   it is simply unknown until a later marker sets the base (rule 6 checks the
   end result).
4. Any bad or incomplete record, or a batch without COMMIT, in a segment that
   is *not the last* is corruption.
5. In the *last* segment, a bad record at offset F (incomplete header, length
   past the end of the file, checksum mismatch, unknown type, malformed body)
   or a batch without COMMIT is a *torn tail* if and only if no intact COMMIT
   record appears anywhere after F. The tail is then truncated back to the
   start of that incomplete batch and a warning is logged. If an intact COMMIT
   does follow, the bad bytes were written before a batch completed: that is
   corruption of data that may have been acknowledged, and recovery stops.
   Why this rule: ``save`` is synchronous, so at most one batch (the last one)
   can be in flight at a crash, and a batch is acknowledged only after its
   COMMIT is written and fsynced. A crash can therefore damage only bytes after
   the last intact COMMIT. A record that is complete but fails its checksum at
   the very end is treated as torn, because a crash mid-write can leave
   exactly that (the file size reached the disk, some of the data did not).
   The one case the rule cannot tell apart: bit rot confined to the final
   COMMIT record of the log. That batch is then dropped (and logged) although
   it may have been acknowledged; if the hard state that survives says
   ``commit`` is beyond the recovered log, recovery stops instead (rule 7).
   Conversely a bad record *inside* the last batch whose own COMMIT is intact
   is reported as corruption, never dropped.
6. The snapshot in force is the one named by the last committed SNAPSHOT
   marker; its file must exist and verify, else ``StorageCorruptionError``.
   Snapshot files newer than that marker belong to a ``save`` that never
   completed (never acknowledged) and are removed. Without any marker the log
   must start at index 1 and any snapshot file is such a leftover. Once all
   checks pass, a compaction the crash interrupted is finished (segments the
   snapshot covers, segments older than the last RESET, surplus snapshots).
7. The recovered hard state's ``commit`` must not exceed the last recovered
   index: entries known committed would be missing.

Every ``StorageCorruptionError`` names the file and byte offset and tells the
operator to restore the member from its peers (wipe and re-add). Recovery
reads segments in 8 MiB chunks and changes no file until every check passed.

Cost of recovery: ``RecoveredState.entries`` holds every entry after the
snapshot in memory (about 240 bytes per 100-byte entry in CPython), so the
node should snapshot often enough to keep that log short. Python's cyclic
garbage collector is paused while replay builds those objects (it would
rescan them again and again; replay creates no cycles).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import os
import re
import struct
import time
from array import array
from collections.abc import Callable, Sequence
from typing import NamedTuple

from exchange_node.raft.types import Entry, HardState, Snapshot, SnapshotMeta

from . import format as fmt
from .errors import (
    LogCompactedError,
    LogContractError,
    StorageCorruptionError,
    StorageError,
    StorageFailedError,
)
from .interface import RecoveredState
from .lock import DataDirLock

log = logging.getLogger(__name__)

_SEGMENT_NAME = re.compile(r"^wal-([0-9a-f]{16})-([0-9a-f]{16})\.log$")
_SNAPSHOT_NAME = re.compile(r"^snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_OFFSET_BITS = 40
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
_READ_CHUNK = 8 << 20
_ENTRY_RECORD = struct.Struct("<IIBQQB")
"""A whole ENTRY record head at once: crc, length, type, term, index, entry_type."""
_NO_HARD_STATE = HardState()
NEWEST_SEGMENT_FILE = "NEWEST_SEGMENT"
"""Holds the sequence number of the newest segment created, so that losing it is seen."""


def segment_name(seq: int, first_index: int) -> str:
    return f"wal-{seq:016x}-{first_index:016x}.log"


def snapshot_name(index: int, term: int) -> str:
    return f"snap-{index:016x}-{term:016x}.snap"


class SaveStats(NamedTuple):
    """What one ``save`` cost, handed to the ``on_save`` observer (for metrics)."""

    entries: int
    bytes_written: int
    append_seconds: float
    """Encoding the batch and the ``write`` call."""
    fsync_seconds: float
    """The ``fdatasync`` call."""


SaveObserver = Callable[[SaveStats], None]


class _Segment:
    __slots__ = ("checksum", "first_index", "max_index", "path", "read_fd", "seq", "size")

    def __init__(self, seq: int, first_index: int, path: str, checksum: int, size: int) -> None:
        self.seq = seq
        self.first_index = first_index
        self.path = path
        self.checksum = checksum
        self.size = size
        self.max_index = first_index - 1
        """Highest index of any entry ever written here (dead ones included)."""
        self.read_fd: int | None = None


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_fdatasync = getattr(os, "fdatasync", os.fsync)


def _write_all(fd: int, buf: bytes | bytearray | memoryview) -> None:
    view = memoryview(buf)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_file_durably(directory: str, name: str, pieces: Sequence[bytes]) -> str:
    """temp file, fsync, rename, directory fsync. Returns the final path."""
    path = os.path.join(directory, name)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        total = sum(len(p) for p in pieces)
        written = os.writev(fd, pieces)
        if written != total:
            _write_all(fd, b"".join(pieces)[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(directory)
    return path


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
    ) -> None:
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
        self._segments: list[_Segment] = []
        self._by_seq: dict[int, _Segment] = {}
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
        self._tail: list[Entry] = []
        self._tail_first = 1
        self._recovered: RecoveredState | None = None

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
        if self._active.size >= self.segment_bytes:
            self._rotate()
        self._write_batch(entries, hard_state, snapshot, fmt.SNAPSHOT_RESET)

    def save_snapshot(self, snapshot: Snapshot) -> None:
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
        if self._active.size >= self.segment_bytes:
            self._rotate()
        self._write_batch((), None, snapshot, fmt.SNAPSHOT_KEEP)

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
    def _active(self) -> _Segment:
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
            seq_bits = segment.seq << _OFFSET_BITS
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
        if snapshot is not None:
            # The file first: the marker in this batch is what puts it in force.
            writing_snapshot = time.perf_counter()
            self._write_snapshot_file(snapshot)
            started += time.perf_counter() - writing_snapshot  # not part of the append

        fd = self._write_fd
        try:
            _write_all(fd, buf)
        except OSError as exc:
            self._fail(exc, undo_to=segment.size)
            raise
        wrote = time.perf_counter()
        try:
            _fdatasync(fd)
        except OSError as exc:
            self._fail(exc, undo_to=None)
            raise
        synced = time.perf_counter()

        # Durable: now the in-memory view follows.
        segment.size += len(buf)
        self._batch_seq += 1
        if snapshot is not None:
            self._apply_snapshot(snapshot, snapshot_mode)
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

    def _fail(self, exc: BaseException, *, undo_to: int | None) -> None:
        self._failed = exc
        if undo_to is not None:
            # A partial write must not sit in front of the next batch.
            with contextlib.suppress(OSError):
                os.ftruncate(self._write_fd, undo_to)
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

    def _rotate(self) -> None:
        self._create_segment(self._active.seq + 1, self.last_index() + 1, self._last_term)

    def _create_segment(self, seq: int, first_index: int, prev_term: int) -> None:
        header = fmt.encode_segment_header(
            fmt.WRITE_CHECKSUM,
            seq,
            first_index,
            prev_term,
            (self._hard_state.term, self._hard_state.vote, self._hard_state.commit),
            self._batch_seq,
        )
        name = segment_name(seq, first_index)
        path = _write_file_durably(self.data_dir, name, [header])
        # Only after the segment exists: the record may lag the newest segment, never lead.
        _write_file_durably(self.data_dir, NEWEST_SEGMENT_FILE, [f"{seq}\n".encode()])
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if self._write_fd >= 0:
            os.close(self._write_fd)
        self._write_fd = fd
        segment = _Segment(seq, first_index, path, fmt.WRITE_CHECKSUM, len(header))
        self._segments.append(segment)
        self._by_seq[seq] = segment
        self._crc = fmt.checksum_fn(fmt.WRITE_CHECKSUM)

    def _write_snapshot_file(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        _write_file_durably(
            self.data_dir, snapshot_name(meta.index, meta.term), fmt.encode_snapshot(snapshot)
        )

    def _compact(self, snapshot_index: int, *, dead_before_seq: int = 0) -> None:
        """Delete, oldest first, segments the snapshot covers (every entry ever written in
        them is at or below its index) or that a RESET in segment ``dead_before_seq``
        made dead; then snapshots beyond the newest ``keep_snapshots``. Never the active
        segment."""
        removed = False
        segments = self._segments
        while len(segments) > 1 and (
            segments[0].seq < dead_before_seq or segments[0].max_index <= snapshot_index
        ):
            segment = segments[0]
            os.unlink(segment.path)
            self._close_read_fd(segment)
            del segments[0]
            del self._by_seq[segment.seq]
            removed = True
            log.debug("compaction removed %s", segment.path)
        current = self._snapshot_meta
        assert current is not None
        for index, term, name in _list_snapshots(self.data_dir)[: -self.keep_snapshots]:
            if (index, term) == (current.index, current.term):
                continue
            os.unlink(os.path.join(self.data_dir, name))
            removed = True
        if removed:
            fsync_dir(self.data_dir)

    # -- reading ------------------------------------------------------------------

    def _read_fd(self, segment: _Segment) -> int:
        fd = segment.read_fd
        if fd is None:
            fd = segment.read_fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    @staticmethod
    def _close_read_fd(segment: _Segment) -> None:
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
            seq = positions[i - first] >> _OFFSET_BITS
            j = i
            while j + 1 < hi and positions[j + 1 - first] >> _OFFSET_BITS == seq:
                j += 1
            segment = self._by_seq[seq]
            start = positions[i - first] & _OFFSET_MASK
            last_at = positions[j - first] & _OFFSET_MASK
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
                p = (positions[k - first] & _OFFSET_MASK) - start
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
            self._snapshot = _load_snapshot(self.data_dir, meta.index, meta.term)
        return self._snapshot

    # -- recovery -------------------------------------------------------------------

    def _recover_from_disk(self) -> None:
        started = time.perf_counter()
        data_dir = self.data_dir
        names = os.listdir(data_dir)
        leftovers = [n for n in names if n.endswith(".tmp")]
        for name in leftovers:
            log.info("removing %s: left over from an interrupted write", name)
            os.unlink(os.path.join(data_dir, name))
        segment_files: list[tuple[int, int, str]] = []
        for name in names:
            match = _SEGMENT_NAME.match(name)
            if match:
                segment_files.append((int(match[1], 16), int(match[2], 16), name))
        segment_files.sort()
        snapshots = _list_snapshots(data_dir)
        newest_created = _read_newest_segment(data_dir)

        if not segment_files:
            if snapshots or newest_created:
                raise StorageCorruptionError(
                    data_dir, None, "every WAL segment is missing (the directory had a log)"
                )
            if leftovers:
                fsync_dir(data_dir)
            self._create_segment(1, 1, 0)
            self._recovered = RecoveredState()
            log.info("initialised an empty log in %s", data_dir)
            return

        for (seq_a, _, name_a), (seq_b, _, name_b) in itertools.pairwise(segment_files):
            if seq_b != seq_a + 1:
                raise StorageCorruptionError(
                    os.path.join(data_dir, name_b),
                    None,
                    f"segment(s) {seq_a + 1}..{seq_b - 1} between {name_a} and {name_b} are "
                    "missing",
                )

        if segment_files[-1][0] < newest_created:
            raise StorageCorruptionError(
                os.path.join(data_dir, segment_files[-1][2]),
                None,
                f"segment {newest_created} was created but the newest segment file left is "
                f"{segment_files[-1][0]}: the newest segment(s) are missing",
            )

        replay = _Replay()
        torn: tuple[str, int, int] | None = None
        for position, (seq, first_index, name) in enumerate(segment_files):
            is_last = position == len(segment_files) - 1
            path = os.path.join(data_dir, name)
            segment, torn_at = replay.segment(path, seq, first_index, is_last)
            self._segments.append(segment)
            self._by_seq[seq] = segment
            if torn_at is not None:
                torn = (path, torn_at, segment.size)
                segment.size = torn_at

        marker = replay.marker
        if marker is None:
            if replay.base_index != 0:
                raise StorageCorruptionError(
                    self._segments[0].path,
                    0,
                    f"the log starts after index {replay.base_index} but no snapshot covers "
                    "the entries before it (older segments are missing)",
                )
        elif (replay.base_index, replay.base_term) != marker:
            raise StorageCorruptionError(
                self._segments[0].path,
                0,
                f"the log starts after index {replay.base_index} (term {replay.base_term}) but "
                f"the snapshot in force is at index {marker[0]} (term {marker[1]})",
            )
        last_index = replay.base_index + len(replay.positions)
        if replay.hard_state[2] > last_index:
            raise StorageCorruptionError(
                self._segments[-1].path,
                None,
                f"the hard state says entries up to {replay.hard_state[2]} are committed but "
                f"the log ends at {last_index}: committed entries are missing",
            )
        snapshot: Snapshot | None = None
        orphans = [s for s in snapshots if marker is None or s[0] > marker[0]]
        if marker is not None:
            snapshot = _load_snapshot(data_dir, *marker)

        # Everything checked: only now change files.
        if torn is not None:
            path, torn_at, size = torn
            log.warning(
                "%s: torn write at the end of the log: dropping %d bytes from offset %d "
                "(a batch that was never acknowledged)",
                path,
                size - torn_at,
                torn_at,
            )
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, torn_at)
                os.fsync(fd)
            finally:
                os.close(fd)
        for index, term, name in orphans:
            log.warning(
                "removing %s: snapshot (index %d, term %d) of a save that never completed",
                name,
                index,
                term,
            )
            os.unlink(os.path.join(data_dir, name))
        if orphans or leftovers:
            fsync_dir(data_dir)

        active = self._segments[-1]
        self._crc = fmt.checksum_fn(active.checksum)
        self._write_fd = os.open(active.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._base_index, self._base_term = replay.base_index, replay.base_term
        self._positions = replay.positions
        entries = replay.entries
        self._last_term = entries[-1].term if entries else replay.base_term
        self._hard_state = HardState(*replay.hard_state)
        self._batch_seq = replay.batch_seq
        if snapshot is not None:
            self._snapshot_meta, self._snapshot = snapshot.meta, snapshot
        keep = min(len(entries), self._tail_cap)
        self._tail = entries[len(entries) - keep :]
        self._tail_first = last_index + 1 - keep
        self._recovered = RecoveredState(
            hard_state=self._hard_state, snapshot=snapshot, entries=entries
        )
        if marker is not None:
            # Finish a compaction a crash may have interrupted.
            self._compact(marker[0], dead_before_seq=replay.reset_seq)
        log.info(
            "recovered %s: %d segment(s), snapshot at %s, entries %d..%d, %s, in %.3f s",
            data_dir,
            len(self._segments),
            marker[0] if marker else "none",
            replay.base_index + 1,
            last_index,
            self._hard_state,
            time.perf_counter() - started,
        )


class _Replay:
    """Recovery's running state: the log as the records so far describe it."""

    def __init__(self) -> None:
        self.base_index = 0
        self.base_term = 0
        self.entries: list[Entry] = []
        self.positions = array("Q")
        self.hard_state: tuple[int, int, int] = (0, 0, 0)
        self.batch_seq = 0
        self.marker: tuple[int, int] | None = None
        self.reset_seq = 0
        """Segment holding the last RESET marker: every older segment is dead."""
        self.started = False
        self.base_from_header = True
        """Nothing below ``base_index`` is known: it came from the first segment's header."""

    def last_index(self) -> int:
        return self.base_index + len(self.entries)

    def term_at(self, index: int) -> int | None:
        if index == self.base_index:
            return self.base_term
        offset = index - self.base_index - 1
        if 0 <= offset < len(self.entries):
            return self.entries[offset].term
        return None

    def segment(
        self, path: str, seq: int, first_index: int, is_last: bool
    ) -> tuple[_Segment, int | None]:
        """Replay one segment file. Returns it and, for a torn tail, the offset to cut at."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            raw_header = os.pread(fd, fmt.SEGMENT_HEADER_SIZE, 0)
            try:
                header = fmt.decode_segment_header(raw_header)
            except ValueError as exc:
                raise StorageCorruptionError(path, 0, f"bad segment header: {exc}") from None
            self._check_header(path, header, seq, first_index)
            segment = _Segment(seq, first_index, path, header.checksum, size)
            torn_at = self._records(fd, path, segment, size, is_last)
        finally:
            os.close(fd)
        return segment, torn_at

    def _check_header(self, path: str, header: fmt.SegmentHeader, seq: int, first: int) -> None:
        if (header.seq, header.first_index) != (seq, first):
            raise StorageCorruptionError(
                path,
                0,
                f"header says segment {header.seq} starting at {header.first_index}, "
                "the file name disagrees",
            )
        if not self.started:
            self.started = True
            self.base_index = first - 1
            self.base_term = header.prev_term
            self.hard_state = header.hard_state
            self.batch_seq = header.batch_seq
            return
        expected = (self.last_index() + 1, self.term_at(self.last_index()), self.hard_state)
        found = (header.first_index, header.prev_term, header.hard_state)
        if found != expected or header.batch_seq != self.batch_seq:
            raise StorageCorruptionError(
                path,
                0,
                f"segment does not follow the previous one: header (first index, previous "
                f"term, hard state) = {found}, batch {header.batch_seq}; expected {expected}, "
                f"batch {self.batch_seq}",
            )

    def _records(
        self, fd: int, path: str, segment: _Segment, size: int, is_last: bool
    ) -> int | None:
        crc = fmt.checksum_fn(segment.checksum)
        unpack_head = fmt.RECORD_HEAD.unpack_from
        unpack_entry = fmt.ENTRY_BODY.unpack_from
        unpack_entry_record = _ENTRY_RECORD.unpack_from
        seq_bits = segment.seq << _OFFSET_BITS
        entries = self.entries
        positions = self.positions
        add_entry = entries.append
        add_position = positions.append
        offset = fmt.SEGMENT_HEADER_SIZE  # file offset of buf[0]
        buf = b""
        view = memoryview(buf)
        p = 0
        batch_start = offset
        # The batch being read. Plain batches (entries, hard state) go straight into
        # the log and are rolled back to ``mark`` if their COMMIT never comes; a batch
        # that starts with SNAPSHOT or TRUNCATE is held aside and applied at its COMMIT.
        mark = len(entries)
        deferred = False
        snap: tuple[int, int, int] | None = None
        truncate: tuple[int, int] | None = None
        hard_state: tuple[int, int, int] | None = None
        pending: list[Entry] = []
        pending_pos = array("Q")
        expected = self.last_index() + 1
        problem = ""
        eof = offset >= size
        while True:
            if not deferred and hard_state is None:
                # The hot path: a run of ENTRY records, one unpack each.
                n = len(buf)
                while p + 26 <= n:
                    stored, length, rtype, term, index, entry_type = unpack_entry_record(buf, p)
                    end = p + 9 + length
                    if (
                        rtype != 1
                        or end > n
                        or length < 17
                        or index != expected
                        or crc(view[p + 4 : end]) != stored
                    ):
                        break
                    add_entry(Entry(term, index, buf[p + 26 : end], entry_type))
                    add_position(seq_bits | (offset + p))
                    expected += 1
                    p = end
            avail = len(buf) - p
            need = 9
            if avail >= 9:
                need = 9 + unpack_head(buf, p)[1]
                if offset + p + need > size:
                    problem = "record runs past the end of the file"
                    break
            if avail < need:
                if eof:
                    if avail:
                        problem = "incomplete record header at the end of the file"
                    elif batch_start < offset + p:
                        problem = "batch without a COMMIT record at the end of the file"
                    break
                chunk = os.pread(fd, max(_READ_CHUNK, need - avail), offset + len(buf))
                buf = buf[p:] + chunk
                view = memoryview(buf)
                offset += p
                p = 0
                eof = offset + len(buf) >= size or not chunk
                continue
            stored, length, rtype = unpack_head(buf, p)
            end = p + 9 + length
            if crc(view[p + 4 : end]) != stored:
                problem = "record checksum mismatch"
                break
            if rtype == fmt.RT_ENTRY:
                if length < fmt.ENTRY_BODY_SIZE or hard_state is not None:
                    problem = "malformed or misplaced ENTRY record"
                    break
                term, index, entry_type = unpack_entry(buf, p + 9)
                if index != expected:
                    problem = f"entry {index} where entry {expected} was expected"
                    break
                entry = Entry(term, index, buf[p + 26 : end], entry_type)
                if deferred:
                    pending.append(entry)
                    pending_pos.append(seq_bits | (offset + p))
                else:
                    add_entry(entry)
                    add_position(seq_bits | (offset + p))
                expected += 1
            elif rtype == fmt.RT_COMMIT:
                if length != fmt.COMMIT_BODY.size:
                    problem = "malformed COMMIT record"
                    break
                batch_seq, magic = fmt.COMMIT_BODY.unpack_from(buf, p + 9)
                if magic != fmt.COMMIT_MAGIC or batch_seq != self.batch_seq + 1:
                    problem = f"COMMIT of batch {batch_seq}, expected {self.batch_seq + 1}"
                    break
                if deferred:
                    problem = self._apply(snap, truncate, pending, pending_pos)
                    if problem:
                        break
                    if snap is not None and snap[2] == fmt.SNAPSHOT_RESET:
                        self.reset_seq = segment.seq
                    if pending:
                        segment.max_index = max(segment.max_index, pending[-1].index)
                    deferred = False
                    snap = truncate = None
                    pending = []
                    pending_pos = array("Q")
                elif len(entries) > mark:
                    segment.max_index = max(segment.max_index, entries[-1].index)
                if hard_state is not None:
                    self.hard_state = hard_state
                    hard_state = None
                self.batch_seq = batch_seq
                mark = len(entries)
                batch_start = offset + end
            elif rtype == fmt.RT_HARD_STATE and length == fmt.HARD_STATE_BODY.size:
                hard_state = fmt.HARD_STATE_BODY.unpack_from(buf, p + 9)
            elif (
                rtype == fmt.RT_TRUNCATE
                and length == fmt.TRUNCATE_BODY.size
                and truncate is None
                and len(entries) == mark
                and not pending
                and hard_state is None
            ):
                truncate = fmt.TRUNCATE_BODY.unpack_from(buf, p + 9)
                expected = truncate[0]
                deferred = True
            elif (
                rtype == fmt.RT_SNAPSHOT
                and length == fmt.SNAPSHOT_BODY.size
                and batch_start == offset + p
            ):
                snap = fmt.SNAPSHOT_BODY.unpack_from(buf, p + 9)
                if snap[2] == fmt.SNAPSHOT_RESET:
                    expected = snap[0] + 1
                deferred = True
            else:
                problem = f"unexpected record type {rtype} (length {length})"
                break
            p = end

        if not problem:
            return None
        failed_at = offset + p
        if not is_last:
            raise StorageCorruptionError(path, failed_at, problem + " (not the last segment)")
        commit_at = _find_commit(fd, crc, failed_at + 1, size)
        if commit_at is not None:
            raise StorageCorruptionError(
                path,
                failed_at,
                f"{problem}, followed by an intact batch COMMIT at offset {commit_at}: this is "
                "not a torn write but damage to data that may have been acknowledged",
            )
        # A torn tail: forget the incomplete batch.
        del entries[mark:]
        del positions[mark:]
        return batch_start

    def _apply(
        self,
        snap: tuple[int, int, int] | None,
        truncate: tuple[int, int] | None,
        pending: list[Entry],
        pending_pos: array[int],
    ) -> str:
        """Apply a committed batch; returns a problem description, or "" if it fits."""
        entries, positions = self.entries, self.positions
        if snap is not None:
            index, term, mode = snap
            if mode == fmt.SNAPSHOT_RESET:
                del entries[:]
                del positions[:]
                self.base_index, self.base_term = index, term
            elif mode == fmt.SNAPSHOT_KEEP:
                if index > self.last_index() or self.term_at(index) not in (term, None):
                    return f"snapshot marker ({index}, {term}) does not match the log"
                if index > self.base_index:
                    drop = index - self.base_index
                    del entries[:drop]
                    del positions[:drop]
                    self.base_index, self.base_term = index, term
                    self.base_from_header = False
                # else: a snapshot older than where this replay started; a later marker
                # (the one whose compaction removed the older segments) moves the base.
            else:
                return f"snapshot marker with unknown mode {mode}"
            if mode == fmt.SNAPSHOT_RESET:
                self.base_from_header = False
            self.marker = (index, term)
        if truncate is not None:
            index, prev_term = truncate
            if index <= self.base_index and self.base_from_header:
                # It cuts into segments compaction already removed (every later entry is
                # re-sent after it): the log so far is unknown below this point anyway.
                del entries[:]
                del positions[:]
                self.base_index, self.base_term = index - 1, prev_term
            if index <= self.base_index or index > self.last_index() + 1:
                return f"truncation at {index} outside the log {self.base_index + 1}.."
            if self.term_at(index - 1) != prev_term:
                return f"truncation at {index} expects term {prev_term} before it"
            keep = index - self.base_index - 1
            del entries[keep:]
            del positions[keep:]
        if pending:
            if pending[0].index != self.last_index() + 1:
                return f"entry {pending[0].index} does not follow {self.last_index()}"
            entries.extend(pending)
            positions.extend(pending_pos)
        return ""


def _find_commit(fd: int, crc: fmt.ChecksumFn, start: int, size: int) -> int | None:
    """Offset of the first intact COMMIT record starting at or after ``start``, if any."""
    if start >= size:
        return None
    rest = os.pread(fd, size - start, start)
    pattern = fmt.COMMIT_PATTERN
    at = rest.find(pattern, 4)
    while at >= 0:
        record_at = at - 4
        record = rest[record_at : record_at + fmt.COMMIT_RECORD_SIZE]
        if len(record) == fmt.COMMIT_RECORD_SIZE:
            (stored,) = fmt.U32.unpack_from(record)
            _, magic = fmt.COMMIT_BODY.unpack_from(record, fmt.RECORD_HEAD_SIZE)
            if magic == fmt.COMMIT_MAGIC and crc(record[4:]) == stored:
                return start + record_at
        at = rest.find(pattern, at + 1)
    return None


def _read_newest_segment(data_dir: str) -> int:
    path = os.path.join(data_dir, NEWEST_SEGMENT_FILE)
    try:
        with open(path, "rb") as f:
            return int(f.read().decode().strip())
    except FileNotFoundError:
        return 0
    except ValueError:
        raise StorageCorruptionError(path, 0, "unreadable segment record") from None


def _list_snapshots(data_dir: str) -> list[tuple[int, int, str]]:
    """(index, term, file name) of every snapshot file, oldest first."""
    found = []
    for name in os.listdir(data_dir):
        match = _SNAPSHOT_NAME.match(name)
        if match:
            found.append((int(match[1], 16), int(match[2], 16), name))
    return sorted(found)


def _load_snapshot(data_dir: str, index: int, term: int) -> Snapshot:
    path = os.path.join(data_dir, snapshot_name(index, term))
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise StorageCorruptionError(
            path, None, f"the snapshot in force (index {index}, term {term}) is missing"
        ) from None
    try:
        snapshot = fmt.decode_snapshot(raw)
    except ValueError as exc:
        raise StorageCorruptionError(path, 0, f"bad snapshot file: {exc}") from None
    if (snapshot.meta.index, snapshot.meta.term) != (index, term):
        raise StorageCorruptionError(path, 0, "snapshot contents disagree with the file name")
    return snapshot


def open_storage(
    data_dir: str | os.PathLike[str],
    *,
    segment_bytes: int = 64 << 20,
    keep_snapshots: int = 3,
    tail_cache_entries: int = 8192,
    on_save: SaveObserver | None = None,
) -> WalStorage:
    """Lock ``data_dir`` (created if absent), recover it, and return the store.

    ``tail_cache_entries``: how many of the newest entries ``entries()`` serves
    from memory (between this and twice this many are kept).
    Raises ``DataDirLockedError`` if another open holds the directory and
    ``StorageCorruptionError`` if recovery finds damage it must not repair.
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

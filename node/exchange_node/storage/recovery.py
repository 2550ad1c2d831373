"""Recovery: reading a data directory back, and what is corruption and what is not.

Recovery rules
--------------
1. ``*.tmp`` files are leftovers of an interrupted create or rename: removed
   (once every check below passed).
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
   snapshot covers, segments older than the last RESET, surplus snapshots),
   oldest first and each deletion durable before the next, but never the
   segment holding the marker in force or any newer one: the next recovery
   must find that marker again. (A segment whose every entry the snapshot
   covers is kept for that reason when the marker batch itself filled it.)
   Compaction's one-at-a-time deletions are what keep rule 2 sound: the
   surviving segments are always contiguous, so a gap is always a loss.
7. The recovered hard state's ``commit`` must not exceed the last recovered
   index: entries known committed would be missing.
8. The promise (``promise.py``: the slots of the newest segment if it is
   version 2, else the ``PROMISE`` file an older version kept) says which
   batch the node last promised with. Every batch is written only after the
   previous one is durable, and a promise for batch B is issued only then
   too (with B, and flushed by B's own ``fdatasync``), so a log whose last intact
   batch is below B - 1 has lost batches that were durable and possibly
   acknowledged: a *lost acknowledged tail*, not a torn write. The verdict
   (``verdict.py``) says which of clean, torn, lost or corruption applies, and
   the warning logged says it with indexes.
9. With ``repair_corruption``, damage in the *last* segment that rule 5 calls
   corruption cuts the log back to the last intact batch before it (the cut
   bytes are kept in ``<segment>.cut-<offset>`` for diagnosis) and the verdict
   is ``CORRUPTION``: the node then recovers from its peers instead of refusing
   to start. Damage in an older segment still raises.

Every ``StorageCorruptionError`` names the file and byte offset and tells the
operator to restore the member from its peers (wipe and re-add). Recovery
reads segments in 8 MiB chunks and changes no file until every check passed.

Cost of recovery: ``RecoveredState.entries`` holds every entry after the
snapshot in memory (about 240 bytes per 100-byte entry in CPython), so the
node should snapshot often enough to keep that log short. ``open_storage``
pauses Python's cyclic garbage collector while replay builds those objects
(it would rescan them again and again; replay creates no cycles).
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import time
from array import array
from dataclasses import dataclass

from exchange_node.limits import WAL_READ_CHUNK_BYTES
from exchange_node.raft.types import Entry, Snapshot

from . import format as fmt
from .errors import StorageCorruptionError
from .files import (
    OFFSET_BITS,
    SEGMENT_NAME,
    Segment,
    fsync_dir,
    list_snapshots,
    load_snapshot,
    read_newest_segment_record,
)
from .promise import Promise, SegmentSlots, read_promise, read_segment_slots
from .verdict import RecoveryVerdict, VerdictKind

log = logging.getLogger(__name__)

_READ_CHUNK = WAL_READ_CHUNK_BYTES
_ENTRY_RECORD = struct.Struct("<IIBQQB")
"""A whole ENTRY record head at once: crc, length, type, term, index, entry_type."""


@dataclass
class RecoveredDirectory:
    """What a data directory holds, checked, with torn tails and leftovers removed."""

    segments: list[Segment]
    replay: Replay
    snapshot: Snapshot | None
    seconds: float
    verdict: RecoveryVerdict
    promise: Promise | None
    """The promise in force as read (None: none kept, or the promise file is missing)."""
    slots: SegmentSlots | None = None
    """The newest segment's promise slots (None: a version-1 segment)."""


def recover_directory(
    data_dir: str, *, repair_corruption: bool = False
) -> RecoveredDirectory | None:
    """Read ``data_dir`` back by the rules above. None for a directory without a log.

    Raises ``StorageCorruptionError`` before changing any file; only once every
    check passed are a torn tail cut off and leftovers of unfinished saves removed.
    """
    started = time.perf_counter()
    names = os.listdir(data_dir)
    leftovers = [n for n in names if n.endswith(".tmp")]
    segment_files: list[tuple[int, int, str]] = []
    for name in names:
        match = SEGMENT_NAME.match(name)
        if match:
            segment_files.append((int(match[1], 16), int(match[2], 16), name))
    segment_files.sort()
    snapshots = list_snapshots(data_dir)
    newest_created, keeps_promise = read_newest_segment_record(data_dir)

    if not segment_files:
        if snapshots or newest_created:
            raise StorageCorruptionError(
                data_dir, None, "every WAL segment is missing (the directory had a log)"
            )
        _remove_leftovers(data_dir, leftovers)
        return None

    for (seq_a, _, name_a), (seq_b, _, name_b) in itertools.pairwise(segment_files):
        if seq_b != seq_a + 1:
            raise StorageCorruptionError(
                os.path.join(data_dir, name_b),
                None,
                f"segment(s) {seq_a + 1}..{seq_b - 1} between {name_a} and {name_b} are missing",
            )

    if segment_files[-1][0] < newest_created:
        raise StorageCorruptionError(
            os.path.join(data_dir, segment_files[-1][2]),
            None,
            f"segment {newest_created} was created but the newest segment file left is "
            f"{segment_files[-1][0]}: the newest segment(s) are missing",
        )

    replay = Replay(repair_corruption)
    segments: list[Segment] = []
    torn: tuple[str, int, int] | None = None
    for position, (seq, first_index, name) in enumerate(segment_files):
        is_last = position == len(segment_files) - 1
        path = os.path.join(data_dir, name)
        segment, torn_at = replay.segment(path, seq, first_index, is_last)
        segments.append(segment)
        if torn_at is not None:
            torn = (path, torn_at, segment.size)
            segment.size = torn_at

    marker = replay.marker
    if marker is None:
        if replay.base_index != 0:
            raise StorageCorruptionError(
                segments[0].path,
                0,
                f"the log starts after index {replay.base_index} but no snapshot covers "
                "the entries before it (older segments are missing)",
            )
    elif (replay.base_index, replay.base_term) != marker:
        raise StorageCorruptionError(
            segments[0].path,
            0,
            f"the log starts after index {replay.base_index} (term {replay.base_term}) but "
            f"the snapshot in force is at index {marker[0]} (term {marker[1]})",
        )
    last_index = replay.base_index + len(replay.positions)
    if replay.hard_state[2] > last_index:
        raise StorageCorruptionError(
            segments[-1].path,
            None,
            f"the hard state says entries up to {replay.hard_state[2]} are committed but "
            f"the log ends at {last_index}: committed entries are missing",
        )
    snapshot: Snapshot | None = None
    orphans = [s for s in snapshots if marker is None or s[0] > marker[0]]
    if marker is not None:
        snapshot = load_snapshot(data_dir, *marker)
    slots = replay.slots
    promise: Promise | None
    if slots is not None:
        # Rule 8: the newest segment's slots hold the promise (a PROMISE file left
        # by an older version is stale once a version-2 segment exists).
        promise = slots.promise
        keeps_promise = True
    else:
        promise = read_promise(data_dir)
    verdict = judge(replay, torn, promise, keeps_promise)

    # Everything checked: only now change files.
    if verdict.kind is not VerdictKind.CLEAN:
        log.warning("%s: %s", data_dir, verdict.message)
    if torn is not None:
        path, torn_at, _ = torn
        if replay.corruption is not None:
            _keep_cut_bytes(path, torn_at)
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
    _remove_leftovers(data_dir, leftovers)
    if orphans and not leftovers:
        fsync_dir(data_dir)

    return RecoveredDirectory(
        segments,
        replay,
        snapshot,
        time.perf_counter() - started,
        verdict,
        promise,
        slots,
    )


def judge(
    replay: Replay,
    torn: tuple[str, int, int] | None,
    promise: Promise | None,
    keeps_promise: bool,
) -> RecoveryVerdict:
    """Rule 8: clean, torn never-acknowledged batch, lost acknowledged tail or corruption."""
    last = replay.last_index()
    batch = replay.batch_seq
    term = replay.hard_state[0]
    where = f"the log ends at index {last} (batch {batch})"
    last_term: int | None = None
    if promise is None:
        if keeps_promise:
            return RecoveryVerdict(
                VerdictKind.LOST,
                f"lost acknowledged tail? the promise file is missing, so nothing shows what "
                f"this node acknowledged; {where}; it must catch up from a leader before it "
                "votes again",
                last,
                max(last, replay.highest_seen),
                term,
            )
        promised, promised_term = 0, 0
    else:
        promised, promised_term = max(promise.last_index, promise.owed_index), promise.term
        if promise.last_index >= promise.owed_index:
            last_term = promise.last_term
        elif promise.owed_last_term:
            last_term = promise.owed_last_term
    if replay.corruption is not None:
        path, offset, problem = replay.corruption
        lost = max(promised, replay.highest_seen)
        return RecoveryVerdict(
            VerdictKind.CORRUPTION,
            f"corruption in {path} at byte offset {offset} ({problem}): the log was cut back "
            f"to index {last} (batch {batch}); entries up to {lost} may have been "
            "acknowledged, so this node must catch up from a leader before it votes again",
            last,
            lost,
            promised_term,
            last_term if lost == promised else None,
        )
    if promise is not None and batch < promise.batch_seq - 1:
        return RecoveryVerdict(
            VerdictKind.LOST,
            f"lost acknowledged tail: this node promised up to index {promise.last_index} "
            f"(term {promise.term}, batch {promise.batch_seq}) but {where}: batches "
            f"{batch + 1}..{promise.batch_seq - 1} were durable and may have been acknowledged; "
            "it must catch up from a leader before it votes again",
            last,
            promised,
            promised_term,
            last_term,
        )
    if promise is not None and promise.owed_index > last:
        return RecoveryVerdict(
            VerdictKind.LOST,
            f"still recovering a lost tail: a leader has not yet brought the log back to "
            f"index {promise.owed_index}; {where}",
            last,
            promised,
            promised_term,
            last_term,
        )
    if torn is not None:
        path, torn_at, size = torn
        return RecoveryVerdict(
            VerdictKind.TORN,
            f"torn write at the end of the log: dropped {size - torn_at} bytes from offset "
            f"{torn_at} of {path}, batch {batch + 1} (never acknowledged: no answer leaves "
            f"before its batch and its promise are durable); {where}",
            last,
            promised,
            promised_term,
        )
    if promise is not None and batch == promise.batch_seq - 1:
        return RecoveryVerdict(
            VerdictKind.TORN,
            f"batch {promise.batch_seq} (to index {promise.last_index}) was promised but left "
            f"no bytes: a crash during its write, never acknowledged; {where}",
            last,
            promised,
            promised_term,
        )
    return RecoveryVerdict(VerdictKind.CLEAN, f"clean: {where}", last, promised, promised_term)


def _keep_cut_bytes(path: str, offset: int) -> None:
    """Copy what a corruption cut removes next to the segment, for diagnosis."""
    with open(path, "rb") as src:
        src.seek(offset)
        rest = src.read()
    aside = f"{path}.cut-{offset}"
    with open(aside, "wb") as dst:
        dst.write(rest)
        dst.flush()
        os.fsync(dst.fileno())


def _remove_leftovers(data_dir: str, leftovers: list[str]) -> None:
    for name in leftovers:
        log.info("removing %s: left over from an interrupted write", name)
        os.unlink(os.path.join(data_dir, name))
    if leftovers:
        fsync_dir(data_dir)


class Replay:
    """Recovery's running state: the log as the records so far describe it."""

    def __init__(self, repair_corruption: bool = False) -> None:
        self.repair_corruption = repair_corruption
        self.corruption: tuple[str, int, str] | None = None
        """(path, offset, problem) of damage cut off under ``repair_corruption``."""
        self.highest_seen = 0
        """The highest entry index read, including entries of a batch later dropped."""
        self.base_index = 0
        self.base_term = 0
        self.entries: list[Entry] = []
        self.positions = array("Q")
        self.hard_state: tuple[int, int, int] = (0, 0, 0)
        self.batch_seq = 0
        self.marker: tuple[int, int] | None = None
        self.marker_seq = 0
        """Segment holding the marker in force: compaction must never delete it."""
        self.reset_seq = 0
        """Segment holding the last RESET marker: every older segment is dead."""
        self.started = False
        self.slots: SegmentSlots | None = None
        """The last segment's promise slots if it is version 2."""
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
    ) -> tuple[Segment, int | None]:
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
            start = fmt.records_start(header.version)
            if size < start:
                # Created whole (temp file, fsync, rename) before any record: damage.
                raise StorageCorruptionError(
                    path, size, f"segment cut inside its header area ({start} bytes)"
                )
            if header.version == fmt.SEGMENT_VERSION_SLOTS:
                slots = read_segment_slots(path, os.pread(fd, start, 0), newest=is_last)
                self.slots = slots if is_last else None
            segment = Segment(seq, first_index, path, header.checksum, size, header.version)
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
        self, fd: int, path: str, segment: Segment, size: int, is_last: bool
    ) -> int | None:
        crc = fmt.checksum_fn(segment.checksum)
        unpack_head = fmt.RECORD_HEAD.unpack_from
        unpack_entry = fmt.ENTRY_BODY.unpack_from
        unpack_entry_record = _ENTRY_RECORD.unpack_from
        seq_bits = segment.seq << OFFSET_BITS
        entries = self.entries
        positions = self.positions
        add_entry = entries.append
        add_position = positions.append
        offset = fmt.records_start(segment.version)  # file offset of buf[0]
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
                    if snap is not None:
                        self.marker_seq = segment.seq
                        if snap[2] == fmt.SNAPSHOT_RESET:
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
        self.highest_seen = max(self.highest_seen, expected - 1)
        if not is_last:
            raise StorageCorruptionError(path, failed_at, problem + " (not the last segment)")
        commit_at = find_commit(fd, crc, failed_at + 1, size)
        if commit_at is not None and self.repair_corruption:
            self.corruption = (
                path,
                failed_at,
                f"{problem}, before an intact COMMIT at {commit_at}",
            )
        elif commit_at is not None:
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


def find_commit(fd: int, crc: fmt.ChecksumFn, start: int, size: int) -> int | None:
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

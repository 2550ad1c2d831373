"""The bytes on disk: WAL segment headers, WAL records and snapshot files.

All integers are little-endian. Every checksum is CRC-32C (Castagnoli,
hardware-accelerated through the ``crc32c`` package) when that package is
installed, otherwise CRC-32 (IEEE, ``zlib.crc32``). Which one a file uses is
written in its header (``checksum`` below: 1 = CRC-32C, 2 = CRC-32), so a
directory written on one machine is read correctly on another; a reader that
lacks CRC-32C refuses such a file with a clear error instead of calling it
corrupt.

Segment file ``wal-<seq:016x>-<first_index:016x>.log``
-------------------------------------------------------
``seq`` numbers segments 1, 2, 3, ... with no gaps; ``first_index`` is the
index the first entry written into the segment would have. The file is a
80-byte header, then (version 2) two promise slots, then records::

    header: magic "EXWALSEG" | version u16 | checksum u8 | pad 5 bytes
            seq u64 | first_index u64 | prev_term u64
            hs_term u64 | hs_vote u64 | hs_commit u64 | batch_seq u64 | crc u32 | pad u32

``prev_term`` is the term of entry ``first_index - 1`` (0 for none),
``hs_*`` the hard state current when the segment was created (so deleting
older segments never loses it) and ``batch_seq`` the sequence number of the
last batch committed before it. ``crc`` covers the 72 bytes before it.

Version 1 segments have their first record at byte 80. Version 2 segments (the
ones written now) keep the node's *promise* (``promise.py``) in two 88-byte
slots at bytes 4096 and 8192, zeros elsewhere, and their first record at byte
12288. The slots are overwritten in place, alternately, with the batch whose
promise they carry, so one ``fdatasync`` of the segment makes both durable
(``docs/recovery.md``). Only the newest segment's slots are in force.

Record::

    crc u32 | length u32 | type u8 | body (length bytes)

``crc`` covers ``length``, ``type`` and ``body``. Bodies by type:

    1 ENTRY       term u64 | index u64 | entry_type u8 | data
    2 HARD_STATE  term u64 | vote u64 | commit u64
    3 TRUNCATE    index u64 | prev_term u64      (entries >= index are gone)
    4 SNAPSHOT    index u64 | term u64 | mode u8  (1 KEEP: entries <= index
                  are gone, the rest stay; 2 RESET: the whole log is gone)
    5 COMMIT      batch_seq u64 | magic u32 "CMIT"

One ``save()`` is one *batch*: its records in the order SNAPSHOT, TRUNCATE,
ENTRY..., HARD_STATE, then a COMMIT record, written with one ``write`` and
made durable with one ``fdatasync``. Recovery applies a batch only when its
COMMIT record is intact, so a batch is all-or-nothing: this is what makes the
hard state atomic (a torn write leaves the previous hard state in force).

Snapshot file ``snap-<index:016x>-<term:016x>.snap``
----------------------------------------------------
::

    magic "EXSNAP01" | version u16 | checksum u8 | pad u8 | voters u32 | learners u32
    index u64 | term u64 | data_length u64
    voter ids u64 * voters | learner ids u64 * learners | data | crc u32

``crc`` covers every byte before it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

from exchange_node.raft.types import ConfState, Snapshot, SnapshotMeta

from .errors import ChecksumUnavailableError

ChecksumFn = Callable[..., int]

CHECKSUM_CRC32C = 1
CHECKSUM_CRC32 = 2
CHECKSUMS: dict[int, ChecksumFn] = {CHECKSUM_CRC32: zlib.crc32}
try:
    from crc32c import crc32c as _crc32c

    CHECKSUMS[CHECKSUM_CRC32C] = _crc32c
except ImportError:  # pragma: no cover - depends on the environment
    pass
CHECKSUM_NAMES = {CHECKSUM_CRC32C: "CRC-32C", CHECKSUM_CRC32: "CRC-32 (zlib)"}
WRITE_CHECKSUM = CHECKSUM_CRC32C if CHECKSUM_CRC32C in CHECKSUMS else CHECKSUM_CRC32
"""The checksum new files get: the fastest one available here."""

VERSION = 1

SEGMENT_MAGIC = b"EXWALSEG"
SEGMENT_HEADER = struct.Struct("<8sHBxxxxxQQQQQQQ")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size + 8  # + crc u32 + pad u32
assert SEGMENT_HEADER.size == 72 and SEGMENT_HEADER_SIZE == 80

SEGMENT_VERSION_PLAIN = 1
"""Records follow the header at byte 80; the promise, if any, is in ``PROMISE``."""
SEGMENT_VERSION_SLOTS = 2
"""Two promise slots (``promise.py``) at ``PROMISE_SLOT_OFFSETS``, zero padding
between, records from ``SLOTS_RECORDS_START``: one ``fdatasync`` of the segment
makes a batch and its promise durable together."""
PROMISE_SLOT_OFFSETS = (4096, 8192)
"""Each slot on a page (and sectors) of its own, apart from the header and records."""
SLOTS_RECORDS_START = 12288


def records_start(version: int) -> int:
    """File offset of a segment's first record."""
    return SLOTS_RECORDS_START if version == SEGMENT_VERSION_SLOTS else SEGMENT_HEADER_SIZE


def slot_area(version: int) -> int:
    """Bytes between a segment's header and its first record (the promise slots)."""
    return records_start(version) - SEGMENT_HEADER_SIZE


SNAPSHOT_MAGIC = b"EXSNAP01"
SNAPSHOT_HEADER = struct.Struct("<8sHBxIIQQQ")

RT_ENTRY = 1
RT_HARD_STATE = 2
RT_TRUNCATE = 3
RT_SNAPSHOT = 4
RT_COMMIT = 5

SNAPSHOT_KEEP = 1
SNAPSHOT_RESET = 2

U32 = struct.Struct("<I")
RECORD_HEAD = struct.Struct("<IIB")
"""crc, length, type."""
RECORD_HEAD_SIZE = RECORD_HEAD.size  # 9
ENTRY_HEAD = struct.Struct("<IBQQB")
"""length, type, term, index, entry_type: the checksummed part of an ENTRY record before data."""
ENTRY_BODY = struct.Struct("<QQB")
ENTRY_BODY_SIZE = ENTRY_BODY.size  # 17
ENTRY_OVERHEAD = 4 + ENTRY_HEAD.size  # 26 bytes per entry on top of its data
HARD_STATE_BODY = struct.Struct("<QQQ")
TRUNCATE_BODY = struct.Struct("<QQ")
SNAPSHOT_BODY = struct.Struct("<QQB")
COMMIT_BODY = struct.Struct("<QI")
COMMIT_MAGIC = 0x54494D43  # "CMIT"
COMMIT_RECORD_SIZE = RECORD_HEAD_SIZE + COMMIT_BODY.size
COMMIT_PATTERN = struct.pack("<IB", COMMIT_BODY.size, RT_COMMIT)
"""Bytes 4..9 of every COMMIT record: what recovery searches for past a bad record."""


def checksum_fn(algorithm: int) -> ChecksumFn:
    """The function for a checksum id; ValueError for an id that is not one."""
    try:
        return CHECKSUMS[algorithm]
    except KeyError:
        if algorithm == CHECKSUM_CRC32C:
            raise ChecksumUnavailableError(
                "the data directory uses CRC-32C checksums but the crc32c package is not "
                "installed here (pip install crc32c); the files themselves are fine"
            ) from None
        raise ValueError(f"unknown checksum algorithm {algorithm}") from None


def record(crc: ChecksumFn, rtype: int, body: bytes) -> bytes:
    """One framed non-entry record."""
    head = struct.pack("<IB", len(body), rtype)
    return U32.pack(crc(body, crc(head))) + head + body


def commit_record(crc: ChecksumFn, batch_seq: int) -> bytes:
    return record(crc, RT_COMMIT, COMMIT_BODY.pack(batch_seq, COMMIT_MAGIC))


# -- segment header -------------------------------------------------------------


def encode_segment_header(
    checksum: int,
    seq: int,
    first_index: int,
    prev_term: int,
    hard_state: tuple[int, int, int],
    batch_seq: int,
    version: int = SEGMENT_VERSION_PLAIN,
) -> bytes:
    """The 80-byte header (a version-2 segment's slots and padding follow it)."""
    head = SEGMENT_HEADER.pack(
        SEGMENT_MAGIC, version, checksum, seq, first_index, prev_term, *hard_state, batch_seq
    )
    return head + struct.pack("<II", checksum_fn(checksum)(head), 0)


class SegmentHeader:
    __slots__ = (
        "batch_seq",
        "checksum",
        "first_index",
        "hard_state",
        "prev_term",
        "seq",
        "version",
    )

    def __init__(
        self,
        checksum: int,
        seq: int,
        first_index: int,
        prev_term: int,
        hard_state: tuple[int, int, int],
        batch_seq: int,
        version: int = SEGMENT_VERSION_PLAIN,
    ) -> None:
        self.version = version
        self.checksum = checksum
        self.seq = seq
        self.first_index = first_index
        self.prev_term = prev_term
        self.hard_state = hard_state
        self.batch_seq = batch_seq


def decode_segment_header(raw: bytes) -> SegmentHeader:
    """Parse and verify a segment header; ValueError says what is wrong."""
    if len(raw) < SEGMENT_HEADER_SIZE:
        raise ValueError(f"header is {len(raw)} bytes, expected {SEGMENT_HEADER_SIZE}")
    magic, version, checksum, seq, first, prev_term, term, vote, commit, batch_seq = (
        SEGMENT_HEADER.unpack_from(raw)
    )
    if magic != SEGMENT_MAGIC:
        raise ValueError(f"bad magic {magic!r}: not a WAL segment")
    if version not in (SEGMENT_VERSION_PLAIN, SEGMENT_VERSION_SLOTS):
        raise ValueError(f"unsupported segment version {version}")
    crc = checksum_fn(checksum)
    stored, pad = struct.unpack_from("<II", raw, SEGMENT_HEADER.size)
    if crc(raw[: SEGMENT_HEADER.size]) != stored or pad != 0:
        raise ValueError("segment header checksum mismatch")
    return SegmentHeader(checksum, seq, first, prev_term, (term, vote, commit), batch_seq, version)


# -- snapshot files -----------------------------------------------------------------


def encode_snapshot(snapshot: Snapshot, checksum: int | None = None) -> list[bytes]:
    """The snapshot file's bytes, as pieces for ``os.writev`` (the data is not copied)."""
    if checksum is None:
        checksum = WRITE_CHECKSUM
    meta = snapshot.meta
    voters, learners = meta.conf_state.voters, meta.conf_state.learners
    head = SNAPSHOT_HEADER.pack(
        SNAPSHOT_MAGIC,
        VERSION,
        checksum,
        len(voters),
        len(learners),
        meta.index,
        meta.term,
        len(snapshot.data),
    ) + struct.pack(f"<{len(voters) + len(learners)}Q", *voters, *learners)
    crc = checksum_fn(checksum)
    return [head, snapshot.data, U32.pack(crc(snapshot.data, crc(head)))]


def decode_snapshot(raw: bytes) -> Snapshot:
    """Parse and verify a snapshot file's bytes; ValueError says what is wrong."""
    if len(raw) < SNAPSHOT_HEADER.size + 4:
        raise ValueError(f"file is {len(raw)} bytes, too short for a snapshot")
    magic, version, checksum, n_voters, n_learners, index, term, data_length = (
        SNAPSHOT_HEADER.unpack_from(raw)
    )
    if magic != SNAPSHOT_MAGIC:
        raise ValueError(f"bad magic {magic!r}: not a snapshot file")
    if version != VERSION:
        raise ValueError(f"unsupported snapshot version {version}")
    crc = checksum_fn(checksum)
    ids_end = SNAPSHOT_HEADER.size + 8 * (n_voters + n_learners)
    expected = ids_end + data_length + 4
    if len(raw) != expected:
        raise ValueError(f"file is {len(raw)} bytes, its header says {expected}")
    view = memoryview(raw)
    (stored,) = U32.unpack_from(raw, expected - 4)
    if crc(view[: expected - 4]) != stored:
        raise ValueError("snapshot checksum mismatch")
    ids = struct.unpack_from(f"<{n_voters + n_learners}Q", raw, SNAPSHOT_HEADER.size)
    conf = ConfState(tuple(ids[:n_voters]), tuple(ids[n_voters:]))
    data = bytes(view[ids_end : expected - 4])
    return Snapshot(SnapshotMeta(index, term, conf), data)

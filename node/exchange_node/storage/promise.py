"""The promise: what this node has durably promised, kept apart from the log tail.

A lost log tail (a disk that dropped synced writes, a restore of an old copy, a
cut file) must not be taken for a torn write that was never acknowledged. The
log records alone cannot tell the two apart: the record that would prove the
acknowledgement is in the tail that went missing. So every batch that changes
what the node promises (new entries: it acknowledges them, or as leader counts
them for itself; a new term or vote; a snapshot installed from a leader) also
writes a *promise*, and no acknowledgement or vote leaves the node before both
are durable. ``docs/recovery.md`` gives the design and its limits.

Where: two slots in the header area of every version-2 WAL segment (bytes 4096
and 8192, ``format.py``), before the records, overwritten in place and
alternately, so a torn write of one slot leaves the other intact and one
``fdatasync`` of the segment makes a batch and its promise durable together.
A cut of the segment's tail leaves the slots; a lost whole segment is seen
through ``NEWEST_SEGMENT``. Only the newest segment's slots are in force; a new
segment starts with the promise current when it is created.

Directories written before version-2 segments kept the promise in a file
``PROMISE`` (8,192 bytes, the same two slots at offsets 0 and 4096): it is
still read while the newest segment is version 1, and removed once the store
has moved to a version-2 segment (at open).

A slot::

    magic "EXPROMIS" | version u16 | checksum u8 | pad 5 bytes
    write_seq u64 | term u64 | vote u64 | batch_seq u64 | last_index u64 | last_term u64
    owed_index u64 | owed_last_term u64 | crc u32 | pad u32

``write_seq`` counts promise writes (the valid slot with the higher one is in
force); ``batch_seq`` is the WAL batch the promise was written with, and
``last_index``/``last_term`` the end of the log once that batch is durable.
``owed_index`` is nonzero while the node is recovering: recovery found a lost
tail or corruption, and the node owes a catch-up from a leader up to that
index before it may vote again. It survives restarts, and the store clears it
when the log reaches it.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

from . import format as fmt
from .errors import StorageCorruptionError

PROMISE_FILE = "PROMISE"
"""The promise file of directories written before version-2 segments (read only)."""
SLOT_OFFSETS = (0, 4096)
"""The slots in ``PROMISE`` (a version-2 segment's are ``format.PROMISE_SLOT_OFFSETS``)."""
FILE_SIZE = 8192
MAGIC = b"EXPROMIS"
VERSION = 1
_SLOT = struct.Struct("<8sHBxxxxxQQQQQQQQ")
SLOT_SIZE = _SLOT.size + 8  # + crc u32 + pad u32


class Promise(NamedTuple):
    """What the node had durably promised when it last wrote a slot."""

    term: int
    vote: int
    batch_seq: int
    """The WAL batch written together with this promise."""
    last_index: int
    """The end of the log once that batch is durable: the highest index acknowledged."""
    last_term: int
    owed_index: int = 0
    """Nonzero while recovering: the index a leader must bring the log back to."""
    owed_last_term: int = 0
    """The term of the entry at ``owed_index`` in the log that was lost (0: unknown)."""


_TAIL = struct.Struct("<II")
_WRITE_CRC = fmt.CHECKSUMS[fmt.WRITE_CHECKSUM]


def encode_slot(write_seq: int, promise: Promise, checksum: int = fmt.WRITE_CHECKSUM) -> bytes:
    head = _SLOT.pack(MAGIC, VERSION, checksum, write_seq, *promise)
    crc = _WRITE_CRC if checksum == fmt.WRITE_CHECKSUM else fmt.checksum_fn(checksum)
    return head + _TAIL.pack(crc(head), 0)


def decode_slot(raw: bytes) -> tuple[int, Promise] | None:
    """(write_seq, promise) of an intact slot; None for a torn, blank or foreign one."""
    if len(raw) < SLOT_SIZE:
        return None
    magic, version, checksum, write_seq, *fields = _SLOT.unpack_from(raw)
    if magic != MAGIC or version != VERSION:
        return None
    if checksum not in fmt.CHECKSUMS:
        if checksum in fmt.CHECKSUM_NAMES:
            fmt.checksum_fn(checksum)  # raises ChecksumUnavailableError: not the disk's fault
        return None
    stored, pad = struct.unpack_from("<II", raw, _SLOT.size)
    if fmt.checksum_fn(checksum)(raw[: _SLOT.size]) != stored or pad != 0:
        return None
    return write_seq, Promise(*fields)


def read_promise(data_dir: str) -> Promise | None:
    """The promise in force; None when the file does not exist.

    Raises ``StorageCorruptionError`` when the file exists but neither slot is
    intact (both torn at once cannot come from one interrupted write)."""
    path = os.path.join(data_dir, PROMISE_FILE)
    try:
        with open(path, "rb") as f:
            raw = f.read(FILE_SIZE)
    except FileNotFoundError:
        return None
    slots = [decode_slot(raw[at : at + SLOT_SIZE]) for at in SLOT_OFFSETS]
    intact = [s for s in slots if s is not None]
    if not intact:
        raise StorageCorruptionError(path, 0, "neither slot of the promise file is intact")
    return max(intact)[1]


class SegmentSlots(NamedTuple):
    """The promise slots of a version-2 segment as read."""

    write_seq: int
    """The highest ``write_seq`` of an intact slot."""
    promise: Promise
    """The promise in that slot: the one in force if this is the newest segment."""
    torn: bool
    """The other slot is damaged: a slot write a crash interrupted (newest segment only)."""


def read_segment_slots(path: str, raw: bytes, *, newest: bool) -> SegmentSlots:
    """Check and read the head of a version-2 segment (its first ``SLOTS_RECORDS_START``
    bytes, ``raw``). Padding must be zeros and each slot blank or intact; only the
    newest segment may have one damaged slot (the write a crash cut short: every older
    segment's last slot write was durable before the next segment was created).
    Raises ``StorageCorruptionError`` otherwise, or when no slot is intact."""
    start = fmt.SEGMENT_HEADER_SIZE
    for at in (*fmt.PROMISE_SLOT_OFFSETS, fmt.SLOTS_RECORDS_START):
        if raw[start:at].count(0) != at - start:
            bad_at = start + next(k for k, b in enumerate(raw[start:at]) if b)
            raise StorageCorruptionError(path, bad_at, "nonzero bytes in the slot padding")
        start = at + SLOT_SIZE
    intact: list[tuple[int, Promise]] = []
    damaged: list[int] = []
    for at in fmt.PROMISE_SLOT_OFFSETS:
        piece = raw[at : at + SLOT_SIZE]
        if piece.count(0) == SLOT_SIZE:
            continue
        slot = decode_slot(piece)
        if slot is None:
            damaged.append(at)
        else:
            intact.append(slot)
    if not intact:
        raise StorageCorruptionError(path, None, "neither promise slot of the segment is intact")
    if damaged and not newest:
        raise StorageCorruptionError(path, damaged[0], "damaged promise slot in an older segment")
    write_seq, promise = max(intact)
    return SegmentSlots(write_seq, promise, bool(damaged))


class SlotWriter:
    """The promise slots of the active segment: which slot the next promise goes to.

    The store writes the bytes itself (``pwrite`` on the segment's descriptor, with
    the batch) so that the batch's one ``fdatasync`` covers both."""

    def __init__(self, write_seq: int, promise: Promise | None) -> None:
        self.write_seq = write_seq
        self.promise = promise
        """The promise last written (durable once its batch is)."""

    def next_slot(self, promise: Promise) -> tuple[bytes, int]:
        """(bytes, file offset) of the next slot to write for ``promise``; call
        ``written`` once they are durable."""
        write_seq = self.write_seq + 1
        return encode_slot(write_seq, promise), fmt.PROMISE_SLOT_OFFSETS[write_seq % 2]

    def written(self, promise: Promise) -> None:
        self.write_seq += 1
        self.promise = promise

    def segment_head(self, header: bytes, promise: Promise) -> bytes:
        """A new version-2 segment's first ``SLOTS_RECORDS_START`` bytes: ``header``,
        then ``promise`` in its slot (the other slot blank); call ``written`` once the
        segment is durable."""
        head = bytearray(fmt.SLOTS_RECORDS_START)
        head[: len(header)] = header
        slot, at = self.next_slot(promise)
        head[at : at + len(slot)] = slot
        return bytes(head)

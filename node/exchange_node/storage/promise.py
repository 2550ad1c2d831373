"""The promise file: what this node has durably promised, kept apart from the WAL.

A lost log tail (a disk that dropped synced writes, a restore of an old copy, a
cut file) must not be taken for a torn write that was never acknowledged. The
WAL cannot tell the two apart by itself: the record that would prove the
acknowledgement is in the tail that went missing. So every batch that changes
what the node promises (new entries: it acknowledges them, or as leader counts
them for itself; a new term or vote; a snapshot installed from a leader) also
writes a *promise* here, and no acknowledgement or vote leaves the node before
both files are durable. ``docs/recovery.md`` gives the design and its limits.

File ``PROMISE`` (8,192 bytes, created once, then only overwritten in place, so
an ``fdatasync`` never has to flush metadata): two slots at offsets 0 and 4096,
written alternately, so a torn write of one slot leaves the other intact::

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
from .files import fdatasync, fsync_dir, write_file_durably

PROMISE_FILE = "PROMISE"
SLOT_OFFSETS = (0, 4096)
FILE_SIZE = 8192
MAGIC = b"EXPROMIS"
VERSION = 1
_SLOT = struct.Struct("<8sHBxxxxxQQQQQQQQ")
SLOT_SIZE = _SLOT.size + 8  # + crc u32 + pad u32


class Promise(NamedTuple):
    """What the node had durably promised when it last wrote the file."""

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


def encode_slot(write_seq: int, promise: Promise, checksum: int = fmt.WRITE_CHECKSUM) -> bytes:
    head = _SLOT.pack(MAGIC, VERSION, checksum, write_seq, *promise)
    return head + struct.pack("<II", fmt.checksum_fn(checksum)(head), 0)


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


class PromiseWriter:
    """Writes promises into alternating slots of an open ``PROMISE`` file."""

    def __init__(self, data_dir: str, start: Promise | None) -> None:
        """Open (creating durably if absent) the file; ``start`` is written at once when
        given (a new file, or one recovery had to repair)."""
        self.path = os.path.join(data_dir, PROMISE_FILE)
        if not os.path.exists(self.path):
            write_file_durably(data_dir, PROMISE_FILE, [bytes(FILE_SIZE)])
            fsync_dir(data_dir)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        self._write_seq = self._newest_write_seq()
        self.promise: Promise | None = None
        if start is not None:
            self.write(start)
            self.sync()

    def _newest_write_seq(self) -> int:
        raw = os.pread(self._fd, FILE_SIZE, 0)
        seqs = [s[0] for at in SLOT_OFFSETS if (s := decode_slot(raw[at : at + SLOT_SIZE]))]
        return max(seqs, default=0)

    def write(self, promise: Promise) -> None:
        """Write the next slot (not yet durable: call ``sync``)."""
        self._write_seq += 1
        slot = encode_slot(self._write_seq, promise)
        at = SLOT_OFFSETS[self._write_seq % 2]
        if os.pwrite(self._fd, slot, at) != len(slot):
            raise OSError(f"short write to {self.path}")
        self.promise = promise

    def sync(self) -> None:
        fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

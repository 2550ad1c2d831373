"""Files in a data directory: their names, durable writes, and reading the small ones.

Segments are ``wal-<seq:016x>-<first_index:016x>.log``, snapshots
``snap-<index:016x>-<term:016x>.snap``, ``NEWEST_SEGMENT`` holds the sequence
number of the newest segment ever created, ``LOCK`` is the directory lock and
``*.tmp`` are files being written (renamed into place once fsynced).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from exchange_node.raft.types import Snapshot

from . import format as fmt
from .errors import StorageCorruptionError

SEGMENT_NAME = re.compile(r"^wal-([0-9a-f]{16})-([0-9a-f]{16})\.log$")
SNAPSHOT_NAME = re.compile(r"^snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
NEWEST_SEGMENT_FILE = "NEWEST_SEGMENT"
"""Holds the sequence number of the newest segment created, so that losing it is seen."""

OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1
"""An entry's position packs its segment's seq above OFFSET_BITS and its byte offset below."""


def segment_name(seq: int, first_index: int) -> str:
    return f"wal-{seq:016x}-{first_index:016x}.log"


def snapshot_name(index: int, term: int) -> str:
    return f"snap-{index:016x}-{term:016x}.snap"


class Segment:
    """One segment file as the store knows it."""

    __slots__ = (
        "checksum",
        "first_index",
        "max_index",
        "path",
        "read_fd",
        "seq",
        "size",
        "version",
    )

    def __init__(
        self,
        seq: int,
        first_index: int,
        path: str,
        checksum: int,
        size: int,
        version: int = fmt.SEGMENT_VERSION_PLAIN,
    ) -> None:
        self.seq = seq
        self.version = version
        """Segment format version: 2 has promise slots (``format.py``)."""
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


fdatasync = getattr(os, "fdatasync", os.fsync)
"""Data plus the metadata needed to read it back (the file size): safe for appends."""


def write_all(fd: int, buf: bytes | bytearray | memoryview) -> None:
    view = memoryview(buf)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def pwrite_all(fd: int, buf: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(buf)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def write_file_durably(directory: str, name: str, pieces: Sequence[bytes]) -> str:
    """temp file, fsync, rename, directory fsync. Returns the final path."""
    path = os.path.join(directory, name)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        total = sum(len(p) for p in pieces)
        written = os.writev(fd, pieces)
        if written != total:
            write_all(fd, b"".join(pieces)[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(directory)
    return path


PROMISE_TAG = "promise"
"""Second word of ``NEWEST_SEGMENT`` once the directory keeps a promise file: a missing
promise file is then a loss, where a directory written by an older version (no tag)
simply has none yet."""


def newest_segment_record(seq: int) -> bytes:
    return f"{seq} {PROMISE_TAG}\n".encode()


def read_newest_segment_record(data_dir: str) -> tuple[int, bool]:
    """(newest segment seq, whether the directory keeps a promise file); (0, False) if
    the record does not exist."""
    path = os.path.join(data_dir, NEWEST_SEGMENT_FILE)
    try:
        with open(path, "rb") as f:
            words = f.read().decode().split()
        if not 1 <= len(words) <= 2 or (len(words) == 2 and words[1] != PROMISE_TAG):
            raise ValueError
        return int(words[0]), len(words) == 2
    except FileNotFoundError:
        return 0, False
    except (ValueError, UnicodeDecodeError):
        raise StorageCorruptionError(path, 0, "unreadable segment record") from None


def read_newest_segment(data_dir: str) -> int:
    return read_newest_segment_record(data_dir)[0]


def list_snapshots(data_dir: str) -> list[tuple[int, int, str]]:
    """(index, term, file name) of every snapshot file, oldest first."""
    found = []
    for name in os.listdir(data_dir):
        match = SNAPSHOT_NAME.match(name)
        if match:
            found.append((int(match[1], 16), int(match[2], 16), name))
    return sorted(found)


def load_snapshot(data_dir: str, index: int, term: int) -> Snapshot:
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

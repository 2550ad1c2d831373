"""Errors raised by the durable storage layer, each saying what an operator can do."""

from __future__ import annotations

RESTORE_ADVICE = (
    "This member's disk can no longer be trusted. Restore it from its peers: stop the "
    "node, move its data directory aside (keep it for diagnosis), remove the member from "
    "the cluster, then re-add it empty so the leader sends it a snapshot."
)


class StorageError(Exception):
    """Base class of every storage error."""


class StorageCorruptionError(StorageError):
    """Durable data failed a check; the node must not start on it.

    ``path`` and ``offset`` locate the first bad byte found (offset may be None
    when the problem is a missing file rather than a bad byte).
    """

    def __init__(self, path: str, offset: int | None, problem: str) -> None:
        where = path if offset is None else f"{path} at byte offset {offset}"
        super().__init__(f"storage corruption in {where}: {problem}. {RESTORE_ADVICE}")
        self.path = path
        self.offset = offset
        self.problem = problem


class DataDirLockedError(StorageError):
    """Another process (or another open in this one) holds the data directory."""

    def __init__(self, data_dir: str, holder_pid: int | None) -> None:
        holder = f"process {holder_pid}" if holder_pid else "another process"
        super().__init__(
            f"data directory {data_dir} is locked by {holder}; two nodes must never share "
            "one data directory (stop the other one, or give this node its own directory)"
        )
        self.data_dir = data_dir
        self.holder_pid = holder_pid


class StorageFailedError(StorageError):
    """An earlier write or fsync failed; the in-memory view may disagree with the disk.

    After a failed fsync the kernel may have dropped the dirty pages, so the
    only safe course is to stop and let recovery read what is really on disk.
    """


class LogCompactedError(StorageError, IndexError):
    """Entries were requested below the first stored index (covered by a snapshot)."""


class LogContractError(StorageError, ValueError):
    """A caller broke the storage contract (a gap in the log, a truncation below the
    snapshot, a snapshot beyond the log)."""


class ChecksumUnavailableError(StorageError):
    """Files use a checksum this process cannot compute (CRC-32C without the ``crc32c``
    package). Nothing is wrong with the disk: install the package and start again."""

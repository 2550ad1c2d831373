"""Durable storage for a Raft node: segmented WAL, hard state and snapshots.

Start with ``open_storage``; the on-disk format is described in ``format.py``
and the write and recovery rules in ``wal.py``.
"""

from .errors import (
    ChecksumUnavailableError,
    DataDirLockedError,
    LogCompactedError,
    LogContractError,
    StorageCorruptionError,
    StorageError,
    StorageFailedError,
)
from .format import CHECKSUM_NAMES, WRITE_CHECKSUM
from .interface import RaftStorage, RecoveredState
from .promise import Promise
from .verdict import RecoveryVerdict, VerdictKind
from .wal import SaveStats, WalStorage, open_storage

CHECKSUM_IN_USE = CHECKSUM_NAMES[WRITE_CHECKSUM]
"""The checksum new files get here: "CRC-32C" or "CRC-32 (zlib)"."""

__all__ = [
    "CHECKSUM_IN_USE",
    "ChecksumUnavailableError",
    "DataDirLockedError",
    "LogCompactedError",
    "LogContractError",
    "Promise",
    "RaftStorage",
    "RecoveredState",
    "RecoveryVerdict",
    "SaveStats",
    "StorageCorruptionError",
    "StorageError",
    "StorageFailedError",
    "VerdictKind",
    "WalStorage",
    "open_storage",
]

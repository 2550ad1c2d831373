"""The Raft consensus core: a pure, deterministic state machine.

Drive it with ``tick()``, ``step(message)``, ``propose*()``, ``read_index()``
and the membership calls; collect work with ``ready()``; acknowledge it with
``advance()``. See ``types.Ready`` for the order the work must be done in.
"""

from .config import RaftConfig
from .core import TRANSFER_CONTEXT, RaftCore
from .progress import ProgressState
from .status import PeerProgress, Status
from .types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "NONE",
    "TRANSFER_CONTEXT",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "Message",
    "MessageType",
    "NotLeaderError",
    "PeerProgress",
    "ProgressState",
    "ProposalDroppedError",
    "RaftConfig",
    "RaftCore",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "Status",
]

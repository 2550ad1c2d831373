"""The values that cross the consensus core's boundary.

These types are the seam between the pure core and everything around it:
storage persists ``Entry``, ``HardState`` and ``Snapshot``; the transport
carries ``Message``; the I/O shell reads a ``Ready`` and calls ``advance()``.

Treat every instance as immutable once built. ``Entry`` and ``Message`` (the core makes
hundreds of thousands of entries per second) are slotted dataclasses, the
cheapest Python records to build; the small state records are NamedTuples.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

NONE = 0
"""Node id meaning "nobody" (no vote cast, no known leader). Real ids are >= 1."""

MAX_TERM = (1 << 62) - 1
"""The highest term a node will ever adopt. The WAL and the wire carry terms as
u64; capping them far below 2**64 means a term, once accepted, can always be
incremented, encoded and persisted again. An honest cluster electing a leader
every millisecond needs about 146 million years to get here, so a message
above it is forged or corrupt and is refused on decode and by the core."""


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class EntryType(IntEnum):
    NORMAL = 0
    """Application data (possibly empty: a new leader's no-op)."""
    CONF_CHANGE = 1
    """``data`` is an encoded ``ConfChange``."""


@dataclass(slots=True)
class Entry:
    """One log entry. Never mutate one: the same object may sit in several logs."""

    term: int
    index: int
    data: bytes = b""
    type: int = EntryType.NORMAL


class HardState(NamedTuple):
    """What must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


class ConfState(NamedTuple):
    """A cluster configuration: sorted tuples so that encodings are canonical."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


class ConfChangeType(IntEnum):
    ADD_LEARNER = 0
    """Add a non-voting member (or demote nothing: adding an existing id is a no-op)."""
    PROMOTE = 1
    """Turn a learner into a voter (also adds a brand-new voter directly)."""
    REMOVE = 2
    """Remove a voter or a learner."""


_CC_HEAD = struct.Struct(">BQI")


class ConfChange(NamedTuple):
    """One-server-at-a-time membership change, carried in a CONF_CHANGE entry.

    ``context`` is opaque to the core; the node puts the member's peer
    address there so every replica learns where to reach it.
    """

    type: int
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return _CC_HEAD.pack(self.type, self.node_id, len(self.context)) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        kind, node_id, size = _CC_HEAD.unpack_from(data)
        context = bytes(data[_CC_HEAD.size : _CC_HEAD.size + size])
        if len(context) != size or kind not in (0, 1, 2):
            raise ValueError("malformed ConfChange")
        return cls(kind, node_id, context)


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf_state: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Application state as of ``meta.index``; ``data`` is opaque to the core."""

    meta: SnapshotMeta
    data: bytes


class MessageType(IntEnum):
    APP = 0
    APP_RESP = 1
    VOTE = 2
    VOTE_RESP = 3
    PRE_VOTE = 4
    PRE_VOTE_RESP = 5
    HEARTBEAT = 6
    HEARTBEAT_RESP = 7
    SNAP = 8
    TIMEOUT_NOW = 9
    READ_INDEX = 10
    """A follower asks the leader to confirm a read index for ``context``."""
    READ_INDEX_RESP = 11
    TRANSFER_LEADER = 12
    """A follower forwards a leadership-transfer request to the leader."""


@dataclass(slots=True)
class Message:
    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    """APP: term of the entry at ``index`` (the one before ``entries``)."""
    index: int = 0
    entries: tuple[Entry, ...] | list[Entry] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    """APP_RESP rejection: the follower's hint index (fast backtracking)."""
    hint_term: int = 0
    """APP_RESP rejection: the term of the follower's entry at ``reject_hint``."""
    snapshot: Snapshot | None = None
    context: bytes = b""
    """READ_INDEX/HEARTBEAT: the read request's context; VOTE: b"transfer" when forced."""
    nonce: int = 0
    """The leader's (or the campaign's) nonce: APP, HEARTBEAT, SNAP, READ_INDEX_RESP,
    TIMEOUT_NOW and TRANSFER_LEADER carry the leader's, VOTE/PRE_VOTE the
    campaign's, and every answer echoes the nonce of the message it answers
    (raft/README.md, "Nonces"). Last, so positional construction stays valid."""


class SoftState(NamedTuple):
    """Volatile state that need not be persisted; reported when it changes."""

    leader: int
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the node has applied ``index``."""

    index: int
    request_ctx: bytes


@dataclass(slots=True)
class Ready:
    """A batch of work for the caller, in this order:

    1. persist ``snapshot`` (if any), ``entries`` (the first entry's index may be
       at or below the last stored index: the stored suffix from there is
       replaced) and ``hard_state`` (if any), with one fsync;
    2. send ``messages``;
    3. restore the application from ``snapshot`` (if any), then apply
       ``committed_entries`` in order;
    4. serve ``read_states`` once applied reaches their index;
    5. call ``advance(ready)``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (
            self.soft_state
            or self.hard_state
            or self.entries
            or self.snapshot
            or self.committed_entries
            or self.messages
            or self.read_states
        )


class NotLeaderError(Exception):
    """A proposal or read reached a node that is not the leader.

    ``leader`` is the id of the leader this node knows of, or ``NONE``.
    """

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader hint: {leader or 'unknown'})")
        self.leader = leader


class ProposalDroppedError(Exception):
    """A proposal the core cannot accept now (e.g. a leadership transfer is in
    progress, or a configuration change is already pending)."""

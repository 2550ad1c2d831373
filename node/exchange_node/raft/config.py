"""Tunables of one consensus core, fixed for its lifetime."""

from __future__ import annotations

from dataclasses import dataclass

from exchange_node.limits import (
    RAFT_ELECTION_TICKS,
    RAFT_HEARTBEAT_TICKS,
    RAFT_MAX_INFLIGHT,
    RAFT_MAX_MSG_BYTES,
    RAFT_MAX_MSG_ENTRIES,
)


@dataclass
class RaftConfig:
    node_id: int
    election_tick: int = RAFT_ELECTION_TICKS
    """Ticks without a leader before campaigning, randomized in [election_tick, 2*election_tick)."""
    heartbeat_tick: int = RAFT_HEARTBEAT_TICKS
    max_msg_entries: int = RAFT_MAX_MSG_ENTRIES
    """Batching: entries per APP message."""
    max_msg_bytes: int = RAFT_MAX_MSG_BYTES
    """Batching: entry data bytes per APP message (one larger entry still goes alone)."""
    max_inflight: int = RAFT_MAX_INFLIGHT
    """Pipelining: unacknowledged APP messages per follower in REPLICATE state."""
    pre_vote: bool = True
    check_quorum: bool = True
    seed: int = 0

    def validate(self) -> None:
        if self.node_id <= 0:
            raise ValueError("node_id must be >= 1 (0 means nobody)")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_msg_entries <= 0 or self.max_msg_bytes <= 0 or self.max_inflight <= 0:
            raise ValueError("message and inflight limits must be positive")

"""A read-only view of a core for operators, metrics and tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import ConfState, Role


@dataclass(frozen=True, slots=True)
class PeerProgress:
    match: int
    next: int
    state: str
    """"probe", "replicate" or "snapshot"."""
    recent_active: bool
    regressions: int = 0
    """Times this follower's log was found shorter than the leader believed (it lost
    a tail): the leader lowered its match index and probed again."""
    healthy: bool = True
    """False from such a regression until the follower is back at the match index it
    had before it."""


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    term: int
    role: Role
    leader: int
    vote: int
    commit: int
    applied: int
    last_index: int
    conf_state: ConfState
    progress: dict[int, PeerProgress] = field(default_factory=dict)
    """Per member (the leader included), on the leader only."""
    lead_transferee: int = 0
    recovering: int = 0
    """Nonzero while this node recovers a lost or corrupt log: the index a leader must
    bring it back to before it votes or campaigns again (``RaftCore.start_recovering``)."""

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

"""The seam between the node's I/O shell and its edges (HTTP/WebSocket API, admin API).

The shell (``exchange_node.server``) implements ``ExchangeService`` on top of
the consensus core, storage, transport and engine. The API (``exchange_node.api``)
only ever talks to this protocol, so it never touches Raft directly.

Errors are typed so the API maps each to one HTTP status:
``NotLeader`` -> forward or 421, ``Overloaded`` -> 503 + Retry-After,
``Unavailable`` -> 503, ``Timeout`` -> 504.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class ServiceError(Exception):
    """Base of the errors the API turns into HTTP answers."""


class NotLeader(ServiceError):
    def __init__(self, leader_id: int, leader_http: str | None) -> None:
        super().__init__(f"not the leader; leader is {leader_id or 'unknown'}")
        self.leader_id = leader_id
        self.leader_http = leader_http
        """``host:port`` of the leader's HTTP API, when known."""


class Overloaded(ServiceError):
    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__("proposal queue full")
        self.retry_after_seconds = retry_after_seconds


class Unavailable(ServiceError):
    """No quorum / no leader / shutting down: the request was not accepted."""


class Timeout(ServiceError):
    """Accepted but not known to be committed in time: the outcome is unknown.
    Retrying with the same client order id is safe (exactly-once)."""


@dataclass(slots=True)
class MemberStatus:
    id: int
    name: str
    grpc_address: str
    http_address: str
    voter: bool
    match_index: int
    lag: int
    healthy: bool
    regressions: int = 0
    """Times the leader found this follower's log shorter than it believed."""
    stuck: str = ""
    """Why it is stuck behind (applying, behind, silent: server/divergence.py), or ""."""


@dataclass(slots=True)
class NodeStatus:
    node_id: int
    name: str
    role: str
    term: int
    leader: int
    commit_index: int
    applied_index: int
    state_hash: str
    diverged: bool
    members: list[MemberStatus] = field(default_factory=list)
    recovering: int = 0
    """Nonzero while this node recovers a lost log tail: the index it must get back."""
    recovery_verdict: str = "clean"
    """What storage found at start: clean, torn, lost or corruption (docs/recovery.md)."""


class ExchangeService(Protocol):
    # --- orders -------------------------------------------------------------
    async def submit(
        self, commands: Sequence[Any], *, trace_carrier: dict[str, str] | None = None
    ) -> list[Any]:
        """Propose ``commands`` (engine command records) as ONE log entry and
        return their engine ``CommandResult``s once the entry is applied here.
        Raises NotLeader, Overloaded, Unavailable or Timeout."""
        ...

    def leads(self) -> bool:
        """Whether ``submit`` would propose here now (this node leads, is not fenced
        and is not stopping); no I/O, cheap enough for every request."""
        ...

    async def read_barrier(self) -> None:
        """Linearizable read barrier (ReadIndex): returns once this replica has
        applied everything committed before the call. Raises like ``submit``."""
        ...

    applied_index: int
    """The last log index applied to ``engine`` here (what a read reflects)."""

    @property
    def engine(self) -> Any:
        """The local engine, for queries after ``read_barrier`` (or stale reads)."""
        ...

    def subscribe(self, max_queue: int = 10_000) -> Any:
        """An async iterator of ``(log_index, results)`` for every applied entry,
        in log order; a subscriber too slow for ``max_queue`` is dropped (its
        iterator ends) rather than growing memory."""
        ...

    # --- operations -----------------------------------------------------------
    def status(self) -> NodeStatus: ...

    def healthy(self) -> bool: ...

    def ready(self) -> tuple[bool, str]:
        """(ready, reason) for /readyz."""
        ...

    async def add_member(self, node_id: int, grpc_address: str, http_address: str) -> None: ...

    async def promote_member(self, node_id: int) -> None: ...

    async def remove_member(self, node_id: int) -> None: ...

    async def transfer_leadership(self, target: int | None) -> int:
        """Returns the id leadership moved to."""
        ...

"""What the operator observes: pods and each node's answer to GET /v1/admin/status.

Plain frozen dataclasses; `parse_admin_status` turns the node contract's JSON
into them. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exchange_operator import names


@dataclass(frozen=True)
class Member:
    """One entry of a node's view of the Raft configuration."""

    id: int
    address: str
    voter: bool
    match_index: int = 0
    lag: int = 0
    healthy: bool = True


@dataclass(frozen=True)
class MemberCertificate:
    """What a node started with --peer-tls-enroll says of its member certificate."""

    certificate_pem: bytes | None  # None: it has no valid one (problem says why)
    problem: str = ""
    rotation_pending: bool = False


@dataclass(frozen=True)
class NodeStatus:
    """One node's answer to GET /v1/admin/status (docs/node-contract.md)."""

    node_id: int
    name: str
    role: str
    term: int
    leader: int
    commit_index: int
    applied_index: int
    state_hash: str = ""
    members: tuple[Member, ...] = ()
    # None: the node does not enroll (its certificate comes from files).
    member_certificate: MemberCertificate | None = None


@dataclass(frozen=True)
class PodState:
    name: str
    ordinal: int
    ready: bool = False
    deleting: bool = False
    restart_hash: str = ""
    image: str = ""
    role_label: str | None = None
    node: NodeStatus | None = None  # None: the admin API did not answer


@dataclass(frozen=True)
class Observed:
    """Everything a decision needs to know about the world right now."""

    statefulset_replicas: int | None
    pods: tuple[PodState, ...] = ()
    bootstrapped: bool = False
    desired_restart_hash: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def pod(self, ordinal: int) -> PodState | None:
        for pod in self.pods:
            if pod.ordinal == ordinal:
                return pod
        return None

    def leader(self) -> NodeStatus | None:
        """The node that says it leads, in the highest term (a deposed leader may linger)."""
        leaders = [p.node for p in self.pods if p.node is not None and p.node.role == "leader"]
        if not leaders:
            return None
        return max(leaders, key=lambda n: n.term)

    def leader_pod(self) -> PodState | None:
        leader = self.leader()
        if leader is None:
            return None
        for pod in self.pods:
            if pod.node is leader:
                return pod
        return None


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def parse_admin_status(payload: Mapping[str, Any]) -> NodeStatus:
    members = tuple(
        Member(
            id=_int(m.get("id")),
            address=str(m.get("address", "")),
            voter=bool(m.get("voter", True)),
            match_index=_int(m.get("match_index")),
            lag=_int(m.get("lag")),
            healthy=bool(m.get("healthy", True)),
        )
        for m in payload.get("members") or ()
    )
    return NodeStatus(
        node_id=_int(payload.get("node_id")),
        name=str(payload.get("name", "")),
        role=str(payload.get("role", "unknown")),
        term=_int(payload.get("term")),
        leader=_int(payload.get("leader")),
        commit_index=_int(payload.get("commit_index")),
        applied_index=_int(payload.get("applied_index")),
        state_hash=str(payload.get("state_hash", "")),
        members=members,
        member_certificate=_member_certificate(payload.get("member_certificate")),
    )


def _member_certificate(raw: Any) -> MemberCertificate | None:
    if not isinstance(raw, Mapping) or not raw.get("enrolling"):
        return None
    pem = raw.get("certificate")
    return MemberCertificate(
        certificate_pem=pem.encode() if isinstance(pem, str) and pem else None,
        problem=str(raw.get("problem") or ""),
        rotation_pending=bool(raw.get("rotation_pending")),
    )


def member_ordinal(cluster: str, member: Member) -> int | None:
    return names.ordinal_of_address(cluster, member.address)

"""Pure decisions: (spec, observed) -> the one next action, and status conditions.

One action per reconcile, and each is safe on its own: the operator changes
Raft membership before pods come or go, never scales up and down at once,
never removes a member when the rest could not form a majority, and restarts
pods one at a time, followers first, after moving leadership away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange_operator import names
from exchange_operator.observed import Member, NodeStatus, Observed, member_ordinal
from exchange_operator.spec import ClusterSpec, majority

# A learner is promoted, and the next pod restarted, only within this many
# entries of the leader's log.
CATCH_UP_ENTRIES = 100


# What a Wait or a TransferLeadership is part of: "scale" (membership changes,
# including replacing a member), "upgrade" (rolling restart), or nothing.
SCALE = "scale"
UPGRADE = "upgrade"


@dataclass(frozen=True)
class Wait:
    reason: str
    purpose: str = ""
    kind: str = "Wait"


@dataclass(frozen=True)
class Steady:
    reason: str = "the cluster matches its spec"
    kind: str = "Steady"


@dataclass(frozen=True)
class ScaleStatefulSet:
    replicas: int
    reason: str
    kind: str = "ScaleStatefulSet"


@dataclass(frozen=True)
class AddLearner:
    node_id: int
    address: str  # gRPC host:port
    pod: str
    reason: str
    http_address: str = ""  # HTTP host:port (followers forward writes there)
    kind: str = "AddLearner"


@dataclass(frozen=True)
class PromoteLearner:
    node_id: int
    reason: str
    kind: str = "PromoteLearner"


@dataclass(frozen=True)
class RemoveMember:
    node_id: int
    reason: str
    kind: str = "RemoveMember"


@dataclass(frozen=True)
class TransferLeadership:
    from_id: int
    to_id: int
    reason: str
    purpose: str = ""
    kind: str = "TransferLeadership"


@dataclass(frozen=True)
class RestartPod:
    pod: str
    reason: str
    kind: str = "RestartPod"


Action = (
    Wait
    | Steady
    | ScaleStatefulSet
    | AddLearner
    | PromoteLearner
    | RemoveMember
    | TransferLeadership
    | RestartPod
)

SCALING_KINDS = ("ScaleStatefulSet", "AddLearner", "PromoteLearner", "RemoveMember")


@dataclass(frozen=True)
class _View:
    """The leader's configuration joined with the pods."""

    cluster: str
    namespace: str
    leader: NodeStatus
    voters: tuple[Member, ...]
    learners: tuple[Member, ...]
    by_ordinal: dict[int, Member]
    ordinals: dict[int, int]  # member id -> pod ordinal

    def ordinal_of(self, member: Member) -> int | None:
        return self.ordinals.get(member.id)

    def healthy_voters(self, excluding: int | None = None) -> int:
        return sum(
            1
            for m in self.voters
            if m.id != excluding and (m.healthy or m.id == self.leader.node_id)
        )


def _view(cluster: str, namespace: str, leader: NodeStatus, obs: Observed) -> _View:
    """Map members to pods: by the id each pod's node reports for itself, else by address.

    A node's own answer is the stronger evidence (addresses are whatever the
    member was added with); the address covers pods whose node is down.
    """
    ordinals: dict[int, int] = {}
    for member in leader.members:
        ordinal = member_ordinal(cluster, member)
        if ordinal is not None:
            ordinals[member.id] = ordinal
    member_ids = {m.id for m in leader.members}
    for pod in obs.pods:
        if pod.node is not None and pod.node.node_id in member_ids:
            ordinals[pod.node.node_id] = pod.ordinal
    by_ordinal: dict[int, Member] = {}
    reported = {p.node.node_id for p in obs.pods if p.node is not None}
    # Members confirmed by their own pod win over address guesses for the same pod.
    for member in sorted(leader.members, key=lambda m: m.id in reported):
        if member.id in ordinals:
            by_ordinal[ordinals[member.id]] = member
    return _View(
        cluster=cluster,
        namespace=namespace,
        leader=leader,
        voters=tuple(m for m in leader.members if m.voter),
        learners=tuple(m for m in leader.members if not m.voter),
        by_ordinal=by_ordinal,
        ordinals=ordinals,
    )


def _caught_up(member: Member, leader_id: int) -> bool:
    return member.id == leader_id or (member.healthy and member.lag <= CATCH_UP_ENTRIES)


def _best_transfer_target(
    view: _View, keep_below: int, desired_hash: str, obs: Observed
) -> Member | None:
    """The most caught-up healthy voter other than the leader, preferring updated pods."""
    candidates = []
    for member in view.voters:
        ordinal = view.ordinal_of(member)
        if member.id == view.leader.node_id or ordinal is None or ordinal >= keep_below:
            continue
        if not _caught_up(member, view.leader.node_id):
            continue
        pod = obs.pod(ordinal)
        updated = pod is not None and pod.restart_hash == desired_hash
        candidates.append((not updated, member.lag, -member.match_index, ordinal, member))
    if not candidates:
        return None
    return min(candidates, key=lambda c: c[:4])[4]


def _safe_to_remove(view: _View, node_id: int) -> bool:
    """Removing `node_id` leaves a configuration whose healthy voters are a majority of it."""
    removing_voter = any(m.id == node_id for m in view.voters)
    remaining = len(view.voters) - (1 if removing_voter else 0)
    if remaining < 1:
        return False
    return view.healthy_voters(excluding=node_id) >= majority(remaining)


def next_action(cluster: str, namespace: str, spec: ClusterSpec, obs: Observed) -> Action:
    if spec.paused:
        return Wait("paused: no membership changes or restarts")
    if obs.statefulset_replicas is None:
        return Wait("the StatefulSet does not exist yet")
    if any(p.deleting for p in obs.pods):
        return Wait("a pod is terminating")
    leader = obs.leader()
    if leader is None:
        return Wait("no leader: membership changes and restarts wait for a quorum")
    view = _view(cluster, namespace, leader, obs)
    replicas = obs.statefulset_replicas
    desired = spec.replicas
    member_ids = {m.id for m in leader.members}

    # 1. A pod whose node is not in the configuration: a new pod, or one that lost
    #    its volume and came back with a fresh id. Drop the stale identity first.
    for pod in sorted(obs.pods, key=lambda p: p.ordinal):
        node = pod.node
        if node is None or node.node_id == 0 or node.node_id in member_ids:
            continue
        if pod.ordinal >= replicas or pod.ordinal >= desired:
            continue
        stale = view.by_ordinal.get(pod.ordinal)
        if stale is not None:
            if stale.id == leader.node_id:
                return Wait(f"{pod.name} reports id {node.node_id} but leads as {stale.id}", SCALE)
            if not _safe_to_remove(view, stale.id):
                return Wait(
                    f"removing stale member {stale.id} of {pod.name} would lose quorum", SCALE
                )
            return RemoveMember(
                stale.id, f"{pod.name} lost its volume; its old identity {stale.id} leaves first"
            )
        return AddLearner(
            node.node_id,
            names.peer_address(cluster, pod.ordinal, namespace),
            pod.name,
            f"{pod.name} joins as a learner",
            http_address=names.peer_http_address(cluster, pod.ordinal, namespace),
        )

    # 2. Learners: promote when caught up; drop those no longer wanted.
    for learner in view.learners:
        ordinal = view.ordinal_of(learner)
        if ordinal is None or ordinal >= desired:
            return RemoveMember(learner.id, f"learner {learner.id} is beyond replicas={desired}")
        if _caught_up(learner, leader.node_id):
            return PromoteLearner(learner.id, f"learner {learner.id} has caught up")
        return Wait(f"learner {learner.id} is catching up (lag {learner.lag})", SCALE)

    voters = len(view.voters)
    # 3. Scale up: one pod at a time, and only once every pod is a voter.
    if voters < desired:
        members_by_ordinal = set(view.by_ordinal)
        if replicas < desired and all(o in members_by_ordinal for o in range(replicas)):
            return ScaleStatefulSet(replicas + 1, f"scale up: add pod {cluster}-{replicas}")
        return Wait("scale up: waiting for the new pod's node to answer", SCALE)

    # 4. Scale down: leave the Raft configuration first, then shrink, one member at a time.
    if replicas > desired and (replicas - 1) not in view.by_ordinal:
        return ScaleStatefulSet(replicas - 1, f"scale down: remove pod {cluster}-{replicas - 1}")
    if voters > desired:
        mapped = [(o, m) for m in view.voters if (o := view.ordinal_of(m)) is not None]
        if not mapped:
            return Wait("scale down: no voter maps to a pod", SCALE)
        # The StatefulSet removes the highest ordinal, so that member leaves first.
        target = max(mapped, key=lambda om: om[0])[1]
        if target.id == leader.node_id:
            to = _best_transfer_target(view, desired, obs.desired_restart_hash, obs)
            if to is None:
                return Wait("scale down: no caught-up voter to take leadership", SCALE)
            return TransferLeadership(
                target.id,
                to.id,
                f"scale down: leader {target.id} hands over before leaving",
                SCALE,
            )
        if not _safe_to_remove(view, target.id):
            return Wait(f"scale down: removing {target.id} would lose quorum", SCALE)
        return RemoveMember(target.id, f"scale down: remove member {target.id}")

    # 5. Rolling restart: followers first, highest ordinal first, leader last.
    outdated = [p for p in obs.pods if p.restart_hash != obs.desired_restart_hash]
    if outdated:
        ready = len(obs.pods) == replicas and all(p.ready for p in obs.pods)
        caught_up = all(_caught_up(m, leader.node_id) for m in view.voters)
        if not (ready and caught_up):
            return Wait("upgrade: waiting for every member to be ready and caught up", UPGRADE)
        leader_pod = obs.leader_pod()
        followers = [p for p in outdated if leader_pod is None or p.name != leader_pod.name]
        if followers:
            pod = max(followers, key=lambda p: p.ordinal)
            return RestartPod(pod.name, f"upgrade: restart follower {pod.name}")
        to = _best_transfer_target(view, desired, obs.desired_restart_hash, obs)
        if to is None:
            return Wait("upgrade: no caught-up follower to take leadership", UPGRADE)
        return TransferLeadership(
            leader.node_id,
            to.id,
            "upgrade: move leadership away before restarting the leader",
            UPGRADE,
        )
    return Steady()


# --- status ----------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


def _voters_health(spec: ClusterSpec, obs: Observed) -> tuple[int, int]:
    """(healthy voters, voters): the leader's view if there is one, else reachable pods."""
    leader = obs.leader()
    if leader is not None:
        voters = [m for m in leader.members if m.voter]
        healthy = sum(1 for m in voters if m.healthy or m.id == leader.node_id)
        return healthy, len(voters)
    expected = obs.statefulset_replicas if obs.statefulset_replicas is not None else spec.replicas
    reachable = sum(1 for p in obs.pods if p.node is not None and p.ordinal < expected)
    return reachable, expected


def conditions(spec: ClusterSpec, obs: Observed, action: Action) -> list[Condition]:
    healthy, voters = _voters_health(spec, obs)
    leader = obs.leader()
    quorum = majority(voters) if voters else 1
    not_ready = sorted(p.name for p in obs.pods if not p.ready)
    result: list[Condition] = []

    if leader is not None and healthy >= quorum:
        result.append(
            Condition("Available", "True", "LeaderElected", f"{healthy}/{voters} voters healthy")
        )
    elif not obs.bootstrapped:
        result.append(
            Condition("Available", "False", "Bootstrapping", "waiting for the first leader")
        )
    else:
        result.append(
            Condition("Available", "False", "NoLeader", f"{healthy}/{voters} voters reachable")
        )

    if obs.bootstrapped and healthy < quorum:
        result.append(
            Condition(
                "QuorumLost",
                "True",
                "MajorityUnavailable",
                f"only {healthy} of {voters} voters are healthy; {quorum} are needed",
            )
        )
    else:
        result.append(
            Condition("QuorumLost", "False", "QuorumHeld", f"{healthy}/{voters} voters healthy")
        )

    if obs.bootstrapped and (healthy < voters or not_ready):
        detail = f"{healthy}/{voters} voters healthy"
        if not_ready:
            detail += "; not ready: " + ", ".join(not_ready)
        result.append(Condition("Degraded", "True", "MembersUnhealthy", detail))
    else:
        result.append(
            Condition(
                "Degraded", "False", "AllMembersHealthy", f"{healthy}/{voters} voters healthy"
            )
        )

    if isinstance(action, Steady):
        result.append(Condition("Progressing", "False", "Steady", action.reason))
    else:
        result.append(Condition("Progressing", "True", action.kind, action.reason))
    result.append(_ready(spec, obs, healthy, voters, quorum, not_ready))
    return result


def _ready(
    spec: ClusterSpec, obs: Observed, healthy: int, voters: int, quorum: int, not_ready: list[str]
) -> Condition:
    """`kubectl wait --for=condition=Ready xc/NAME`: a leader, and every member the spec
    asks for is a healthy voter whose pod is ready (False while scaling or degraded)."""
    if not obs.bootstrapped or obs.leader() is None:
        reason = "Bootstrapping" if not obs.bootstrapped else "NoLeader"
        return Condition("Ready", "False", reason, "no Raft leader yet")
    if healthy < quorum:
        return Condition("Ready", "False", "QuorumLost", f"{healthy}/{voters} voters healthy")
    if voters != spec.replicas or len(obs.pods) != spec.replicas:
        return Condition(
            "Ready", "False", "Scaling",
            f"{voters} voters, {len(obs.pods)} pods; the spec asks for {spec.replicas}",
        )  # fmt: skip
    if healthy < voters or not_ready:
        detail = f"{healthy}/{voters} voters healthy"
        if not_ready:
            detail += "; not ready: " + ", ".join(not_ready)
        return Condition("Ready", "False", "MembersUnhealthy", detail)
    return Condition("Ready", "True", "ClusterReady", f"{voters}/{spec.replicas} voters ready")


def phase(spec: ClusterSpec, obs: Observed, action: Action, conds: list[Condition]) -> str:
    by_type = {c.type: c.status for c in conds}
    if spec.paused:
        return "Paused"
    if obs.statefulset_replicas is None:
        return "Pending"
    if not obs.bootstrapped:
        return "Bootstrapping"
    if by_type.get("QuorumLost") == "True":
        return "QuorumLost"
    purpose = action.purpose if isinstance(action, Wait | TransferLeadership) else ""
    if action.kind in SCALING_KINDS or purpose == SCALE:
        return "Scaling"
    if action.kind == "RestartPod" or purpose == UPGRADE:
        return "Upgrading"
    if by_type.get("Degraded") == "True":
        return "Degraded"
    return "Running"


def merge_conditions(
    previous: list[dict[str, Any]] | None, current: list[Condition], now: str, generation: int
) -> list[dict[str, Any]]:
    """Kubernetes-style conditions: lastTransitionTime moves only when status changes."""
    old = {c.get("type"): c for c in previous or ()}
    merged = []
    for cond in current:
        before = old.get(cond.type)
        since = now
        if before is not None and before.get("status") == cond.status:
            since = str(before.get("lastTransitionTime") or now)
        merged.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return merged


def member_statuses(obs: Observed) -> list[dict[str, Any]]:
    """status.members: one entry per pod, joined with the leader's view of its node."""
    leader = obs.leader()
    view = {m.id: m for m in leader.members} if leader is not None else {}
    entries = []
    for pod in sorted(obs.pods, key=lambda p: p.ordinal):
        node = pod.node
        entry: dict[str, Any] = {"name": pod.name, "ready": pod.ready, "image": pod.image}
        if node is None:
            entry.update(role="unknown", healthy=False)
        else:
            member = view.get(node.node_id)
            role = (
                node.role
                if node.role in ("leader", "follower", "candidate", "learner")
                else "unknown"
            )
            if member is not None and not member.voter:
                role = "learner"
            entry.update(
                id=node.node_id,
                role=role,
                voter=bool(member.voter) if member is not None else False,
                healthy=bool(member.healthy) if member is not None else False,
                matchIndex=member.match_index if member is not None else 0,
                appliedIndex=node.applied_index,
                lag=member.lag if member is not None else 0,
            )
            if leader is not None and node.node_id == leader.node_id:
                entry.update(healthy=True, lag=0, matchIndex=leader.commit_index)
        entries.append(entry)
    return entries


def desired_role_labels(obs: Observed) -> dict[str, str]:
    """Pod name -> value of its `role` label: leader, follower, learner or unknown.

    Only the pod of the current leader carries role=leader; a pod whose node
    does not answer is `unknown`, so a dead leader loses the label at once.
    """
    leader = obs.leader()
    view = {m.id: m for m in leader.members} if leader is not None else {}
    labels: dict[str, str] = {}
    for pod in obs.pods:
        node = pod.node
        if node is None:
            labels[pod.name] = "unknown"
        elif leader is not None and node.node_id == leader.node_id:
            labels[pod.name] = names.ROLE_LEADER
        elif node.node_id in view and not view[node.node_id].voter:
            labels[pod.name] = names.ROLE_LEARNER
        else:
            labels[pod.name] = names.ROLE_FOLLOWER
    return labels

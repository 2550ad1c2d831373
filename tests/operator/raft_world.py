"""A small model of a Raft cluster's membership behind a StatefulSet, for tests.

It answers GET /v1/admin/status per the node contract, obeys the membership
calls, and plays the kubelet (pods come and go with the StatefulSet's replica
count, keep their volume's identity, restart on delete). It is a stand-in for
real node processes: the decision tests drive it in a loop, and the KMock
harness serves it over HTTP. Real nodes replace it once the node is built.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from exchange_operator import names
from exchange_operator.observed import Observed, PodState, parse_admin_status
from exchange_operator.spec import majority


@dataclass
class MemberModel:
    id: int
    ordinal: int
    voter: bool
    lag: int = 0


@dataclass
class PodModel:
    ordinal: int
    node_id: int
    restart_hash: str
    alive: bool = True
    ready: bool = True
    deleting: bool = False


@dataclass
class RaftWorld:
    cluster: str
    namespace: str
    members: dict[int, MemberModel] = field(default_factory=dict)
    pods: dict[int, PodModel] = field(default_factory=dict)
    volumes: dict[int, int] = field(default_factory=dict)  # ordinal -> node id on the volume
    leader_id: int = 0
    term: int = 1
    commit: int = 100
    statefulset_replicas: int = 0
    template_hash: str = "h1"
    learner_start_lag: int = 5000
    manage_pods: bool = True  # False when a harness's StatefulSet controller owns the pods
    ip_addresses: bool = False  # members known by pod IPs instead of stable DNS names
    log: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    # --- construction -----------------------------------------------------------
    @classmethod
    def bootstrapped(
        cls, cluster: str, namespace: str, replicas: int, hash_: str = "h1"
    ) -> RaftWorld:
        world = cls(cluster, namespace, template_hash=hash_)
        for ordinal in range(replicas):
            node_id = names.initial_node_id(ordinal)
            world.members[node_id] = MemberModel(node_id, ordinal, voter=True)
            world.volumes[ordinal] = node_id
            world.pods[ordinal] = PodModel(ordinal, node_id, hash_)
        world.leader_id = 1
        world.statefulset_replicas = replicas
        return world

    def address(self, ordinal: int) -> str:
        if self.ip_addresses:
            return f"10.0.0.{ordinal + 10}:7070"
        return names.peer_address(self.cluster, ordinal, self.namespace)

    # --- what a node answers ------------------------------------------------------
    def admin_status(self, ordinal: int) -> dict[str, Any] | None:
        pod = self.pods.get(ordinal)
        if pod is None or not pod.alive:
            return None
        node_id = pod.node_id
        if node_id == self.leader_id:
            role = "leader"
        elif node_id in self.members:
            role = "follower" if self.members[node_id].voter else "learner"
        else:
            role = "follower"  # an empty node waiting to be added
        in_config = node_id in self.members
        members = [
            {
                "id": m.id,
                "address": self.address(m.ordinal),
                "voter": m.voter,
                "match_index": self.commit - m.lag,
                "lag": m.lag,
                "healthy": self._alive(m.id),
            }
            for m in sorted(self.members.values(), key=lambda m: m.id)
        ]
        return {
            "node_id": node_id,
            "name": names.pod_name(self.cluster, ordinal),
            "role": role,
            "term": self.term,
            "leader": self.leader_id if in_config else 0,
            "commit_index": self.commit if in_config else 0,
            "applied_index": self.commit if in_config else 0,
            "state_hash": "abc",
            "members": members if in_config else [],
        }

    def _alive(self, node_id: int) -> bool:
        return any(p.node_id == node_id and p.alive for p in self.pods.values())

    def _voters(self) -> list[MemberModel]:
        return [m for m in self.members.values() if m.voter]

    def has_quorum(self) -> bool:
        voters = self._voters()
        return sum(1 for m in voters if self._alive(m.id)) >= majority(len(voters))

    # --- membership calls (only the leader accepts them) -----------------------------
    def add_member(self, node_id: int, address: str) -> None:
        ordinal = names.ordinal_of_address(self.cluster, address)
        if ordinal is None and address.startswith("10.0.0."):
            ordinal = int(address.split(":")[0].rsplit(".", 1)[1]) - 10
        assert ordinal is not None, address
        assert node_id not in self.members
        self.members[node_id] = MemberModel(
            node_id, ordinal, voter=False, lag=self.learner_start_lag
        )
        self.log.append(f"add {node_id}")

    def promote(self, node_id: int) -> None:
        member = self.members[node_id]
        assert not member.voter and member.lag <= 100, "promoting a learner that lags"
        member.voter = True
        self.log.append(f"promote {node_id}")

    def remove(self, node_id: int) -> None:
        del self.members[node_id]
        self.log.append(f"remove {node_id}")
        if node_id == self.leader_id:
            self.leader_id = 0
            self._elect()

    def transfer(self, target: int | None) -> None:
        assert target is None or (target in self.members and self.members[target].voter)
        if target is None:
            target = next(m.id for m in self._voters() if m.id != self.leader_id)
        self.leader_id = target
        self.term += 1
        self.log.append(f"transfer {target}")

    # --- the kubelet and the clock --------------------------------------------------
    def sync_pods(self) -> None:
        for ordinal in list(self.pods):
            if ordinal >= self.statefulset_replicas:
                node_id = self.pods.pop(ordinal).node_id
                self.volumes.pop(ordinal, None)  # whenScaled: Delete
                if node_id == self.leader_id:
                    self.leader_id = 0
        for ordinal in range(self.statefulset_replicas):
            if ordinal not in self.pods:
                node_id = self.volumes.get(ordinal) or next(self._ids)
                self.volumes[ordinal] = node_id
                self.pods[ordinal] = PodModel(ordinal, node_id, self.template_hash)

    def delete_pod(self, ordinal: int, lose_volume: bool = False) -> None:
        pod = self.pods.pop(ordinal)
        if lose_volume:
            self.volumes.pop(ordinal, None)
        if pod.node_id == self.leader_id:
            self.leader_id = 0
        self.log.append(f"delete pod {ordinal}")

    def kill(self, ordinal: int) -> None:
        pod = self.pods[ordinal]
        pod.alive = False
        pod.ready = False
        if pod.node_id == self.leader_id:
            self.leader_id = 0

    def tick(self) -> None:
        if self.manage_pods:
            self.sync_pods()
        for member in self.members.values():
            if self._alive(member.id):
                member.lag = max(0, member.lag - 2500)
        if not self.leader_id:
            self._elect()
        for pod in self.pods.values():
            pod.ready = pod.alive and bool(self.leader_id) and pod.node_id in self.members
        self.commit += 10

    def _elect(self) -> None:
        if not self.has_quorum():
            return
        alive = sorted(m.id for m in self._voters() if self._alive(m.id))
        if alive:
            self.leader_id = alive[0]
            self.term += 1

    # --- what the operator sees --------------------------------------------------
    def observed(self, bootstrapped: bool = True) -> Observed:
        pods = []
        for ordinal, pod in sorted(self.pods.items()):
            status = self.admin_status(ordinal)
            pods.append(
                PodState(
                    name=names.pod_name(self.cluster, ordinal),
                    ordinal=ordinal,
                    ready=pod.ready,
                    deleting=pod.deleting,
                    restart_hash=pod.restart_hash,
                    node=None if status is None else parse_admin_status(status),
                )
            )
        return Observed(
            statefulset_replicas=self.statefulset_replicas,
            pods=tuple(pods),
            bootstrapped=bootstrapped,
            desired_restart_hash=self.template_hash,
        )

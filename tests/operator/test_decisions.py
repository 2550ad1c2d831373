"""Unit tests of the pure decisions: scaling, upgrades, replacement, conditions.

A RaftWorld model applies each action the way the cluster would, so the
tests check whole sequences and the invariants that must hold at every step.
"""

from __future__ import annotations

from typing import Any

import pytest
from exchange_operator import decisions
from exchange_operator.decisions import Action
from exchange_operator.spec import majority, parse_spec
from raft_world import RaftWorld

NS = "trading"


def apply(world: RaftWorld, action: Action) -> None:
    match action:
        case decisions.ScaleStatefulSet(replicas=n):
            world.statefulset_replicas = n
        case decisions.AddLearner(node_id=node_id, address=address):
            world.add_member(node_id, address)
        case decisions.PromoteLearner(node_id=node_id):
            world.promote(node_id)
        case decisions.RemoveMember(node_id=node_id):
            world.remove(node_id)
        case decisions.TransferLeadership(to_id=to_id):
            world.transfer(to_id)
        case decisions.RestartPod(pod=pod):
            world.delete_pod(int(pod.rsplit("-", 1)[1]))
        case decisions.Wait() | decisions.Steady():
            pass


def run(world: RaftWorld, raw_spec: dict[str, Any], limit: int = 60) -> list[Action]:
    """Reconcile until steady; check the invariants after every step."""
    spec = parse_spec(raw_spec)
    actions: list[Action] = []
    for _ in range(limit):
        world.tick()
        obs = world.observed()
        action = decisions.next_action(world.cluster, NS, spec, obs)
        if isinstance(action, decisions.RestartPod):
            leader_pod = obs.leader_pod()
            assert leader_pod is not None and action.pod != leader_pod.name, "restarted the leader"
            assert all(p.ready for p in obs.pods), "restart while a pod is not ready"
        apply(world, action)
        actions.append(action)
        # Pods never go before their member has left the configuration.
        for member in world.members.values():
            assert member.ordinal < world.statefulset_replicas, (member, world.log)
        assert world.has_quorum(), world.log
        if isinstance(action, decisions.Steady):
            return actions
    raise AssertionError(f"not steady after {limit} steps: {actions[-3:]}")


def kinds(actions: list[Action]) -> list[str]:
    return [a.kind for a in actions if a.kind not in ("Wait", "Steady")]


def test_steady_cluster_does_nothing() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    assert run(world, {"replicas": 3}) == [decisions.Steady()]


def test_scale_up_grows_then_adds_learner_then_promotes() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    actions = run(world, {"replicas": 5})
    assert kinds(actions) == [
        "ScaleStatefulSet", "AddLearner", "PromoteLearner",
        "ScaleStatefulSet", "AddLearner", "PromoteLearner",
    ]  # fmt: skip
    assert [a.replicas for a in actions if isinstance(a, decisions.ScaleStatefulSet)] == [4, 5]
    # The learner was caught up before promotion (the model asserts it) and a
    # wait was needed while it caught up.
    assert any(isinstance(a, decisions.Wait) and "catching up" in a.reason for a in actions)
    assert sum(1 for m in world.members.values() if m.voter) == 5


def test_scale_down_removes_members_before_pods() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 5)
    actions = run(world, {"replicas": 3})
    assert kinds(actions) == [
        "RemoveMember", "ScaleStatefulSet", "RemoveMember", "ScaleStatefulSet",
    ]  # fmt: skip
    assert [a.node_id for a in actions if isinstance(a, decisions.RemoveMember)] == [5, 4]
    assert world.statefulset_replicas == 3


def test_members_map_to_pods_by_their_own_ids_when_addresses_say_nothing() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 5)
    world.ip_addresses = True
    world.leader_id = 5  # ordinal 4 leads and leaves first
    actions = run(world, {"replicas": 3})
    assert kinds(actions) == [
        "TransferLeadership", "RemoveMember", "ScaleStatefulSet", "RemoveMember", "ScaleStatefulSet",
    ]  # fmt: skip
    assert [a.node_id for a in actions if isinstance(a, decisions.RemoveMember)] == [5, 4]


def test_scale_down_moves_leadership_off_a_leaving_leader() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    world.leader_id = 3  # ordinal 2, the first to leave
    actions = run(world, {"replicas": 1})
    assert kinds(actions)[:2] == ["TransferLeadership", "RemoveMember"]
    transfer = next(a for a in actions if isinstance(a, decisions.TransferLeadership))
    assert transfer.from_id == 3 and transfer.to_id in (1, 2)
    assert world.statefulset_replicas == 1 and list(world.members) == [1]


def test_scale_1_to_7_and_back() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 1)
    run(world, {"replicas": 7})
    assert sum(1 for m in world.members.values() if m.voter) == 7
    run(world, {"replicas": 1})
    assert len(world.members) == 1 and world.statefulset_replicas == 1


def test_scale_down_refuses_to_break_quorum() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 5)
    world.kill(1)
    world.kill(2)
    world.tick()
    action = decisions.next_action("xc", NS, parse_spec({"replicas": 3}), world.observed())
    assert isinstance(action, decisions.Wait)
    assert "quorum" in action.reason


def test_never_scales_up_and_down_at_once() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    spec5 = parse_spec({"replicas": 5})
    world.tick()
    apply(world, decisions.next_action("xc", NS, spec5, world.observed()))  # grow to 4
    world.tick()
    apply(world, decisions.next_action("xc", NS, spec5, world.observed()))  # add learner
    assert world.statefulset_replicas == 4
    # The user changes their mind: the learner is dropped before the pod goes.
    actions = run(world, {"replicas": 3})
    assert kinds(actions) == ["RemoveMember", "ScaleStatefulSet"]


def test_rolling_upgrade_followers_first_leader_last() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    world.leader_id = 2  # ordinal 1 leads
    world.template_hash = "h2"  # a new image
    actions = run(world, {"replicas": 3})
    assert kinds(actions) == [
        "RestartPod", "RestartPod", "TransferLeadership", "RestartPod",
    ]  # fmt: skip
    restarts = [a.pod for a in actions if isinstance(a, decisions.RestartPod)]
    assert restarts == ["xc-2", "xc-0", "xc-1"]
    transfer = next(a for a in actions if isinstance(a, decisions.TransferLeadership))
    assert transfer.from_id == 2 and transfer.to_id in (1, 3)
    assert all(p.restart_hash == "h2" for p in world.pods.values())


def test_upgrade_waits_for_a_restarted_pod_to_catch_up() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    world.template_hash = "h2"
    spec = parse_spec({"replicas": 3})
    world.tick()
    action = decisions.next_action("xc", NS, spec, world.observed())
    assert action == decisions.RestartPod("xc-2", "upgrade: restart follower xc-2")
    apply(world, action)
    world.members[3].lag = 5000  # the restarted node replays and lags
    world.sync_pods()
    action = decisions.next_action("xc", NS, spec, world.observed())
    assert isinstance(action, decisions.Wait) and action.reason.startswith("upgrade")


def test_pod_that_lost_its_volume_is_replaced_as_a_new_member() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    world.delete_pod(1, lose_volume=True)
    actions = run(world, {"replicas": 3})
    assert kinds(actions) == ["RemoveMember", "AddLearner", "PromoteLearner"]
    removed = next(a for a in actions if isinstance(a, decisions.RemoveMember))
    added = next(a for a in actions if isinstance(a, decisions.AddLearner))
    assert removed.node_id == 2
    assert added.node_id not in (1, 2, 3)
    assert added.address == "xc-1.xc-peers.trading.svc:7070"
    assert added.http_address == "xc-1.xc-peers.trading.svc:8080"
    assert sorted(world.members) == sorted([1, 3, added.node_id])


def test_no_leader_and_paused_wait() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    world.kill(0)
    world.kill(1)
    world.tick()
    action = decisions.next_action("xc", NS, parse_spec({"replicas": 5}), world.observed())
    assert isinstance(action, decisions.Wait) and "no leader" in action.reason
    healthy = RaftWorld.bootstrapped("xc", NS, 3)
    paused = parse_spec({"replicas": 5, "paused": True})
    action = decisions.next_action("xc", NS, paused, healthy.observed())
    assert isinstance(action, decisions.Wait) and "paused" in action.reason


def _conds(world: RaftWorld, bootstrapped: bool = True) -> tuple[dict[str, str], str]:
    spec = parse_spec({"replicas": 3})
    obs = world.observed(bootstrapped=bootstrapped)
    action = decisions.next_action("xc", NS, spec, obs)
    conds = decisions.conditions(spec, obs, action)
    return {c.type: c.status for c in conds}, decisions.phase(spec, obs, action, conds)


def test_conditions_healthy() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    world.tick()
    conds, phase = _conds(world)
    assert conds == {
        "Available": "True",
        "QuorumLost": "False",
        "Degraded": "False",
        "Progressing": "False",
        "Ready": "True",
    }
    assert phase == "Running"


def test_conditions_one_member_down_is_degraded() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    world.kill(2)
    world.tick()
    conds, phase = _conds(world)
    assert conds["Available"] == "True"
    assert conds["Degraded"] == "True"
    assert conds["QuorumLost"] == "False"
    assert conds["Ready"] == "False"
    assert phase == "Degraded"


def test_conditions_majority_down_is_quorum_lost() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    world.kill(0)
    world.kill(1)
    world.tick()
    conds, phase = _conds(world)
    assert conds["Available"] == "False"
    assert conds["QuorumLost"] == "True"
    assert conds["Degraded"] == "True"
    assert phase == "QuorumLost"


def test_conditions_before_bootstrap() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    for ordinal in range(3):
        world.kill(ordinal)
    conds, phase = _conds(world, bootstrapped=False)
    assert conds["QuorumLost"] == "False"
    assert conds["Available"] == "False"
    assert conds["Ready"] == "False"
    assert phase == "Bootstrapping"


def test_ready_waits_for_the_size_the_spec_asks_for() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    world.tick()
    spec = parse_spec({"replicas": 5})
    obs = world.observed(bootstrapped=True)
    action = decisions.next_action("xc", NS, spec, obs)
    ready = {c.type: c for c in decisions.conditions(spec, obs, action)}["Ready"]
    assert (ready.status, ready.reason) == ("False", "Scaling")


def test_merge_conditions_keeps_transition_time_while_status_holds() -> None:
    first = decisions.merge_conditions(
        None, [decisions.Condition("Degraded", "False", "A", "")], "t1", 1
    )
    same = decisions.merge_conditions(
        first, [decisions.Condition("Degraded", "False", "B", "x")], "t2", 2
    )
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["reason"] == "B"
    flipped = decisions.merge_conditions(
        same, [decisions.Condition("Degraded", "True", "C", "")], "t3", 3
    )
    assert flipped[0]["lastTransitionTime"] == "t3"
    assert flipped[0]["observedGeneration"] == 3


def test_role_labels_follow_the_leader() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    world.leader_id = 3
    world.tick()
    assert decisions.desired_role_labels(world.observed()) == {
        "xc-0": "follower", "xc-1": "follower", "xc-2": "leader",
    }  # fmt: skip
    world.kill(2)
    world.tick()
    labels = decisions.desired_role_labels(world.observed())
    assert labels["xc-2"] == "unknown"
    assert list(labels.values()).count("leader") == 1


def test_member_statuses() -> None:
    world = RaftWorld.bootstrapped("xc", NS, 3)
    world.members[3].lag = 42
    world.tick()
    members = decisions.member_statuses(world.observed())
    assert [m["name"] for m in members] == ["xc-0", "xc-1", "xc-2"]
    assert members[0]["role"] == "leader" and members[0]["lag"] == 0
    assert members[2]["lag"] == 0 or members[2]["lag"] <= 42
    assert all(m["voter"] and m["healthy"] for m in members)


@pytest.mark.parametrize("n", [1, 3, 5, 7])
def test_majority(n: int) -> None:
    assert majority(n) == n // 2 + 1


def test_phase_follows_what_the_operator_is_doing() -> None:
    spec5 = parse_spec({"replicas": 5})
    world = RaftWorld.bootstrapped("xc", NS, 3)
    phases = []
    for _ in range(40):
        world.tick()
        obs = world.observed()
        action = decisions.next_action("xc", NS, spec5, obs)
        phases.append(decisions.phase(spec5, obs, action, decisions.conditions(spec5, obs, action)))
        apply(world, action)
        if isinstance(action, decisions.Steady):
            break
    # Every step of the scale-up, waits included, reads Scaling; then Running.
    assert phases[-1] == "Running"
    assert set(phases[:-1]) == {"Scaling"}

    world.template_hash = "h2"
    spec = parse_spec({"replicas": 5})
    world.tick()
    action = decisions.next_action("xc", NS, spec, world.observed())
    apply(world, action)
    next(m for m in world.members.values() if m.ordinal == 4).lag = 5000
    world.sync_pods()
    obs = world.observed()
    wait = decisions.next_action("xc", NS, spec, obs)
    assert isinstance(wait, decisions.Wait) and wait.purpose == decisions.UPGRADE
    assert decisions.phase(spec, obs, wait, decisions.conditions(spec, obs, wait)) == "Upgrading"

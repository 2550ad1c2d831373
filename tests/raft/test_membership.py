"""Membership changes one server at a time: dissertation chapter 4, with learners
(4.2.1 catching up new servers), removing the leader (4.2.2) and the 2015 errata."""

import pytest
from exchange_node.raft import (
    ConfChange,
    ConfChangeType,
    EntryType,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    Role,
)
from raftnet import Network

PAPER = {"pre_vote": False, "check_quorum": False}


def add_learner(net: Network, leader_id: int, node_id: int) -> None:
    net.add_node(node_id)  # starts empty, no bootstrap: waits for the leader
    net.cores[leader_id].propose_conf_change(
        ConfChange(ConfChangeType.ADD_LEARNER, node_id, f"node-{node_id}".encode())
    )
    net.deliver()


def test_4_2_1_a_learner_catches_up_and_learns_the_configuration_from_the_log():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    leader.propose_many([b"a", b"b"])
    net.deliver()
    add_learner(net, 1, 4)
    learner = net.cores[4]
    assert leader.conf_state.learners == (4,)
    assert learner.conf_state == leader.conf_state
    assert net.log_terms(4) == net.log_terms(1)
    assert net.data_applied(4) == [b"a", b"b"]
    # The application saw every membership entry, with the addresses in the context.
    changes = [ConfChange.decode(e.data) for e in net.applied[4] if e.type == EntryType.CONF_CHANGE]
    assert [(c.type, c.node_id, c.context) for c in changes][-1] == (
        ConfChangeType.ADD_LEARNER,
        4,
        b"node-4",
    )


def test_4_2_1_a_learner_never_campaigns_and_its_vote_never_counts():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    add_learner(net, 1, 4)
    learner = net.cores[4]
    net.isolate(4)
    net.tick(4, 100)
    assert learner.role is Role.FOLLOWER and learner.term == leader.term
    # Commit needs two of the three voters, whatever the learner does.
    net.heal()
    net.isolate(2)
    net.isolate(3)
    leader.propose(b"needs a voter")
    net.deliver()
    assert learner.log.last_index() == leader.log.last_index()
    assert leader.commit_index < leader.log.last_index()


def test_4_2_1_promoting_a_caught_up_learner_makes_it_a_voter():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    add_learner(net, 1, 4)
    assert leader.status().progress[4].match == leader.log.last_index()
    leader.propose_conf_change(ConfChange(ConfChangeType.PROMOTE, 4))
    net.deliver()
    assert [c.conf_state.voters for c in net.cores.values()] == [(1, 2, 3, 4)] * 4
    assert leader.conf_state.learners == ()
    # Four voters: the quorum is three, so two isolated voters block commits.
    net.isolate(3)
    net.isolate(4)
    leader.propose(b"blocked")
    net.deliver()
    assert leader.commit_index < leader.log.last_index()


def test_4_1_only_one_configuration_change_may_be_pending():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    net.isolate(2)
    net.isolate(3)
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    with pytest.raises(ProposalDroppedError):
        leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))
    net.heal()
    net.tick_all(1)
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))
    net.deliver()
    assert leader.conf_state.learners == (4, 5)


def test_errata_a_new_leader_refuses_a_change_until_an_entry_of_its_term_commits():
    net = Network([1, 2, 3], **PAPER)
    net.drop = lambda m: m.type is MessageType.APP  # the new leader's empty entry is stuck
    leader = net.elect(1)
    assert leader.log.term(leader.commit_index) != leader.term
    with pytest.raises(ProposalDroppedError, match="term"):
        leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.heal()
    net.tick_all(1)
    assert leader.log.term(leader.commit_index) == leader.term
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.deliver()
    assert leader.conf_state.learners == (4,)


def test_4_2_2_removing_the_leader_it_steps_down_after_commit_and_another_takes_over():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    _, index = leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 1))
    net.deliver()
    assert leader.role is Role.FOLLOWER
    assert leader.conf_state.voters == (2, 3)
    # The removed leader handed over with TimeoutNow: no election timeout was needed.
    successor = net.leaders()
    assert len(successor) == 1 and successor[0] in (2, 3)
    new = net.cores[successor[0]]
    assert new.commit_index >= index
    with pytest.raises(NotLeaderError) as raised:
        leader.propose(b"too late")
    assert raised.value.leader in (0, successor[0])
    # The two remaining voters commit on their own.
    new.propose(b"after removal")
    net.deliver()
    assert all(b"after removal" in net.data_applied(i) for i in (2, 3))
    # The removed server never campaigns again.
    net.tick(1, 100)
    assert leader.role is Role.FOLLOWER


def test_4_2_2_the_hand_over_works_when_it_arrives_with_the_commit_of_the_removal():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 1))
    net.deliver_batched()
    # One TIMEOUT_NOW to the successor (the others are notices naming it).
    timeout_now = [m for m in net.sent if m.type is MessageType.TIMEOUT_NOW and m.index == m.to]
    assert len(timeout_now) == 1
    successor = net.cores[timeout_now[0].to]
    # No tick happened: the successor campaigned as soon as it applied the removal.
    assert successor.role is Role.LEADER
    assert successor.conf_state.voters == (2, 3)


def test_removing_a_follower_shrinks_the_quorum():
    net = Network([1, 2, 3, 4], **PAPER)
    leader = net.elect(1)
    leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 4))
    net.deliver()
    assert leader.conf_state.voters == (1, 2, 3)
    assert 4 not in leader.status().progress
    net.isolate(3)
    net.isolate(4)
    leader.propose(b"two of three")
    net.deliver()
    assert leader.commit_index == leader.log.last_index()


def test_a_member_added_after_compaction_learns_the_configuration_from_the_snapshot():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    leader.propose_many([b"a", b"b"])
    net.deliver()
    net.take_snapshot(1)
    add_learner(net, 1, 4)
    net.tick_all(2)
    learner = net.cores[4]
    assert net.disks[4].snapshot is not None
    assert learner.conf_state == leader.conf_state == ((1, 2, 3), (4,))
    assert net.data_applied(4) == [b"a", b"b"]


def test_the_last_voter_cannot_be_removed():
    net = Network([1], **PAPER)
    leader = net.elect(1)
    with pytest.raises(ProposalDroppedError, match="last voter"):
        leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 1))
    assert leader.conf_state.voters == (1,)

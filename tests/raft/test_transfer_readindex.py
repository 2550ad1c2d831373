"""Leadership transfer (dissertation 3.10), ReadIndex (6.4) and where proposals may go."""

import pytest
from exchange_node.raft import (
    ConfChange,
    ConfChangeType,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    ReadState,
    Role,
)
from raftnet import Network


def test_3_10_transfer_to_an_up_to_date_follower_is_immediate():
    net = Network([1, 2, 3], check_quorum=True, pre_vote=True)
    old = net.elect(1)
    term = old.term
    net.sent.clear()
    old.transfer_leadership(3)
    net.deliver()
    assert net.leaders() == [3]
    assert net.cores[3].term == term + 1
    assert old.role is Role.FOLLOWER and old.leader == 3
    kinds = [m.type for m in net.sent]
    # TimeoutNow skips pre-vote and the forced vote passes the followers' leader lease.
    assert kinds[0] is MessageType.TIMEOUT_NOW
    assert MessageType.PRE_VOTE not in kinds
    assert all(m.context == b"transfer" for m in net.sent if m.type is MessageType.VOTE)


def test_3_10_a_lagging_target_catches_up_first_and_proposals_are_dropped_meanwhile():
    net = Network([1, 2, 3])
    old = net.elect(1)
    net.isolate(3)
    old.propose_many([b"a", b"b", b"c"])
    net.deliver()
    old.transfer_leadership(3)
    net.deliver()
    assert old.role is Role.LEADER and old.lead_transferee == 3
    with pytest.raises(ProposalDroppedError):
        old.propose(b"during transfer")
    net.heal()
    net.tick(1)  # a heartbeat round finds 3 behind; the append catches it up
    net.deliver()
    assert net.leaders() == [3]
    assert net.data_applied(3)[-3:] == [b"a", b"b", b"c"]


def test_3_10_a_transfer_that_cannot_finish_is_abandoned_after_an_election_timeout():
    net = Network([1, 2, 3], check_quorum=False)
    old = net.elect(1)
    net.isolate(3)
    old.propose(b"x")
    net.deliver()
    old.transfer_leadership(3)
    net.tick(1, old.config.election_tick)
    assert old.lead_transferee == 0 and old.role is Role.LEADER
    old.propose(b"accepted again")
    net.deliver()
    assert net.data_applied(2)[-1] == b"accepted again"


def test_3_10_a_follower_forwards_a_transfer_request_to_the_leader():
    net = Network([1, 2, 3])
    net.elect(1)
    net.cores[2].transfer_leadership(2)
    net.deliver()
    assert net.leaders() == [2]


def test_3_10_transfers_to_learners_strangers_or_self_are_ignored():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.add_node(4)
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.deliver()
    for target in (4, 9, 1):
        leader.transfer_leadership(target)
        net.deliver()
        assert leader.lead_transferee == 0
    assert net.leaders() == [1]


def test_6_4_read_index_on_the_leader_confirms_leadership_with_a_heartbeat_round():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose(b"w")
    net.deliver()
    net.sent.clear()
    leader.read_index(b"req-1")
    net.deliver()
    heartbeats = [m for m in net.sent if m.type is MessageType.HEARTBEAT]
    assert {m.to for m in heartbeats} == {2, 3}
    assert all(m.context == b"req-1" for m in heartbeats)
    assert net.read_states[1] == [ReadState(leader.commit_index, b"req-1")]


def test_6_4_an_isolated_leader_cannot_serve_a_read():
    net = Network([1, 2, 3], check_quorum=False)
    leader = net.elect(1)
    net.isolate(1)
    leader.read_index(b"stale?")
    net.tick(1, 5)
    net.deliver()
    assert net.read_states[1] == []
    # Once the partition heals the same request is confirmed.
    net.heal()
    net.tick(1)
    net.deliver()
    assert [r.request_ctx for r in net.read_states[1]] == [b"stale?"]


def test_6_4_a_new_leader_answers_only_after_committing_an_entry_of_its_term():
    net = Network([1, 2, 3])
    net.drop = lambda m: m.type is MessageType.APP
    leader = net.elect(1)
    leader.read_index(b"early")
    net.tick(1, 2)
    assert net.read_states[1] == []
    net.heal()
    net.tick(1)
    net.deliver()
    assert leader.log.term(leader.commit_index) == leader.term
    assert net.read_states[1] == [ReadState(leader.commit_index, b"early")]


def test_6_4_a_follower_read_is_forwarded_and_answered_with_the_leaders_commit_index():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose_many([b"a", b"b"])
    net.deliver()
    net.cores[3].read_index(b"from-3")
    net.deliver()
    assert net.read_states[3] == [ReadState(leader.commit_index, b"from-3")]
    assert net.read_states[1] == []


def test_6_4_reads_queued_before_a_confirmation_are_released_in_order():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.deliver()
    net.drop = lambda m: m.type is MessageType.HEARTBEAT_RESP
    leader.read_index(b"r1")
    leader.read_index(b"r2")
    net.deliver()
    assert net.read_states[1] == []
    net.heal()
    net.tick(1)  # the next heartbeat carries the newest context, "r2"
    net.deliver()
    assert [r.request_ctx for r in net.read_states[1]] == [b"r1", b"r2"]


def test_6_4_a_single_node_cluster_answers_at_once():
    net = Network([1])
    leader = net.elect(1)
    leader.read_index(b"solo")
    assert leader.ready().read_states == [ReadState(leader.commit_index, b"solo")]


def test_6_4_read_index_without_a_known_leader_fails_fast():
    net = Network([1, 2, 3])
    with pytest.raises(NotLeaderError) as raised:
        net.cores[2].read_index(b"x")
    assert raised.value.leader == 0


def test_proposals_on_a_follower_fail_at_once_with_the_leader_hint():
    net = Network([1, 2, 3])
    net.elect(2)
    with pytest.raises(NotLeaderError) as raised:
        net.cores[3].propose(b"order")
    assert raised.value.leader == 2
    with pytest.raises(NotLeaderError):
        net.cores[1].propose_many([b"a", b"b"])
    with pytest.raises(NotLeaderError):
        net.cores[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 9))
    assert net.cores[3].log.last_index() == net.cores[2].log.last_index()


def test_propose_many_appends_one_contiguous_run_and_reports_its_first_index():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    last = leader.log.last_index()
    term, first = leader.propose_many([b"a", b"b", b"c"])
    assert (term, first) == (leader.term, last + 1)
    assert leader.propose(b"d") == (leader.term, last + 4)
    net.deliver()
    assert net.data_applied(2) == [b"a", b"b", b"c", b"d"]

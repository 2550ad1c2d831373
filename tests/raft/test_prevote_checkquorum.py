"""Dissertation 9.6 (pre-vote), 6.2 (check-quorum) and 4.2.3 (disruptive servers)."""

from exchange_node.raft import Message, MessageType, Role
from raftnet import Network


def test_9_6_pre_vote_a_partitioned_follower_does_not_inflate_its_term():
    net = Network([1, 2, 3], pre_vote=True)
    leader = net.elect(1)
    term = leader.term
    net.isolate(3)
    net.tick(3, 200)
    net.deliver()
    # Its pre-votes never win, so it never moves to a new term.
    assert net.cores[3].term == term
    assert net.cores[3].role is Role.PRE_CANDIDATE


def test_9_6_pre_vote_a_rejoining_follower_does_not_disrupt_the_leader():
    net = Network([1, 2, 3], pre_vote=True)
    leader = net.elect(1)
    term = leader.term
    net.isolate(3)
    net.tick(3, 200)
    net.heal()
    net.tick_all(5)
    assert net.leaders() == [1]
    assert leader.term == term
    assert net.cores[3].leader == 1


def test_without_pre_vote_the_same_rejoin_does_disrupt_the_leader():
    # The contrast that makes the previous test meaningful.
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False)
    leader = net.elect(1)
    term = leader.term
    net.isolate(3)
    net.tick(3, 200)
    assert net.cores[3].term > term + 5
    net.heal()
    net.tick_all(20)
    # Its next vote request carries the inflated term and deposes the leader.
    assert leader.term > term + 5


def test_9_6_pre_vote_is_granted_only_to_an_up_to_date_log_and_changes_no_state():
    net = Network([1, 2, 3], pre_vote=True, check_quorum=False)
    net.elect(1)
    net.cores[1].propose(b"x")
    net.deliver()
    voter = net.cores[3]
    term, vote = voter.term, voter.vote
    last, last_term = voter.log.last_index(), voter.log.last_term()
    voter.step(Message(MessageType.PRE_VOTE, 3, 2, term + 1, log_term=last_term, index=last - 1))
    voter.step(Message(MessageType.PRE_VOTE, 3, 2, term + 1, log_term=last_term, index=last))
    replies = [m for m in voter.ready().messages if m.type is MessageType.PRE_VOTE_RESP]
    assert [m.reject for m in replies] == [True, False]
    assert replies[1].term == term + 1
    assert (voter.term, voter.vote) == (term, vote)


def test_6_2_check_quorum_an_isolated_leader_steps_down_within_two_election_timeouts():
    net = Network([1, 2, 3], check_quorum=True)
    leader = net.elect(1)
    net.isolate(1)
    # The first check still sees the answers from before the partition.
    net.tick(1, leader.config.election_tick)
    assert leader.role is Role.LEADER
    net.tick(1, leader.config.election_tick)
    assert leader.role is Role.FOLLOWER
    assert leader.leader == 0


def test_6_2_check_quorum_a_leader_hearing_a_majority_stays():
    net = Network([1, 2, 3], check_quorum=True)
    leader = net.elect(1)
    net.cut |= {(1, 3), (3, 1)}
    for _ in range(5 * leader.config.election_tick):
        net.tick(1)
        net.deliver()
    assert leader.role is Role.LEADER


def test_4_2_3_followers_with_a_live_leader_ignore_higher_term_vote_requests():
    net = Network([1, 2, 3], pre_vote=False, check_quorum=True)
    leader = net.elect(1)
    term = leader.term
    follower = net.cores[2]
    # A server that cannot hear the leader (e.g. being removed) asks for votes.
    request = Message(
        MessageType.VOTE,
        2,
        3,
        term + 1,
        log_term=follower.log.last_term(),
        index=follower.log.last_index(),
    )
    follower.step(request)
    assert follower.term == term and follower.leader == 1
    assert not [m for m in follower.ready().messages if m.type is MessageType.VOTE_RESP]
    # Once the leader has been silent for an election timeout, it is heard.
    net.tick(2, follower.config.election_tick)
    follower.step(request)
    assert follower.term == term + 1
    assert [m.reject for m in follower.ready().messages if m.type is MessageType.VOTE_RESP] == [
        False
    ]


def test_a_stale_leader_learns_the_new_term_from_a_follower_and_steps_down():
    net = Network([1, 2, 3], pre_vote=True, check_quorum=False)
    old = net.elect(1)
    net.isolate(1)
    while not net.leaders() or net.leaders() == [1]:
        for i in (2, 3):
            net.tick(i)
        net.deliver()
    new = net.cores[net.leaders()[-1]]
    assert new.term > old.term and old.role is Role.LEADER
    net.heal()
    net.tick(1)  # a heartbeat at the old term; the answer carries the new one
    net.deliver()
    assert old.role is Role.FOLLOWER
    assert old.term == new.term and net.leaders() == [new.node_id]

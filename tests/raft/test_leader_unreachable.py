"""``RaftCore.leader_unreachable``: the transport saw the leader's process go away.

The rules (docs/elections.md): a follower told that the leader it follows is gone
forgets that leader's lease and campaigns without waiting out its election timeout;
the lowest remaining voter id goes first, so the followers of a crashed leader do
not split their votes. It is a hint only: a follower that was not told, and still
hears its leader, keeps refusing vote requests (dissertation 4.2.3), so a wrong
hint cannot depose a live leader.
"""

from exchange_node.raft import Message, MessageType, Role
from raftnet import Network

ELECTION = 10


def crash(net: Network, node_id: int) -> None:
    """The process is gone: it steps nothing and its queued messages die with it."""
    net.cores.pop(node_id)
    net.queue = [m for m in net.queue if m.frm != node_id and m.to != node_id]


def pre_vote_from(candidate: int, to: int, core_term: int, last_index: int, last_term: int):
    return Message(
        MessageType.PRE_VOTE,
        to,
        candidate,
        core_term + 1,
        log_term=last_term,
        index=last_index,
        nonce=7,
    )


def answers(net: Network, node_id: int, kind: MessageType) -> list[Message]:
    return [m for m in net.sent if m.frm == node_id and m.type is kind]


def test_followers_of_a_crashed_leader_elect_without_waiting_out_the_timeout():
    net = Network([1, 2, 3], election_tick=ELECTION, heartbeat_tick=1)
    leader = net.elect(1)
    term = leader.term
    crash(net, 1)
    net.cores[3].leader_unreachable(1)
    net.cores[2].leader_unreachable(1)
    net.deliver()
    # Node 2, the lowest id left, pre-campaigned at once and won: no tick needed.
    assert net.cores[2].role is Role.LEADER
    assert net.cores[2].term == term + 1
    assert net.cores[3].leader == 2


def test_the_first_request_dropped_by_a_peer_that_had_not_noticed_is_sent_again_at_the_next_tick():
    net = Network([1, 2, 3], election_tick=ELECTION, heartbeat_tick=1)
    net.elect(1)
    crash(net, 1)
    net.sent.clear()
    net.cores[2].leader_unreachable(1)
    net.deliver()
    # Node 3 still counts the leader's lease: node 2's pre-vote was dropped.
    assert net.cores[2].role is Role.PRE_CANDIDATE
    assert not answers(net, 3, MessageType.PRE_VOTE_RESP)
    net.cores[3].leader_unreachable(1)
    net.tick(2)
    net.deliver()
    assert net.cores[2].role is Role.LEADER


def test_the_next_voter_waits_two_ticks_the_one_after_three():
    net = Network([1, 2, 3, 4], election_tick=ELECTION, heartbeat_tick=1)
    net.elect(1)
    crash(net, 1)
    net.cut = {(2, 3), (2, 4), (3, 2), (4, 2)}  # node 2 cannot help
    for i in (2, 3, 4):
        net.cores[i].leader_unreachable(1)
    net.deliver()
    assert net.cores[3].role is Role.FOLLOWER
    net.tick(3)
    assert net.cores[3].role is Role.FOLLOWER
    net.tick(3)
    assert net.cores[3].role is Role.PRE_CANDIDATE
    net.tick(4, 2)
    assert net.cores[4].role is Role.FOLLOWER
    net.tick(4)
    # Three ticks: node 4 campaigns too (a pre-vote round disturbs no one).
    assert net.cores[4].role is Role.PRE_CANDIDATE


def test_4_2_3_a_follower_that_still_hears_its_leader_refuses_the_pre_vote():
    net = Network([1, 2, 3], election_tick=ELECTION, heartbeat_tick=1)
    leader = net.elect(1)
    term = leader.term
    net.sent.clear()
    # Node 3 alone was told (wrongly) that the leader is gone, e.g. its own link broke.
    net.cores[3].leader_unreachable(1)
    net.tick(3, 2)  # node 3 (rank 1) pre-campaigns
    assert net.cores[3].role is Role.PRE_CANDIDATE
    net.deliver()
    assert answers(net, 3, MessageType.PRE_VOTE)
    assert not [m for m in answers(net, 2, MessageType.PRE_VOTE_RESP) if not m.reject]
    assert net.leaders() == [1]
    assert leader.term == term
    # The leader's next heartbeat brings node 3 back; nothing else changed.
    net.tick(1)
    net.deliver()
    assert net.cores[3].role is Role.FOLLOWER and net.cores[3].leader == 1
    assert {c.term for c in net.cores.values()} == {term}


def test_the_lease_ends_only_for_the_follower_told_and_only_for_its_leader():
    net = Network([1, 2, 3], election_tick=ELECTION, heartbeat_tick=1)
    net.elect(1)
    follower = net.cores[3]  # rank 1: waits, so its only message is the answer
    last, last_term = follower.log.last_index(), follower.log.last_term()
    ask = pre_vote_from(2, 3, follower.term, last, last_term)

    follower.step(ask)  # in the lease: dropped, not even refused
    follower.leader_unreachable(2)  # another peer: its loss says nothing of the leader
    follower.step(ask)
    follower.leader_unreachable(0)
    follower.step(ask)
    assert not follower.ready().messages

    follower.leader_unreachable(1)
    follower.step(ask)
    (reply,) = follower.ready().messages
    assert reply.type is MessageType.PRE_VOTE_RESP and not reply.reject
    assert reply.term == follower.term + 1


def test_hearing_the_leader_again_restores_the_lease_and_the_usual_timeout():
    net = Network([1, 2, 3, 4], election_tick=ELECTION, heartbeat_tick=1)
    net.elect(1)
    follower = net.cores[3]  # rank 1: waits two ticks
    follower.leader_unreachable(1)
    assert follower.randomized_election_timeout < 2 * ELECTION
    net.tick(1)  # a heartbeat arrives
    net.deliver()
    assert follower.role is Role.FOLLOWER and follower.election_elapsed == 0
    assert ELECTION <= follower.randomized_election_timeout < 2 * ELECTION
    net.tick(3, ELECTION - 1)
    assert follower.role is Role.FOLLOWER
    last, last_term = follower.log.last_index(), follower.log.last_term()
    follower.step(pre_vote_from(2, 3, follower.term, last, last_term))
    assert not follower.ready().messages  # the lease holds again


def test_a_repeated_hint_does_not_push_the_campaign_back():
    net = Network([1, 2, 3, 4], election_tick=ELECTION, heartbeat_tick=1)
    net.elect(1)
    crash(net, 1)
    follower = net.cores[4]  # rank 2: waits three ticks
    follower.leader_unreachable(1)
    net.tick(4, 2)
    follower.leader_unreachable(1)
    net.tick(4)
    assert follower.role is Role.PRE_CANDIDATE


def test_the_short_timeout_serves_once():
    net = Network([1, 2, 3], election_tick=ELECTION, heartbeat_tick=1)
    net.elect(1)
    crash(net, 1)
    crash(net, 3)  # no quorum left: node 2's campaigns cannot win
    follower = net.cores[2]
    follower.leader_unreachable(1)
    assert follower.role is Role.PRE_CANDIDATE
    net.tick(2)  # the retry
    assert follower.election_elapsed == 0
    assert ELECTION <= follower.randomized_election_timeout < 2 * ELECTION
    net.tick(2, ELECTION - 1)
    sent = len(answers(net, 2, MessageType.PRE_VOTE))
    net.tick(2, 1)
    assert len(answers(net, 2, MessageType.PRE_VOTE)) == sent


def test_a_leader_or_a_candidate_ignores_it():
    net = Network([1, 2, 3], election_tick=ELECTION, heartbeat_tick=1)
    leader = net.elect(1)
    leader.leader_unreachable(2)
    assert leader.role is Role.LEADER and not leader.has_ready()
    net.isolate(3)
    net.campaign(3)
    candidate = net.cores[3]
    elapsed = candidate.election_elapsed
    candidate.leader_unreachable(1)
    assert candidate.role is Role.PRE_CANDIDATE and candidate.election_elapsed == elapsed


def test_without_pre_vote_the_hint_only_shortens_the_timers():
    net = Network([1, 2, 3], election_tick=ELECTION, heartbeat_tick=1, pre_vote=False)
    leader = net.elect(1)
    term = leader.term
    crash(net, 1)
    net.cores[2].leader_unreachable(1)
    net.cores[3].leader_unreachable(1)
    net.deliver()
    assert net.cores[2].term == term  # nobody campaigned yet
    net.tick(2)
    net.deliver()
    assert net.cores[2].role is Role.LEADER and net.cores[2].term == term + 1


def test_a_follower_without_a_leader_ignores_it():
    net = Network([1, 2, 3], election_tick=ELECTION, heartbeat_tick=1)
    net.process_all()
    follower = net.cores[2]  # no leader yet
    elapsed, timeout = follower.election_elapsed, follower.randomized_election_timeout
    follower.leader_unreachable(0)
    follower.leader_unreachable(1)
    assert (follower.election_elapsed, follower.randomized_election_timeout) == (elapsed, timeout)
    assert follower.role is Role.FOLLOWER and not follower.has_ready()

"""Leader election: Raft paper section 5.2 and the election restriction of 5.4.1."""

import random

from exchange_node.raft import (
    ConfChange,
    ConfChangeType,
    Entry,
    HardState,
    Message,
    MessageType,
    RaftConfig,
    RaftCore,
    Role,
)
from raftnet import Network

PAPER = {"pre_vote": False, "check_quorum": False}


def vote_request(frm: int, to: int, term: int, last_index: int, last_term: int) -> Message:
    return Message(MessageType.VOTE, to, frm, term, log_term=last_term, index=last_index)


def responses(core: RaftCore, kind: MessageType) -> list[Message]:
    return [m for m in core.ready().messages if m.type is kind]


def test_5_2_a_follower_that_hears_nothing_campaigns_and_wins_a_majority():
    net = Network([1, 2, 3], **PAPER)
    net.campaign(1)
    assert net.leaders() == [1]
    # Bootstrap entries are term 1; the first election is term 2.
    assert [net.cores[i].term for i in (1, 2, 3)] == [2, 2, 2]
    assert [net.cores[i].leader for i in (1, 2, 3)] == [1, 1, 1]
    assert net.cores[2].vote == 1 and net.cores[3].vote == 1


def test_5_2_election_safety_each_server_votes_at_most_once_per_term():
    net = Network([1, 2, 3], **PAPER)
    voter = net.cores[3]
    voter.ready()
    last = voter.log.last_index()
    voter.step(vote_request(1, 3, 2, last, 1))
    voter.step(vote_request(2, 3, 2, last, 1))
    granted = [(m.to, not m.reject) for m in responses(voter, MessageType.VOTE_RESP)]
    assert granted == [(1, True), (2, False)]
    assert voter.vote == 1


def test_5_2_a_vote_is_persisted_in_the_hard_state_before_the_response_is_sent():
    net = Network([1, 2, 3], **PAPER)
    voter = net.cores[3]
    voter.ready()
    voter.step(vote_request(1, 3, 2, voter.log.last_index(), 1))
    rd = voter.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.hard_state.term == 2
    assert [m.type for m in rd.messages] == [MessageType.VOTE_RESP]


def test_5_2_a_candidate_that_hears_from_the_new_leader_of_its_term_steps_down():
    net = Network([1, 2, 3], **PAPER)
    # 2 and 3 both time out; 1's vote request reaches everyone first.
    net.cores[2].election_elapsed = 10**6
    net.cores[2].tick()
    assert net.cores[2].role is Role.CANDIDATE
    net.campaign(1)
    # 3 hears 1's request first and votes for it; 2 then gets 1's APP for term 2.
    assert net.leaders() == [1]
    assert net.cores[2].role is Role.FOLLOWER and net.cores[2].term == 2
    assert all(c.leader == 1 for c in net.cores.values())


def test_5_1_a_leader_that_sees_a_higher_term_becomes_follower():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    # An answer to the leader's own message (it echoes the leader's nonce).
    leader.step(Message(MessageType.APP_RESP, 1, 2, leader.term + 5, nonce=leader._nonce))
    assert leader.role is Role.FOLLOWER
    assert leader.term == 7 and leader.leader == 0


def test_5_4_1_election_restriction_a_voter_rejects_a_candidate_with_an_older_log():
    net = Network([1, 2, 3], **PAPER)
    net.elect(1)
    net.cores[1].propose(b"x")
    net.deliver()
    voter = net.cores[3]
    last = voter.log.last_index()
    # Same last term, shorter log: rejected.
    voter.step(vote_request(2, 3, voter.term + 1, last - 1, voter.log.last_term()))
    # Higher last term beats a longer log: granted.
    voter.step(vote_request(2, 3, voter.term + 2, last - 1, voter.log.last_term() + 1))
    verdicts = [m.reject for m in responses(voter, MessageType.VOTE_RESP)]
    assert verdicts == [True, False]


def test_5_2_randomized_timeouts_come_from_the_seed_and_differ_between_members():
    def timeouts(seed: int) -> list[int]:
        cores = [RaftCore(RaftConfig(node_id=i, seed=seed)) for i in range(1, 6)]
        return [c.randomized_election_timeout for c in cores]

    assert timeouts(7) == timeouts(7)
    assert len(set(timeouts(7))) > 1
    assert all(10 <= t < 20 for t in timeouts(7) + timeouts(8))


def test_5_2_election_safety_at_most_one_leader_per_term_under_random_partitions():
    leaders_by_term: dict[int, set[int]] = {}
    for seed in range(6):
        rng = random.Random(seed)
        net = Network([1, 2, 3, 4, 5], seed=seed)
        for _round in range(60):
            net.cut.clear()
            for a in net.cores:
                for b in net.cores:
                    if a != b and rng.random() < 0.3:
                        net.cut.add((a, b))
            net.tick_all(rng.randint(1, 8))
            for i, core in net.cores.items():
                if core.role is Role.LEADER:
                    leaders_by_term.setdefault(core.term + 1000 * seed, set()).add(i)
                    if rng.random() < 0.5:
                        core.propose(b"v")
    assert leaders_by_term, "no leader was ever elected"
    assert all(len(ids) == 1 for ids in leaders_by_term.values()), leaders_by_term


def test_restart_keeps_term_and_vote_so_no_second_vote_in_the_same_term():
    changes = [ConfChange(ConfChangeType.PROMOTE, i) for i in (1, 2, 3)]
    entries = [Entry(1, i, c.encode(), 1) for i, c in enumerate(changes, 1)]
    voter = RaftCore(
        RaftConfig(node_id=3, pre_vote=False, check_quorum=False),
        hard_state=HardState(term=2, vote=1, commit=3),
        entries=entries,
    )
    voter.step(vote_request(2, 3, 2, 3, 1))
    assert responses(voter, MessageType.VOTE_RESP)[0].reject

"""Inputs a forged or buggy peer can send: the core refuses what no honest member
would send, so such a peer can force at most what an ordinary election could.

Each test is named after the rule it guards (see raft/README.md, "Hostile inputs").
"""

import pytest
from exchange_node.raft import Entry, HardState, Message, MessageType, RaftConfig, RaftCore, Role
from exchange_node.raft.core import MAX_TERM_STEP, TRANSFER_CONTEXT
from exchange_node.raft.types import MAX_TERM
from raftnet import Network

STRANGER = 9


def settled() -> Network:
    net = Network([1, 2, 3], check_quorum=True, pre_vote=True)
    net.elect(1)
    net.cores[1].propose(b"a")
    net.deliver()
    return net


def state(core: RaftCore) -> tuple[int, int, int, int, int]:
    return (core.term, core.role, core.leader, core.vote, core.commit_index)


def step_and_collect(net: Network, core: RaftCore, m: Message) -> list[Message]:
    net.sent.clear()
    core.step(m)
    net.process(core.id)
    return [s for s in net.sent if s.frm == core.id]


def test_a_term_above_max_term_is_refused():
    net = settled()
    follower = net.cores[2]
    follower.term = MAX_TERM - 10  # as if the cluster had really got this far
    before = state(follower)
    sent = step_and_collect(net, follower, Message(MessageType.HEARTBEAT, 2, 1, MAX_TERM + 1))
    assert state(follower) == before and sent == []
    # The highest encodable term itself is still a term like any other.
    follower.step(Message(MessageType.HEARTBEAT, 2, 1, MAX_TERM))
    assert follower.term == MAX_TERM


def test_a_term_jump_beyond_max_term_step_is_refused():
    net = settled()
    follower = net.cores[2]
    before = state(follower)
    for term in (follower.term + MAX_TERM_STEP + 1, MAX_TERM, 2**64 - 1):
        sent = step_and_collect(net, follower, Message(MessageType.HEARTBEAT, 2, 1, term))
        assert state(follower) == before and sent == []
    follower.step(Message(MessageType.HEARTBEAT, 2, 1, follower.term + MAX_TERM_STEP))
    assert follower.term == before[0] + MAX_TERM_STEP


def test_a_node_at_max_term_never_campaigns_past_it():
    net = settled()
    follower = net.cores[2]
    follower.term = MAX_TERM - 1
    follower.step(Message(MessageType.HEARTBEAT, 2, 1, MAX_TERM))
    assert follower.term == MAX_TERM
    net.sent.clear()
    net.tick(2, times=10 * follower.config.election_tick)
    assert follower.term == MAX_TERM and follower.role is Role.FOLLOWER
    assert all(m.term <= MAX_TERM for m in net.sent)


def test_a_stored_term_above_max_term_is_refused_at_startup():
    with pytest.raises(ValueError, match="MAX_TERM"):
        RaftCore(RaftConfig(node_id=1), hard_state=HardState(MAX_TERM + 1, 0, 0))


@pytest.mark.parametrize(
    "kind",
    [
        MessageType.APP_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.VOTE_RESP,
        MessageType.PRE_VOTE_RESP,
        MessageType.READ_INDEX,
        MessageType.READ_INDEX_RESP,
        MessageType.TRANSFER_LEADER,
    ],
)
def test_answers_and_requests_from_a_stranger_are_ignored(kind):
    net = settled()
    for core in (net.cores[1], net.cores[2]):  # the leader and a follower
        before = state(core)
        m = Message(kind, core.id, STRANGER, core.term + 5, index=core.log.last_index())
        assert step_and_collect(net, core, m) == []
        assert state(core) == before


def test_a_vote_request_from_a_non_voter_is_ignored():
    net = settled()
    follower = net.cores[2]
    follower.leader = 0  # out of the leader lease: an ordinary request would be answered
    before = state(follower)
    for kind in (MessageType.VOTE, MessageType.PRE_VOTE):
        m = Message(kind, 2, STRANGER, follower.term + 1, log_term=follower.term, index=10**6)
        assert step_and_collect(net, follower, m) == []
        assert state(follower) == before


def test_timeout_now_is_obeyed_only_from_the_followed_leader_in_its_term():
    net = settled()
    follower = net.cores[2]
    term = follower.term
    refused = [
        Message(MessageType.TIMEOUT_NOW, 2, 3, term),  # another voter, not our leader
        Message(MessageType.TIMEOUT_NOW, 2, 1, term + 1),  # our leader, another term
        Message(MessageType.TIMEOUT_NOW, 2, STRANGER, term),  # a stranger
    ]
    for m in refused:
        before = state(follower)
        assert step_and_collect(net, follower, m) == []
        assert state(follower) == before
    # The real thing still works: the leader we follow, in its term, with its nonce.
    real = Message(MessageType.TIMEOUT_NOW, 2, 1, term, index=2, nonce=nonce_of(net))
    sent = step_and_collect(net, follower, real)
    assert follower.role is Role.CANDIDATE and follower.term == term + 1
    assert {m.type for m in sent} == {MessageType.VOTE}


def nonce_of(net: Network, leader: int = 1) -> int:
    return net.cores[leader]._nonce


def test_timeout_now_is_obeyed_only_with_the_leader_s_nonce():
    net = settled()
    follower = net.cores[2]
    nonce = nonce_of(net)
    # The follower learnt it from the leader's messages; it answers only the leader.
    assert follower._leader_nonce == nonce != 0
    assert all(m.to == 1 for m in net.sent if m.frm == 2 and m.nonce == nonce)
    before = state(follower)
    for guess in (0, 1, nonce + 1):
        m = Message(MessageType.TIMEOUT_NOW, 2, 1, follower.term, index=2, nonce=guess)
        assert step_and_collect(net, follower, m) == []
        assert state(follower) == before
    # A real transfer: a notice to the other voter, then the TIMEOUT_NOW itself.
    net.sent.clear()
    net.cores[1].transfer_leadership(3)
    net.deliver()
    assert net.leaders() == [3]
    notices = [m for m in net.sent if m.type is MessageType.TIMEOUT_NOW]
    assert [(m.to, m.index, m.nonce) for m in notices] == [(2, 3, nonce), (3, 3, nonce)]


def test_timeout_now_from_the_removed_leader_we_follow_is_obeyed():
    # The removed leader hands over after its removal applied: it is no member then.
    net = settled()
    follower = net.cores[2]
    follower._voters.discard(1)  # as if the removal of 1 had applied here
    m = Message(MessageType.TIMEOUT_NOW, 2, 1, follower.term, index=2, nonce=nonce_of(net))
    step_and_collect(net, follower, m)
    assert follower.role is Role.CANDIDATE


def test_an_acknowledgement_without_the_leader_s_nonce_commits_nothing():
    net = settled()
    leader = net.cores[1]
    net.isolate(1)  # the followers are frozen: nothing they send arrives
    leader.propose(b"unacknowledged")
    net.deliver()
    commit, last = leader.commit_index, leader.log.last_index()
    for guess in (0, 1, nonce_of(net) + 1):
        for kind in (MessageType.APP_RESP, MessageType.HEARTBEAT_RESP):
            forged = Message(kind, 1, 2, leader.term, nonce=guess, index=last, commit=last)
            step_and_collect(net, leader, forged)
            assert leader.commit_index == commit
    # The control: the same acknowledgement with the nonce commits.
    real = Message(MessageType.APP_RESP, 1, 2, leader.term, nonce=nonce_of(net), index=last)
    step_and_collect(net, leader, real)
    assert leader.commit_index == last


def test_a_heartbeat_answer_without_the_leader_s_nonce_confirms_no_read():
    net = settled()
    leader = net.cores[1]
    net.isolate(1)  # a deposed leader that does not know it yet
    leader.read_index(b"read-1")
    net.deliver()
    ctx = leader.read_only.last_pending_context()
    for voter in (2, 3):
        forged = Message(MessageType.HEARTBEAT_RESP, 1, voter, leader.term, context=ctx)
        forged.nonce = nonce_of(net) + 1
        step_and_collect(net, leader, forged)
    assert net.read_states[1] == []
    real = Message(MessageType.HEARTBEAT_RESP, 1, 2, leader.term, nonce=nonce_of(net))
    real.context = ctx
    step_and_collect(net, leader, real)
    assert [r.request_ctx for r in net.read_states[1]] == [b"read-1"]


@pytest.mark.parametrize(
    "kind",
    [
        MessageType.APP_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.VOTE_RESP,
        MessageType.READ_INDEX,
        MessageType.READ_INDEX_RESP,
        MessageType.TRANSFER_LEADER,
    ],
)
def test_a_higher_term_reaches_a_leader_only_from_a_leader_candidate_or_a_real_answer(kind):
    net = settled()
    leader = net.cores[1]
    before = state(leader)
    forged = Message(kind, 1, 2, leader.term + 1, nonce=nonce_of(net) + 1, reject=True)
    assert step_and_collect(net, leader, forged) == []
    assert state(leader) == before
    if kind in (MessageType.APP_RESP, MessageType.HEARTBEAT_RESP, MessageType.VOTE_RESP):
        real = Message(kind, 1, 2, leader.term + 1, nonce=nonce_of(net), reject=True)
        step_and_collect(net, leader, real)
        assert leader.role is Role.FOLLOWER and leader.term == before[0] + 1


def test_a_vote_grant_without_the_candidate_s_nonce_wins_nothing():
    net = Network([1, 2, 3], pre_vote=False)
    net.isolate(1)
    net.campaign(1)
    candidate = net.cores[1]
    assert candidate.role is Role.CANDIDATE
    for voter in (2, 3):
        forged = Message(MessageType.VOTE_RESP, 1, voter, candidate.term, nonce=12345)
        step_and_collect(net, candidate, forged)
    assert candidate.role is Role.CANDIDATE
    real = Message(MessageType.VOTE_RESP, 1, 2, candidate.term, nonce=candidate._nonce)
    step_and_collect(net, candidate, real)
    assert candidate.role is Role.LEADER


def test_a_second_leader_or_nonce_in_one_term_is_refused():
    net = settled()
    follower = net.cores[2]
    term, last = follower.term, follower.log.last_index()
    before = (state(follower), last)
    entry = [Entry(term, last + 1, b"forged")]
    for frm, nonce in ((1, nonce_of(net) + 1), (1, 0), (3, nonce_of(net))):
        for kind in (MessageType.APP, MessageType.HEARTBEAT):
            m = Message(
                kind, 2, frm, term, log_term=term, index=last, entries=entry, commit=last + 1
            )
            m.nonce = nonce
            assert step_and_collect(net, follower, m) == []
            assert (state(follower), follower.log.last_index()) == before


def test_transfer_requests_and_read_answers_need_the_leader_s_nonce():
    net = settled()
    leader, follower = net.cores[1], net.cores[2]
    forged = Message(MessageType.TRANSFER_LEADER, 1, 2, leader.term, index=3, nonce=7)
    step_and_collect(net, leader, forged)
    assert leader.lead_transferee == 0 and leader.role is Role.LEADER
    answer = Message(MessageType.READ_INDEX_RESP, 2, 1, follower.term, index=1, context=b"r")
    step_and_collect(net, follower, answer)
    assert net.read_states[2] == []
    follower.transfer_leadership(3)  # the real request carries the nonce
    net.deliver()
    assert net.leaders() == [3]


def forged_transfer_vote(core: RaftCore, **changes: object) -> Message:
    fields: dict[str, object] = dict(
        type=MessageType.VOTE,
        to=core.id,
        frm=3,
        term=core.term + 1,
        log_term=core.term,
        index=core.log.last_index(),
        context=TRANSFER_CONTEXT,
    )
    fields.update(changes)
    return Message(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"type": MessageType.PRE_VOTE},  # a transfer never pre-votes
        {"term_delta": 2},  # a transferee campaigns exactly one term above its leader
        {"log_term_delta": -1},  # it holds the leader's last entry, of the leader's term
        {"frm": 1},  # our own leader does not campaign while leading
    ],
    ids=["pre_vote", "term_jump", "stale_log_term", "from_our_leader"],
)
def test_a_transfer_vote_bypasses_the_lease_only_when_it_matches_a_real_transfer(changes):
    net = settled()
    follower = net.cores[2]
    changes = dict(changes)
    term_delta = changes.pop("term_delta", 1)
    log_term_delta = changes.pop("log_term_delta", 0)
    m = forged_transfer_vote(
        follower,
        term=follower.term + term_delta,
        log_term=follower.term + log_term_delta,
        **changes,
    )
    # Even after the leader announced a transfer to that sender, the shape must fit.
    follower._transfer_notice = (follower.term, m.frm)
    before = state(follower)
    assert step_and_collect(net, follower, m) == []
    assert state(follower) == before


def test_a_transfer_vote_bypasses_the_lease_only_after_the_leader_announced_it():
    net = settled()
    follower = net.cores[2]
    term = follower.term
    before = state(follower)
    assert step_and_collect(net, follower, forged_transfer_vote(follower)) == []
    assert state(follower) == before
    # The leader's notice (with the follower's secret) names the transferee.
    notice = Message(MessageType.TIMEOUT_NOW, 2, 1, term, index=3, nonce=nonce_of(net))
    assert step_and_collect(net, follower, notice) == []
    assert follower.role is Role.FOLLOWER and follower.term == term
    sent = step_and_collect(net, follower, forged_transfer_vote(follower))
    assert follower.term == term + 1 and follower.vote == 3
    assert [(m.type, m.reject) for m in sent] == [(MessageType.VOTE_RESP, False)]


def test_a_leader_honours_a_transfer_vote_only_from_the_transferee_it_chose():
    net = settled()
    leader = net.cores[1]
    before = state(leader)
    assert step_and_collect(net, leader, forged_transfer_vote(leader, frm=3)) == []
    assert state(leader) == before and leader.role is Role.LEADER


def test_a_real_transfer_in_five_voters_passes_the_followers_leases_with_notices():
    # Five voters: the transferee needs two followers besides the leader, and they
    # are in their lease; the leader's notices are what lets them vote.
    net = Network([1, 2, 3, 4, 5], check_quorum=True, pre_vote=True)
    leader = net.elect(1)
    term = leader.term
    net.sent.clear()
    leader.transfer_leadership(4)
    net.deliver()
    assert net.leaders() == [4] and net.cores[4].term == term + 1
    notices = sorted(
        m.to for m in net.sent if m.type is MessageType.TIMEOUT_NOW and m.index == 4 and m.to != 4
    )
    assert notices == [2, 3, 5]


def test_a_read_answer_before_the_leader_is_heard_is_ignored():
    """A READ_INDEX_RESP with nonce 0 matched a follower that had not yet heard this
    term's leader (its leader nonce is 0 then): a forged answer set a read index."""
    net = Network([1, 2, 3], check_quorum=True, pre_vote=True)
    follower = net.cores[2]  # no leader heard yet in its term
    assert follower.leader == 0 and follower.role is Role.FOLLOWER
    answer = Message(MessageType.READ_INDEX_RESP, 2, 3, follower.term, index=1, context=b"r")
    step_and_collect(net, follower, answer)
    assert net.read_states[2] == []

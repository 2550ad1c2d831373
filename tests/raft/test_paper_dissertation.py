"""One test per rule the dissertation (Ongaro, 2014) adds to Figure 2: single-server
membership changes (chapter 4), ReadIndex (6.4), leadership transfer (3.10),
pre-vote, check-quorum and the leader lease (4.2.3, 6.2, 9.6).

Same style as test_paper_figure2.py: init one core, step it by hand, check state and
messages. docs/mutation.md lists the violations planted by hand to see them fail.
"""

from __future__ import annotations

import pytest
from exchange_node.raft import (
    TRANSFER_CONTEXT,
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    Role,
)
from paperkit import (
    ack,
    append,
    core,
    drain,
    fire_election_timeout,
    grant,
    make_leader,
    sent,
    vote_request,
)

APP, APP_RESP = MessageType.APP, MessageType.APP_RESP
VOTE, VOTE_RESP = MessageType.VOTE, MessageType.VOTE_RESP
PRE_VOTE, PRE_VOTE_RESP = MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP
HEARTBEAT, HEARTBEAT_RESP = MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP
TIMEOUT_NOW = MessageType.TIMEOUT_NOW
READ_INDEX, READ_INDEX_RESP = MessageType.READ_INDEX, MessageType.READ_INDEX_RESP
LEARNER, PROMOTE, REMOVE = ConfChangeType.ADD_LEARNER, ConfChangeType.PROMOTE, ConfChangeType.REMOVE
DEFAULTS = {"pre_vote": True, "check_quorum": True}


def settled_leader(voters=(1, 2, 3), learners=(), **config):
    """Leader 1 in term 2 whose no-op (index 2) is committed and applied."""
    c = make_leader(core(1, voters=voters, learners=learners, terms=(1,), term=1, **config))
    for v in voters[1 : len(voters) // 2 + 1]:
        ack(c, v, 2)
    drain(c)
    assert c.log.commit_index == 2 and c.log.applied_index == 2
    return c


def heartbeat_ack(leader, frm, ctx=b""):
    leader.step(
        Message(
            HEARTBEAT_RESP,
            leader.id,
            frm,
            leader.term,
            commit=leader.log.commit_index,
            context=ctx,
            nonce=leader._nonce,
        )
    )


# --------------------------------------------------------------------------- membership (ch. 4)


def test_membership_only_one_change_may_be_pending_at_a_time():
    """4.1: the leader does not start a change until the previous one is committed (and,
    here, applied)."""
    c = settled_leader()
    _, index = c.propose_conf_change(ConfChange(LEARNER, 4))
    with pytest.raises(ProposalDroppedError):
        c.propose_conf_change(ConfChange(LEARNER, 5))
    ack(c, 2, index)
    with pytest.raises(ProposalDroppedError):
        c.propose_conf_change(ConfChange(LEARNER, 5))  # committed, not yet applied
    drain(c)
    c.propose_conf_change(ConfChange(LEARNER, 5))


def test_membership_a_new_leader_changes_nothing_before_an_entry_of_its_term_commits():
    """4.1, errata of 2015: a leader may not know of a change its predecessor committed
    until an entry of its own term commits."""
    c = make_leader(core(1, terms=(1,), term=1, commit=1))
    with pytest.raises(ProposalDroppedError):
        c.propose_conf_change(ConfChange(LEARNER, 4))
    ack(c, 2, 2)
    c.propose_conf_change(ConfChange(LEARNER, 4))


def test_membership_a_configuration_takes_effect_when_its_entry_is_applied_on_every_member():
    """Chapter 4 lets a server use a configuration as soon as it is in its log; this core
    switches when the entry is handed out for applying, on every member at the same
    index (as etcd-io/raft does). Safe for one-server changes because a leader proposes
    a change only once the previous one is applied and an entry of its term committed."""
    c = settled_leader()
    _, index = c.propose_conf_change(ConfChange(PROMOTE, 4))
    drain(c)
    assert c.conf_state.voters == (1, 2, 3)
    ack(c, 2, index)  # committed by the old configuration: 2 of 3
    assert c.log.commit_index == index
    assert c.conf_state.voters == (1, 2, 3)
    drain(c)
    assert c.conf_state.voters == (1, 2, 3, 4)
    # From now on a majority is 3 of 4.
    c.propose(b"x")
    ack(c, 2, index + 1)
    assert c.log.commit_index == index
    ack(c, 4, index + 1)
    assert c.log.commit_index == index + 1

    f = core(2, terms=(1, 2), term=2, commit=2)
    change = ConfChange(PROMOTE, 4).encode()
    f.step(
        Message(
            APP,
            2,
            1,
            2,
            index=2,
            log_term=2,
            entries=[Entry(2, 3, change, EntryType.CONF_CHANGE)],
            commit=2,
            nonce=5,
        )
    )
    drain(f)
    assert f.conf_state.voters == (1, 2, 3)
    append(f, 1, 2, 3, 2, commit=3, nonce=5)
    drain(f)
    assert f.conf_state.voters == (1, 2, 3, 4)


def test_membership_a_removed_leader_steps_down_and_hands_over_once_the_removal_applies():
    """4.2.2: a leader removed from the configuration steps down once the change commits
    (it manages the cluster until then); here it also tells a caught-up voter to campaign."""
    c = settled_leader()
    ack(c, 3, 2)
    _, index = c.propose_conf_change(ConfChange(REMOVE, 1))
    drain(c)
    assert c.role is Role.LEADER
    ack(c, 2, index)
    assert c.role is Role.LEADER  # committed, not yet applied
    rd = drain(c)
    assert c.role is Role.FOLLOWER
    assert [(m.type, m.to) for m in rd.messages if m.type is TIMEOUT_NOW][-1] == (TIMEOUT_NOW, 2)
    with pytest.raises(NotLeaderError):
        c.propose(b"x")


def test_membership_learners_acknowledgements_never_count_towards_a_commit():
    """4.2.1: a new server joins as a non-voting member; it is not in any majority."""
    c = settled_leader(learners=(4,))
    c.propose(b"x")
    ack(c, 4, 3)
    assert c.log.commit_index == 2
    ack(c, 2, 3)
    assert c.log.commit_index == 3


def test_membership_learners_never_campaign_and_their_vote_requests_are_ignored():
    """4.2.1: non-voting members never start an election and cannot be elected."""
    learner = core(4, voters=(1, 2, 3), learners=(4,), terms=(1,), term=1, **DEFAULTS)
    for _ in range(10 * learner.randomized_election_timeout):
        learner.tick()
    assert learner.role is Role.FOLLOWER and learner.term == 1
    assert sent(learner) == []
    voter = core(2, voters=(1, 2, 3), learners=(4,), terms=(1,), term=1)
    vote_request(voter, 4, 5, 9, 9)
    assert (voter.term, voter.vote, sent(voter)) == (1, 0, [])


def test_membership_a_candidate_does_not_count_a_learners_vote():
    c = core(1, voters=(1, 2, 3, 4, 5), learners=(6, 7), terms=(1,), term=1)
    fire_election_timeout(c)
    for learner in (6, 7):
        grant(c, learner)
    grant(c, 2)
    assert c.role is Role.CANDIDATE
    assert sorted(m.to for m in sent(c, VOTE)) == [2, 3, 4, 5]


# --------------------------------------------------------------------------- ReadIndex (6.4)


def test_read_index_a_new_leader_first_commits_an_entry_of_its_term():
    """6.4 step 1: until the leader's no-op commits, its commit index may be behind the
    cluster's; a read waits for it."""
    c = make_leader(core(1, terms=(1, 1), term=1, commit=1))
    c.read_index(b"r1")
    rd = drain(c)
    assert rd.read_states == []
    assert not [m for m in rd.messages if m.context == b"r1"]
    ack(c, 2, 3)
    beats = [m for m in sent(c, HEARTBEAT) if m.context == b"r1"]
    assert sorted(m.to for m in beats) == [2, 3]
    heartbeat_ack(c, 2, b"r1")
    assert [(s.index, s.request_ctx) for s in drain(c).read_states] == [(3, b"r1")]


def test_read_index_leadership_is_confirmed_by_a_heartbeat_quorum_before_answering():
    """6.4 steps 2-3: record the commit index, send a heartbeat round, and answer only
    once a majority echoed it (a deposed leader cannot gather one)."""
    c = settled_leader(voters=(1, 2, 3, 4, 5), learners=(6,))
    c.read_index(b"r1")
    beats = [m for m in sent(c, HEARTBEAT) if m.context == b"r1"]
    assert sorted(m.to for m in beats) == [2, 3, 4, 5, 6]
    heartbeat_ack(c, 2, b"r1")
    heartbeat_ack(c, 6, b"r1")  # a learner is no part of a quorum
    heartbeat_ack(c, 3, b"other")  # an echo of another round confirms nothing here
    heartbeat_ack(c, 3, b"")
    assert drain(c).read_states == []
    heartbeat_ack(c, 4, b"r1")
    assert [s.request_ctx for s in drain(c).read_states] == [b"r1"]


def test_read_index_the_read_index_is_the_commit_index_when_the_read_arrived():
    """6.4 step 1: the read index is the commit index at the time of the request; later
    commits do not raise it (they need not be visible to this read)."""
    c = settled_leader()
    c.read_index(b"r1")
    c.propose(b"x")
    ack(c, 2, 3)
    assert c.log.commit_index == 3
    heartbeat_ack(c, 2, b"r1")
    assert [(s.index, s.request_ctx) for s in drain(c).read_states] == [(2, b"r1")]


def test_read_index_a_followers_read_index_covers_every_write_committed_before_it():
    """6.4 / 6.4.1: a follower asks the leader for the read index and serves the read
    once it has applied up to it, which may be beyond what it has applied now."""
    f = core(2, terms=(1,), term=2, commit=1)
    append(f, 1, 2, 1, 1, commit=1, nonce=5)
    drain(f)
    f.read_index(b"r1")
    assert [(m.type, m.to, m.context) for m in sent(f)] == [(READ_INDEX, 1, b"r1")]
    # The leader has committed index 4 meanwhile; this follower has applied 1.
    f.step(Message(READ_INDEX_RESP, 2, 1, 2, index=4, context=b"r1", nonce=5))
    states = drain(f).read_states
    assert [(s.index, s.request_ctx) for s in states] == [(4, b"r1")]
    assert f.log.applied_index < states[0].index  # so the caller must wait to serve it
    # An answer from anyone but the leader it follows is no answer.
    f.step(Message(READ_INDEX_RESP, 2, 1, 2, index=9, context=b"r2", nonce=6))
    assert drain(f).read_states == []


def test_read_index_without_a_known_leader_fails_fast():
    f = core(2, terms=(1,), term=1)
    with pytest.raises(NotLeaderError):
        f.read_index(b"r1")


# --------------------------------------------------------------------------- transfer (3.10)


def test_transfer_timeout_now_is_sent_only_once_the_target_has_the_leaders_whole_log():
    """3.10 steps 1-2: the leader brings the target's log up to date, then sends it
    TimeoutNow."""
    c = settled_leader()
    c.propose(b"x")
    drain(c)
    c.transfer_leadership(3)
    assert [m for m in sent(c) if m.type is TIMEOUT_NOW] == []
    ack(c, 3, 2)
    assert [m for m in sent(c) if m.type is TIMEOUT_NOW] == []
    ack(c, 3, 3)
    assert [(m.to, m.index) for m in sent(c) if m.type is TIMEOUT_NOW and m.to == 3] == [(3, 3)]


def test_transfer_an_up_to_date_target_gets_timeout_now_at_once():
    c = settled_leader()
    c.transfer_leadership(2)
    assert [(m.to, m.index) for m in sent(c) if m.type is TIMEOUT_NOW and m.to == 2] == [(2, 2)]


def test_transfer_proposals_are_refused_while_a_transfer_is_in_progress():
    """3.10: the leader stops accepting new client requests during the transfer (they
    would only lengthen the target's catch-up)."""
    c = settled_leader()
    c.propose(b"x")
    c.transfer_leadership(3)
    with pytest.raises(ProposalDroppedError):
        c.propose(b"y")
    with pytest.raises(ProposalDroppedError):
        c.propose_conf_change(ConfChange(LEARNER, 4))


def test_transfer_is_abandoned_after_an_election_timeout():
    """3.10: if the transfer does not complete after about one election timeout, the
    leader aborts it and resumes accepting client requests."""
    c = settled_leader(election_tick=10)
    c.propose(b"x")
    c.transfer_leadership(3)
    for _ in range(9):
        c.tick()
    assert c.lead_transferee == 3
    c.tick()
    assert c.lead_transferee == 0 and c.role is Role.LEADER
    c.propose(b"y")


def test_transfer_the_target_campaigns_at_once_skipping_pre_vote_and_the_lease():
    """3.10 step 2: on TimeoutNow the target starts an election at once (here without a
    pre-vote round), and voters who follow the leader grant it despite the lease."""
    target = core(2, terms=(1, 2), term=2, commit=2, **DEFAULTS)
    append(target, 1, 2, 2, 2, commit=2, nonce=5)
    drain(target)
    target.step(Message(TIMEOUT_NOW, 2, 1, 2, index=2, nonce=5))
    assert (target.role, target.term) == (Role.CANDIDATE, 3)
    votes = sent(target, VOTE)
    assert {(m.to, m.term, m.context) for m in votes} == {
        (1, 3, TRANSFER_CONTEXT),
        (3, 3, TRANSFER_CONTEXT),
    }
    voter = core(3, terms=(1, 2), term=2, commit=2, **DEFAULTS)
    append(voter, 1, 2, 2, 2, commit=2, nonce=5)
    voter.step(Message(TIMEOUT_NOW, 3, 1, 2, index=2, nonce=5))  # the leader's notice
    drain(voter)
    voter.step(votes[1] if votes[1].to == 3 else votes[0])
    assert [(m.type, m.reject) for m in sent(voter)] == [(VOTE_RESP, False)]
    assert voter.vote == 2


def test_transfer_a_timeout_now_not_from_the_current_leader_is_ignored():
    f = core(2, terms=(1, 2), term=2, commit=2, **DEFAULTS)
    append(f, 1, 2, 2, 2, commit=2, nonce=5)
    drain(f)
    f.step(Message(TIMEOUT_NOW, 2, 3, 2, index=2, nonce=5))
    f.step(Message(TIMEOUT_NOW, 2, 1, 2, index=2, nonce=6))
    assert (f.role, f.term) == (Role.FOLLOWER, 2)


# --------------------------------------------------------------------------- pre-vote, lease, check-quorum


def test_pre_vote_a_pre_candidate_increases_neither_its_term_nor_anyone_elses():
    """9.6: a pre-candidate asks whether it could win before it increments its term; the
    voters answer without changing their own term or vote."""
    c = core(1, terms=(1,), term=1, **DEFAULTS)
    fire_election_timeout(c)
    assert (c.role, c.term, c.vote) == (Role.PRE_CANDIDATE, 1, 0)
    asks = sent(c, PRE_VOTE)
    assert {(m.to, m.term) for m in asks} == {(2, 2), (3, 2)}
    voter = core(2, terms=(1,), term=1, **DEFAULTS)
    voter.step(asks[0] if asks[0].to == 2 else asks[1])
    answers = drain(voter)
    assert [(m.type, m.reject, m.term) for m in answers.messages] == [(PRE_VOTE_RESP, False, 2)]
    assert (voter.term, voter.vote) == (1, 0)
    assert answers.hard_state is None


def test_pre_vote_a_won_pre_vote_starts_the_real_election_and_a_lost_one_changes_nothing():
    c = core(1, terms=(1,), term=1, **DEFAULTS)
    fire_election_timeout(c)
    grant(c, 2, pre=True)
    assert (c.role, c.term, c.vote) == (Role.CANDIDATE, 2, 1)
    c = core(1, terms=(1,), term=1, **DEFAULTS)
    fire_election_timeout(c)
    grant(c, 2, pre=True, reject=True)
    grant(c, 3, pre=True, reject=True)
    assert (c.role, c.term, c.vote) == (Role.FOLLOWER, 1, 0)


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"), [(2, 2, True), (1, 2, False), (3, 1, False)]
)
def test_pre_vote_is_granted_only_to_an_up_to_date_log(last_index, last_term, granted):
    """9.6: a server grants a pre-vote only if the candidate's log is at least as
    up-to-date as its own (the RequestVote rule)."""
    voter = core(2, terms=(1, 2), term=2, **DEFAULTS)
    vote_request(voter, 3, 3, last_index, last_term, pre=True)
    assert [not m.reject for m in sent(voter, PRE_VOTE_RESP)] == [granted]
    assert (voter.term, voter.vote) == (2, 0)


def test_pre_vote_is_denied_while_the_voter_heard_a_leader_within_the_election_timeout():
    """9.6 / 4.2.3: a server that heard from a leader within the minimum election timeout
    does not grant (pre-)votes; once that timeout passes in silence, it does."""
    voter = core(2, terms=(1, 2), term=2, election_tick=10, **DEFAULTS)
    append(voter, 1, 2, 2, 2, nonce=5)
    drain(voter)
    voter.randomized_election_timeout = 19  # its own campaign is not due yet
    for _ in range(9):
        voter.tick()
    vote_request(voter, 3, 3, 2, 2, pre=True)
    assert sent(voter) == []
    voter.tick()
    vote_request(voter, 3, 3, 2, 2, pre=True)
    assert [(m.type, m.reject) for m in sent(voter)] == [(PRE_VOTE_RESP, False)]


def test_leader_lease_a_follower_ignores_higher_term_vote_requests_while_it_hears_a_leader():
    """4.2.3: a server that believes a leader exists ignores RequestVote, so a removed or
    partitioned server cannot depose a working leader."""
    voter = core(2, terms=(1, 2), term=2, **DEFAULTS)
    append(voter, 1, 2, 2, 2, nonce=5)
    drain(voter)
    vote_request(voter, 3, 9, 5, 5)
    assert (voter.term, voter.vote, voter.leader) == (2, 0, 1)
    assert sent(voter) == []


def test_check_quorum_a_leader_that_hears_no_majority_for_an_election_timeout_steps_down():
    """6.2: a leader steps down if an election timeout elapses without a successful round
    of heartbeats to a majority of its cluster."""
    c = settled_leader(voters=(1, 2, 3, 4, 5), election_tick=10, **DEFAULTS)
    for _ in range(20):
        c.tick()
        heartbeat_ack(c, 2)  # one follower answering is not a majority of five
    assert c.role is Role.FOLLOWER


def test_check_quorum_a_leader_that_hears_a_majority_stays():
    c = settled_leader(voters=(1, 2, 3, 4, 5), election_tick=10, **DEFAULTS)
    for _ in range(40):
        c.tick()
        heartbeat_ack(c, 2)
        heartbeat_ack(c, 3)
    assert c.role is Role.LEADER

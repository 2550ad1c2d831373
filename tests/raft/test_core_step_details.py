"""Details of stepping and campaigning the rule tests do not pin down: which messages
are dropped on arrival, what a stale or refused request is answered, the election
timer across term changes, Ready bookkeeping. Written to kill the mutants
`make mutate` found surviving (docs/mutation.md); each test states the behaviour.
"""

from __future__ import annotations

import pytest
from exchange_node.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Role,
    Snapshot,
    SnapshotMeta,
)
from exchange_node.raft.log import RaftLog
from paperkit import (
    ack,
    append,
    core,
    drain,
    fire_election_timeout,
    grant,
    make_candidate,
    make_leader,
    sent,
    vote_request,
)

APP, APP_RESP = MessageType.APP, MessageType.APP_RESP
VOTE, VOTE_RESP = MessageType.VOTE, MessageType.VOTE_RESP
PRE_VOTE, PRE_VOTE_RESP = MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP
DEFAULTS = {"pre_vote": True, "check_quorum": True}


def conf_append(f, index: int, term: int, change: ConfChange, commit: int) -> None:
    f.step(
        Message(
            APP,
            f.id,
            1,
            term,
            index=index - 1,
            log_term=f.log.term(index - 1) or 0,
            entries=[Entry(term, index, change.encode(), EntryType.CONF_CHANGE)],
            commit=commit,
            nonce=5,
        )
    )


# --------------------------------------------------------------------------- arrival filter


@pytest.mark.parametrize(("to", "frm"), [(9, 1), (2, 0), (2, 2)])
def test_messages_for_someone_else_from_nobody_or_from_ourselves_are_dropped(to, frm):
    f = core(2, terms=(1,), term=1)
    f.step(Message(APP, to, frm, 5, index=1, log_term=1, nonce=5))
    assert (f.term, f.leader, sent(f)) == (1, 0, [])


def test_a_stale_pre_vote_is_refused_with_our_term_and_other_stale_requests_get_no_vote_answer():
    f = core(2, terms=(1, 2), term=3, **DEFAULTS)
    vote_request(f, 3, 2, 9, 9, pre=True)
    assert [(m.type, m.to, m.frm, m.term, m.reject, m.nonce) for m in sent(f)] == [
        (PRE_VOTE_RESP, 3, 2, 3, True, 99)
    ]
    vote_request(f, 3, 2, 9, 9)
    f.step(Message(MessageType.HEARTBEAT_RESP, 2, 3, 2, nonce=99))
    assert sent(f) == []


def test_a_refused_vote_carries_the_voters_term_and_the_campaigns_nonce():
    f = core(2, terms=(1, 2), term=3, vote=1)
    vote_request(f, 3, 3, 2, 2)
    assert [(m.type, m.term, m.reject, m.nonce) for m in sent(f)] == [(VOTE_RESP, 3, True, 99)]


def test_a_pre_vote_in_the_voters_own_term_follows_the_ordinary_vote_rule():
    f = core(2, terms=(1, 2), term=3, vote=1, **DEFAULTS)
    vote_request(f, 3, 3, 2, 2, pre=True)
    assert [(m.type, m.reject) for m in sent(f)] == [(PRE_VOTE_RESP, True)]


# --------------------------------------------------------------------------- election timer


def test_a_higher_term_vote_request_keeps_a_followers_waited_time_but_not_a_candidates():
    f = core(2, terms=(1, 2), term=2)
    for _ in range(5):
        f.tick()
    vote_request(f, 3, 3, 1, 1)  # older log: refused, but the term moves
    assert (f.term, f.election_elapsed) == (3, 5)
    c = make_candidate(core(1, terms=(1, 2), term=2))
    c.tick()
    vote_request(c, 3, 9, 1, 1)
    assert (c.role, c.term, c.election_elapsed) == (Role.FOLLOWER, 9, 0)
    c.tick()
    assert c.election_elapsed == 1


def test_a_pre_candidate_starts_its_next_round_after_a_full_timeout():
    c = core(1, terms=(1,), term=1, **DEFAULTS)
    fire_election_timeout(c)
    assert c.role is Role.PRE_CANDIDATE
    drain(c)
    for _ in range(c.randomized_election_timeout - 1):
        c.tick()
    assert sent(c, PRE_VOTE) == []
    c.tick()
    assert len(sent(c, PRE_VOTE)) == 2


# --------------------------------------------------------------------------- campaigns


def test_an_ordinary_campaign_asks_without_the_transfer_context_even_after_pre_vote():
    c = core(1, terms=(1,), term=1, **DEFAULTS)
    fire_election_timeout(c)
    assert {m.context for m in sent(c, PRE_VOTE)} == {b""}
    grant(c, 2, pre=True)
    assert {m.context for m in sent(c, VOTE)} == {b""}
    c = core(1, terms=(1,), term=1)
    fire_election_timeout(c)
    assert {m.context for m in sent(c, VOTE)} == {b""}


def test_a_lone_voter_with_pre_vote_still_campaigns_in_a_new_term():
    c = core(1, voters=(1,), terms=(1,), term=1, **DEFAULTS)
    fire_election_timeout(c)
    assert (c.role, c.term, c.vote) == (Role.LEADER, 2, 1)


def test_a_lost_election_leaves_no_leader_known():
    c = core(1, terms=(1,), term=1)
    fire_election_timeout(c)
    grant(c, 2, reject=True)
    grant(c, 3, reject=True)
    assert (c.role, c.leader) == (Role.FOLLOWER, 0)
    assert c.status().leader == 0


def test_a_leader_counts_itself_active_and_its_new_followers_not_yet():
    c = make_leader(core(1, terms=(1,), term=1, **DEFAULTS))
    s = c.status()
    assert s.progress[1].recent_active is True
    assert [s.progress[v].recent_active for v in (2, 3)] == [False, False]
    for _ in range(c.config.election_tick):
        c.tick()
    assert c.role is Role.FOLLOWER  # nobody answered in the first round


def test_a_duplicate_acknowledgement_sends_nothing():
    c = make_leader(core(1, terms=(1,), term=1))
    ack(c, 2, 2)
    drain(c)
    ack(c, 2, 2)
    assert sent(c) == []


def test_a_window_of_one_sends_one_append_at_a_time():
    c = make_leader(core(1, terms=(1,), term=1, max_inflight=1))
    ack(c, 2, 2)
    drain(c)
    c.propose(b"a")
    c.propose(b"b")
    assert [[e.index for e in m.entries] for m in sent(c, APP) if m.to == 2] == [[3]]


# --------------------------------------------------------------------------- configuration pending


def test_a_follower_with_a_committed_unapplied_change_waits_to_campaign():
    f = core(2, terms=(), term=1, **DEFAULTS)
    conf_append(f, 1, 1, ConfChange(ConfChangeType.PROMOTE, 4), commit=1)
    f.leader, f._leader_nonce = 0, 0
    fire_election_timeout(f)
    assert f.role is Role.FOLLOWER
    drain(f)
    assert f.conf_state.voters == (1, 2, 3, 4)
    fire_election_timeout(f)
    assert f.role is Role.PRE_CANDIDATE


def test_an_uncommitted_change_does_not_hold_a_campaign_back():
    f = core(2, terms=(1,), term=1, commit=1, **DEFAULTS)
    conf_append(f, 2, 1, ConfChange(ConfChangeType.PROMOTE, 4), commit=1)
    drain(f)
    f.leader = 0
    fire_election_timeout(f)
    assert f.role is Role.PRE_CANDIDATE


def test_a_transfer_after_the_pending_change_applies_is_one_forced_campaign():
    f = core(2, terms=(1,), term=1, commit=1, **DEFAULTS)
    conf_append(f, 2, 1, ConfChange(ConfChangeType.REMOVE, 1), commit=2)
    f.step(Message(MessageType.TIMEOUT_NOW, 2, 1, 1, index=2, nonce=5))
    assert f.role is Role.FOLLOWER
    rd = drain(f)
    assert (f.role, f.term) == (Role.CANDIDATE, 2)
    assert {m.type for m in rd.messages if m.to == 3} == {VOTE}
    drain(f)
    drain(f)
    assert f.term == 2


def test_promoting_a_learner_removes_it_from_the_learners():
    c = make_leader(core(1, learners=(4,), terms=(1,), term=1))
    ack(c, 2, 2)
    drain(c)
    _, index = c.propose_conf_change(ConfChange(ConfChangeType.PROMOTE, 4))
    ack(c, 2, index)
    drain(c)
    assert c.conf_state == ConfState((1, 2, 3, 4), ())


# --------------------------------------------------------------------------- Ready bookkeeping


def test_a_follower_that_installed_a_snapshot_may_campaign_once_it_is_advanced():
    f = core(2, terms=(1,), term=1, **DEFAULTS)
    snap = Snapshot(SnapshotMeta(5, 1, ConfState((1, 2, 3))), b"")
    f.step(Message(MessageType.SNAP, 2, 1, 1, snapshot=snap, nonce=5))
    drain(f)
    f.leader = 0
    fire_election_timeout(f)
    assert f.role is Role.PRE_CANDIDATE


@pytest.mark.parametrize(
    "work", ["soft", "hard", "campaign", "apply", "persist", "snapshot", "messages", "reads"]
)
def test_has_ready_reports_each_kind_of_pending_work(work):
    c = core(2, terms=(1, 1), term=1, commit=1)
    assert not c.has_ready()
    if work == "soft":
        c.leader = 3
    elif work == "hard":
        c.vote = 3
    elif work == "campaign":
        c._campaign_after_apply = True
    elif work == "apply":
        c.log.commit_index = 2
        c._prev_hard_state = c._prev_hard_state._replace(commit=2)
    elif work == "persist":
        c.log.persisting_index = 1
    elif work == "snapshot":
        c.log.pending_snapshot = Snapshot(SnapshotMeta(2, 1, ConfState((1, 2, 3))), b"")
    elif work == "messages":
        c.msgs.append(Message(APP_RESP, 1, 2))
    else:
        c.read_states.append(object())  # type: ignore[arg-type]
    assert c.has_ready()


# --------------------------------------------------------------------------- the log


def test_a_log_refuses_a_gap_and_truncates_after_a_compaction_at_the_right_place():
    snap = Snapshot(SnapshotMeta(5, 1, ConfState((1,))), b"")
    log = RaftLog(snap, [Entry(1, i) for i in range(6, 10)], 5)
    with pytest.raises(AssertionError):
        log.append([Entry(1, 11)])
    log.append([Entry(2, 8)])
    assert [(e.index, e.term) for e in log.entries] == [(6, 1), (7, 1), (8, 2)]
    assert log.persisting_index == 7


def test_a_compacted_empty_log_reports_the_snapshots_term_as_its_last():
    log = RaftLog(None, [Entry(1, 1), Entry(2, 2)], 2)
    log.restore(Snapshot(SnapshotMeta(5, 3, ConfState((1,))), b""))
    assert (log.last_index(), log.last_term()) == (5, 3)


def test_acknowledging_an_older_persist_never_moves_the_stable_index_back():
    log = RaftLog(None, [Entry(1, i) for i in range(1, 6)], 0)
    log.stable_to(3, 1)
    assert log.stable_index == 5
    log.append([Entry(2, 4)])
    log.stable_to(5, 1)  # the replaced entry's term: not durable any more
    assert log.stable_index == 3


def test_a_follower_commits_exactly_the_leaders_commit_from_a_heartbeat():
    f = core(2, terms=(1, 1, 1), term=1)
    append(f, 1, 1, 3, 1, commit=0, nonce=5)
    f.step(Message(MessageType.HEARTBEAT, 2, 1, 1, commit=2, nonce=5))
    assert f.log.commit_index == 2

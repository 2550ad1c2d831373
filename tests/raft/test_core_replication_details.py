"""Replication details the rule tests do not pin down: how the leader moves a
follower's progress, what a follower answers to odd appends, timer arithmetic, the
errors proposals raise. Written to kill the mutants `make mutate` found surviving
(docs/mutation.md); each test states the behaviour, not the mutant.
"""

from __future__ import annotations

import pytest
from exchange_node.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    Message,
    MessageType,
    ProgressState,
    ProposalDroppedError,
    Role,
    Snapshot,
    SnapshotMeta,
)
from exchange_node.raft.log import RaftLog
from exchange_node.raft.progress import Progress
from paperkit import ack, append, core, drain, fire_election_timeout, make_leader, sent

APP, APP_RESP = MessageType.APP, MessageType.APP_RESP
HEARTBEAT, HEARTBEAT_RESP = MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP
LEARNER, PROMOTE, REMOVE = ConfChangeType.ADD_LEARNER, ConfChangeType.PROMOTE, ConfChangeType.REMOVE


def settled(voters=(1, 2, 3), terms=(1,), **config):
    c = make_leader(core(1, voters=voters, terms=terms, term=terms[-1], **config))
    for v in voters[1:]:
        ack(c, v, c.log.last_index())
    drain(c)
    return c


def reject(leader, frm, index, hint, hint_term):
    leader.step(
        Message(
            APP_RESP,
            leader.id,
            frm,
            leader.term,
            index=index,
            reject=True,
            reject_hint=hint,
            hint_term=hint_term,
            nonce=leader._nonce,
        )
    )


def heartbeat_resp(leader, frm, commit):
    leader.step(
        Message(HEARTBEAT_RESP, leader.id, frm, leader.term, commit=commit, nonce=leader._nonce)
    )


# --------------------------------------------------------------------------- errors


def test_proposals_are_refused_with_a_reason():
    c = settled()
    with pytest.raises(ValueError, match=r"^nothing to propose$"):
        c.propose_many([])
    for bad in (ConfChange(LEARNER, 0), ConfChange(7, 4)):
        with pytest.raises(ProposalDroppedError, match=r"^malformed configuration change$"):
            c.propose_conf_change(bad)
    c.propose_conf_change(ConfChange(LEARNER, 4))
    with pytest.raises(ProposalDroppedError, match=r"^a configuration change is still pending$"):
        c.propose_conf_change(ConfChange(LEARNER, 5))
    solo = core(1, voters=(1,), terms=(1,), term=1)
    fire_election_timeout(solo)
    drain(solo)
    with pytest.raises(ProposalDroppedError, match=r"^cannot remove the last voter$"):
        solo.propose_conf_change(ConfChange(REMOVE, 1))
    fresh = make_leader(core(1, terms=(1,), term=1, commit=1))
    with pytest.raises(ProposalDroppedError, match=r"^no entry of the leader's term is committed"):
        fresh.propose_conf_change(ConfChange(LEARNER, 4))
    c = settled()
    c.propose(b"x")
    c.transfer_leadership(3)
    with pytest.raises(ProposalDroppedError, match=r"^leadership transfer in progress$"):
        c.propose(b"y")


def test_a_leader_that_applied_its_own_removal_is_no_longer_a_leader_to_propose_to():
    c = settled()
    c.progress.pop(1)  # as between applying its removal and stepping down
    with pytest.raises(ProposalDroppedError, match=r"^this leader is being removed"):
        c.propose(b"x")


# --------------------------------------------------------------------------- membership details


def test_adding_a_learner_that_is_already_a_voter_or_removing_a_stranger_changes_nothing():
    c = settled()
    _, index = c.propose_conf_change(ConfChange(LEARNER, 2))
    ack(c, 2, index)
    drain(c)
    assert c.conf_state == ConfState((1, 2, 3), ())
    _, index = c.propose_conf_change(ConfChange(REMOVE, 9))
    ack(c, 2, index)
    drain(c)
    assert c.conf_state == ConfState((1, 2, 3), ())


def test_a_new_member_is_probed_at_the_end_of_the_log_and_counted_alive():
    c = settled()
    _, index = c.propose_conf_change(ConfChange(LEARNER, 4))
    ack(c, 2, index)
    rd = drain(c)
    probes = [m for m in rd.messages if m.to == 4]
    assert [(m.type, m.index, m.entries) for m in probes] == [(APP, index, [])]
    assert c.status().progress[4].recent_active is True


def test_removing_the_transfer_target_ends_the_transfer():
    c = settled()
    _, index = c.propose_conf_change(ConfChange(REMOVE, 3))
    drain(c)
    c.transfer_leadership(3)
    assert c.lead_transferee == 3
    ack(c, 2, index)
    drain(c)
    assert c.lead_transferee == 0
    c.propose(b"accepted again")


def test_a_change_that_shrinks_the_quorum_commits_and_announces_what_it_now_can():
    c = settled(voters=(1, 2, 3, 4))
    _, index = c.propose_conf_change(ConfChange(REMOVE, 4))
    ack(c, 2, index)
    ack(c, 3, index)  # the removal commits under the old configuration (3 of 4)
    _, x = c.propose(b"x")
    ack(c, 2, x)  # 2 of 4: not yet
    assert c.log.commit_index == index
    rd = drain(c)  # the removal applies: 2 of 3 now commit x
    assert c.log.commit_index == x
    commits = {m.to: m.commit for m in rd.messages if m.type is APP}
    assert commits.get(2) == x and commits.get(3) == x


# --------------------------------------------------------------------------- heartbeats and timers


def test_heartbeats_carry_what_each_follower_is_known_to_hold_and_no_read_context():
    c = settled(heartbeat_tick=2)
    c.propose(b"x")
    ack(c, 2, 3)
    drain(c)
    c.tick()
    assert sent(c, HEARTBEAT) == []
    c.tick()
    beats = {m.to: (m.commit, m.context) for m in sent(c, HEARTBEAT)}
    assert beats == {2: (3, b""), 3: (2, b"")}
    c.tick()
    assert sent(c, HEARTBEAT) == []  # the interval starts again after each beat
    c.tick()
    assert len(sent(c, HEARTBEAT)) == 2


def test_check_quorum_rounds_come_every_election_timeout():
    c = settled(election_tick=10, check_quorum=True)
    for _ in range(19):
        c.tick()
    assert c.role is Role.LEADER  # round 1 at tick 10 counted the election's answers
    c.tick()
    assert c.role is Role.FOLLOWER  # round 2 at tick 20: nobody answered since


def test_a_heartbeat_answer_from_an_up_to_date_follower_sends_nothing_and_frees_no_window():
    c = settled()
    c.propose(b"x")
    drain(c)
    pr = c.progress[2]
    assert len(pr.inflights) == 1
    heartbeat_resp(c, 2, 2)
    assert len(pr.inflights) == 1
    ack(c, 3, 3)
    drain(c)
    heartbeat_resp(c, 3, 3)
    assert [m for m in sent(c) if m.to == 3] == []


def test_a_heartbeat_answer_shows_a_snapshot_at_index_one_has_landed():
    c = settled()
    c.compact(Snapshot(SnapshotMeta(1, 1, ConfState((1, 2, 3))), b""))
    pr = c.progress[2]
    pr.become_snapshot(1)
    heartbeat_resp(c, 2, 1)
    assert pr.state is ProgressState.PROBE


# --------------------------------------------------------------------------- progress arithmetic


def test_a_rejection_of_an_already_matched_index_is_stale_in_replicate():
    pr = Progress(10, 4)
    pr.match_index = 5
    pr.become_replicate()
    pr.next_index = 9
    assert pr.maybe_decrease_to(5, 0) is False and pr.next_index == 9
    assert pr.maybe_decrease_to(7, 3) is True and pr.next_index == 6


def test_a_probe_rejection_never_goes_below_the_match():
    pr = Progress(8, 4)
    pr.match_index = 5
    pr.probe_sent = True
    assert pr.maybe_decrease_to(7, 0) is True
    assert (pr.next_index, pr.probe_sent) == (6, False)


def test_a_follower_waiting_for_a_snapshot_is_paused():
    pr = Progress(8, 4)
    pr.become_snapshot(5)
    assert pr.is_paused() is True


@pytest.mark.parametrize(
    ("hint", "hint_term", "next_index"),
    [
        (3, 0, 4),  # no term hint: probe right after the hinted index
        (4, 1, 3),  # term 1 at 4 on the follower: skip our term-2 entries 3..4
    ],
)
def test_a_rejection_hint_moves_next_index_by_index_or_by_whole_terms(hint, hint_term, next_index):
    c = make_leader(core(1, terms=(1, 1, 2, 2, 2), term=2, commit=1))
    pr = c.progress[2]
    pr.next_index = 6
    pr.probe_sent = False
    reject(c, 2, 5, hint, hint_term)
    assert pr.next_index == next_index


def _compacted_leader(offset: int):
    c = settled(terms=(1,) * 12)
    c.compact(Snapshot(SnapshotMeta(offset, 1, ConfState((1, 2, 3))), b""))
    return c


@pytest.mark.parametrize(
    ("pending", "acked", "state"),
    [
        (10, 4, ProgressState.REPLICATE),  # 4 + 1 reaches the log start (5): replicate
        (10, 3, ProgressState.SNAPSHOT),  # neither the snapshot nor the log start
        (10, 6, ProgressState.REPLICATE),
    ],
)
def test_a_follower_leaves_snapshot_state_once_it_has_the_snapshot_or_reaches_the_log(
    pending, acked, state
):
    c = _compacted_leader(4)
    pr = c.progress[2]
    pr.match_index = 0
    pr.become_snapshot(pending)
    ack(c, 2, acked)
    assert pr.state is state
    if state is ProgressState.SNAPSHOT:
        assert [m for m in sent(c) if m.to == 2] == []  # still waiting: no new snapshot


# --------------------------------------------------------------------------- follower appends


def test_an_append_below_the_commit_index_is_answered_with_the_commit_index():
    f = core(2, terms=(1, 1, 1), term=1, commit=3)
    append(f, 1, 1, 1, 1, entries=[(2, 1)], nonce=5)
    assert [(m.type, m.to, m.frm, m.term, m.index, m.reject, m.nonce) for m in sent(f)] == [
        (APP_RESP, 1, 2, 1, 3, False, 5)
    ]


def test_an_append_whose_entries_do_not_run_on_from_the_previous_index_is_dropped():
    f = core(2, terms=(1, 1), term=1)
    append(f, 1, 1, 2, 1, entries=[(3, 1), (5, 1)])
    append(f, 1, 1, 2, 1, entries=[(4, 1), (5, 1)])
    assert sent(f) == [] and f.log.last_index() == 2


def test_entries_the_follower_already_holds_are_not_persisted_again():
    f = core(2, terms=(1, 1, 1), term=1)
    append(f, 1, 1, 2, 1, entries=[(3, 1), (4, 1)])
    assert [e.index for e in drain(f).entries] == [4]
    append(f, 1, 1, 1, 1, entries=[(2, 1), (3, 1)])
    assert drain(f).entries == []


def test_a_leader_contradicting_a_committed_entry_trips_the_log_invariant():
    log = RaftLog(None, [Entry(1, 1), Entry(1, 2)], 2)
    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 0, [Entry(2, 2)])


def test_find_conflict_by_term_stops_at_the_snapshot():
    snap = Snapshot(SnapshotMeta(5, 2, ConfState((1,))), b"")
    log = RaftLog(snap, [Entry(3, 6), Entry(3, 7)], 5)
    assert log.find_conflict_by_term(7, 2) == (5, 2)
    assert log.find_conflict_by_term(7, 1) == (5, 2)
    assert log.find_conflict_by_term(3, 1) == (3, 0)


def test_a_follower_that_acknowledges_an_older_snapshot_than_the_log_start_gets_the_new_one():
    c = _compacted_leader(9)
    pr = c.progress[2]
    pr.match_index = 0
    pr.become_snapshot(3)
    ack(c, 2, 3)  # it installed snapshot 3; the log now starts after 9
    snaps = [m.snapshot.meta.index for m in sent(c) if m.type is MessageType.SNAP]
    assert snaps == [9] and pr.pending_snapshot == 9

"""Details of the core's contracts that the rule tests do not pin down: what the
caller reads (status, errors, Ready), snapshot bookkeeping, the leader's view of
followers. Written to kill the mutants `make mutate` found surviving (docs/mutation.md);
each test states the behaviour, not the mutant.
"""

from __future__ import annotations

import pytest
from exchange_node.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    NotLeaderError,
    ProgressState,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from exchange_node.raft.log import RaftLog
from exchange_node.raft.progress import Progress
from exchange_node.raft.readonly import ReadOnly
from paperkit import ack, core, drain, make_leader, sent

APP, APP_RESP, SNAP = MessageType.APP, MessageType.APP_RESP, MessageType.SNAP


def snapshot(index: int, term: int, voters=(1, 2, 3), data: bytes = b"s") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState(voters)), data)


def settled(voters=(1, 2, 3), **config):
    c = make_leader(core(1, voters=voters, terms=(1,), term=1, **config))
    for v in voters[1:]:
        ack(c, v, 2)
    drain(c)
    return c


# --------------------------------------------------------------------------- what callers read


def test_status_reports_every_field_of_a_leader_and_its_followers():
    c = settled()
    c.propose(b"x")
    drain(c)
    c.transfer_leadership(3)
    s = c.status()
    assert (s.id, s.term, s.role, s.leader, s.vote) == (1, 2, Role.LEADER, 1, 1)
    assert (s.commit, s.applied, s.last_index) == (2, 2, 3)
    assert s.conf_state == ConfState((1, 2, 3), ())
    assert s.lead_transferee == 3
    assert s.progress[1].match == 3 and s.progress[1].state == "replicate"
    assert (s.progress[2].match, s.progress[2].next, s.progress[2].state) == (2, 4, "replicate")
    assert s.progress[2].recent_active is True


def test_status_of_a_follower_has_no_progress():
    f = core(2, terms=(1,), term=3, vote=1)
    s = f.status()
    assert (s.id, s.role, s.vote, s.leader, s.lead_transferee) == (2, Role.FOLLOWER, 1, 0, 0)
    assert s.progress == {}


def test_check_quorum_clears_recent_activity_each_round():
    c = settled(voters=(1, 2, 3, 4, 5), election_tick=5, check_quorum=True)
    for v in (2, 3):
        ack(c, v, 2)
    for _ in range(5):
        c.tick()
    assert c.role is Role.LEADER
    assert [c.status().progress[v].recent_active for v in (2, 3, 4, 5)] == [False] * 4


def test_check_quorum_counts_peers_before_and_after_the_leader_in_id_order():
    c = make_leader(core(3, voters=(1, 2, 3, 4, 5), terms=(1,), term=1, check_quorum=True))
    for _ in range(4):
        for v in (1, 2):
            ack(c, v, 2)
        for _ in range(c.config.election_tick):
            c.tick()
            for v in (1, 2):
                ack(c, v, 2)
    assert c.role is Role.LEADER


def test_check_quorum_one_active_follower_of_four_is_not_a_majority():
    c = settled(voters=(1, 2, 3, 4, 5), election_tick=5, check_quorum=True)
    for _ in range(10):  # the first round still counts the acknowledgements of the election
        ack(c, 2, 2)
        c.tick()
    assert c.role is Role.FOLLOWER


def test_not_leader_error_names_the_leader_hint():
    assert NotLeaderError(3).leader == 3
    assert str(NotLeaderError(3)) == "not the leader (leader hint: 3)"
    assert str(NotLeaderError(0)) == "not the leader (leader hint: unknown)"
    f = core(2, terms=(1,), term=1)
    with pytest.raises(NotLeaderError) as raised:
        f.transfer_leadership(3)
    assert raised.value.leader == 0


@pytest.mark.parametrize(
    "field",
    ["soft_state", "hard_state", "entries", "snapshot", "committed_entries", "messages", "reads"],
)
def test_ready_is_empty_only_without_any_work(field):
    assert Ready().is_empty()
    work = {
        "soft_state": SoftState(1, Role.LEADER),
        "hard_state": HardState(1, 0, 0),
        "entries": [Entry(1, 1)],
        "snapshot": snapshot(1, 1),
        "committed_entries": [Entry(1, 1)],
        "messages": [Message(APP, 2, 1)],
        "reads": [ReadState(1, b"r")],
    }[field]
    rd = Ready(**{("read_states" if field == "reads" else field): work})
    assert not rd.is_empty()


# --------------------------------------------------------------------------- ReadOnly


def test_read_only_refuses_a_second_request_with_a_pending_context():
    ro = ReadOnly()
    assert ro.add(5, 1, b"a", 1) is True
    assert ro.add(6, 2, b"a", 1) is False
    assert len(ro) == 1


def test_read_only_releases_the_confirmed_request_and_every_one_before_it_only():
    ro = ReadOnly()
    for i, ctx in enumerate((b"a", b"b", b"c"), 1):
        ro.add(i, 1, ctx, 1)
    assert [r.context for r in ro.release(b"b")] == [b"a", b"b"]
    assert ro.last_pending_context() == b"c" and len(ro) == 1
    assert ro.release(b"a") == []
    assert ro.ack(b"a", 2) is None


def test_a_repeated_read_context_starts_no_second_heartbeat_round():
    c = settled()
    c.read_index(b"r")
    c.read_index(b"r")
    beats = [m for m in sent(c) if m.type is MessageType.HEARTBEAT]
    assert sorted(m.to for m in beats) == [2, 3]


# --------------------------------------------------------------------------- the log


def test_restore_replaces_the_whole_log_by_the_snapshot():
    log = RaftLog(None, [Entry(1, i) for i in range(1, 5)], 2)
    snap = snapshot(6, 3)
    log.restore(snap)
    assert (log.offset, log.offset_term, log.entries) == (6, 3, [])
    assert (log.commit_index, log.stable_index, log.persisting_index) == (6, 6, 6)
    assert log.snapshot is snap and log.pending_snapshot is snap
    assert log.slice_limited(7, 10, 1000) == []
    with pytest.raises(AssertionError):
        log.restore(snapshot(6, 3))


def test_compaction_ignores_a_snapshot_at_or_below_the_log_start_and_keeps_the_rest():
    log = RaftLog(None, [Entry(1, i) for i in range(1, 7)], 6)
    log.applied_to(6)
    first = snapshot(2, 1, data=b"first")
    log.compact(first)
    assert log.slice_limited(3, 2, 1000) == [Entry(1, 3), Entry(1, 4)]
    log.compact(snapshot(2, 1, data=b"again"))
    assert log.snapshot is first
    log.compact(snapshot(4, 1))
    assert [e.index for e in log.entries] == [5, 6]
    assert log.slice_limited(5, 10, 1000) == [Entry(1, 5), Entry(1, 6)]
    with pytest.raises(ValueError, match="beyond the applied index"):
        log.compact(snapshot(7, 1))
    with pytest.raises(ValueError, match="disagrees"):
        log.compact(snapshot(5, 2))


def test_after_compaction_a_lagging_follower_is_served_from_the_new_log_start():
    c = settled()
    c.propose_many([b"a", b"b", b"c"])
    ack(c, 2, 5)
    drain(c)
    c.compact(snapshot(4, 2))
    # 3 answers (a heartbeat): it still needs 3..5, and 3 is compacted: a snapshot.
    c.progress[3].become_probe()
    c.step(Message(MessageType.HEARTBEAT_RESP, 1, 3, c.term, commit=2, nonce=c._nonce))
    snaps = [m for m in sent(c) if m.type is SNAP]
    assert [(m.to, m.snapshot.meta.index) for m in snaps] == [(3, 4)]


# --------------------------------------------------------------------------- progress


@pytest.mark.parametrize(("match", "pending", "next_index"), [(3, 10, 11), (12, 10, 13), (0, 0, 1)])
def test_leaving_snapshot_state_probes_after_the_snapshot_or_the_match(match, pending, next_index):
    pr = Progress(20, 4)
    pr.match_index = match
    pr.become_snapshot(pending)
    pr.become_probe()
    assert (pr.state, pr.next_index, pr.pending_snapshot) == (ProgressState.PROBE, next_index, 0)


def test_leaving_replicate_state_probes_right_after_the_match():
    pr = Progress(20, 4)
    pr.match_index = 7
    pr.become_replicate()
    pr.next_index = 15
    pr.become_probe()
    assert pr.next_index == 8


def test_report_snapshot_success_probes_after_it_and_failure_from_the_match():
    c = settled()
    pr = c.progress[2]
    pr.become_snapshot(9)
    c.report_snapshot(2, True)
    assert (pr.state, pr.next_index, pr.probe_sent) == (ProgressState.PROBE, 10, True)
    pr.become_snapshot(9)
    c.report_snapshot(2, False)
    assert (pr.state, pr.next_index, pr.pending_snapshot) == (ProgressState.PROBE, 3, 0)
    assert pr.probe_sent is True
    pr.match_index = 0  # a follower that never answered: probe from the start
    pr.become_snapshot(9)
    c.report_snapshot(2, False)
    assert pr.next_index == 1


def test_report_snapshot_and_unreachable_leave_other_states_and_strangers_alone():
    c = settled()
    c.report_snapshot(2, True)
    c.report_snapshot(99, False)
    assert c.progress[2].state is ProgressState.REPLICATE
    probing = c.progress[3]
    probing.become_probe()
    probing.probe_sent = True
    c.report_unreachable(3)
    c.report_unreachable(99)
    assert probing.probe_sent is True


def test_a_snapshot_nobody_acknowledged_is_given_up_after_two_election_timeouts():
    c = settled(election_tick=5)
    lost, other = c.progress[2], c.progress[3]
    lost.match_index = 0
    lost.become_snapshot(2)
    for _ in range(5):
        c.tick()
    assert lost.state is ProgressState.SNAPSHOT
    assert other.state is ProgressState.REPLICATE
    for _ in range(5):
        c.tick()
    assert (lost.state, lost.pending_snapshot, lost.next_index) == (ProgressState.PROBE, 0, 1)
    assert other.state is ProgressState.REPLICATE


# --------------------------------------------------------------------------- followers and snapshots


def test_a_snapshot_whose_last_entry_the_follower_holds_only_commits_it():
    f = core(2, terms=(1, 1, 1, 1), term=1, commit=1)
    f.step(Message(SNAP, 2, 1, 1, snapshot=snapshot(3, 1), nonce=5))
    assert f.log.commit_index == 3 and len(f.log.entries) == 4 and f.log.offset == 0
    answers = sent(f)
    assert [(m.type, m.to, m.frm, m.term, m.index, m.nonce) for m in answers] == [
        (APP_RESP, 1, 2, 1, 3, 5)
    ]


def test_a_snapshot_the_follower_cannot_match_replaces_its_log_and_configuration():
    f = core(2, terms=(1, 1), term=2, commit=1)
    f.step(Message(SNAP, 2, 1, 2, snapshot=snapshot(5, 2, voters=(1, 2, 3, 4)), nonce=5))
    assert (f.log.offset, f.log.commit_index, f.conf_state.voters) == (5, 5, (1, 2, 3, 4))
    answers = sent(f)
    assert [(m.type, m.to, m.frm, m.term, m.index, m.nonce) for m in answers] == [
        (APP_RESP, 1, 2, 2, 5, 5)
    ]


# --------------------------------------------------------------------------- transfer and removal


def test_a_transfer_to_a_target_with_entries_in_flight_nudges_it_at_once():
    c = settled()
    c.propose(b"x")
    drain(c)  # the APP with entry 3 is in flight to 2 and 3 (replicating)
    c.transfer_leadership(3)
    to_target = [m for m in sent(c) if m.to == 3]
    assert [(m.type, m.index, m.commit) for m in to_target] == [(APP, 3, 2)]


def test_a_removed_leader_tells_everyone_the_commit_and_hands_over_to_a_caught_up_voter():
    c = settled()
    _, index = c.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 1))
    drain(c)
    ack(c, 3, index)  # 3 is caught up, 2 is not
    rd = drain(c)
    assert c.role is Role.FOLLOWER
    commits = {m.to: m.commit for m in rd.messages if m.type is APP}
    assert commits == {2: index, 3: index}
    handover = [m.to for m in rd.messages if m.type is MessageType.TIMEOUT_NOW and m.index == m.to]
    assert handover == [3]

"""Log compaction and InstallSnapshot: paper section 7, dissertation chapter 5."""

import pytest
from exchange_node.raft import Message, MessageType, ProgressState, Snapshot, SnapshotMeta
from raftnet import Network

PAPER = {"pre_vote": False, "check_quorum": False}


def test_7_compaction_drops_applied_entries_and_keeps_the_snapshot():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    leader.propose_many([b"a", b"b", b"c"])
    net.deliver()
    snapshot = net.take_snapshot(1)
    assert snapshot.meta.index == leader.log.applied_index == leader.commit_index
    assert leader.log.first_index() == snapshot.meta.index + 1
    assert leader.log.entries == []
    assert snapshot.meta.conf_state.voters == (1, 2, 3)
    # The log keeps working after compaction.
    leader.propose(b"d")
    net.deliver()
    assert net.data_applied(2)[-1] == b"d"


def test_7_a_follower_behind_the_first_index_gets_the_snapshot_then_the_rest():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    net.isolate(3)
    for i in range(30):
        leader.propose(f"op-{i}".encode())
    net.deliver()
    snapshot = net.take_snapshot(1)
    leader.propose(b"after the snapshot")
    net.deliver()
    net.heal()
    net.sent.clear()
    net.tick_all(2)
    snaps = [m for m in net.sent if m.type is MessageType.SNAP]
    assert [(m.to, m.snapshot) for m in snaps] == [(3, snapshot)]
    lagging = net.cores[3]
    assert net.disks[3].snapshot == snapshot
    assert lagging.log.offset == snapshot.meta.index
    assert net.log_terms(3) == net.log_terms(1)
    assert lagging.commit_index == leader.commit_index
    # State restored from the snapshot, then the entries after it applied.
    assert net.data_applied(3) == net.data_applied(1)
    assert net.data_applied(3)[-1] == b"after the snapshot"
    assert lagging.conf_state == leader.conf_state
    assert leader.progress[3].state is ProgressState.REPLICATE


def test_7_a_failed_snapshot_is_retried_after_the_follower_answers_again():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    net.isolate(3)
    leader.propose_many([b"x"] * 10)
    net.deliver()
    net.take_snapshot(1)
    net.heal()
    net.drop = lambda m: m.type is MessageType.SNAP  # the transfer fails...
    net.snapshot_reports = False
    net.tick_all(1)
    assert leader.progress[3].state is ProgressState.SNAPSHOT
    leader.report_snapshot(3, False)  # ...and the transport says so
    assert leader.progress[3].state is ProgressState.PROBE
    net.drop = lambda m: False
    net.snapshot_reports = True
    net.tick_all(3)
    assert net.log_terms(3) == net.log_terms(1)
    assert net.cores[3].commit_index == leader.commit_index


def test_7_a_stale_snapshot_does_not_roll_a_follower_back():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    leader.propose(b"one")
    net.deliver()
    old = net.take_snapshot(1)
    leader.propose(b"two")
    net.deliver()
    follower = net.cores[2]
    commit = follower.commit_index
    follower.step(Message(MessageType.SNAP, 2, 1, leader.term, nonce=leader._nonce, snapshot=old))
    rd = follower.ready()
    assert rd.snapshot is None
    assert follower.commit_index == commit
    assert [m.index for m in rd.messages if m.type is MessageType.APP_RESP] == [commit]


def test_restart_from_snapshot_hard_state_and_later_entries():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    leader.propose_many([b"a", b"b"])
    net.deliver()
    snapshot = net.take_snapshot(2)
    leader.propose_many([b"c", b"d"])
    net.deliver()
    before = (net.cores[2].term, net.cores[2].vote, net.cores[2].commit_index)
    restarted = net.crash_and_restart(2)
    assert (restarted.term, restarted.vote, restarted.commit_index) == before
    assert restarted.log.applied_index == snapshot.meta.index
    assert restarted.conf_state.voters == (1, 2, 3)
    rd = restarted.ready()
    # Only what the snapshot does not cover is applied again; nothing needs persisting.
    assert [e.data for e in rd.committed_entries] == [b"c", b"d"]
    assert rd.entries == [] and rd.hard_state is None
    restarted.advance(rd)
    leader.propose(b"e")
    net.deliver()
    assert restarted.commit_index == leader.commit_index


def test_compaction_may_happen_before_advance_but_never_beyond_what_was_handed_out():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    leader.propose(b"a")
    net.deliver()
    leader.propose(b"b")
    rd = leader.ready()
    # "b" is not committed yet: a snapshot covering it is refused.
    with pytest.raises(ValueError, match="beyond the applied index"):
        leader.compact(
            Snapshot(SnapshotMeta(leader.log.last_index(), leader.term, leader.conf_state), b"")
        )
    net.queue.extend(rd.messages)
    leader.advance(rd)
    net.deliver()
    index = leader.commit_index
    follower = net.cores[2]
    assert follower.log.applying_index == index
    follower.compact(Snapshot(SnapshotMeta(index, leader.term, follower.conf_state), b"a|b"))
    assert follower.log.offset == index
    with pytest.raises(ValueError, match="term"):
        leader.compact(Snapshot(SnapshotMeta(index, leader.term + 1, leader.conf_state), b""))


def test_7_a_lost_snapshot_acknowledgement_is_made_up_for_by_the_next_heartbeat():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    net.isolate(3)
    leader.propose_many([b"x"] * 10)
    net.deliver()
    net.take_snapshot(1)
    net.heal()
    net.snapshot_reports = False  # the transport never reports...
    # ...and the follower's acknowledgement of the snapshot is lost.
    net.drop = lambda m: m.type is MessageType.APP_RESP and m.frm == 3 and not m.reject
    net.tick(1)
    net.deliver()
    assert net.cores[3].log.offset == leader.log.offset  # installed
    assert leader.progress[3].state is ProgressState.SNAPSHOT
    net.heal()
    net.tick(1)  # one heartbeat round, far less than an election timeout
    net.deliver()
    assert leader.progress[3].state is ProgressState.REPLICATE
    assert leader.progress[3].match_index == leader.log.last_index()

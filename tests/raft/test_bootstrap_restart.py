"""Starting, restarting and the Ready/advance contract."""

from exchange_node.raft import (
    ConfChange,
    ConfChangeType,
    EntryType,
    HardState,
    RaftConfig,
    RaftCore,
    Role,
    SoftState,
)
from raftnet import Network, bootstrap_changes


def test_a_bootstrap_member_persists_and_applies_the_initial_configuration_first():
    core = RaftCore(RaftConfig(node_id=2), bootstrap=bootstrap_changes([1, 2, 3]))
    assert core.conf_state.voters == (1, 2, 3)
    rd = core.ready()
    assert rd.hard_state == HardState(term=1, vote=0, commit=3)
    assert [(e.index, e.term, e.type) for e in rd.entries] == [
        (1, 1, EntryType.CONF_CHANGE),
        (2, 1, EntryType.CONF_CHANGE),
        (3, 1, EntryType.CONF_CHANGE),
    ]
    assert rd.committed_entries == rd.entries
    assert ConfChange.decode(rd.entries[1].data) == ConfChange(ConfChangeType.PROMOTE, 2, b"node-2")
    core.advance(rd)
    assert not core.has_ready()
    assert core.status().applied == 3


def test_every_bootstrap_member_starts_with_the_same_log():
    net = Network([1, 2, 3])
    assert net.log_terms(1) == net.log_terms(2) == net.log_terms(3) == [(1, 1), (2, 1), (3, 1)]


def test_a_node_that_joins_later_starts_empty_and_never_campaigns_on_its_own():
    core = RaftCore(RaftConfig(node_id=7))
    assert core.conf_state.voters == () and core.log.last_index() == 0
    for _ in range(100):
        core.tick()
    assert core.role is Role.FOLLOWER and core.term == 0


def test_restart_from_hard_state_and_entries_recovers_term_vote_commit_and_membership():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose_many([b"a", b"b"])
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.deliver()
    disk = net.disks[3]
    restarted = net.crash_and_restart(3)
    assert (restarted.term, restarted.vote, restarted.commit_index) == tuple(disk.hard_state)
    assert restarted.conf_state == leader.conf_state
    assert restarted.role is Role.FOLLOWER and restarted.leader == 0
    rd = restarted.ready()
    assert rd.entries == [] and rd.hard_state is None
    # Applied starts at the snapshot (none here), so everything committed is applied again.
    assert [e.data for e in rd.committed_entries if e.type == EntryType.NORMAL and e.data] == [
        b"a",
        b"b",
    ]
    restarted.advance(rd)
    leader.propose(b"c")
    net.deliver()
    assert restarted.commit_index == leader.commit_index


def test_a_restarted_cluster_elects_again_and_keeps_every_committed_entry():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose_many([b"x", b"y"])
    net.deliver()
    committed = leader.commit_index
    for i in (1, 2, 3):
        net.crash_and_restart(i)
    new = net.elect(2)
    net.tick_all(2)
    assert new.commit_index > committed
    assert all(net.data_applied(i) == [b"x", b"y"] for i in (1, 2, 3))


def test_ready_is_handed_out_once_and_advance_acknowledges_it():
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose(b"p")
    first = leader.ready()
    assert [e.data for e in first.entries] == [b"p"]
    second = leader.ready()
    assert second.entries == [] and second.messages == []
    leader.advance(first)
    leader.advance(second)
    assert leader.log.stable_index == leader.log.last_index()


def test_soft_state_reports_role_changes():
    net = Network([1, 2, 3])
    core = net.cores[1]
    core.election_elapsed = core.randomized_election_timeout
    core.tick()
    rd = core.ready()
    assert rd.soft_state == SoftState(0, Role.PRE_CANDIDATE)
    net.queue.extend(rd.messages)
    core.advance(rd)
    net.deliver()
    assert core.role is Role.LEADER
    assert net.disks[1].hard_state.term == core.term

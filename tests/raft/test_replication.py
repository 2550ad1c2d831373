"""Log replication: paper 5.3 (log matching, figure 7), 5.4.2 (figure 8),
fast backtracking, batching and the bounded inflight window."""

from exchange_node.raft import (
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    ProgressState,
    RaftConfig,
    RaftCore,
    Role,
    Snapshot,
    SnapshotMeta,
)
from raftnet import Network

PAPER = {"pre_vote": False, "check_quorum": False}


def core_with_log(node_id: int, terms: list[int], voters: tuple[int, ...], **config) -> RaftCore:
    """A restarted core whose log has entries of ``terms`` at indexes 1.. (nothing committed)."""
    # An index-0 snapshot carries the configuration without entries in the log.
    conf = Snapshot(SnapshotMeta(0, 0, ConfState(voters)), b"")
    entries = [Entry(t, i, f"{i}@{t}".encode()) for i, t in enumerate(terms, 1)]
    return RaftCore(
        RaftConfig(node_id=node_id, **config),
        hard_state=HardState(term=max(terms, default=0)),
        snapshot=conf,
        entries=entries,
    )


def wire(*cores: RaftCore) -> Network:
    net = Network([], **PAPER)
    for core in cores:
        net.add_node(core.node_id)
        net.cores[core.node_id] = core
    net.ids = [c.node_id for c in cores]
    return net


def test_5_3_log_matching_followers_end_with_the_leaders_log():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    for i in range(20):
        leader.propose(f"cmd-{i}".encode())
    net.deliver()
    assert net.log_terms(2) == net.log_terms(1) == net.log_terms(3)
    assert [c.commit_index for c in net.cores.values()] == [leader.log.last_index()] * 3
    assert net.data_applied(3) == [f"cmd-{i}".encode() for i in range(20)]


def test_5_3_a_follower_rejects_an_append_whose_previous_entry_it_lacks():
    follower = core_with_log(2, [1, 1, 2], (1, 2, 3), **PAPER)
    follower.step(
        Message(MessageType.APP, 2, 1, 3, log_term=3, index=3, entries=[Entry(3, 4, b"x")])
    )
    reply = follower.ready().messages[-1]
    assert reply.type is MessageType.APP_RESP and reply.reject
    assert follower.log.last_index() == 3


# Paper figure 7: the leader of term 8 and six possible follower logs (a)..(f).
FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def figure_7(case: str) -> tuple[Network, RaftCore, RaftCore]:
    voters = (1, 2, 3)
    leader = core_with_log(1, FIGURE_7_LEADER, voters, **PAPER)
    leader.term = 7  # its next election is for term 8, as in the figure
    follower = core_with_log(2, FIGURE_7_FOLLOWERS[case], voters, **PAPER)
    # A third server with the leader's log supplies the winning vote.
    helper = core_with_log(3, FIGURE_7_LEADER, voters, **PAPER)
    helper.term = 7
    return wire(leader, follower, helper), leader, follower


def test_5_3_figure_7_the_leader_brings_every_follower_log_to_its_own():
    for case in FIGURE_7_FOLLOWERS:
        net, leader, follower = figure_7(case)
        net.elect(1)
        assert leader.term == 8
        expected = [*FIGURE_7_LEADER, 8]  # plus the new leader's empty entry
        assert [t for _, t in net.log_terms(2)] == expected, case
        assert follower.commit_index == 11, case


def test_5_3_fast_backtracking_skips_a_whole_conflicting_term_per_round_trip():
    net, _, _ = figure_7("f")
    net.elect(1)
    rejections = [m for m in net.sent if m.type is MessageType.APP_RESP and m.reject and m.frm == 2]
    # (f) diverges at index 4 across terms 2 and 3: one rejection finds it
    # (the hint names index 10 of term 3; the leader jumps below its own term 3).
    assert len(rejections) == 1
    assert (rejections[0].reject_hint, rejections[0].hint_term) == (10, 3)
    probes = [m for m in net.sent if m.type is MessageType.APP and m.to == 2]
    assert [m.index for m in probes[:2]] == [10, 3]


def test_5_3_backtracking_over_a_long_divergent_tail_is_logarithmic_in_terms_not_entries():
    voters = (1, 2, 3)
    leader_terms = [1] * 5 + [2] * 500
    follower_terms = [1] * 5 + [3] * 400  # an old leader's uncommitted tail
    leader = core_with_log(1, leader_terms, voters, **PAPER)
    leader.term = 3
    follower = core_with_log(2, follower_terms, voters, **PAPER)
    helper = core_with_log(3, leader_terms, voters, **PAPER)
    helper.term = 3
    net = wire(leader, follower, helper)
    net.elect(1)
    rejections = [m for m in net.sent if m.type is MessageType.APP_RESP and m.reject and m.frm == 2]
    assert len(rejections) <= 2
    assert net.log_terms(2) == net.log_terms(1)


def test_5_4_2_figure_8_a_leader_never_commits_an_old_term_entry_by_counting_replicas():
    # Five servers; one entry per message so the script controls exactly what is replicated.
    net = Network([1, 2, 3, 4, 5], max_msg_entries=1, **PAPER)
    s1 = net.elect(1)  # term 2
    base = s1.commit_index

    # (a) S1 (term 2) replicates entry base+1 to S2 only, then crashes.
    net.drop = lambda m: m.type is MessageType.APP and m.to != 2
    s1.propose(b"term-2 entry")
    net.deliver()
    assert net.log_terms(2)[-1] == (base + 1, 2)
    net.heal()
    net.isolate(1)

    # (b) S5 wins term 3 with S3 and S4, appends its own entry at base+1, replicates nothing.
    net.drop = lambda m: m.type is MessageType.APP
    s5 = net.elect(5)
    assert s5.term == 3 and net.log_terms(5)[-1] == (base + 1, 3)

    # (c) S5 crashes; S1 restarts and wins term 4 with S2, S3 and S4 (its bid for
    #     term 3 fails: S3 and S4 voted for S5). It gets its term-2 entry onto S3
    #     and S4 (a majority) but not its own term-4 entry.
    net.heal()
    net.isolate(5)
    s1 = net.crash_and_restart(1)
    s4_entry = s1.log.last_index() + 1
    net.drop = lambda m: (
        m.type is MessageType.APP
        and any(e.term == 4 for e in m.entries)
        and net.cores[m.to].log.term(base + 1) == 2
    )
    net.elect(1)
    assert s1.term == 4 and s1.log.term(s4_entry) == 4
    holders = [i for i in (1, 2, 3, 4) if net.cores[i].log.term(base + 1) == 2]
    assert holders == [1, 2, 3, 4]  # stored on a majority of five...
    assert s1.commit_index == base  # ...and still not committed.

    # (d) S1 crashes; S5 can still win (its last term 3 beats term 2) and
    #     overwrite the entry: committing it in (c) would have lost it.
    net.heal()
    net.isolate(1)
    net.crash_and_restart(5)
    net.elect(5)
    net.heal()
    net.tick_all(3)
    assert all(net.cores[i].log.term(base + 1) == 3 for i in (1, 2, 3, 4, 5))
    assert all(b"term-2 entry" not in net.data_applied(i) for i in net.cores)


def test_5_4_2_figure_8_e_once_an_own_term_entry_is_on_a_majority_both_commit():
    net = Network([1, 2, 3, 4, 5], **PAPER)
    s1 = net.elect(1)
    net.isolate(4)
    net.isolate(5)
    s1.propose(b"x")
    net.deliver()
    last = s1.log.last_index()
    assert s1.commit_index == last and s1.log.term(last) == s1.term
    # S5 can no longer win: three servers hold a log newer than its own.
    net.heal()
    for i in (1, 2, 3):
        net.isolate(i)
    net.campaign(5)
    assert net.cores[5].role is not Role.LEADER


def test_batching_many_entries_travel_in_few_messages_within_the_limits():
    net = Network([1, 2, 3], max_msg_entries=100, max_msg_bytes=10_000, **PAPER)
    leader = net.elect(1)
    net.sent.clear()
    leader.propose_many([b"e" * 50] * 1000)
    net.deliver()
    apps = [m for m in net.sent if m.type is MessageType.APP and m.to == 2 and m.entries]
    assert sum(len(m.entries) for m in apps) == 1000
    assert all(len(m.entries) <= 100 for m in apps)
    assert len(apps) == 10
    big = Network([1, 2, 3], max_msg_bytes=1_000, **PAPER)
    leader = big.elect(1)
    big.sent.clear()
    leader.propose_many([b"e" * 300] * 10 + [b"x" * 5_000])
    big.deliver()
    apps = [m for m in big.sent if m.type is MessageType.APP and m.to == 2 and m.entries]
    # At most 1,000 bytes each, except that an oversized entry travels alone.
    assert [len(m.entries) for m in apps] == [3, 3, 3, 1, 1]


def test_pipelining_the_inflight_window_bounds_unacknowledged_messages():
    net = Network([1, 2, 3], max_msg_entries=1, max_inflight=4, **PAPER)
    leader = net.elect(1)
    assert leader.progress[2].state is ProgressState.REPLICATE
    net.drop = lambda m: m.type is MessageType.APP_RESP  # acknowledgements are lost
    net.sent.clear()
    leader.propose_many([b"p"] * 20)
    net.deliver()
    apps = [m for m in net.sent if m.type is MessageType.APP and m.to == 2]
    assert len(apps) == 4
    assert len(leader.progress[2].inflights) == 4
    # Once acknowledgements flow again the follower catches up completely.
    net.heal()
    net.tick_all(2)
    assert leader.progress[2].match_index == leader.log.last_index()
    assert net.cores[2].commit_index == leader.commit_index == leader.log.last_index()


def test_a_lost_append_is_recovered_by_probing_after_a_heartbeat():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    net.drop = lambda m: m.type is MessageType.APP and m.to == 3
    leader.propose(b"lost on the way to 3")
    net.deliver()
    assert net.cores[3].log.last_index() < leader.log.last_index()
    net.heal()
    net.tick_all(1)
    assert net.log_terms(3) == net.log_terms(1)
    assert net.data_applied(3)[-1] == b"lost on the way to 3"


def test_a_stale_append_below_the_commit_index_never_rewrites_committed_entries():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    leader.propose(b"a")
    net.deliver()
    follower = net.cores[2]
    commit = follower.commit_index
    # A stale APP that would overwrite committed entries is answered with the commit index.
    follower.step(
        Message(
            MessageType.APP,
            2,
            1,
            leader.term,
            log_term=1,
            index=commit - 2,
            entries=[Entry(leader.term, commit - 1, b"bogus")],
            nonce=leader._nonce,  # the real leader's, delayed
        )
    )
    reply = follower.ready().messages[-1]
    assert not reply.reject and reply.index == commit
    assert b"bogus" not in [e.data for e in follower.log.entries]
    assert net.log_terms(2) == net.log_terms(1)


def test_report_unreachable_moves_a_replicating_follower_back_to_probing():
    net = Network([1, 2, 3], **PAPER)
    leader = net.elect(1)
    assert leader.progress[2].state is ProgressState.REPLICATE
    assert leader.is_replicating(2) and leader.is_replicating(3)
    assert not net.cores[2].is_replicating(1)  # only a leader streams
    net.isolate(2)
    leader.report_unreachable(2)
    assert leader.progress[2].state is ProgressState.PROBE
    # An empty APP to 2 is now a probe the leader waits on, not a commit notice.
    assert not leader.is_replicating(2) and leader.is_replicating(3)
    assert not leader.is_replicating(9)
    # Probing sends one APP and then waits, instead of streaming into the void.
    net.sent.clear()
    leader.propose_many([b"a"] * 5)
    leader.propose_many([b"b"] * 5)
    net.deliver()
    assert len([m for m in net.sent if m.type is MessageType.APP and m.to == 2]) == 1
    net.heal()
    net.tick_all(2)
    assert net.log_terms(2) == net.log_terms(1)

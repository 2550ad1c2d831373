"""A follower whose log went backwards is found and repaired (issue 14, second finding).

The follower restarts with a shorter log than it acknowledged. The leader must
notice (a rejection at or above the match index hinting below it, or a heartbeat
answered with a commit index below what it was told), lower the match index,
probe, count a regression and report the follower unhealthy until it is back.
"""

from __future__ import annotations

import contextlib

from exchange_node.raft import HardState, Message, MessageType
from exchange_node.raft.progress import Progress
from raftnet import Network


def _shorten(net: Network, node: int, keep_through: int) -> None:
    disk = net.disks[node]
    disk.entries = [e for e in disk.entries if e.index <= keep_through]
    hs = disk.hard_state
    disk.hard_state = HardState(hs.term, hs.vote, min(hs.commit, keep_through))
    net.crash_and_restart(node)


def _cluster_with_entries(count: int = 40) -> Network:
    net = Network([1, 2, 3], max_msg_entries=8)
    leader = net.elect(1)
    for i in range(count):
        leader.propose(b"e%d" % i)
    net.deliver()
    return net


def test_a_follower_restarted_with_half_its_log_catches_up_and_is_counted():
    net = _cluster_with_entries()
    leader = net.cores[1]
    last = leader.log.last_index()
    assert leader.status().progress[3].match == last
    _shorten(net, 3, keep_through=last // 2)
    # Hold the catch-up back to see the leader's view in between.
    net.drop = lambda m: m.type is MessageType.APP and m.to == 3 and m.index < last
    leader.propose(b"after")
    net.deliver()
    seen = leader.status().progress[3]
    assert seen.regressions == 1 and not seen.healthy
    assert seen.match <= last // 2 and seen.state == "probe"
    net.heal()
    net.tick(1, leader.config.heartbeat_tick)
    net.deliver()
    seen = leader.status().progress[3]
    assert seen.healthy and seen.match == leader.log.last_index()
    assert net.data_applied(3) == net.data_applied(1)


def test_an_idle_leader_finds_the_shorter_log_through_its_heartbeat():
    """Nothing new to send: the heartbeat answer's commit index gives it away."""
    net = _cluster_with_entries()
    leader = net.cores[1]
    last = leader.log.last_index()
    _shorten(net, 2, keep_through=10)
    for _ in range(2):  # the second heartbeat's answer gives it away
        net.tick(1, leader.config.heartbeat_tick)
        net.deliver()
    seen = leader.status().progress[2]
    assert seen.regressions == 1 and seen.healthy and seen.match == last
    assert net.cores[2].log.last_index() == last


def test_a_stale_rejection_below_the_match_index_is_not_a_regression():
    net = _cluster_with_entries()
    leader = net.cores[1]
    match = leader.progress[2].match_index
    stale = Message(
        MessageType.APP_RESP,
        1,
        2,
        leader.term,
        index=match - 5,
        reject=True,
        reject_hint=3,
        hint_term=1,
        nonce=leader._nonce,
    )
    leader.step(stale)
    assert leader.progress[2].match_index == match
    assert leader.status().progress[2].regressions == 0


def test_planted_fault_without_the_regression_check_the_follower_stays_behind(monkeypatch):
    """The bug of the issue: progress never probes below match + 1."""
    monkeypatch.setattr(
        Progress, "regress", lambda self, match_index, next_index: setattr(self, "probe_sent", True)
    )
    net = _cluster_with_entries()
    leader = net.cores[1]
    last = leader.log.last_index()
    _shorten(net, 3, keep_through=last // 2)
    leader.propose(b"after")
    net.tick(1, leader.config.heartbeat_tick)
    with contextlib.suppress(AssertionError):  # it never settles:
        net.deliver(limit=5_000)  # the leader probes at match + 1, rejected each time
    assert net.cores[3].log.last_index() == last // 2
    assert leader.status().progress[3].match >= last


def test_lowering_match_never_lowers_commit():
    net = _cluster_with_entries()
    leader = net.cores[1]
    commit = leader.commit_index
    _shorten(net, 2, keep_through=5)
    _shorten(net, 3, keep_through=5)
    net.drop = lambda m: m.type is MessageType.APP and bool(m.entries)
    leader.propose(b"x")
    net.tick(1, leader.config.heartbeat_tick)
    net.deliver()
    assert leader.commit_index == commit
    assert leader.status().progress[2].regressions + leader.status().progress[3].regressions >= 1

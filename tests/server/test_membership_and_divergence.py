"""server/membership.py (which peers reach the core) and server/divergence.py
(state-hash verdicts and fencing) on their own: pure objects, virtual time."""

from __future__ import annotations

from exchange_node.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
)
from exchange_node.server import divergence
from exchange_node.server.divergence import DivergenceWatch
from exchange_node.server.membership import PeerGate, RateLimitedLog, apply_change


def conf_entry(index: int, kind: ConfChangeType, node: int) -> Entry:
    return Entry(2, index, ConfChange(kind, node, b"").encode(), EntryType.CONF_CHANGE)


def test_apply_change_adds_promotes_and_removes_one_server_at_a_time():
    conf = ConfState((1, 2, 3), ())
    conf = apply_change(conf, ConfChange(ConfChangeType.ADD_LEARNER, 4, b""))
    assert conf == ConfState((1, 2, 3), (4,))
    conf = apply_change(conf, ConfChange(ConfChangeType.PROMOTE, 4, b""))
    assert conf == ConfState((1, 2, 3, 4), ())
    conf = apply_change(conf, ConfChange(ConfChangeType.REMOVE, 2, b""))
    assert conf == ConfState((1, 3, 4), ())
    # Adding a voter as a learner again changes nothing.
    assert apply_change(conf, ConfChange(ConfChangeType.ADD_LEARNER, 3, b"")) == conf


def test_members_and_members_being_added_reach_the_core_and_nobody_else():
    gate = PeerGate(1, initial_peers=(1, 2, 3))
    gate.refresh(ConfState((1, 2, 3), ()), applied_index=3)
    assert gate.ids == {2, 3}
    assert gate.note([conf_entry(4, ConfChangeType.ADD_LEARNER, 5)])
    gate.refresh(ConfState((1, 2, 3), ()), applied_index=3)
    assert gate.ids == {2, 3, 5}  # being added: its answers must reach us
    # Applied: the pending note goes; the configuration now names it.
    gate.refresh(ConfState((1, 2, 3), (5,)), applied_index=4)
    assert gate.ids == {2, 3, 5}
    gate.refresh(ConfState((1, 2, 3), ()), applied_index=4)
    assert gate.ids == {2, 3}
    stranger = Message(MessageType.APP, 1, 9, 2)
    assert gate.refuse(stranger, leader=2, has_configuration=True) == "not_member"
    assert gate.refuse(Message(MessageType.VOTE, 1, 1, 2), 2, True) == "self"


def test_a_node_outside_its_configuration_hears_the_initial_voters_and_its_leader():
    gate = PeerGate(4, initial_peers=(1, 2, 3))
    gate.refresh(ConfState((1, 2, 3), ()), applied_index=10)
    assert gate.ids == {1, 2, 3}
    # A removed leader's TIMEOUT_NOW from the leader we follow is admitted.
    timeout_now = Message(MessageType.TIMEOUT_NOW, 4, 7, 3)
    assert gate.refuse(timeout_now, leader=7, has_configuration=True) is None
    assert gate.refuse(timeout_now, leader=1, has_configuration=True) == "not_member"
    # With no configuration at all, only a leader's kinds of message from anyone.
    assert gate.refuse(Message(MessageType.APP, 4, 9, 3), 0, has_configuration=False) is None
    assert gate.refuse(Message(MessageType.VOTE, 4, 9, 3), 0, has_configuration=False) == (
        "joining"
    )


def test_refusals_are_logged_at_most_once_per_interval_per_kind_and_peer():
    log = RateLimitedLog(interval=10.0)
    assert log.due("not_member", 9, 0.0)
    assert not log.due("not_member", 9, 5.0)
    assert log.due("self", 9, 5.0)
    assert log.due("not_member", 9, 10.0)


class Watch:
    def __init__(self, voters: tuple[int, ...] = (1, 2, 3)) -> None:
        self.rejected: list[str] = []
        self.events: list[str] = []
        self.watch = DivergenceWatch(
            1,
            lambda: voters,
            reject=lambda reason, peer, what: self.rejected.append(reason),
            log_due=lambda kind, peer: True,
            on_diverged=lambda: self.events.append("diverged"),
            on_fenced=lambda: self.events.append("fenced"),
        )


def test_a_contradiction_raises_the_alarm_only_once_it_stood_confirm_s():
    w = Watch()
    w.watch.record(100, b"mine", now=0.0)
    w.watch.on_digest(2, 100, b"theirs", applied_index=100, now=0.0)
    assert not w.watch.diverged
    w.watch.check(divergence.CONFIRM_S - 0.1)
    assert not w.watch.diverged
    w.watch.check(divergence.CONFIRM_S)
    assert w.watch.diverged and not w.watch.fenced  # one voter of three: an alarm
    assert w.events == ["diverged"]


def test_a_majority_of_voters_contradicting_fences_this_replica():
    w = Watch()
    w.watch.record(100, b"bad", now=0.0)
    for peer in (2, 3):
        w.watch.on_digest(peer, 100, b"good", applied_index=100, now=0.0)
    w.watch.check(divergence.CONFIRM_S)
    assert w.watch.fenced and w.events == ["diverged", "fenced"]


def test_a_voters_later_agreeing_digest_refutes_a_forged_one():
    w = Watch()
    w.watch.record(100, b"mine", now=0.0)
    w.watch.record(101, b"next", now=0.0)
    w.watch.on_digest(2, 100, b"forged", applied_index=101, now=0.0)
    w.watch.on_digest(2, 101, b"next", applied_index=101, now=1.0)
    w.watch.check(10.0)
    assert not w.watch.diverged
    # Two different claims about one index cancel each other.
    w.watch.on_digest(3, 100, b"x", applied_index=101, now=2.0)
    w.watch.on_digest(3, 100, b"mine", applied_index=101, now=2.0)
    assert w.rejected == ["digest_conflict"] and 3 not in w.watch.verdicts


def test_digests_from_non_voters_are_refused_and_early_ones_wait_for_our_hash():
    w = Watch()
    w.watch.on_digest(9, 100, b"x", applied_index=50, now=0.0)
    assert w.rejected == ["digest_not_voter"]
    w.watch.on_digest(2, 100, b"same", applied_index=50, now=0.0)
    assert 2 not in w.watch.verdicts
    w.watch.record(100, b"same", now=1.0)
    assert w.watch.verdicts[2][:2] == (100, True)

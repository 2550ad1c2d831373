"""The Ready driver (server/driver.py) on real cores, one rule per test.

Each test runs a small cluster of ``RaftCore``s, each behind its own ``Driver``,
by hand: messages wait in a list until the test delivers them, and a Batch's
write is "durable" only when the test says so. No I/O, no clock, no asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from exchange_node.raft.config import RaftConfig
from exchange_node.raft.core import RaftCore
from exchange_node.raft.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
)
from exchange_node.server.driver import Batch, Driver, Failure

NEVER = float("inf")


class Machine:
    def __init__(self) -> None:
        self.applied: list[int] = []

    def apply(self, entry: Entry) -> int:
        self.applied.append(entry.index)
        return entry.index * 10

    def restore(self, snapshot: Snapshot) -> None:
        self.applied = [snapshot.meta.index]


@dataclass
class Replies:
    resolved_: list[tuple[object, int, object]] = field(default_factory=list)
    failed_: list[tuple[object, Failure]] = field(default_factory=list)
    reads: list[tuple[object, int]] = field(default_factory=list)

    def resolved(self, token: object, index: int, result: object) -> None:
        self.resolved_.append((token, index, result))

    def failed(self, token: object, failure: Failure, detail: str) -> None:
        assert isinstance(detail, str) and detail, (token, failure, detail)  # a reason, always
        self.failed_.append((token, failure))

    def read_ready(self, token: object, index: int) -> None:
        self.reads.append((token, index))


class Cluster:
    def __init__(self, size: int, hold: float = 0.0) -> None:
        boot = [ConfChange(ConfChangeType.PROMOTE, i, b"") for i in range(1, size + 1)]
        self.drivers: dict[int, Driver[object, int]] = {}
        self.machines: dict[int, Machine] = {}
        self.replies: dict[int, Replies] = {}
        self.net: list[Message] = []
        for i in range(1, size + 1):
            core = RaftCore(
                RaftConfig(i, election_tick=10, pre_vote=False, check_quorum=False, seed=i),
                bootstrap=boot,
            )
            self.machines[i] = Machine()
            self.replies[i] = Replies()
            self.drivers[i] = Driver(
                core, self.machines[i], self.replies[i], node_id=i, read_nonce="t", hold=hold
            )
        for i in self.drivers:
            self.drain(i)

    def drain(self, node: int, now: float = 0.0) -> None:
        """Run every Batch of ``node`` to the end (each write durable at once)."""
        driver = self.drivers[node]
        while (batch := driver.ready(now)) is not None:
            self.complete(node, batch, now)

    def complete(self, node: int, batch: Batch, now: float = 0.0) -> None:
        driver = self.drivers[node]
        self.net += batch.send_now
        driver.apply_now(batch)
        self.net += driver.persisted(batch, now)
        driver.finish(batch)

    def deliver_all(self, now: float = 0.0) -> None:
        for _ in range(100):
            if not self.net:
                return
            messages, self.net = self.net, []
            for m in messages:
                self.drivers[m.to].step(m)
            for i in self.drivers:
                self.drain(i, now)
        raise AssertionError("the network never went quiet")

    def elect(self, node: int) -> Driver[object, int]:
        driver = self.drivers[node]
        for _ in range(30):
            driver.tick()
            self.drain(node)
        self.deliver_all()
        assert driver.role is Role.LEADER
        return driver


def test_a_leader_sends_its_appends_before_its_own_write_is_durable():
    c = Cluster(3)
    leader = c.elect(1)
    assert leader.propose(["t"], [b"x"], [NEVER])
    batch = leader.ready(0.0)
    assert batch is not None and batch.write is not None and batch.write.entries
    apps = [m for m in batch.send_now if m.type is MessageType.APP and m.entries]
    assert {m.to for m in apps} == {2, 3}
    assert batch.send_after == []


def test_a_follower_acknowledges_only_after_its_write_is_durable():
    c = Cluster(3)
    leader = c.elect(1)
    leader.propose(["t"], [b"x"], [NEVER])
    c.drain(1)
    app = next(m for m in c.net if m.to == 2 and m.entries)
    follower = c.drivers[2]
    follower.step(app)
    batch = follower.ready(0.0)
    assert batch is not None and batch.write is not None and batch.write.entries
    assert batch.send_now == []
    acks = follower.persisted(batch, 0.0)
    assert [m.type for m in acks] == [MessageType.APP_RESP]


def test_votes_and_anything_after_a_term_change_wait_for_the_write():
    c = Cluster(3)
    candidate = c.drivers[2]
    for _ in range(30):
        candidate.tick()
        batch = candidate.ready(0.0)
        if batch is not None:
            if batch.write is not None and batch.write.hard_state is not None:
                assert batch.send_now == []
                assert {m.type for m in batch.send_after} == {MessageType.VOTE}
                return
            c.complete(2, batch)
    raise AssertionError("node 2 never campaigned")


def test_no_input_reaches_the_core_while_a_write_is_in_flight():
    c = Cluster(3)
    leader = c.elect(1)
    leader.propose(["t"], [b"x"], [NEVER])
    batch = leader.ready(0.0)
    assert batch is not None and leader.busy
    ack = Message(MessageType.APP_RESP, 1, 2, leader.term, index=5)
    for call in (
        lambda: leader.step(ack),
        leader.tick,
        lambda: leader.propose(["u"], [b"y"], [NEVER]),
        lambda: leader.read(["r"], NEVER),
        lambda: leader.ready(0.0),
    ):
        with pytest.raises(AssertionError):
            call()


def test_a_single_voter_applies_an_entry_only_after_the_write_that_holds_it():
    c = Cluster(1)
    driver = c.elect(1)
    driver.propose(["t"], [b"x"], [NEVER])
    batch = driver.ready(0.0)
    assert batch is not None and batch.write is not None
    index = batch.write.entries[0].index
    assert index in [e.index for e in batch.apply_after]
    assert index not in [e.index for e in batch.apply_now]
    c.complete(1, batch)
    assert c.replies[1].resolved_ == [("t", index, index * 10)]


def test_a_leader_applies_entries_durable_before_this_ready_while_it_writes():
    c = Cluster(3)
    leader = c.elect(1)
    leader.propose(["a"], [b"a"], [NEVER])
    c.drain(1)
    a_index = leader.core.status().last_index
    # The followers' acks commit "a"; in the same Ready the leader writes "b".
    messages, c.net = c.net, []
    for m in messages:
        c.drivers[m.to].step(m)
    for i in (2, 3):
        c.drain(i)
    for m in [m for m in c.net if m.to == 1]:
        leader.step(m)
    c.net = [m for m in c.net if m.to != 1]
    leader.propose(["b"], [b"b"], [NEVER])
    batch = leader.ready(0.0)
    assert batch is not None and batch.write is not None
    assert [e.index for e in batch.apply_now] == [a_index]
    assert batch.write.entries[0].index == a_index + 1
    leader.apply_now(batch)
    assert c.replies[1].resolved_[-1][:2] == ("a", a_index)


def test_a_commit_only_hard_state_is_deferred_then_rides_along_or_is_flushed():
    c = Cluster(3)
    leader = c.elect(2)
    follower = c.drivers[1]
    leader.propose(["t"], [b"x"], [NEVER])
    c.deliver_all()
    # The follower learnt the new commit index from an empty append or heartbeat:
    # no write for it alone, but flush_deferred hands it out.
    write = follower.flush_deferred()
    assert write is not None and write.entries == [] and not write.must_sync
    assert write.hard_state is not None and write.hard_state.commit == follower.commit_index
    assert follower.flush_deferred() is None


def test_commit_notices_are_held_and_merged_into_the_next_append():
    c = Cluster(3, hold=5.0)
    leader = c.elect(1)
    c.net += leader.release_notices(5.0)  # the election's own commit notices
    c.deliver_all(5.0)
    leader.propose(["a"], [b"a"], [NEVER])
    c.drain(1, now=10.0)
    c.deliver_all(now=10.0)  # acks come back; the commit notice is held
    assert leader.notices.release_at == 15.0
    assert leader.release_notices(14.0) == []
    leader.propose(["b"], [b"b"], [NEVER])
    c.drain(1, now=11.0)  # the next append carries the commit; the held one is merged
    assert leader.notices.merged >= 1
    assert all(m.entries for m in c.net if m.type is MessageType.APP)


def test_held_commit_notices_leave_when_their_time_is_up():
    c = Cluster(3, hold=5.0)
    leader = c.elect(1)
    c.net += leader.release_notices(5.0)
    c.deliver_all(5.0)
    leader.propose(["a"], [b"a"], [NEVER])
    c.drain(1, now=10.0)
    c.deliver_all(now=10.0)
    released = leader.release_notices(15.0)
    assert {m.to for m in released} == {2, 3}
    assert all(m.type is MessageType.APP and not m.entries for m in released)
    assert leader.notices.release_at is None


def test_a_follower_read_is_answered_through_the_leader():
    c = Cluster(3)
    c.elect(1)
    c.deliver_all()
    follower = c.drivers[2]
    assert follower.read(["r"], NEVER)
    c.drain(2)
    c.deliver_all()
    assert [t for t, _ in c.replies[2].reads] == ["r"]
    assert follower.applied_index >= c.replies[2].reads[0][1]


class ScriptedCore:
    """A core that hands out the Readys a test wrote (for rules the real core
    rarely exposes on cue)."""

    def __init__(self, readys: list[Ready]) -> None:
        self.readys = readys
        self.read_ctx: bytes = b""

    def has_ready(self) -> bool:
        return bool(self.readys)

    def ready(self) -> Ready:
        return self.readys.pop(0)

    def advance(self, rd: Ready) -> None:
        pass

    def read_index(self, ctx: bytes) -> None:
        self.read_ctx = ctx

    def is_replicating(self, peer: int) -> bool:
        return False

    commit_index = 0


def test_a_read_waits_until_applied_reaches_its_read_index():
    core = ScriptedCore([])
    replies = Replies()
    driver: Driver[object, int] = Driver(core, Machine(), replies, node_id=2)  # type: ignore[arg-type]
    driver.read(["r"], NEVER)
    entry = Entry(1, 1, b"x")
    core.readys += [
        Ready(read_states=[ReadState(2, core.read_ctx)], committed_entries=[entry]),
        Ready(committed_entries=[Entry(1, 2, b"y")]),
    ]
    c = Cluster.__new__(Cluster)
    c.drivers, c.net = {2: driver}, []
    batch = driver.ready(0.0)
    assert batch is not None
    c.complete(2, batch)
    assert driver.applied_index == 1 and replies.reads == []  # read index 2 not applied
    c.drain(2)
    assert replies.reads == [("r", 2)]


def test_a_request_fails_when_another_term_commits_at_its_index():
    c = Cluster(3)
    old = c.elect(1)
    old.propose(["lost"], [b"x"], [NEVER])
    c.drain(1)
    c.net.clear()  # the entry never leaves node 1
    new = c.elect(2)
    new.propose(["won"], [b"y"], [NEVER])
    for _ in range(3):  # heartbeats let the new leader's probes through
        new.tick()
        c.drain(2)
        c.deliver_all()
    assert ("lost", Failure.LOST) in c.replies[1].failed_, c.replies[1].failed_
    assert [t for t, _, _ in c.replies[2].resolved_] == ["won"], c.replies[2]


def test_proposals_on_a_follower_fail_not_leader_and_deadlines_expire():
    c = Cluster(3)
    c.elect(1)
    follower = c.drivers[2]
    assert not follower.propose(["f"], [b"f"], [NEVER])
    assert c.replies[2].failed_ == [("f", Failure.NOT_LEADER)]
    leader = c.drivers[1]
    leader.propose(["slow"], [b"s"], [5.0])
    leader.expire(4.0)
    assert c.replies[1].failed_ == []
    leader.expire(5.0)
    assert c.replies[1].failed_ == [("slow", Failure.TIMEOUT)]


def test_a_deposed_leader_fails_its_unconfirmed_reads_at_once():
    c = Cluster(3)
    leader = c.elect(1)
    c.deliver_all()
    assert leader.read(["r"], NEVER)
    c.drain(1)
    c.net.clear()  # the heartbeats that would confirm the read are lost
    # Another node wins a later term; its first message deposes node 1.
    c.elect(2)
    c.deliver_all()
    assert leader.role is not Role.LEADER
    assert c.replies[1].failed_ == [("r", Failure.NOT_LEADER)]
    assert c.replies[1].reads == []

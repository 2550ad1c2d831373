"""The Ready driver's bookkeeping, one behaviour per test, on a scripted core.

tests/server/test_driver.py checks each of the seven rules on real cores. These tests
pin down what surrounds them, found by mutation testing (``make mutate``,
docs/mutation.md): configuration changes, deadlines of reads, failing everything on
stop, snapshots over waiting requests, the deferred hard state and the plan of a
Ready. The core is scripted (``FakeCore``) so each test sets up exactly the Ready or
the refusal it is about.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from exchange_node.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from exchange_node.server.driver import CommitNoticeHold, Driver, Failure, Write

NEVER = float("inf")
CHANGE = ConfChange(ConfChangeType.ADD_LEARNER, 4, b"")


class Machine:
    def __init__(self) -> None:
        self.applied: list[int] = []
        self.restored: list[int] = []

    def apply(self, entry: Entry) -> int:
        self.applied.append(entry.index)
        return entry.index * 10

    def restore(self, snapshot: Snapshot) -> None:
        self.restored.append(snapshot.meta.index)


@dataclass
class Replies:
    answers: list[tuple[object, int, object]] = field(default_factory=list)
    failures: list[tuple[object, Failure, str]] = field(default_factory=list)
    reads: list[tuple[object, int]] = field(default_factory=list)

    def resolved(self, token: object, index: int, result: object) -> None:
        self.answers.append((token, index, result))

    def failed(self, token: object, failure: Failure, detail: str) -> None:
        # The Replies contract: every failure comes with a reason (an adapter may
        # show it to the client).
        assert isinstance(detail, str) and detail, (token, failure, detail)
        self.failures.append((token, failure, detail))

    def read_ready(self, token: object, index: int) -> None:
        self.reads.append((token, index))

    def failed_as(self) -> list[tuple[object, Failure]]:
        return [(t, f) for t, f, _ in self.failures]


class FakeCore:
    """A core whose answers the test scripts: Readys, proposal indexes, refusals."""

    def __init__(self) -> None:
        self.readys: list[Ready] = []
        self.advanced: list[Ready] = []
        self.term = 2
        self.next_index = 1
        self.refuse: Exception | None = None
        self.read_ctxs: list[bytes] = []
        self.replicating: set[int] = set()
        self.commit_index = 0
        self.ticks = 0
        self.stepped: list[Message] = []

    def tick(self) -> None:
        self.ticks += 1

    def step(self, m: Message) -> None:
        self.stepped.append(m)

    def propose_many(self, datas: list[bytes]) -> tuple[int, int]:
        if self.refuse is not None:
            raise self.refuse
        first = self.next_index
        self.next_index += len(datas)
        return self.term, first

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        return self.propose_many([b"conf"])

    def read_index(self, ctx: bytes) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.read_ctxs.append(ctx)

    def has_ready(self) -> bool:
        return bool(self.readys)

    def ready(self) -> Ready:
        return self.readys.pop(0)

    def advance(self, rd: Ready) -> None:
        self.advanced.append(rd)

    def is_replicating(self, peer: int) -> bool:
        return peer in self.replicating

    @property
    def conf_state(self) -> ConfState:
        return ConfState((1, 2, 3))


def make(
    *, hold: float = 0.0, persisted: tuple[int, int] = (0, NONE), applied: int = 0
) -> tuple[Driver[object, int], FakeCore, Machine, Replies]:
    core, machine, replies = FakeCore(), Machine(), Replies()
    driver: Driver[object, int] = Driver(
        core,
        machine,
        replies,
        node_id=7,
        read_nonce="n",
        hold=hold,
        persisted_term_vote=persisted,
        applied_index=applied,
    )
    return driver, core, machine, replies


def run(driver: Driver[object, int], now: float = 0.0) -> list[Message]:
    """Every Ready to the end, each write durable at once; the messages sent."""
    sent: list[Message] = []
    while (batch := driver.ready(now)) is not None:
        sent += batch.send_now
        driver.apply_now(batch)
        sent += driver.persisted(batch, now)
        driver.finish(batch)
    return sent


def lead(driver: Driver[object, int], core: FakeCore, term: int = 2) -> None:
    core.readys.append(
        Ready(soft_state=SoftState(7, Role.LEADER), hard_state=HardState(term, 7, 0))
    )
    run(driver)


def entries(term: int, first: int, count: int = 1) -> list[Entry]:
    return [Entry(term, first + i, b"x") for i in range(count)]


def app(to: int, *, with_entries: bool = False, commit: int = 0) -> Message:
    return Message(
        MessageType.APP, to, 7, term=2, entries=entries(2, 5) if with_entries else [], commit=commit
    )


def snapshot(index: int) -> Snapshot:
    return Snapshot(SnapshotMeta(index, 2, ConfState((1, 2, 3))), b"s")


# ------------------------------------------------------------- construction and inputs


def test_a_new_driver_starts_from_what_it_is_given():
    core = FakeCore()
    core.commit_index = 4
    driver: Driver[object, int] = Driver(
        core, Machine(), Replies(), node_id=3, persisted_term_vote=(5, 2), applied_index=4
    )
    assert (driver.role, driver.leader, driver.term) == (Role.FOLLOWER, NONE, 5)
    assert (driver.commit_index, driver.applied_index, driver.node_id) == (4, 4, 3)
    assert not driver.busy and driver.waiting == 0
    assert driver.notices.hold == 0.0


def test_tick_and_step_reach_the_core():
    driver, core, _, _ = make()
    driver.tick()
    message = app(7)
    driver.step(message)
    assert core.ticks == 1 and core.stepped == [message]


def test_waiting_counts_proposals_and_configuration_changes():
    driver, core, _, _ = make()
    lead(driver, core)
    assert driver.propose(["a", "b"], [b"a", b"b"], [NEVER, NEVER])
    assert driver.propose_conf_change("c", CHANGE, NEVER)
    assert driver.waiting == 3


def test_proposals_wait_on_consecutive_indexes_and_resolve_with_the_result():
    driver, core, _, replies = make()
    lead(driver, core)
    core.next_index = 5
    assert driver.propose(["a", "b"], [b"a", b"b"], [NEVER, NEVER])
    core.readys.append(Ready(committed_entries=entries(2, 5, 2)))
    run(driver)
    assert replies.answers == [("a", 5, 50), ("b", 6, 60)]
    assert driver.waiting == 0


@pytest.mark.parametrize(
    ("refusal", "failure"),
    [(NotLeaderError(NONE), Failure.NOT_LEADER), (ProposalDroppedError("busy"), Failure.DROPPED)],
)
def test_a_proposal_the_core_refuses_fails_every_token(refusal, failure):
    driver, core, _, replies = make()
    lead(driver, core)
    core.refuse = refusal
    assert driver.propose(["a", "b"], [b"a", b"b"], [NEVER, NEVER]) is False
    assert replies.failed_as() == [("a", failure), ("b", failure)]
    assert driver.waiting == 0
    if failure is Failure.DROPPED:  # the core's reason reaches the client (a 503 body)
        assert [d for _, _, d in replies.failures] == ["busy", "busy"]


def test_a_configuration_change_on_the_leader_waits_and_resolves_at_its_index():
    driver, core, _, replies = make()
    lead(driver, core)
    core.next_index = 9
    assert driver.propose_conf_change("c", CHANGE, NEVER) is True
    core.readys.append(Ready(committed_entries=entries(2, 9)))
    run(driver)
    assert replies.answers == [("c", 9, 90)] and replies.failures == []


@pytest.mark.parametrize(
    ("refusal", "failure"),
    [
        (NotLeaderError(NONE), Failure.NOT_LEADER),
        (ProposalDroppedError("pending"), Failure.DROPPED),
    ],
)
def test_a_configuration_change_the_core_refuses_fails_its_token(refusal, failure):
    driver, core, _, replies = make()
    core.refuse = refusal
    assert driver.propose_conf_change("c", CHANGE, NEVER) is False
    assert replies.failed_as() == [("c", failure)]
    assert driver.waiting == 0
    if failure is Failure.DROPPED:
        assert replies.failures[0][2] == "pending"


def test_a_configuration_change_times_out_at_its_deadline():
    driver, core, _, replies = make()
    lead(driver, core)
    driver.propose_conf_change("c", CHANGE, 3.0)
    driver.expire(2.9)
    assert replies.failures == []
    driver.expire(3.0)
    assert replies.failed_as() == [("c", Failure.TIMEOUT)]


def test_a_newer_proposal_at_a_waited_index_fails_the_older_one_as_replaced():
    driver, core, _, replies = make()
    lead(driver, core)
    core.next_index = 4
    driver.propose(["old"], [b"o"], [5.0])
    core.next_index = 4  # the log was truncated and index 4 given out again
    driver.propose(["new"], [b"n"], [NEVER])
    assert replies.failed_as() == [("old", Failure.REPLACED)]
    # The old request's deadline no longer touches the new one at that index.
    driver.expire(6.0)
    assert replies.failed_as() == [("old", Failure.REPLACED)]
    core.readys.append(Ready(committed_entries=entries(2, 4)))
    run(driver)
    assert replies.answers == [("new", 4, 40)]


def test_deadlines_expire_in_order_and_only_once():
    driver, core, _, replies = make()
    lead(driver, core)
    driver.propose(["late", "early"], [b"l", b"e"], [9.0, 2.0])
    driver.expire(2.0)
    assert replies.failed_as() == [("early", Failure.TIMEOUT)]
    driver.expire(9.0)
    driver.expire(10.0)
    assert replies.failed_as() == [("early", Failure.TIMEOUT), ("late", Failure.TIMEOUT)]
    assert driver.waiting == 0


def test_a_resolved_request_does_not_time_out_later():
    driver, core, _, replies = make()
    lead(driver, core)
    driver.propose(["a"], [b"a"], [3.0])
    core.readys.append(Ready(committed_entries=entries(2, 1)))
    run(driver)
    driver.expire(5.0)
    assert replies.failures == [] and [t for t, _, _ in replies.answers] == ["a"]


# ------------------------------------------------------------------------------ reads


def test_reads_get_distinct_contexts_named_after_the_node_and_nonce():
    driver, core, _, _ = make()
    lead(driver, core)
    assert driver.read(["r1"], NEVER) and driver.read(["r2"], NEVER)
    assert core.read_ctxs == [b"7:n:1", b"7:n:2"]
    assert driver.read(["r3"], NEVER, ctx=b"mine")
    assert core.read_ctxs[-1] == b"mine"


def test_a_read_without_a_known_leader_fails_not_leader():
    driver, core, _, replies = make()
    core.refuse = NotLeaderError(NONE)
    assert driver.read(["r", "s"], NEVER) is False
    assert replies.failed_as() == [("r", Failure.NOT_LEADER), ("s", Failure.NOT_LEADER)]


def test_a_read_the_core_refuses_with_a_known_leader_fails_dropped():
    driver, core, _, replies = make()
    core.readys.append(Ready(soft_state=SoftState(3, Role.FOLLOWER)))
    run(driver)
    assert driver.leader == 3
    core.refuse = ProposalDroppedError("transfer")
    assert driver.read(["r"], NEVER) is False
    assert replies.failed_as() == [("r", Failure.DROPPED)]


def test_an_unconfirmed_read_times_out_at_its_deadline_and_not_before():
    driver, core, _, replies = make()
    lead(driver, core)
    driver.read(["r1", "r2"], 4.0)
    driver.read(["later"], 8.0)
    driver.expire(3.9)
    assert replies.failures == []
    driver.expire(4.0)
    assert replies.failed_as() == [("r1", Failure.TIMEOUT), ("r2", Failure.TIMEOUT)]
    # The expired round is forgotten: its read state arriving late answers nobody.
    ctx = core.read_ctxs[0]
    core.readys.append(Ready(read_states=[ReadState(0, ctx)]))
    run(driver)
    assert replies.reads == []
    # The other round is still served.
    core.readys.append(Ready(read_states=[ReadState(0, core.read_ctxs[1])]))
    run(driver)
    assert replies.reads == [("later", 0)]


def test_a_confirmed_read_waiting_for_apply_times_out_at_its_deadline():
    driver, core, _, replies = make()
    lead(driver, core)
    driver.read(["r"], 4.0)
    driver.read(["s"], 9.0)
    core.readys.append(
        Ready(read_states=[ReadState(5, core.read_ctxs[0]), ReadState(5, core.read_ctxs[1])])
    )
    run(driver)
    assert replies.reads == []  # index 5 is not applied yet
    driver.expire(3.0)
    assert replies.failures == []
    driver.expire(4.0)
    assert replies.failed_as() == [("r", Failure.TIMEOUT)]
    core.readys.append(Ready(committed_entries=entries(2, 1, 5)))
    run(driver)
    assert replies.reads == [("s", 5)]


def test_a_read_is_answered_when_applied_equals_its_index():
    driver, core, _, replies = make(applied=3)
    lead(driver, core)
    driver.read(["r"], NEVER)
    core.readys.append(Ready(read_states=[ReadState(3, core.read_ctxs[0])]))
    run(driver)
    assert replies.reads == [("r", 3)]


# ------------------------------------------------------------------------- stopping


def test_fail_everything_fails_proposals_and_both_kinds_of_reads_once():
    driver, core, _, replies = make()
    lead(driver, core)
    driver.propose(["p"], [b"p"], [5.0])
    driver.read(["unconfirmed"], 5.0)
    driver.read(["confirmed"], 5.0)
    core.readys.append(Ready(read_states=[ReadState(9, core.read_ctxs[1])]))
    run(driver)
    driver.fail_everything(Failure.STOPPED, "stopping")
    assert sorted(replies.failures, key=str) == sorted(
        [
            ("p", Failure.STOPPED, "stopping"),
            ("unconfirmed", Failure.STOPPED, "stopping"),
            ("confirmed", Failure.STOPPED, "stopping"),
        ],
        key=str,
    )
    assert driver.waiting == 0
    # Nothing is left to expire, to answer or to serve.
    driver.expire(10.0)
    core.readys.append(
        Ready(
            committed_entries=entries(2, 1, 9),
            read_states=[ReadState(0, core.read_ctxs[0])],
        )
    )
    run(driver)
    assert len(replies.failures) == 3 and replies.answers == [] and replies.reads == []


def test_the_driver_keeps_serving_reads_after_failing_everything():
    driver, core, _, replies = make()
    lead(driver, core)
    driver.read(["old"], NEVER)
    driver.fail_everything(Failure.STOPPED, "stopping")
    driver.read(["new"], NEVER)
    core.readys.append(Ready(read_states=[ReadState(0, core.read_ctxs[-1])]))
    run(driver)
    assert replies.reads == [("new", 0)]


def test_the_reasons_a_client_reads_for_a_timeout_or_a_refused_read():
    """server/requests.py hands these details to the client (504/503 bodies) for an
    admin change that timed out and for a read barrier that timed out or failed."""
    driver, core, _, replies = make()
    lead(driver, core)
    driver.propose_conf_change("change", CHANGE, 1.0)
    driver.read(["unconfirmed"], 1.0)
    driver.read(["confirmed"], 1.0)
    core.readys.append(Ready(read_states=[ReadState(5, core.read_ctxs[1])]))
    run(driver)
    driver.expire(1.0)
    core.readys.append(Ready(soft_state=SoftState(3, Role.FOLLOWER)))
    run(driver)
    core.refuse = ProposalDroppedError("transfer")
    driver.read(["refused"], NEVER)
    assert replies.failures == [
        ("change", Failure.TIMEOUT, "not applied in time; outcome unknown"),
        ("unconfirmed", Failure.TIMEOUT, "read barrier timed out"),
        ("confirmed", Failure.TIMEOUT, "read barrier timed out"),
        ("refused", Failure.DROPPED, "read failed"),
    ]


# ------------------------------------------------------------------- leadership lost


def test_losing_leadership_fails_unconfirmed_reads_and_drops_held_notices():
    driver, core, _, replies = make(hold=5.0)
    lead(driver, core)
    core.replicating = {2}
    driver.read(["r"], NEVER)
    core.readys.append(Ready(messages=[app(2, commit=3)]))
    assert run(driver) == []  # held
    assert driver.notices.release_at == 5.0
    core.readys.append(Ready(soft_state=SoftState(3, Role.FOLLOWER)))
    batch = driver.ready(0.0)
    assert batch is not None and batch.lost_leadership
    assert (driver.role, driver.leader) == (Role.FOLLOWER, 3)
    assert replies.failed_as() == [("r", Failure.NOT_LEADER)]
    assert driver.notices.release_at is None and driver.release_notices(10.0) == []


def test_a_soft_state_that_keeps_leadership_loses_nothing():
    driver, core, _, replies = make()
    lead(driver, core)
    driver.read(["r"], NEVER)
    core.readys.append(Ready(soft_state=SoftState(7, Role.LEADER)))
    batch = driver.ready(0.0)
    assert batch is not None and not batch.lost_leadership
    assert replies.failures == []


def test_a_follower_becoming_candidate_has_lost_no_leadership():
    driver, core, _, _ = make()
    core.readys.append(Ready(soft_state=SoftState(NONE, Role.CANDIDATE)))
    batch = driver.ready(0.0)
    assert batch is not None and not batch.lost_leadership


# ----------------------------------------------------------------- planning a Ready


def test_no_ready_means_no_batch_and_a_finished_batch_advances_the_core():
    driver, core, _, _ = make()
    assert driver.ready(0.0) is None
    rd = Ready(hard_state=HardState(1, 2, 0))
    core.readys.append(rd)
    batch = driver.ready(0.0)
    assert batch is not None and driver.busy
    driver.apply_now(batch)
    driver.persisted(batch, 0.0)
    driver.finish(batch)
    assert core.advanced == [rd] and not driver.busy


def test_a_term_or_vote_change_is_written_and_synced():
    driver, core, _, _ = make(persisted=(1, NONE))
    core.readys.append(Ready(hard_state=HardState(2, 3, 0)))
    batch = driver.ready(0.0)
    assert batch is not None and batch.write == Write([], HardState(2, 3, 0), None, True)
    assert driver.term == 2


def test_a_commit_only_hard_state_is_not_written_but_remembered():
    driver, core, _, _ = make(persisted=(2, 7))
    core.readys.append(Ready(hard_state=HardState(2, 7, 5)))
    batch = driver.ready(0.0)
    assert batch is not None and batch.write is None
    assert driver.commit_index == 5
    driver.finish(batch)
    assert driver.flush_deferred() == Write([], HardState(2, 7, 5), None, must_sync=False)


def test_the_deferred_hard_state_rides_along_with_the_next_entries():
    driver, core, _, _ = make(persisted=(2, 7))
    core.readys += [
        Ready(hard_state=HardState(2, 7, 5)),
        Ready(entries=entries(2, 6)),
    ]
    run(driver)
    core.readys.append(Ready(entries=entries(2, 7)))
    driver_batch = driver.ready(0.0)
    assert driver_batch is not None and driver_batch.write is not None
    # Ridden along already (the Ready of entry 6): nothing left to carry or flush.
    assert driver_batch.write.hard_state is None
    driver.finish(driver_batch)
    assert driver.flush_deferred() is None


def test_the_deferred_hard_state_is_carried_by_the_write_of_new_entries():
    driver, core, _, _ = make(persisted=(2, 7))
    core.readys += [Ready(hard_state=HardState(2, 7, 5)), Ready(entries=entries(2, 6))]
    first = driver.ready(0.0)
    assert first is not None
    driver.finish(first)
    second = driver.ready(0.0)
    assert second is not None and second.write is not None
    assert second.write.hard_state == HardState(2, 7, 5) and second.write.must_sync
    driver.finish(second)
    assert driver.flush_deferred() is None


def test_a_snapshot_does_not_carry_the_deferred_hard_state_away():
    driver, core, _, _ = make(persisted=(2, 7))
    core.readys += [Ready(hard_state=HardState(2, 7, 5)), Ready(snapshot=snapshot(9))]
    first = driver.ready(0.0)
    assert first is not None
    driver.finish(first)
    second = driver.ready(0.0)
    assert second is not None and second.write == Write([], None, snapshot(9))
    driver.finish(second)
    assert driver.flush_deferred() == Write([], HardState(2, 7, 5), None, must_sync=False)


def test_a_hard_state_written_with_entries_replaces_the_deferred_one():
    driver, core, _, _ = make(persisted=(2, 7))
    core.readys += [
        Ready(hard_state=HardState(2, 7, 5)),
        Ready(hard_state=HardState(2, 7, 6), entries=entries(2, 6)),
    ]
    run(driver)
    assert driver.flush_deferred() is None


def test_flush_deferred_waits_while_a_batch_is_in_flight():
    driver, core, _, _ = make(persisted=(2, 7))
    core.readys += [Ready(hard_state=HardState(2, 7, 5)), Ready(messages=[app(2)])]
    first = driver.ready(0.0)
    assert first is not None
    driver.finish(first)
    batch = driver.ready(0.0)
    assert batch is not None and driver.busy
    assert driver.flush_deferred() is None
    driver.finish(batch)
    assert driver.flush_deferred() == Write([], HardState(2, 7, 5), None, must_sync=False)


def test_the_persisted_term_and_vote_are_those_of_the_durable_write():
    driver, core, _, _ = make(persisted=(1, NONE))
    core.readys.append(Ready(hard_state=HardState(2, 3, 0)))
    batch = driver.ready(0.0)
    assert batch is not None
    driver.persisted(batch, 0.0)
    driver.finish(batch)
    # Term 2, vote 3 is now durable: a commit-only change of it is deferred.
    core.readys.append(Ready(hard_state=HardState(2, 3, 4)))
    batch = driver.ready(0.0)
    assert batch is not None and batch.write is None


def test_a_hard_state_not_yet_durable_is_not_taken_as_persisted():
    driver, core, _, _ = make(persisted=(1, NONE))
    core.readys.append(Ready(hard_state=HardState(2, 3, 0)))
    batch = driver.ready(0.0)
    assert batch is not None
    driver.finish(batch)  # (a test shortcut: persisted() was never called)
    core.readys.append(Ready(hard_state=HardState(2, 3, 4)))
    batch = driver.ready(0.0)
    assert batch is not None and batch.write is not None


def test_a_leader_whose_ready_changes_its_vote_sends_after_the_write():
    driver, core, _, _ = make(persisted=(2, 7))
    lead(driver, core, term=2)
    core.readys.append(
        Ready(hard_state=HardState(3, 7, 0), entries=entries(3, 1), messages=[app(2)])
    )
    batch = driver.ready(0.0)
    assert batch is not None and batch.send_now == [] and batch.send_after == [app(2)]


def test_a_leader_whose_ready_only_moves_the_commit_sends_before_the_write():
    driver, core, _, _ = make(persisted=(2, 7))
    lead(driver, core, term=2)
    message = app(2, with_entries=True)
    core.readys.append(
        Ready(hard_state=HardState(2, 7, 3), entries=entries(2, 4), messages=[message])
    )
    batch = driver.ready(0.0)
    assert batch is not None and batch.send_now == [message] and batch.send_after == []


def test_a_leader_without_new_entries_sends_after_the_write():
    driver, core, _, _ = make(persisted=(2, 7))
    lead(driver, core)
    core.readys.append(Ready(messages=[app(2)]))
    batch = driver.ready(0.0)
    assert batch is not None and batch.send_now == [] and batch.send_after == [app(2)]
    assert driver.persisted(batch, 0.0) == [app(2)]


def test_persisted_routes_the_waiting_messages_through_the_notice_hold():
    driver, core, _, _ = make(persisted=(2, 7), hold=1.0)
    lead(driver, core)
    core.replicating = {2}
    core.readys.append(Ready(messages=[app(2), app(3)]))
    batch = driver.ready(0.0)
    assert batch is not None
    assert driver.persisted(batch, 0.0) == [app(3)]
    assert driver.notices.held == 1


def test_a_leader_applies_committed_entries_at_once_when_it_writes_none():
    driver, core, machine, _ = make()
    lead(driver, core)
    core.readys.append(Ready(committed_entries=entries(2, 1, 2)))
    batch = driver.ready(0.0)
    assert batch is not None
    assert [e.index for e in batch.apply_now] == [1, 2] and batch.apply_after == []
    driver.apply_now(batch)
    assert machine.applied == [1, 2]


def test_a_leader_applies_only_entries_before_its_new_ones_early():
    driver, core, machine, _ = make()
    lead(driver, core)
    core.readys.append(Ready(entries=entries(2, 3, 2), committed_entries=entries(2, 1, 3)))
    batch = driver.ready(0.0)
    assert batch is not None
    assert [e.index for e in batch.apply_now] == [1, 2]
    assert [e.index for e in batch.apply_after] == [3]
    driver.apply_now(batch)
    assert machine.applied == [1, 2]
    driver.finish(batch)
    assert machine.applied == [1, 2, 3]


def test_a_follower_applies_only_after_the_write():
    driver, core, machine, _ = make()
    core.readys.append(Ready(committed_entries=entries(2, 1, 2)))
    batch = driver.ready(0.0)
    assert batch is not None and batch.apply_now == []
    driver.apply_now(batch)
    assert machine.applied == []
    driver.finish(batch)
    assert machine.applied == [1, 2]


def test_a_leader_installing_a_snapshot_applies_nothing_early():
    driver, core, machine, _ = make()
    lead(driver, core)
    core.readys.append(Ready(snapshot=snapshot(4), committed_entries=entries(2, 5)))
    batch = driver.ready(0.0)
    assert batch is not None and batch.apply_now == []
    driver.apply_now(batch)
    driver.finish(batch)
    assert machine.restored == [4] and machine.applied == [5]


# -------------------------------------------------------------------------- applying


def test_apply_refuses_a_gap_in_the_log():
    driver, core, _, _ = make(applied=3)
    core.readys.append(Ready(committed_entries=entries(2, 5)))
    batch = driver.ready(0.0)
    assert batch is not None
    with pytest.raises(AssertionError, match="applies 5 after 3"):
        driver.finish(batch)


def test_an_entry_applied_with_another_term_fails_its_request_as_lost():
    driver, core, _, replies = make()
    lead(driver, core)
    driver.propose(["a"], [b"a"], [NEVER])
    core.readys.append(Ready(committed_entries=entries(3, 1)))
    run(driver)
    assert replies.failed_as() == [("a", Failure.LOST)] and replies.answers == []
    assert driver.applied_index == 1


def test_a_snapshot_fails_the_requests_it_covers_and_keeps_later_ones():
    driver, core, machine, replies = make()
    lead(driver, core)
    driver.propose(["a", "b", "c"], [b"a", b"b", b"c"], [NEVER] * 3)
    core.readys.append(Ready(snapshot=snapshot(2)))
    run(driver)
    assert machine.restored == [2] and driver.applied_index == 2
    assert replies.failed_as() == [("a", Failure.SNAPSHOT), ("b", Failure.SNAPSHOT)]
    core.readys.append(Ready(committed_entries=entries(2, 3)))
    run(driver)
    assert replies.answers == [("c", 3, 30)]


# ------------------------------------------------------------------ the notice hold


def test_a_zero_hold_passes_every_message_through():
    hold = CommitNoticeHold(0.0)
    messages = [app(2)]
    assert hold.route(messages, lambda _peer: True, 0.0) == messages
    assert hold.held == 0 and hold.release_at is None


def test_only_empty_appends_to_streaming_followers_are_held():
    hold = CommitNoticeHold(1.0)
    vote = Message(MessageType.VOTE, 2, 7, term=2)
    out = hold.route([app(2), app(3), vote], lambda peer: peer == 2, 4.0)
    assert out == [app(3), vote]
    assert (hold.held, hold.release_at) == (1, 5.0)
    assert hold.release(4.99) == []
    assert hold.release(5.0) == [app(2)]
    assert (hold.released, hold.release_at) == (1, None)
    assert hold.release(9.0) == []
    hold.route([app(2), app(3)], lambda _peer: True, 10.0)
    assert len(hold.release(11.0)) == 2
    assert (hold.held, hold.released) == (3, 3)  # counters add up across holds


def test_a_second_notice_for_the_same_follower_replaces_the_first():
    hold = CommitNoticeHold(1.0)
    hold.route([app(2, commit=3)], lambda _peer: True, 0.0)
    hold.route([app(2, commit=4)], lambda _peer: True, 0.5)
    assert hold.merged == 1 and hold.held == 2
    hold.route([app(2, commit=5)], lambda _peer: True, 0.6)
    assert hold.merged == 2 and hold.held == 3
    assert hold.release_at == 1.0  # the first hold's time
    assert hold.release(1.0) == [app(2, commit=5)]


def test_an_append_with_entries_merges_the_notice_held_for_its_follower():
    hold = CommitNoticeHold(1.0)
    hold.route([app(2), app(3)], lambda _peer: True, 0.0)
    out = hold.route(
        [app(2, with_entries=True), app(3, with_entries=True)], lambda _peer: True, 0.5
    )
    assert out == [app(2, with_entries=True), app(3, with_entries=True)]
    assert hold.merged == 2
    assert hold.release(1.0) == []  # nothing left to send: the appends carried the commit

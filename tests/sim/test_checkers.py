"""Each invariant fires on a hand-made history that breaks it (no core involved)."""

import pytest
from exchange_node.raft.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
)
from exchange_node.sim.checkers import Checker, NodeWatch, Violation
from exchange_node.sim.disk import SimStorage


def bootstrap_entries() -> list[Entry]:
    return [
        Entry(1, i, ConfChange(ConfChangeType.PROMOTE, i).encode(), EntryType.CONF_CHANGE)
        for i in (1, 2, 3)
    ]


class Node:
    """A node's disk and watch, persisting through the checker as the simulator does."""

    def __init__(self, checker: Checker, node_id: int) -> None:
        self.checker = checker
        self.storage = SimStorage()
        self.watch = NodeWatch(node_id)

    def persist(self, entries=(), hard_state=None, leader=False) -> None:
        kwargs = {"entries": list(entries), "hard_state": hard_state}
        self.checker.on_persist(self.watch, self.storage, snapshot=None, is_leader=leader, **kwargs)
        self.storage.save(**kwargs)
        self.checker.after_persist(self.watch, self.storage, is_leader=leader, **kwargs)


def cluster() -> tuple[Checker, Node, Node]:
    checker = Checker()
    a, b = Node(checker, 1), Node(checker, 2)
    for node in (a, b):
        node.persist(bootstrap_entries(), HardState(1, 0, 3))
    return checker, a, b


def test_a_consistent_history_passes():
    checker, a, b = cluster()
    checker.on_propose(b"x")
    a.persist([Entry(2, 4, b"x")], HardState(2, 1, 3), leader=True)
    b.persist([Entry(2, 4, b"x")], HardState(2, 1, 3))
    a.persist(hard_state=HardState(2, 1, 4), leader=True)
    assert checker.commit_index == 4
    assert checker.conf_state.voters == (1, 2, 3)
    checker.on_apply(a.watch, a.storage.entries(1, 5))


def test_log_matching_same_index_and_term_different_data():
    _checker, a, b = cluster()
    a.persist([Entry(2, 4, b"x")])
    with pytest.raises(Violation, match="log matching"):
        b.persist([Entry(2, 4, b"y")])


def test_two_leaders_in_one_term():
    checker, a, b = cluster()
    checker.on_leader(a.watch, a.storage, 2)
    with pytest.raises(Violation, match="two leaders in term 2"):
        checker.on_leader(b.watch, b.storage, 2)


def test_leader_completeness():
    checker, a, b = cluster()
    checker.on_propose(b"x")
    a.persist([Entry(2, 4, b"x")], HardState(2, 1, 4), leader=True)
    with pytest.raises(Violation, match="leader completeness"):
        checker.on_leader(b.watch, b.storage, 3)


def test_a_committed_entry_changes():
    checker, a, b = cluster()
    checker.on_propose(b"x")
    checker.on_propose(b"y")
    a.persist([Entry(2, 4, b"x")], HardState(2, 1, 4), leader=True)
    b.persist([Entry(3, 4, b"y")], HardState(3, 2, 3))
    with pytest.raises(Violation, match="committed entry 4 changes"):
        b.persist(hard_state=HardState(3, 2, 4))


def test_a_node_overwrites_what_it_committed():
    _checker, a, _ = cluster()
    with pytest.raises(Violation, match="overwrites its committed entry"):
        a.persist([Entry(2, 3, b"")])


def test_commit_goes_backwards():
    _checker, a, _ = cluster()
    with pytest.raises(Violation, match="below its durable commit"):
        a.persist(hard_state=HardState(1, 0, 2))


def test_a_vote_changes_within_a_term():
    _checker, a, _ = cluster()
    a.persist(hard_state=HardState(2, 2, 3))
    with pytest.raises(Violation, match="changes its durable vote"):
        a.persist(hard_state=HardState(2, 3, 3))


def test_a_vote_granted_twice_in_one_term():
    checker = Checker()
    checker.on_messages(1, [Message(MessageType.VOTE_RESP, 2, 1, term=5)])
    checker.on_messages(1, [Message(MessageType.VOTE_RESP, 3, 1, term=5, reject=True)])
    with pytest.raises(Violation, match="grants its vote in term 5 to 3"):
        checker.on_messages(1, [Message(MessageType.VOTE_RESP, 3, 1, term=5)])


def test_applying_out_of_order_or_off_history():
    checker, a, _ = cluster()
    with pytest.raises(Violation, match="applies entry 2 right after 0"):
        checker.on_apply(a.watch, a.storage.entries(2, 3))
    with pytest.raises(Violation, match="committed history has nothing"):
        checker.on_apply(a.watch, [*a.storage.entries(1, 4), Entry(1, 4, b"")])


def test_a_stale_read_index():
    checker, _a, _ = cluster()
    checker.on_read(b"r1")
    with pytest.raises(Violation, match="read"):
        checker.on_read_states(1, [ReadState(2, b"r1")])


def test_data_nobody_proposed_or_committed_twice():
    checker, a, _ = cluster()
    with pytest.raises(Violation, match="no client proposed"):
        a.persist([Entry(2, 4, b"ghost")], HardState(2, 1, 4), leader=True)
    checker, a, _ = cluster()
    checker.on_propose(b"x")
    with pytest.raises(Violation, match="committed twice"):
        a.persist([Entry(2, 4, b"x"), Entry(2, 5, b"x")], HardState(2, 1, 5), leader=True)


def test_a_leader_commits_an_old_term_entry_by_counting():
    checker, a, _ = cluster()
    checker.on_propose(b"x")
    a.persist([Entry(2, 4, b"x")], HardState(3, 1, 3), leader=True)
    with pytest.raises(Violation, match="commit rule"):
        a.persist(hard_state=HardState(3, 1, 4), leader=True)


def test_a_late_leader_of_an_older_term_may_lack_later_commits():
    # Votes of term 3 delayed in the network can elect a leader of term 3 after
    # term 4 has committed entries: Raft only promises them to leaders of later
    # terms (found by seed 40066 with 10,000 steps, before this was understood).
    checker, a, b = cluster()
    checker.on_propose(b"x")
    a.persist([Entry(4, 4, b"x")], HardState(4, 1, 3), leader=True)
    a.persist(hard_state=HardState(4, 1, 4), leader=True)
    b.persist(hard_state=HardState(3, 2, 3))
    checker.on_leader(b.watch, b.storage, 3)
    with pytest.raises(Violation, match="leader completeness"):
        checker.on_leader(b.watch, b.storage, 5)

"""Construction and configuration of a core: what a restart or a first start sets up,
what a configuration refuses, the seeded randomness. Written to kill the mutants
`make mutate` found surviving (docs/mutation.md); each test states the behaviour.
"""

from __future__ import annotations

import pytest
from exchange_node.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    RaftConfig,
    RaftCore,
    Role,
    Snapshot,
    SnapshotMeta,
)
from exchange_node.raft.log import RaftLog
from exchange_node.raft.types import MAX_TERM
from paperkit import core, drain, make_candidate, sent

PROMOTE = ConfChangeType.PROMOTE


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"node_id": 0}, "node_id must be >= 1 (0 means nobody)"),
        ({"heartbeat_tick": 0}, "need 0 < heartbeat_tick < election_tick"),
        ({"heartbeat_tick": 10, "election_tick": 10}, "need 0 < heartbeat_tick < election_tick"),
        ({"max_msg_entries": 0}, "message and inflight limits must be positive"),
        ({"max_msg_bytes": 0}, "message and inflight limits must be positive"),
        ({"max_inflight": 0}, "message and inflight limits must be positive"),
    ],
)
def test_a_configuration_out_of_range_is_refused_with_the_reason(settings, message):
    config = RaftConfig(**{"node_id": 1, **settings})
    with pytest.raises(ValueError) as raised:
        config.validate()
    assert str(raised.value) == message


def test_the_smallest_valid_configuration_is_accepted():
    RaftConfig(
        node_id=1,
        heartbeat_tick=1,
        election_tick=2,
        max_msg_entries=1,
        max_msg_bytes=1,
        max_inflight=1,
    ).validate()


def test_a_stored_term_at_max_term_is_accepted_and_one_above_refused():
    RaftCore(RaftConfig(node_id=1), hard_state=HardState(MAX_TERM, 0, 0))
    with pytest.raises(ValueError, match="above MAX_TERM"):
        RaftCore(RaftConfig(node_id=1), hard_state=HardState(MAX_TERM + 1, 0, 0))


def test_a_fresh_core_reports_no_soft_state_change_in_its_first_ready():
    c = RaftCore(RaftConfig(node_id=1))
    assert c.ready().soft_state is None
    assert (c.role, c.leader) == (Role.FOLLOWER, 0)


def test_bootstrap_is_ignored_once_anything_is_stored():
    changes = [ConfChange(PROMOTE, i) for i in (1, 2, 3)]
    c = RaftCore(RaftConfig(node_id=1), hard_state=HardState(3, 0, 0), bootstrap=changes)
    assert c.log.last_index() == 0 and c.conf_state == ConfState()
    fresh = RaftCore(RaftConfig(node_id=1), bootstrap=changes)
    assert fresh.log.last_index() == 3 and fresh.conf_state.voters == (1, 2, 3)


def test_a_restart_applies_only_the_committed_configuration_changes():
    entries = [
        Entry(1, i, ConfChange(PROMOTE, i).encode(), EntryType.CONF_CHANGE) for i in (1, 2, 3, 4)
    ]
    c = RaftCore(RaftConfig(node_id=1), hard_state=HardState(1, 0, 3), entries=entries)
    assert c.conf_state.voters == (1, 2, 3)


def test_a_restart_from_a_snapshot_keeps_it_and_skips_entries_it_covers():
    snap = Snapshot(SnapshotMeta(5, 2, ConfState((1, 2, 3))), b"state")
    stored = [Entry(2, i) for i in range(4, 8)]
    c = RaftCore(
        RaftConfig(node_id=1), hard_state=HardState(2, 0, 5), snapshot=snap, entries=stored
    )
    assert c.log.snapshot is snap
    assert [e.index for e in c.log.entries] == [6, 7]
    log = RaftLog(snap, [], 5)
    assert (log.last_index(), log.last_term()) == (5, 2)
    assert log.slice_limited(6, 10, 100) == []
    with pytest.raises(AssertionError):
        log.slice(5, 6)


def test_a_node_that_never_campaigned_ignores_higher_term_answers():
    f = core(2, terms=(1,), term=1)
    f.step(Message(MessageType.APP_RESP, 2, 1, 5, index=1, nonce=1))
    f.step(Message(MessageType.VOTE_RESP, 2, 3, 5, nonce=1))
    assert f.term == 1


def test_a_candidate_knows_no_leader():
    c = make_candidate(core(1, terms=(1,), term=1))
    assert c.leader == 0 and c.status().leader == 0


def test_a_learner_told_to_campaign_does_not():
    learner = core(4, voters=(1, 2, 3), learners=(4,), terms=(1,), term=1, pre_vote=True)
    learner.step(Message(MessageType.APP, 4, 1, 1, index=1, log_term=1, commit=1, nonce=5))
    learner.step(Message(MessageType.TIMEOUT_NOW, 4, 1, 1, index=4, nonce=5))
    assert (learner.role, learner.term) == (Role.FOLLOWER, 1)
    assert [m.type for m in sent(learner)] == [MessageType.APP_RESP]


def test_randomness_comes_from_the_seed_and_differs_between_seeds_and_members():
    def draws(node_id: int, seed: int) -> tuple[list[int], list[int]]:
        c = core(node_id, terms=(1,), term=1, seed=seed)
        timeouts, nonces = [], []
        for _ in range(6):
            c.election_elapsed = c.randomized_election_timeout
            c.tick()
            timeouts.append(c.randomized_election_timeout)
            nonces.append(c._nonce)
            drain(c)
        return timeouts, nonces

    assert draws(1, 7) == draws(1, 7)
    assert draws(1, 1)[0] != draws(1, 2)[0]
    assert draws(1, 1)[1] != draws(1, 2)[1]
    assert draws(1, 1)[0] != draws(2, 1)[0]


def test_a_malformed_configuration_change_does_not_decode():
    good = ConfChange(PROMOTE, 4, b"addr").encode()
    assert ConfChange.decode(good) == ConfChange(PROMOTE, 4, b"addr")
    bad_kind = bytes([7]) + good[1:]
    for data in (good[:-1], bad_kind):
        with pytest.raises(ValueError) as raised:
            ConfChange.decode(data)
        assert str(raised.value) == "malformed ConfChange"

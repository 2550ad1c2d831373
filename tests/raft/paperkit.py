"""Builders for the paper tests: one core in a chosen state, driven message by message.

In the style of etcd-io/raft's paper tests: *init* a core whose log, term and role
are stated in the test, *step* it with hand-written messages, *check* the state and
the messages it hands out. Messages to a core's followers echo its nonce, as the
real ones do (raft/README.md, "Nonces").
"""

from __future__ import annotations

from collections.abc import Sequence

from exchange_node.raft import (
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    RaftConfig,
    RaftCore,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

PAPER = {"pre_vote": False, "check_quorum": False}
"""Figure 2 alone: no pre-vote, no check-quorum (dissertation additions)."""


def core(
    node_id: int = 1,
    *,
    voters: Sequence[int] = (1, 2, 3),
    learners: Sequence[int] = (),
    terms: Sequence[int] = (),
    term: int | None = None,
    vote: int = 0,
    commit: int = 0,
    **config: object,
) -> RaftCore:
    """A restarted member whose log holds entries of ``terms`` (index 1, 2, ...)."""
    settings = {**PAPER, **config}
    conf = Snapshot(SnapshotMeta(0, 0, ConfState(tuple(voters), tuple(learners))), b"")
    entries = [Entry(t, i, f"e{i}".encode()) for i, t in enumerate(terms, 1)]
    hard = HardState(term if term is not None else (terms[-1] if terms else 0), vote, commit)
    c = RaftCore(
        RaftConfig(node_id=node_id, **settings),  # type: ignore[arg-type]
        hard_state=hard,
        snapshot=conf,
        entries=entries,
    )
    drain(c)
    return c


def drain(c: RaftCore) -> Ready:
    """Hand out the pending work and acknowledge it (persisted, sent, applied)."""
    rd = c.ready()
    c.advance(rd)
    return rd


def sent(c: RaftCore, kind: MessageType | None = None) -> list[Message]:
    msgs = drain(c).messages
    return [m for m in msgs if kind is None or m.type is kind]


def fire_election_timeout(c: RaftCore) -> None:
    c.election_elapsed = max(c.election_elapsed, c.randomized_election_timeout - 1)
    c.tick()


def grant(c: RaftCore, voter: int, *, pre: bool = False, reject: bool = False) -> None:
    kind = MessageType.PRE_VOTE_RESP if pre else MessageType.VOTE_RESP
    term = c.term + 1 if pre and not reject else c.term
    c.step(Message(kind, c.id, voter, term, reject=reject, nonce=c._nonce))


def make_candidate(c: RaftCore) -> RaftCore:
    fire_election_timeout(c)
    if c.role is Role.PRE_CANDIDATE:
        for v in c.conf_state.voters:
            if v != c.id and c.role is Role.PRE_CANDIDATE:
                grant(c, v, pre=True)
    assert c.role is Role.CANDIDATE
    return c


def make_leader(c: RaftCore) -> RaftCore:
    make_candidate(c)
    for v in c.conf_state.voters:
        if v != c.id and c.role is Role.CANDIDATE:
            grant(c, v)
    assert c.role is Role.LEADER
    drain(c)
    return c


def ack(leader: RaftCore, frm: int, index: int) -> None:
    leader.step(
        Message(MessageType.APP_RESP, leader.id, frm, leader.term, index=index, nonce=leader._nonce)
    )


def append(
    to: RaftCore,
    frm: int,
    term: int,
    prev_index: int,
    prev_term: int,
    entries: Sequence[tuple[int, int]] = (),
    commit: int = 0,
    nonce: int = 7,
) -> None:
    """An AppendEntries RPC; ``entries`` as (index, term) pairs."""
    to.step(
        Message(
            MessageType.APP,
            to.id,
            frm,
            term,
            log_term=prev_term,
            index=prev_index,
            entries=[Entry(t, i, f"e{i}".encode()) for i, t in entries],
            commit=commit,
            nonce=nonce,
        )
    )


def vote_request(
    to: RaftCore, frm: int, term: int, last_index: int, last_term: int, *, pre: bool = False
) -> None:
    kind = MessageType.PRE_VOTE if pre else MessageType.VOTE
    to.step(Message(kind, to.id, frm, term, log_term=last_term, index=last_index, nonce=99))


def log_terms(c: RaftCore) -> list[int]:
    return [e.term for e in c.log.entries]

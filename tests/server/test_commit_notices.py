"""Rule 5 of the driver: a leader's commit-only appends are held briefly and a later
append carries them (``driver.CommitNoticeHold``; virtual time, no sleeping)."""

from __future__ import annotations

from exchange_node.raft.types import Entry, Message, MessageType
from exchange_node.server.driver import CommitNoticeHold

HOLD = 0.05


def app(to: int, commit: int, entries: int = 0, index: int = 10) -> Message:
    return Message(
        MessageType.APP,
        to,
        1,
        term=2,
        log_term=2,
        index=index,
        entries=[Entry(2, index + 1 + i, b"x") for i in range(entries)],
        commit=commit,
    )


def everyone_replicating(_peer: int) -> bool:
    return True


def test_a_commit_only_append_waits_then_leaves_if_nothing_carried_it() -> None:
    hold = CommitNoticeHold(HOLD)
    notice = app(2, commit=10)
    assert hold.route([notice], everyone_replicating, 1.0) == []
    assert hold.release_at == 1.0 + HOLD
    assert hold.release(1.0 + HOLD / 2) == []
    assert hold.release(1.0 + HOLD) == [notice]
    assert (hold.held, hold.merged, hold.released) == (1, 0, 1)
    assert hold.release_at is None


def test_a_later_append_to_the_same_peer_carries_the_commit_instead() -> None:
    hold = CommitNoticeHold(HOLD)
    assert hold.route([app(2, commit=10), app(3, commit=10)], everyone_replicating, 0.0) == []
    carrying = app(2, commit=11, entries=1)
    assert hold.route([carrying], everyone_replicating, 0.01) == [carrying]
    # Peer 3 got no append meanwhile: its notice leaves when the time is up.
    released = hold.release(HOLD)
    assert [(m.to, m.commit) for m in released] == [(3, 10)]
    assert (hold.held, hold.merged, hold.released) == (2, 1, 1)


def test_a_newer_notice_replaces_an_older_one() -> None:
    hold = CommitNoticeHold(HOLD)
    hold.route([app(2, commit=10)], everyone_replicating, 0.0)
    hold.route([app(2, commit=12)], everyone_replicating, 0.01)
    assert hold.release_at == HOLD  # the first hold's deadline stands
    assert [(m.to, m.commit) for m in hold.release(HOLD)] == [(2, 12)]


def test_probes_and_other_messages_leave_at_once_and_in_order() -> None:
    hold = CommitNoticeHold(HOLD)
    heartbeat = Message(MessageType.HEARTBEAT, 3, 1, term=2, commit=9)
    probe = app(2, commit=10)
    entries = app(3, commit=10, entries=2)
    sent = hold.route([heartbeat, probe, entries], lambda peer: peer != 2, 0.0)
    assert sent == [heartbeat, probe, entries]
    assert hold.held == 0 and hold.release_at is None


def test_discard_forgets_held_notices() -> None:
    hold = CommitNoticeHold(HOLD)
    hold.route([app(2, commit=10)], everyone_replicating, 0.0)
    hold.discard()
    assert hold.release_at is None and hold.release(1.0) == []
    # It keeps working after a discard.
    hold.route([app(2, commit=11)], everyone_replicating, 2.0)
    assert [m.commit for m in hold.release(2.0 + HOLD)] == [11]


def test_a_zero_hold_sends_everything_at_once() -> None:
    hold = CommitNoticeHold(0.0)
    notice = app(2, commit=10)
    assert hold.route([notice], everyone_replicating, 0.0) == [notice]

"""The outbox holds a leader's commit-only appends briefly and lets a later append carry them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from exchange_node.raft.types import Entry, Message, MessageType
from exchange_node.server.outbox import Outbox

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


class Wire:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, messages: Sequence[Message]) -> None:
        self.sent.extend(messages)


def everyone_replicating(_peer: int) -> bool:
    return True


async def test_a_commit_only_append_waits_then_leaves_if_nothing_carried_it() -> None:
    wire = Wire()
    outbox = Outbox(wire.send, HOLD)
    notice = app(2, commit=10)
    outbox.send([notice], everyone_replicating)
    assert wire.sent == []
    await asyncio.sleep(HOLD * 3)
    assert wire.sent == [notice]
    assert (outbox.stats.held, outbox.stats.merged, outbox.stats.released) == (1, 0, 1)


async def test_a_later_append_to_the_same_peer_carries_the_commit_instead() -> None:
    wire = Wire()
    outbox = Outbox(wire.send, HOLD)
    outbox.send([app(2, commit=10), app(3, commit=10)], everyone_replicating)
    carrying = app(2, commit=11, entries=1)
    outbox.send([carrying], everyone_replicating)
    assert wire.sent == [carrying]
    await asyncio.sleep(HOLD * 3)
    # Peer 3 got no append meanwhile: its notice leaves when the time is up.
    assert [m.to for m in wire.sent] == [2, 3]
    assert wire.sent[1].commit == 10
    assert (outbox.stats.held, outbox.stats.merged, outbox.stats.released) == (2, 1, 1)


async def test_a_newer_notice_replaces_an_older_one() -> None:
    wire = Wire()
    outbox = Outbox(wire.send, HOLD)
    outbox.send([app(2, commit=10)], everyone_replicating)
    outbox.send([app(2, commit=12)], everyone_replicating)
    await asyncio.sleep(HOLD * 3)
    assert [(m.to, m.commit) for m in wire.sent] == [(2, 12)]


async def test_probes_and_other_messages_leave_at_once_and_in_order() -> None:
    wire = Wire()
    outbox = Outbox(wire.send, HOLD)
    heartbeat = Message(MessageType.HEARTBEAT, 3, 1, term=2, commit=9)
    probe = app(2, commit=10)
    entries = app(3, commit=10, entries=2)
    outbox.send([heartbeat, probe, entries], lambda peer: peer != 2)
    assert wire.sent == [heartbeat, probe, entries]
    assert outbox.stats.held == 0


async def test_discard_forgets_held_notices() -> None:
    wire = Wire()
    outbox = Outbox(wire.send, HOLD)
    outbox.send([app(2, commit=10)], everyone_replicating)
    outbox.discard()
    await asyncio.sleep(HOLD * 3)
    assert wire.sent == []
    # The outbox keeps working after a discard.
    outbox.send([app(2, commit=11)], everyone_replicating)
    await asyncio.sleep(HOLD * 3)
    assert [m.commit for m in wire.sent] == [11]


async def test_a_zero_hold_sends_everything_at_once() -> None:
    wire = Wire()
    outbox = Outbox(wire.send, 0.0)
    notice = app(2, commit=10)
    outbox.send([notice], everyone_replicating)
    assert wire.sent == [notice]

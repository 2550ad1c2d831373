"""``Outbox``: a Ready's messages on their way to the transport.

Everything goes out at once except one kind of message: a leader's append
with no entries to a follower it is streaming to. Such an append exists only
to tell the follower the new commit index (the core sends one to every
follower each time its commit index moves). The outbox holds it for up to
``hold_seconds``; if another append to that follower leaves meanwhile, that
append carries a commit index at least as new and the held one is dropped,
otherwise the held one leaves when the time is up.

Why: a replicated order otherwise costs eight peer messages (an append to
each follower, their acks, a commit notice to each, and acks of those). Under
a steady stream of orders the next order's append arrives within a couple of
milliseconds and carries the commit, which halves the messages and the
thread wake-ups that each one costs (measured in docs/performance.md).

Safety: Raft tolerates a lost or late message of any kind. Followers learn
the commit index a little later (at most ``hold_seconds`` more), which only
delays their applying; the leader answers clients from its own apply. An
empty append to a follower in any other state is a probe the leader waits
on, so it is never held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exchange_node.raft.types import Message, MessageType

_APP = MessageType.APP


@dataclass(slots=True)
class OutboxStats:
    held: int = 0
    """Commit-only appends held back."""
    merged: int = 0
    """Held appends dropped because a later append carried the commit."""
    released: int = 0
    """Held appends sent when their time was up."""


class Outbox:
    """See the module docstring. Runs on the event loop; not thread-safe."""

    def __init__(self, send: Callable[[Sequence[Message]], None], hold_seconds: float) -> None:
        self._send = send
        self.hold_seconds = hold_seconds
        self._held: dict[int, Message] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.stats = OutboxStats()

    def send(self, messages: Sequence[Message], replicating: Callable[[int], bool]) -> None:
        """Send ``messages`` in order, holding commit-only appends.

        ``replicating(peer)``: whether this node leads and streams to ``peer``
        (``RaftCore.is_replicating``); only appends to such peers are held.
        """
        if self.hold_seconds <= 0:
            self._send(messages)
            return
        held = self._held
        out: list[Message] = []
        for msg in messages:
            if msg.type is _APP:
                if not msg.entries and replicating(msg.to):
                    if msg.to in held:
                        self.stats.merged += 1
                    held[msg.to] = msg
                    self.stats.held += 1
                    continue
                if held.pop(msg.to, None) is not None:
                    self.stats.merged += 1
            out.append(msg)
        if out:
            self._send(out)
        if held and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.hold_seconds, self._release)

    def _release(self) -> None:
        self._timer = None
        if self._held:
            held = list(self._held.values())
            self._held.clear()
            self.stats.released += len(held)
            self._send(held)

    def discard(self) -> None:
        """Forget held appends (this node stopped leading: they are stale)."""
        self._held.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

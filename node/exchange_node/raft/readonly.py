"""ReadIndex (dissertation 6.4): linearizable reads without writing to the log.

The leader records its commit index for each read request, then proves it is
still the leader with a heartbeat round carrying the request's context. Once
a majority echoes that context, the request and every request queued before
it may be served once the state machine has applied the recorded index.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ReadRequest:
    index: int
    """The leader's commit index when the request arrived."""
    requester: int
    """Who asked: the leader itself or a follower waiting for READ_INDEX_RESP."""
    context: bytes
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    __slots__ = ("_by_context", "_queue")

    def __init__(self) -> None:
        self._by_context: dict[bytes, ReadRequest] = {}
        self._queue: list[bytes] = []

    def add(self, index: int, requester: int, context: bytes, self_id: int) -> bool:
        """Queue a request; False when one with the same context is already pending."""
        if context in self._by_context:
            return False
        self._by_context[context] = ReadRequest(index, requester, context, {self_id})
        self._queue.append(context)
        return True

    def ack(self, context: bytes, voter: int) -> set[int] | None:
        """Record a heartbeat echo; the acks so far, or None for an unknown context."""
        request = self._by_context.get(context)
        if request is None:
            return None
        request.acks.add(voter)
        return request.acks

    def release(self, context: bytes) -> list[ReadRequest]:
        """Requests confirmed by a quorum answering ``context``, in arrival order."""
        if context not in self._by_context:
            return []
        cut = self._queue.index(context) + 1
        released = [self._by_context.pop(c) for c in self._queue[:cut]]
        del self._queue[:cut]
        return released

    def last_pending_context(self) -> bytes:
        return self._queue[-1] if self._queue else b""

    def __len__(self) -> int:
        return len(self._queue)

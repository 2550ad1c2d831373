"""The leader's queue of proposals waiting for a Ready, shared fairly between clients.

One FIFO per client id; ``take`` serves them by deficit round robin counted in
commands (orders), so a client with thousands of orders queued delays another
client's single order by at most one quantum per turn, not by its whole
backlog. Within one client, order is kept (first come, first proposed).
Proposals without a client id (the leader's own symbol listing) share one
queue under the key ``""``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from exchange_node.limits import FAIR_QUANTUM_COMMANDS

DEFAULT_QUANTUM = FAIR_QUANTUM_COMMANDS


def client_of(proposal: Any) -> str:
    commands = proposal.commands
    if not commands:
        return ""
    return getattr(commands[0], "client_id", None) or ""


class FairQueue:
    """Waiting proposals (anything with a ``commands`` sequence), per client."""

    __slots__ = ("_deficit", "_len", "_queues", "_turns", "quantum")

    def __init__(self, quantum: int = DEFAULT_QUANTUM) -> None:
        if quantum < 1:
            raise ValueError("quantum must be >= 1")
        self.quantum = quantum
        self._queues: dict[str, deque[Any]] = {}
        self._turns: deque[str] = deque()
        """Clients with waiting proposals, in the order of their next turn."""
        self._deficit: dict[str, int] = {}
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def append(self, proposal: Any) -> None:
        key = client_of(proposal)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._turns.append(key)
            self._deficit[key] = 0
        queue.append(proposal)
        self._len += 1

    def popleft(self) -> Any:
        """The next proposal in round-robin order (used to drain the queue)."""
        (proposal,) = self.take(1, 1)
        return proposal

    def take(self, max_commands: int, max_proposals: int) -> list[Any]:
        """Up to ``max_proposals`` proposals holding up to ``max_commands`` commands
        (a single larger proposal still goes alone), by deficit round robin."""
        if not self._len:
            raise IndexError("take from an empty FairQueue")
        batch: list[Any] = []
        commands = 0
        turns, queues, deficits, quantum = self._turns, self._queues, self._deficit, self.quantum
        while turns and len(batch) < max_proposals and commands < max_commands:
            key = turns[0]
            queue = queues[key]
            deficit = deficits[key] + quantum
            full = False
            while queue and len(batch) < max_proposals:
                size = len(queue[0].commands)
                if batch and commands + size > max_commands:
                    full = True  # this Ready's budget is spent; the turn goes on next time
                    break
                if size > deficit:
                    break
                batch.append(queue.popleft())
                deficit -= size
                commands += size
            if not batch and queue and len(queue[0].commands) > max_commands:
                # Larger than a whole Ready's budget: it goes alone, once it is its turn.
                batch.append(queue.popleft())
                commands += len(batch[0].commands)
                deficit = 0
            if queue:
                deficits[key] = deficit
                turns.rotate(-1)
            else:
                turns.popleft()
                del queues[key], deficits[key]
            if full:
                break
        self._len -= len(batch)
        return batch

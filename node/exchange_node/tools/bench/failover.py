"""The failover writer shared by `exchange bench cluster` and `exchange bench etcd`.

Unavailability after a leader is killed is measured the same way for both systems:
a writer sends one write every ``interval`` seconds, whatever is still unanswered
(open loop), to the members in turn, and each trial's figure is the time from the
kill to the first write *sent after it* that was acknowledged.

Why open loop: a closed-loop writer (a few workers, each waiting for its write's
answer before the next) measures its own timeout as soon as every worker is
waiting on a write that will never be answered. An etcd follower holds a put it
forwarded to a dead leader until the client gives up, so with 8 workers and a 2 s
timeout etcd's figure was the 2 s timeout, not its election (docs/performance.md).
Sent on a clock, a write reaches a live member at most ``interval`` after the kill
and at most ``interval`` after a new leader can answer it, so the figure is the
system's unavailability to within ``interval``, plus one write's latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

WRITE_INTERVAL_S = 0.005
"""One write every 5 ms (200 writes/s), spread over the members in turn."""
MAX_IN_FLIGHT = 2_000
"""Writes left unanswered before the writer skips a beat (10 s of writes at 200/s)."""


async def open_loop_writes(
    write: Callable[[int], Awaitable[bool]],
    stop: Callable[[], bool],
    *,
    interval: float = WRITE_INTERVAL_S,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> list[tuple[float, float]]:
    """Call ``write(k)`` for k = 0, 1, ... every ``interval`` s until ``stop()``.

    ``write`` returns True when the write was acknowledged (it owns its timeout and
    its errors). Returns (sent, acknowledged) monotonic times of the acknowledged
    writes. A write is due at a fixed time; when the loop is late, the writes it
    missed are not sent in a burst (the next one is due ``interval`` after now)."""
    successes: list[tuple[float, float]] = []
    in_flight: set[asyncio.Task[None]] = set()

    async def one(k: int, sent: float) -> None:
        if await write(k):
            successes.append((sent, time.monotonic()))

    k = 0
    due = time.monotonic()
    while not stop():
        now = time.monotonic()
        if now < due:
            await asyncio.sleep(due - now)
            continue
        due += interval
        if due <= now:
            due = now + interval
        if len(in_flight) >= max_in_flight:
            continue
        task = asyncio.create_task(one(k, now))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        k += 1
    if in_flight:
        await asyncio.gather(*in_flight, return_exceptions=True)
    return successes


def unavailability_gaps(
    successes: Sequence[tuple[float, float]], kills: Sequence[float]
) -> list[float]:
    """Per kill, seconds from it to the first write sent after it and acknowledged
    (infinity if none was)."""
    gaps = []
    for killed_at in kills:
        after = [done for sent, done in successes if sent >= killed_at]
        gaps.append(min(after) - killed_at if after else float("inf"))
    return gaps

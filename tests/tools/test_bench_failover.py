"""The failover writer of the cluster and etcd benches (tools/bench/failover.py)."""

from __future__ import annotations

import asyncio
import math
import time

from exchange_node.tools.bench.failover import open_loop_writes, unavailability_gaps


def test_gaps_are_from_each_kill_to_the_first_write_sent_after_it_and_acknowledged():
    successes = [(0.0, 0.1), (0.9, 3.0), (1.2, 1.5), (1.3, 1.4), (5.0, 5.2)]
    gaps = unavailability_gaps(successes, [1.0, 4.0, 6.0])
    # The write sent at 0.9 was acknowledged late, but it was sent before the kill.
    assert gaps[:2] == [0.3999999999999999, 1.2000000000000002]
    assert math.isinf(gaps[2])


async def _outage(down_from: float, down_for: float, hang: bool) -> tuple[float, list[float]]:
    """A system that answers nothing sent during an outage (each such write waits until
    the writer stops and then fails when ``hang``, as a put an etcd follower forwarded
    to a dead leader); the writer's gap, and when its writes were sent."""
    start = time.monotonic()
    killed_at = start + down_from
    back_at = killed_at + down_for
    stop_at = back_at + 0.5
    stopping = asyncio.Event()
    sends: list[float] = []

    async def write(_k: int) -> bool:
        now = time.monotonic()
        sends.append(now)
        if killed_at <= now < back_at:
            if hang:
                await stopping.wait()
            return False
        return True

    def stop() -> bool:
        if time.monotonic() >= stop_at:
            stopping.set()
            return True
        return False

    # A writer stuck on a hanging write never asks stop() again: bounded, it fails.
    successes = await asyncio.wait_for(open_loop_writes(write, stop, interval=0.005), 10)
    return unavailability_gaps(successes, [killed_at])[0], sends


def test_writes_keep_going_while_earlier_ones_hang_so_the_gap_is_the_outage():
    # A closed-loop writer (each worker waits for its answer) would have every worker
    # stuck on a hanging write, and would measure its own timeout instead.
    gap, sends = asyncio.run(_outage(0.1, 0.3, hang=True))
    assert 0.3 <= gap < 0.3 + 0.25, gap
    assert len(sends) > 60  # about 180 at 200/s for 0.9 s


def test_a_late_loop_does_not_send_the_writes_it_missed_in_a_burst():
    sends: list[float] = []

    async def write(k: int) -> bool:
        sends.append(time.monotonic())
        if k == 5:
            time.sleep(0.2)  # holds the event loop: 40 writes come due meanwhile
        return True

    async def run() -> None:
        stop_at = time.monotonic() + 0.5
        await open_loop_writes(write, lambda: time.monotonic() >= stop_at, interval=0.005)

    asyncio.run(run())
    after_stall = [t for t in sends if sends[5] + 0.2 <= t < sends[5] + 0.21]
    assert len(after_stall) <= 4, len(after_stall)


def test_the_writer_stops_sending_at_its_in_flight_bound():
    started: list[int] = []

    async def write(k: int) -> bool:
        started.append(k)
        await asyncio.sleep(0.3)
        return True

    async def run() -> list[tuple[float, float]]:
        stop_at = time.monotonic() + 0.2
        return await open_loop_writes(
            write, lambda: time.monotonic() >= stop_at, interval=0.001, max_in_flight=10
        )

    successes = asyncio.run(run())
    assert len(started) == 10
    assert len(successes) == 10  # the writer waits for what it sent

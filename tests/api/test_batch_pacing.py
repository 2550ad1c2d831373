"""A key at its limit has its batches spread at its rate, not proposed in bursts.

Issue 12's fairness bound: one client at its limit may not push another's p99
beyond 2x. A key that has spent half its burst is at its limit; each of its
batches is proposed in pieces of ``API_BATCH_YIELD_EVERY`` orders spaced at the
key's rate (``RateLimiter.pace``), so that the cluster sees its orders as an
even load, and another client's order waits behind one piece, not a whole
batch, on every replica (``exchange bench fairness`` measures the effect). A key
with headroom, or without a limit, still has its batch proposed as one entry.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

import pytest
from api_fakes import ALICE, BOB, EngineService, far_ioc_sell
from exchange_node.api.auth import RateLimiter
from exchange_node.limits import API_BATCH_YIELD_EVERY, API_PACE_MAX_SPAN_S
from exchange_node.service import NotLeader, Timeout

PIECE = API_BATCH_YIELD_EVERY


def order(k: int, client: str = "a") -> dict[str, Any]:
    return far_ioc_sell(f"{client}-{k}")


def batch(n: int, start: int = 0) -> dict[str, Any]:
    return {"orders": [order(start + k) for k in range(n)]}


# ---------------------------------------------------------------------- the pace itself


def test_a_key_with_half_its_burst_left_is_not_paced():
    now = [0.0]
    limiter = RateLimiter(rate=1000, burst=1000, clock=lambda: now[0])
    assert limiter.debit("k", 499) == 0
    assert limiter.pace("k", 500, PIECE) is None  # 501 left: one entry, at once
    assert RateLimiter(rate=0, burst=1).pace("k", 500, PIECE) is None  # no limit


def test_a_key_at_its_limit_gets_pieces_spaced_at_its_rate_after_its_earlier_ones():
    now = [10.0]
    limiter = RateLimiter(rate=1000, burst=1000, clock=lambda: now[0])
    limiter.debit("k", 600)
    assert limiter.pace("k", 500, PIECE) == pytest.approx([10.0, 10.1, 10.2, 10.3, 10.4])
    # The next batch, at once: after the last piece of this one, at the same rate.
    assert limiter.pace("k", 250, PIECE) == pytest.approx([10.5, 10.6, 10.7])
    # Later than its pace: it starts now.
    now[0] = 20.0
    limiter.debit("k", 900)
    assert limiter.pace("k", 150, PIECE) == pytest.approx([20.0, 20.1])
    assert limiter.pace("other", 500, PIECE) is None  # only this key


def test_one_batch_is_never_spread_beyond_the_max_span():
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=20, clock=lambda: now[0])
    limiter.debit("k", 500)  # deep in debt: its next requests wait that out instead
    times = limiter.pace("k", 500, PIECE)
    assert times is not None and len(times) == 5
    assert times[-1] - times[0] < API_PACE_MAX_SPAN_S
    assert times == sorted(times) and times[0] == 0.0


# ---------------------------------------------------------------------- through the API


class RecordingService(EngineService):
    """Every proposal with the time it was made; ``fail_from`` makes the n-th and
    later proposals fail with ``failure``."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.fail_from: int | None = None
        self.failure: Exception = NotLeader(0, None)
        self.leader = True

    def leads(self) -> bool:
        return self.leader

    async def submit(
        self, commands: Sequence[Any], *, trace_carrier: dict[str, str] | None = None
    ) -> list[Any]:
        self.times.append(time.monotonic())
        self.sizes.append(len(commands))
        if self.fail_from is not None and len(self.times) > self.fail_from:
            raise self.failure
        return await super().submit(commands, trace_carrier=trace_carrier)


async def test_a_batch_with_headroom_is_one_entry(make_client):
    service = RecordingService()
    client, _ = await make_client(service, rate_limit_per_second=1000, rate_limit_burst=2000)
    response = await client.post("/v1/orders/batch", json=batch(500), headers=ALICE)
    assert response.status == 200
    assert [len(c) for c in service.submitted] == [500]


# The keys below refill 100 tokens a second from a burst of 1,000: a first batch of 500
# leaves half the burst (not paced); the next, sent at once, finds less than half left
# however slow the machine (a second's refill is 100), so it is paced.
SLOW = {"rate_limit_per_second": 100, "rate_limit_burst": 1000}


async def test_a_batch_at_the_limit_goes_in_pieces_and_another_client_gets_in_between(
    make_client,
):
    service = RecordingService()
    client, _ = await make_client(service, **SLOW)
    first = await client.post("/v1/orders/batch", json=batch(500), headers=ALICE)
    assert first.status == 200 and [len(c) for c in service.submitted] == [500]

    # Half the burst is spent now: the next batch is paced (3 pieces over at most 1 s).
    paced = asyncio.ensure_future(
        client.post("/v1/orders/batch", json=batch(300, start=500), headers=ALICE)
    )
    await asyncio.sleep(0.05)
    other = await client.post("/v1/orders", json=order(0, "b"), headers=BOB)
    assert other.status == 200
    response = await paced
    assert response.status == 200
    results = (await response.json())["results"]
    assert len(results) == 300 and all(r["status"] == "EXPIRED" for r in results)  # IOC
    proposed = [
        c.client_order_id for cs in service.submitted[1:] for c in cs if c.client_id == "alice"
    ]
    assert proposed == [f"a-{k}" for k in range(500, 800)]  # in order

    sizes = [(len(c), c[0].client_id) for c in service.submitted[1:]]
    assert sizes == [(100, "alice"), (1, "bob"), (100, "alice"), (100, "alice")]
    proposals = zip(service.times[1:], service.submitted[1:], strict=True)
    alice = [t for t, c in proposals if c[0].client_id == "alice"]
    gaps = [b - a for a, b in itertools.pairwise(alice)]
    # 100 orders at 100/s would be 1 s apart; one batch spans API_PACE_MAX_SPAN_S at most.
    assert all(gap >= API_PACE_MAX_SPAN_S / 3 - 0.01 for gap in gaps), gaps


async def test_a_failed_piece_stops_the_batch_and_answers_each_order(make_client):
    service = RecordingService()
    client, _ = await make_client(service, **SLOW)
    await client.post("/v1/orders/batch", json=batch(500), headers=ALICE)
    service.fail_from = 2  # the first piece of the next batch passes, the second fails
    response = await client.post("/v1/orders/batch", json=batch(400, start=500), headers=ALICE)
    assert response.status == 200
    results = (await response.json())["results"]
    assert len(results) == 400
    assert all(r["status"] == "EXPIRED" for r in results[:100])
    assert all(r["status"] == 503 and r["error"]["code"] == "no_leader" for r in results[100:])
    assert len(service.times) == 3  # the third and fourth pieces were never proposed


async def test_a_batch_none_of_whose_pieces_applied_gets_the_error_whole(make_client):
    service = RecordingService()
    client, _ = await make_client(service, **SLOW)
    await client.post("/v1/orders/batch", json=batch(500), headers=ALICE)
    service.fail_from = 1
    service.failure = Timeout("deadline")
    response = await client.post("/v1/orders/batch", json=batch(300, start=500), headers=ALICE)
    assert response.status == 504
    assert (await response.json())["error"]["code"] == "timeout"
    assert service.sizes == [500, 100]  # paced: its first piece failed, no other was proposed


async def test_a_follower_does_not_pace_it_forwards_the_batch_whole(make_client):
    service = RecordingService()
    client, _ = await make_client(service, **SLOW)
    await client.post("/v1/orders/batch", json=batch(500), headers=ALICE)
    service.leader, service.fail_from = False, 1  # deposed: every proposal is refused
    response = await client.post("/v1/orders/batch", json=batch(300, start=500), headers=ALICE)
    assert response.status == 503  # no leader known to forward to
    assert (await response.json())["error"]["code"] == "no_leader"
    assert service.sizes == [500, 300]  # tried whole, as the leader would get it

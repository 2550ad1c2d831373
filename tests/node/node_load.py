"""A client that keeps orders flowing into a local cluster while faults happen.

``OrderLoad`` runs in its own thread with its own event loop, so a test can
kill, freeze and restart processes with blocking calls meanwhile. Alice buys
and Bob sells around one price, so most orders trade. Every order has a
unique client order id and is retried (same id, so exactly-once) on any live
node until the cluster answers it; only a 200 counts as acknowledged.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from exchange_node.tools.local import LocalCluster

RETRYABLE = {421, 429, 500, 502, 503, 504}


def _retryable(key: str) -> bool:
    return not key[:3].isdigit() or int(key[:3]) in RETRYABLE


@dataclass
class Ack:
    client: str
    body: dict[str, Any]
    answer: dict[str, Any]


def order_body(seq: int, prefix: str) -> tuple[str, dict[str, Any]]:
    client = "alice" if seq % 2 == 0 else "bob"
    side = "BUY" if client == "alice" else "SELL"
    offset = seq % 5 if side == "BUY" else -(seq % 5)
    return client, {
        "symbol": "BTC-USD",
        "side": side,
        "price": 50_000 + offset,
        "quantity": 1 + seq % 3,
        "client_order_id": f"{prefix}-{seq}",
    }


def fill_ids(answer: dict[str, Any]) -> list[int]:
    return [e["trade_id"] for e in answer.get("events", []) if e["type"] == "fill"]


@dataclass
class OrderLoad:
    cluster: LocalCluster
    prefix: str = "load"
    concurrency: int = 8
    pace_seconds: float = 0.0
    avoid: set[int] = field(default_factory=set)
    """Node ids not to send to (for example a frozen one)."""
    acked: dict[str, Ack] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._seq = itertools.count()

    def start(self) -> OrderLoad:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "load thread did not stop"
        unexpected = {k: v for k, v in self.errors.items() if not _retryable(k)}
        assert not unexpected, f"answers that are neither success nor retryable: {unexpected}"

    def wait_for_acks(self, count: int, timeout: float = 60.0) -> None:
        """Block until ``count`` more orders are acknowledged (a progress check, not a timing one)."""
        target = len(self.acked) + count
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while len(self.acked) < target:
                if deadline.wait(0.05):
                    raise AssertionError(
                        f"only {len(self.acked)}/{target} orders acknowledged; errors {self.errors}"
                    )
        finally:
            timer.cancel()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._worker(session) for _ in range(self.concurrency)))

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            seq = next(self._seq)
            client, body = order_body(seq, self.prefix)
            answer = await submit_until_answered(
                session, self.cluster, client, body, self._stop, self.errors, self.avoid
            )
            if answer is not None:
                self.acked[body["client_order_id"]] = Ack(client, body, answer)
            if self.pace_seconds:
                await asyncio.sleep(self.pace_seconds)


async def submit_until_answered(
    session: aiohttp.ClientSession,
    cluster: LocalCluster,
    client: str,
    body: dict[str, Any],
    stop: threading.Event | None = None,
    errors: dict[str, int] | None = None,
    avoid: set[int] | None = None,
) -> dict[str, Any] | None:
    """POST the order to live nodes until one answers 200 (None if stopped first)."""
    token = cluster.key_for(client)
    errors = errors if errors is not None else {}
    while stop is None or not stop.is_set():
        alive = [
            m
            for m in cluster.spec.members
            if cluster.alive(m.node_id) and m.node_id not in (avoid or ())
        ]
        if not alive:
            await asyncio.sleep(0.05)
            continue
        member = random.choice(alive)
        try:
            async with session.post(
                f"http://{member.http}/v1/orders",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                doc = await resp.json(content_type=None)
                if resp.status == 200:
                    return doc  # type: ignore[no-any-return]
                key = str(resp.status)
                if resp.status not in RETRYABLE:
                    key = f"{resp.status} {json.dumps(doc)[:300]} from node {member.node_id}"
                errors[key] = errors.get(key, 0) + 1
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            name = type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
        await asyncio.sleep(0.02)
    return None


def verify_acknowledged(cluster: LocalCluster, acked: dict[str, Ack], node_id: int) -> None:
    """Every acknowledged order exists with the same order id and the same fills.

    Re-submitting an order with its client order id returns the engine's
    retained original result (exactly-once); a lost or re-executed order would
    come back with another order id or other trade ids.
    """

    async def check() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            sem = asyncio.Semaphore(16)

            async def one(coid: str, ack: Ack) -> None:
                async with sem:
                    answer = await submit_until_answered(session, cluster, ack.client, ack.body)
                assert answer is not None
                assert answer["order_id"] == ack.answer["order_id"], (coid, answer, ack.answer)
                assert answer["log_index"] == ack.answer["log_index"], (coid, answer, ack.answer)
                assert fill_ids(answer) == fill_ids(ack.answer), (coid, answer, ack.answer)

            await asyncio.gather(*(one(c, a) for c, a in acked.items()))

    asyncio.run(check())
    # Alice only buys from Bob and Bob only sells to Alice: positions mirror each other,
    # and the trade ids they saw as takers are unique.
    _, alice = cluster.request(node_id, "GET", "/v1/positions", token=cluster.key_for("alice"))
    _, bob = cluster.request(node_id, "GET", "/v1/positions", token=cluster.key_for("bob"))
    a = alice["positions"].get("BTC-USD", {}).get("quantity", 0)
    b = bob["positions"].get("BTC-USD", {}).get("quantity", 0)
    assert a == -b, (alice, bob)
    trade_ids = [t for ack in acked.values() for t in fill_ids(ack.answer)]
    assert len(trade_ids) == len(set(trade_ids)), "a fill was reported twice"

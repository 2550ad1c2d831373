"""An in-test ExchangeService backed by a REAL engine.Engine.

Each ``submit`` is one log entry: the commands are encoded with the engine's
own wire format and applied with ``Engine.apply_entry`` at the next index,
then published to subscribers, exactly as the shell does after commit. Tests
can make it raise the service errors to check how the API maps them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from exchange_node.engine.commands import AddSymbol, encode_batch
from exchange_node.engine.engine import Engine
from exchange_node.service import MemberStatus, NodeStatus, NotLeader

SYMBOLS = (
    AddSymbol("BTC-USD", tick_size=5, lot_size=1, price_band_bps=0, reference_price=50_000),
    AddSymbol("ETH-USD", tick_size=1, lot_size=10, price_band_bps=0, reference_price=3_000),
)

KEYS = {"tok-alice": "alice", "tok-bob": "bob", "tok-carol": "carol"}
ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}
CAROL = {"Authorization": "Bearer tok-carol"}


class _Subscription:
    def __init__(self, owner: EngineService, max_queue: int) -> None:
        self.owner = owner
        self.max_queue = max_queue
        self.items: deque[Any] = deque()
        self.ready = asyncio.Event()
        self.closed = False

    def offer(self, item: tuple[int, list[Any]]) -> None:
        if self.closed:
            return
        if len(self.items) >= self.max_queue:
            self.close()
            return
        self.items.append(item)
        self.ready.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.items.clear()
            self.items.append(None)
            self.ready.set()
            if self in self.owner.subscribers:
                self.owner.subscribers.remove(self)

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> tuple[int, list[Any]]:
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        item = self.items.popleft()
        if item is None:
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]


class EngineService:
    """ExchangeService over one real Engine; no Raft (every submit commits at once)."""

    def __init__(self, engine: Engine | None = None, *, node_id: int = 1) -> None:
        self._engine = engine or Engine(SYMBOLS)
        self.node_id = node_id
        self.index = 0
        self.clock_ns = 1_700_000_000_000_000_000
        self.subscribers: list[_Subscription] = []
        self.subscribe_calls = 0
        self.submitted: list[list[Any]] = []
        self.barriers = 0
        self.fail_submit: Exception | None = None
        self.fail_read: Exception | None = None

    @property
    def engine(self) -> Engine:
        return self._engine

    async def submit(
        self, commands: Sequence[Any], *, trace_carrier: dict[str, str] | None = None
    ) -> list[Any]:
        if self.fail_submit is not None:
            raise self.fail_submit
        return self.apply(list(commands))

    def leads(self) -> bool:
        return self.fail_submit is None

    def apply(self, commands: list[Any]) -> list[Any]:
        """Commit and apply one entry now (also usable directly by tests)."""
        self.submitted.append(commands)
        self.index += 1
        self.clock_ns += 1_000_000
        results = self._engine.apply_entry(self.index, encode_batch(self.clock_ns, commands))
        for sub in list(self.subscribers):
            sub.offer((self.index, results))
        return results

    @property
    def applied_index(self) -> int:
        return self.index

    async def read_barrier(self) -> None:
        if self.fail_read is not None:
            raise self.fail_read
        self.barriers += 1

    def subscribe(self, max_queue: int = 10_000) -> _Subscription:
        self.subscribe_calls += 1
        sub = _Subscription(self, max_queue)
        self.subscribers.append(sub)
        return sub

    def status(self) -> NodeStatus:
        # A follower (fail_submit is NotLeader) names that leader and its address, as a
        # real node's status would: the forwarder's leader watch compares the two.
        leader, leader_http = self.node_id, None
        if isinstance(self.fail_submit, NotLeader) and self.fail_submit.leader_id:
            leader, leader_http = self.fail_submit.leader_id, self.fail_submit.leader_http

        def http(member: int) -> str:
            return (leader_http if member == leader and leader_http else None) or (
                f"127.0.0.1:808{member}"
            )

        return NodeStatus(
            node_id=self.node_id,
            name=f"node-{self.node_id}",
            role="leader" if leader == self.node_id else "follower",
            term=3,
            leader=leader,
            commit_index=self.index,
            applied_index=self.index,
            state_hash="ab" * 32,
            diverged=False,
            members=[
                MemberStatus(1, "node-1", "127.0.0.1:7071", http(1), True, self.index, 0, True),
                MemberStatus(2, "node-2", "127.0.0.1:7072", http(2), True, self.index, 0, True),
                MemberStatus(3, "node-3", "127.0.0.1:7073", http(3), False, 0, self.index, False),
            ],
        )

    def healthy(self) -> bool:
        return True

    def ready(self) -> tuple[bool, str]:
        return True, "ok"


def far_ioc_sell(client_order_id: str, **over: Any) -> dict[str, Any]:
    """A new order's body: an IOC SELL far above any bid, so it never fills and never rests."""
    return {
        "symbol": "BTC-USD",
        "side": "SELL",
        "time_in_force": "IOC",
        "price": 59_000,
        "quantity": 1,
        "client_order_id": client_order_id,
        **over,
    }

"""The SDK against a real 3-node cluster: exactly-once retries, leader-aware writes,
typed results and errors, a leader killed mid-stream, the WebSocket book."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from exchange_client import (
    AsyncClient,
    AuthError,
    BadRequestError,
    Client,
    GapEvent,
    MarketStream,
    OrderEvents,
    RejectedError,
    TradesEvent,
)
from exchange_node.tools.local import LocalCluster, free_ports

pytestmark = pytest.mark.slow  # real node processes


def _endpoints(cluster: LocalCluster, only: list[int] | None = None) -> list[str]:
    return [f"http://{m.http}" for m in cluster.spec.members if only is None or m.node_id in only]


def _follower(cluster: LocalCluster) -> int:
    leader = cluster.wait_for_leader(30)
    return next(m.node_id for m in cluster.spec.members if m.node_id != leader)


def test_sync_client_exactly_once_and_typed_results(cluster: LocalCluster) -> None:
    with Client(_endpoints(cluster), cluster.key_for("alice")) as ex:
        symbols = ex.symbols()
        assert symbols["BTC-USD"].price_scale == 100
        first = ex.place_order("BTC-USD", "SELL", 3, price=50_500, client_order_id="x-1")
        again = ex.place_order("BTC-USD", "SELL", 3, price=50_500, client_order_id="x-1")
        assert first.status == "NEW" and again.order_id == first.order_id
        assert again.log_index == first.log_index  # the original result, not a new entry
        open_orders = [o for o in ex.open_orders("BTC-USD") if o.client_order_id == "x-1"]
        assert len(open_orders) == 1 and open_orders[0].leaves_quantity == 3
    with Client(_endpoints(cluster), cluster.key_for("bob")) as ex:
        taken = ex.place_order("BTC-USD", "BUY", 2, price=50_500)
        assert taken.status == "FILLED" and taken.filled_quantity == 2
        assert taken.fills[0].liquidity == "TAKER" and taken.fills[0].price == 50_500
        assert ex.positions()["BTC-USD"].quantity == 2


def test_errors_are_typed_and_name_the_field(cluster: LocalCluster) -> None:
    with Client(_endpoints(cluster), cluster.key_for("alice")) as ex:
        with pytest.raises(BadRequestError) as bad:
            ex.place_order("BTC-USD", "BUY", 0, price=50_000)
        assert bad.value.status == 400 and bad.value.field == "quantity"
        ex.place_order("BTC-USD", "SELL", 1, price=50_900)
        with pytest.raises(RejectedError) as rejected:
            ex.place_order("BTC-USD", "BUY", 1, price=50_950, post_only=True)
        assert rejected.value.reason == "POST_ONLY_WOULD_TAKE"
    with Client(_endpoints(cluster), "not-a-key") as ex, pytest.raises(AuthError):
        ex.positions()


async def test_writes_go_to_the_leader_even_from_a_follower_endpoint(
    cluster: LocalCluster,
) -> None:
    follower = _follower(cluster)
    async with AsyncClient(_endpoints(cluster, [follower]), cluster.key_for("carol")) as ex:
        for _ in range(5):
            await ex.place_order("BTC-USD", "BUY", 1, price=48_000)
        assert ex.stats.leader_direct == 5 and ex.stats.forwarded == 0
    # Without leader routing the follower forwards each write.
    async with AsyncClient(
        _endpoints(cluster, [follower]), cluster.key_for("carol"), leader_aware=False
    ) as ex:
        for _ in range(3):
            await ex.place_order("BTC-USD", "BUY", 1, price=48_000)
        assert ex.stats.forwarded == 3


async def test_stream_keeps_the_book_and_resyncs_after_a_gap(cluster: LocalCluster) -> None:
    eps = _endpoints(cluster)
    async with (
        AsyncClient(eps, cluster.key_for("dave")) as ex,
        MarketStream(eps, books=["ETH-USD"]) as stream,
    ):
        spec = (await ex.symbols())["ETH-USD"]
        placed = 0
        dropped = False
        original = stream._events

        async def drop_one_delta(doc):  # a lost message: the next delta's seq jumps
            nonlocal dropped
            if doc.get("type") == "delta" and not dropped and placed >= 3:
                dropped = True
                return []
            return await original(doc)

        stream._events = drop_one_delta  # type: ignore[method-assign]

        async def place() -> None:
            nonlocal placed
            for i in range(8):
                price = spec.reference_price - (10 + i) * spec.tick_size
                await ex.place_order("ETH-USD", "BUY", spec.lot_size, price=price)
                placed += 1
                await asyncio.sleep(0.05)

        gaps = 0

        async def consume() -> None:
            nonlocal gaps
            async for event in stream:
                gaps += isinstance(event, GapEvent)

        consumer = asyncio.create_task(consume())
        try:
            await place()
            book = stream.books["ETH-USD"]
            for _ in range(200):
                rest = await ex.book("ETH-USD", depth=1000)
                if book.synced and book.seq == rest.seq:
                    break
                await asyncio.sleep(0.05)
            assert book.synced and book.seq == rest.seq, (book.seq, rest.seq, stream.stats)
            assert book.view(1000) == rest
        finally:
            consumer.cancel()
        assert dropped and gaps == 1 and stream.stats.resubscribes == 1, stream.stats
        assert stream.stats.snapshots == 2


async def test_stream_delivers_your_own_order_events_and_trades(cluster: LocalCluster) -> None:
    eps = _endpoints(cluster)
    async with (
        AsyncClient(eps, cluster.key_for("alice")) as alice,
        AsyncClient(eps, cluster.key_for("bob")) as bob,
        MarketStream(eps, cluster.key_for("alice"), trades=["BTC-USD"], orders=True) as stream,
    ):
        placed: list[str] = []
        seen_orders: set[str] = set()
        trades = []

        async def place() -> None:  # until the stream has seen one (it may subscribe late)
            while True:
                sold = await alice.place_order("BTC-USD", "SELL", 1, price=50_321)
                placed.append(sold.client_order_id)
                await bob.place_order("BTC-USD", "BUY", 1, price=50_321)
                await asyncio.sleep(0.2)

        placing = asyncio.create_task(place())
        try:
            async for event in stream:
                if isinstance(event, OrderEvents):
                    seen_orders |= {e.get("client_order_id") for e in event.events}
                    assert all(e.get("client_id", "alice") == "alice" for e in event.events)
                if isinstance(event, TradesEvent):
                    trades += [t for t in event.trades if t.price == 50_321]
                if seen_orders & set(placed) and trades:
                    break
        finally:
            placing.cancel()
        assert trades[0].quantity == 1 and trades[0].symbol == "BTC-USD"


async def test_orders_over_the_socket_are_exactly_once_and_typed(cluster: LocalCluster) -> None:
    eps = _endpoints(cluster)
    async with (
        MarketStream(eps, cluster.key_for("carol"), orders=True) as stream,
        AsyncClient(eps, cluster.key_for("carol")) as http,
    ):
        consumer = asyncio.create_task(_drain(stream))
        try:
            for _ in range(100):
                if stream.stats.connects:
                    break
                await asyncio.sleep(0.02)
            first = await stream.place_order("BTC-USD", "SELL", 2, price=52_000)
            again = await stream.place_order(
                "BTC-USD", "SELL", 2, price=52_000, client_order_id=first.client_order_id
            )
            assert first.status == "NEW" and again.order_id == first.order_id
            placed = await http.order_by_client_id(first.client_order_id)
            assert placed.order_id == first.order_id and placed.quantity == 2
            with pytest.raises(RejectedError) as rejected:
                await stream.place_order("BTC-USD", "BUY", 1, price=52_000, post_only=True)
            assert rejected.value.reason == "POST_ONLY_WOULD_TAKE"
            with pytest.raises(BadRequestError) as bad:
                await stream.place_order("BTC-USD", "BUY", 0, price=50_000)
            assert bad.value.field == "quantity"
        finally:
            consumer.cancel()


async def test_an_unreachable_leader_address_falls_back_to_forwarding(
    cluster: LocalCluster,
) -> None:
    """Behind a port-forward the leader's own address cannot be reached: after three
    misses the client writes through its endpoints (a follower forwards) for a while."""
    follower = _follower(cluster)
    async with AsyncClient(_endpoints(cluster, [follower]), cluster.key_for("carol")) as ex:

        async def unreachable_leader() -> str:
            return f"http://127.0.0.1:{free_ports(1)[0]}"

        ex._find_leader = unreachable_leader  # type: ignore[method-assign]
        for _ in range(6):
            await ex.place_order("BTC-USD", "BUY", 1, price=47_000)
        assert ex.stats.unreachable == 3 and ex.stats.leader_direct == 0
        assert ex.stats.forwarded == 6 and ex.stats.failures == 0


async def test_failover_places_every_order_once_and_the_stream_reconnects(
    cluster: LocalCluster,
) -> None:
    """Kill -9 the leader while a client writes through every endpoint and a stream
    reads from it: every order gets an answer, each client order id is one order,
    the client goes back to writing to the new leader directly, and the stream
    reconnects to another node with a book equal to the REST one."""
    leader = cluster.wait_for_leader(30)
    first = [f"http://{cluster.member(leader).http}"]
    rest = [e for e in _endpoints(cluster) if e not in first]
    async with (
        AsyncClient(_endpoints(cluster), cluster.key_for("bench1"), timeout=3.0) as ex,
        MarketStream(first + rest, books=["ETH-USD"], reconnect_delay=0.05) as stream,
    ):
        consumer = asyncio.create_task(_drain(stream))
        ids = []
        for i in range(40):
            if i == 10:
                cluster.kill(leader)
            result = await ex.place_order("ETH-USD", "BUY", 1, price=2_500 + i % 5)
            ids.append((result.client_order_id, result.order_id))
        assert ex.stats.retries + ex.stats.unreachable > 0
        leader_direct = ex.stats.leader_direct
        open_orders = await ex.open_orders("ETH-USD")
        book = stream.books["ETH-USD"]
        for _ in range(200):
            rest_book = await ex.book("ETH-USD", depth=1000)
            if book.synced and book.seq == rest_book.seq:
                break
            await asyncio.sleep(0.05)
        consumer.cancel()
        assert stream.stats.connects >= 2 and book.view(1000) == rest_book, stream.stats
    assert len({order_id for _, order_id in ids}) == 40
    by_client_id: dict[str, int] = {}
    for order in open_orders:
        by_client_id.setdefault(order.client_order_id, 0)
        by_client_id[order.client_order_id] += 1
    assert {cid for cid, _ in ids} <= set(by_client_id)
    assert all(count == 1 for count in by_client_id.values())
    # The client found the new leader and writes to it directly again.
    assert leader_direct > 30, leader_direct


async def _drain(stream: MarketStream) -> None:
    async for _ in stream:
        pass


def _python_blocks(markdown: str) -> list[str]:
    blocks, inside, current = [], False, []
    for line in markdown.splitlines():
        if line.strip() == "```python":
            inside, current = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("\n".join(current))
        elif inside:
            current.append(line)
    return blocks


def test_docs_examples_run(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every Python block of docs/client.md, run as written against the cluster."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "client.md"
    blocks = _python_blocks(doc.read_text())
    assert len(blocks) >= 3
    monkeypatch.setenv("EXCHANGE_ENDPOINTS", ",".join(_endpoints(cluster)))
    monkeypatch.setenv("EXCHANGE_TOKEN", cluster.key_for("alice"))
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {"__name__": "__main__"})
        assert capsys.readouterr().out.strip(), block

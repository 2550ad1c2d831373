"""The WebSocket channel: book snapshot then gap-free deltas, trades, own order events,
order entry and cancel over the socket, slow consumers dropped, one upstream iterator."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from api_fakes import ALICE, BOB, EngineService
from exchange_node.engine.commands import NewOrder, OrderType, Side, TimeInForce
from exchange_node.service import NotLeader

SELL = {"symbol": "BTC-USD", "side": "SELL", "price": 50_000, "quantity": 3}
BUY = {"symbol": "BTC-USD", "side": "BUY", "price": 50_000, "quantity": 2}
SAFETY = 10  # seconds: a hang fails the test instead of blocking; never an assertion on time


async def recv(ws: Any, **match: Any) -> dict[str, Any]:
    """The next message whose fields equal ``match`` (others are skipped)."""
    while True:
        message = await ws.receive(timeout=SAFETY)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        data: dict[str, Any] = message.json()
        if all(data.get(k) == v for k, v in match.items()):
            return data


async def connect(client: Any, headers: dict[str, str] | None = None, path: str = "/v1/ws") -> Any:
    ws = await client.ws_connect(path, headers=headers or {})
    hello = await recv(ws)
    assert hello["type"] == "hello"
    return ws


async def test_book_snapshot_then_deltas_with_consecutive_seq(api):
    client, _ = api
    await client.post("/v1/orders", json={**SELL, "price": 50_010}, headers=ALICE)
    ws = await connect(client)
    await ws.send_json({"op": "subscribe", "id": 1, "channels": ["book:BTC-USD"]})
    assert (await recv(ws))["type"] == "subscribed"
    snapshot = await recv(ws, type="snapshot")
    assert snapshot["channel"] == "book:BTC-USD"
    assert snapshot["asks"] == [[50_010, 3]] and snapshot["bids"] == []
    seq = snapshot["seq"]

    await client.post("/v1/orders", json=SELL, headers=ALICE)
    await client.post("/v1/orders", json=BUY, headers=BOB)
    await client.post("/v1/orders", json={**BUY, "price": 49_000}, headers=BOB)
    book = {("SELL", 50_010): 3}
    updates: list[dict[str, Any]] = []
    while len(updates) < 3:
        delta = await recv(ws, type="delta")
        updates += delta["updates"]
    for update in updates:
        seq += 1
        assert update["seq"] == seq  # no gap, no duplicate
        book[(update["side"], update["price"])] = update["quantity"]
    live = {k: v for k, v in book.items() if v}
    rest = await (await client.get("/v1/book/BTC-USD")).json()
    assert live == {
        **{("SELL", p): q for p, q in rest["asks"]},
        **{("BUY", p): q for p, q in rest["bids"]},
    }
    assert rest["seq"] == seq
    await ws.close()


async def test_snapshot_is_not_followed_by_deltas_it_already_contains(api):
    client, service = api
    ws = await connect(client)
    await ws.send_json({"op": "subscribe", "channels": ["trades:BTC-USD"]})
    await recv(ws, type="subscribed")
    # Apply entries the hub has not yet delivered, then ask for a snapshot: the
    # snapshot includes them, and their deltas must not be sent again.
    for price in (50_000, 50_005, 50_010):
        service.apply(
            [
                NewOrder(
                    "alice",
                    f"o-{price}",
                    "BTC-USD",
                    Side.SELL,
                    OrderType.LIMIT,
                    TimeInForce.GTC,
                    price,
                    1,
                )
            ]
        )
    await ws.send_json({"op": "subscribe", "channels": ["book:BTC-USD"]})
    snapshot = await recv(ws, type="snapshot")
    assert len(snapshot["asks"]) == 3
    await client.post("/v1/orders", json={**SELL, "price": 50_015}, headers=ALICE)
    delta = await recv(ws, type="delta")
    assert [u["seq"] for u in delta["updates"]] == [snapshot["seq"] + 1]
    await ws.close()


async def test_trades_channel_has_no_client_ids(api):
    client, _ = api
    ws = await connect(client)
    await ws.send_json({"op": "subscribe", "channels": ["trades:BTC-USD"]})
    await recv(ws, type="subscribed")
    await client.post("/v1/orders", json=SELL, headers=ALICE)
    await client.post("/v1/orders", json=BUY, headers=BOB)
    trades = await recv(ws, type="trades")
    assert [(t["price"], t["quantity"], t["aggressor_side"]) for t in trades["trades"]] == [
        (50_000, 2, "BUY")
    ]
    assert "alice" not in str(trades) and "bob" not in str(trades)
    await ws.close()


async def test_orders_channel_carries_only_your_own_events(api):
    client, _ = api
    alice_ws = await connect(client, ALICE)
    bob_ws = await connect(client, path="/v1/ws?token=tok-bob")  # browsers: token in the query
    for ws in (alice_ws, bob_ws):
        await ws.send_json({"op": "subscribe", "channels": ["orders"]})
        await recv(ws, type="subscribed")
    await client.post("/v1/orders", json={**SELL, "client_order_id": "a-1"}, headers=ALICE)
    await client.post("/v1/orders", json={**BUY, "client_order_id": "b-1"}, headers=BOB)

    accepted = await recv(alice_ws, type="events")
    assert [e["type"] for e in accepted["events"]] == ["accepted"]
    maker_fill = await recv(alice_ws, type="events")
    assert maker_fill["events"] == [
        {
            "type": "fill",
            "trade_id": maker_fill["events"][0]["trade_id"],
            "order_id": 1,
            "symbol": "BTC-USD",
            "price": 50_000,
            "quantity": 2,
            "aggressor_side": "BUY",
            "liquidity": "MAKER",
            "timestamp_ns": maker_fill["events"][0]["timestamp_ns"],
        }
    ]
    bob_events = await recv(bob_ws, type="events")
    assert [e["type"] for e in bob_events["events"]] == ["accepted", "fill"]
    assert bob_events["events"][1]["liquidity"] == "TAKER"
    assert "alice" not in str(bob_events) and "bob" not in str(maker_fill)
    for ws in (alice_ws, bob_ws):
        await ws.close()


async def test_order_entry_and_cancel_over_the_socket(api):
    client, service = api
    ws = await connect(client, ALICE)
    await ws.send_json({"op": "order", "id": "o1", **SELL, "client_order_id": "ws-1"})
    ack = await recv(ws, type="ack", id="o1")
    assert ack["op"] == "order" and ack["status"] == 200
    assert ack["body"]["status"] == "NEW"
    order_id = ack["body"]["order_id"]
    (command,) = service.submitted[-1]
    assert command.client_id == "alice"

    await ws.send_json({"op": "order", "id": "bad", **SELL, "quantity": 0})
    error = await recv(ws, id="bad")
    assert error["type"] == "error" and error["status"] == 400
    assert error["error"]["field"] == "quantity"

    await ws.send_json({"op": "cancel", "id": 7, "order_id": order_id})
    ack = await recv(ws, type="ack", id=7)
    assert ack["status"] == 200 and ack["body"]["status"] == "CANCELLED"
    await ws.send_json({"op": "cancel", "id": 8, "client_order_id": "ws-1"})
    assert (await recv(ws, id=8))["status"] == 404
    await ws.close()


async def test_socket_protocol_errors_name_the_problem(api):
    client, _ = api
    ws = await connect(client)  # anonymous: market data only
    await ws.send_str("{not json")
    assert (await recv(ws))["error"]["code"] == "malformed_json"
    await ws.send_json({"op": "dance"})
    assert (await recv(ws))["error"]["field"] == "op"
    await ws.send_json({"op": "subscribe", "channels": ["book:NOPE"]})
    assert (await recv(ws))["error"]["code"] == "unknown_symbol"
    await ws.send_json({"op": "subscribe", "channels": ["weather"]})
    assert (await recv(ws))["error"]["field"] == "channels"
    await ws.send_json({"op": "subscribe", "channels": "book:BTC-USD"})
    assert (await recv(ws))["error"]["code"] == "invalid_type"
    await ws.send_json({"op": "subscribe", "channels": ["orders"]})
    assert (await recv(ws))["status"] == 401
    await ws.send_json({"op": "order", "id": 1, **SELL})
    assert (await recv(ws))["status"] == 401
    await ws.send_json({"op": "ping", "id": 5})
    assert await recv(ws) == {"type": "pong", "id": 5}
    await ws.close()


async def test_invalid_token_or_plain_get_is_refused_before_upgrade(api):
    client, _ = api
    response = await client.get("/v1/ws?token=nope")
    assert response.status == 401
    response = await client.get("/v1/ws")
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "Upgrade"


async def test_all_connections_share_one_upstream_subscription(api):
    client, service = api
    sockets = [await connect(client) for _ in range(3)]
    for ws in sockets:
        await ws.send_json({"op": "subscribe", "channels": ["book:BTC-USD"]})
        await recv(ws, type="snapshot")
    await client.post("/v1/orders", json=SELL, headers=ALICE)
    for ws in sockets:
        await recv(ws, type="delta")
    assert service.subscribe_calls == 1
    for ws in sockets:
        await ws.close()


async def test_slow_consumer_is_disconnected_with_a_close_code(make_client):
    client, service = await make_client(ws_send_queue=4)
    slow = await connect(client)
    await slow.send_json({"op": "subscribe", "channels": ["book:BTC-USD"]})
    await recv(slow, type="snapshot")
    other = await connect(client)
    # Ten entries committed back to back: the hub fans them out in one go, far
    # more than a 4-message queue holds before the writer gets to run.
    for i in range(10):
        service.apply(
            [
                NewOrder(
                    "alice",
                    f"s-{i}",
                    "BTC-USD",
                    Side.SELL,
                    OrderType.LIMIT,
                    TimeInForce.GTC,
                    50_000 + 5 * i,
                    1,
                )
            ]
        )
    while True:
        message = await slow.receive(timeout=SAFETY)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    assert slow.close_code == 4008
    assert message.extra == "slow consumer: send queue full"
    # Others are unaffected.
    await other.send_json({"op": "ping", "id": 1})
    assert (await recv(other))["type"] == "pong"
    await other.close()


async def test_follower_forwards_socket_orders_to_the_leader(make_client):
    leader_client, leader = await make_client()
    follower = EngineService(node_id=2)
    follower_client, _ = await make_client(follower)
    follower.fail_submit = NotLeader(1, f"127.0.0.1:{leader_client.port}")
    ws = await connect(follower_client, ALICE)
    await ws.send_json({"op": "order", "id": 1, **SELL})
    ack = await recv(ws, type="ack", id=1)
    assert ack["status"] == 200 and ack["body"]["status"] == "NEW"
    (command,) = leader.submitted[-1]
    assert command.client_id == "alice"
    await ws.send_json({"op": "cancel", "id": 2, "order_id": ack["body"]["order_id"]})
    assert (await recv(ws, type="ack", id=2))["body"]["status"] == "CANCELLED"
    await ws.close()


async def test_unsubscribe_stops_the_stream(api):
    client, _ = api
    ws = await connect(client)
    await ws.send_json({"op": "subscribe", "channels": ["book:BTC-USD", "trades:BTC-USD"]})
    await recv(ws, type="snapshot")
    await ws.send_json({"op": "unsubscribe", "id": 3, "channels": ["book:BTC-USD"]})
    assert (await recv(ws, id=3))["type"] == "unsubscribed"
    await client.post("/v1/orders", json=SELL, headers=ALICE)
    await client.post("/v1/orders", json=BUY, headers=BOB)
    # The next thing on the socket is the trade, not a book delta.
    message = await recv(ws)
    assert message["type"] == "trades"
    await ws.close()


def _sell(coid: str, price: int) -> NewOrder:
    return NewOrder("alice", coid, "BTC-USD", Side.SELL, OrderType.LIMIT, TimeInForce.GTC, price, 1)


async def test_hub_skips_deltas_already_in_the_snapshot_and_replayed_results():
    from exchange_node.api import API_KEY, ApiConfig, create_app
    from exchange_node.api.ws import Connection

    service = EngineService()
    hub = create_app(service, ApiConfig())[API_KEY].hub
    conn = Connection(hub, None, None, None, "127.0.0.1", None)  # type: ignore[arg-type]
    conn.subscriptions.add("book:BTC-USD")
    hub.book_subs["BTC-USD"] = {conn}

    first = service.apply([_sell("a", 50_000)])  # applied, not yet fanned out
    hub._send_snapshot(conn, "BTC-USD")
    snapshot = json.loads(conn.queue.popleft())
    assert snapshot["type"] == "snapshot" and snapshot["seq"] == 1
    hub.dispatch(1, first)
    assert not conn.queue  # seq 1 is in the snapshot

    second = service.apply([_sell("b", 50_005)])
    hub.dispatch(2, second)
    delta = json.loads(conn.queue.popleft())
    assert [u["seq"] for u in delta["updates"]] == [2]

    # Re-sending a known client order id returns the ORIGINAL result (log index 2):
    # it is not published again.
    replay = service.apply([_sell("b", 50_005)])
    assert replay[0].log_index == 2
    hub.dispatch(3, replay)
    assert not conn.queue


async def test_hub_resubscribes_and_resyncs_when_the_service_drops_it(api):
    client, service = api
    ws = await connect(client)
    await ws.send_json({"op": "subscribe", "channels": ["book:BTC-USD", "trades:BTC-USD"]})
    first = await recv(ws, type="snapshot")
    (upstream,) = service.subscribers
    upstream.close()  # what the shell does to a subscriber that fell too far behind
    resync = {m["type"]: m for m in [await recv(ws), await recv(ws)]}
    assert resync["gap"]["channel"] == "trades:BTC-USD"
    again = resync["snapshot"]
    assert again["seq"] == first["seq"]
    assert service.subscribe_calls == 2
    await client.post("/v1/orders", json=SELL, headers=ALICE)
    assert (await recv(ws, type="delta"))["updates"][0]["seq"] == first["seq"] + 1
    await ws.close()


async def test_socket_limits_rate_and_subscriptions(make_client):
    client, service = await make_client(
        rate_limit_per_second=0.001, rate_limit_burst=1, ws_max_subscriptions=2
    )
    ws = await connect(client, ALICE)
    await ws.send_json({"op": "order", "id": 1, **SELL})
    assert (await recv(ws, id=1))["status"] == 200
    await ws.send_json({"op": "order", "id": 2, **SELL})
    limited = await recv(ws, id=2)
    assert limited["status"] == 429 and limited["error"]["code"] == "rate_limited"
    assert limited["retry_after"] > 0
    assert len(service.submitted) == 1
    await ws.send_json(
        {"op": "subscribe", "channels": ["book:BTC-USD", "trades:BTC-USD", "book:ETH-USD"]}
    )
    assert (await recv(ws, type="error"))["error"]["field"] == "channels"
    await ws.send_json({"op": "subscribe", "channels": ["book:BTC-USD"]})
    assert (await recv(ws, type="error"))["status"] == 429  # subscribing is charged too
    await ws.close()


async def test_private_market_data_needs_a_key_on_the_socket_too(make_client):
    client, _ = await make_client(public_market_data=False)
    response = await client.get("/v1/ws")
    assert response.status == 401
    ws = await connect(client, path="/v1/ws?token=tok-alice")
    await ws.close()


async def test_shutdown_closes_sockets_and_gives_the_subscription_back(make_client):
    client, service = await make_client()
    ws = await connect(client)
    await ws.send_json({"op": "subscribe", "channels": ["book:BTC-USD"]})
    await recv(ws, type="snapshot")
    assert len(service.subscribers) == 1
    await client.close()
    message = await ws.receive(timeout=SAFETY)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert service.subscribers == []


async def test_connection_limit_refuses_one_more_socket(make_client):
    client, _ = await make_client(ws_max_connections=2)
    first, second = await connect(client), await connect(client)
    response = await client.get("/v1/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
    assert response.status == 503 and "Retry-After" in response.headers
    await first.close()
    await second.close()


async def test_a_book_snapshot_is_encoded_once_and_shared_by_subscribers():
    from exchange_node.api import API_KEY, ApiConfig, create_app
    from exchange_node.api.ws import Connection

    service = EngineService()
    hub = create_app(service, ApiConfig())[API_KEY].hub
    service.apply([_sell("a", 50_000)])
    conns = [
        Connection(hub, None, None, None, "127.0.0.1", None)  # type: ignore[arg-type]
        for _ in range(3)
    ]
    for conn in conns:
        hub._send_snapshot(conn, "BTC-USD")
    first, *others = [conn.queue[0] for conn in conns]
    assert all(other is first for other in others)  # one bytes object, not three
    assert sum(conn.queued_bytes for conn in conns) == 3 * len(first)
    service.apply([_sell("b", 50_005)])  # a new book seq: a new snapshot
    hub._send_snapshot(conns[0], "BTC-USD")
    assert conns[0].queue[1] is not first
    assert json.loads(conns[0].queue[1])["seq"] == json.loads(first)["seq"] + 1


async def test_a_send_queue_is_bounded_in_bytes_not_messages(make_client):
    from exchange_node.api import API_KEY
    from exchange_node.api.ws import Connection

    client, _ = await make_client(ws_send_queue_bytes=1_000, ws_send_queue=1_000)
    hub = client.app[API_KEY].hub
    conn = Connection(hub, None, "alice", None, "127.0.0.1", None)  # type: ignore[arg-type]
    dropped: list[Connection] = []
    hub.drop_slow_consumer = dropped.append  # type: ignore[method-assign]
    conn.send(b"x" * 600)
    conn.send(b"y" * 300)
    assert dropped == [] and conn.queued_bytes == 900
    conn.send(b"z" * 200)  # 1,100 bytes would be waiting: the limit is 1,000
    assert dropped == [conn] and conn.queued_bytes == 900


async def test_anonymous_sockets_have_fewer_subscriptions_and_per_address_caps(make_client):
    client, _ = await make_client(ws_anonymous_max_subscriptions=1, ws_max_anonymous_per_address=1)
    anonymous = await connect(client)
    await anonymous.send_json({"op": "subscribe", "channels": ["book:BTC-USD", "trades:BTC-USD"]})
    error = await recv(anonymous, type="error")
    assert error["status"] == 400 and "without an API key" in error["error"]["message"]
    try:
        await client.ws_connect("/v1/ws")
        raise AssertionError("a second anonymous socket from one address was accepted")
    except aiohttp.WSServerHandshakeError as refused:
        assert refused.status == 429 and "Retry-After" in (refused.headers or {})
    keyed = await connect(client, headers=ALICE)  # a key still gets in
    await keyed.send_json({"op": "subscribe", "channels": ["book:BTC-USD", "trades:BTC-USD"]})
    assert (await recv(keyed, type="subscribed"))["channels"] == ["book:BTC-USD", "trades:BTC-USD"]
    await anonymous.close()
    await keyed.close()

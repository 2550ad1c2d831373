"""Every HTTP endpoint's happy path, ownership (401/403), rate limits and batches."""

from __future__ import annotations

from typing import Any

from api_fakes import ALICE, BOB, CAROL
from exchange_node.engine.commands import NewOrder

SELL = {"symbol": "BTC-USD", "side": "SELL", "price": 50_000, "quantity": 3}
BUY = {"symbol": "BTC-USD", "side": "BUY", "price": 50_000, "quantity": 2}


async def post(client: Any, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    response = await client.post(path, json=body, headers=headers)
    assert response.content_type == "application/json"
    return response.status, await response.json()


async def test_new_order_rests_then_fills_and_each_side_sees_only_its_own_view(api):
    client, _service = api
    status, rested = await post(client, "/v1/orders", {**SELL, "client_order_id": "s-1"}, ALICE)
    assert status == 200
    assert rested["status"] == "NEW" and rested["order_id"] == 1
    assert [e["type"] for e in rested["events"]] == ["accepted"]
    assert rested["events"][0]["client_id"] == "alice"

    status, taken = await post(client, "/v1/orders", BUY, BOB)
    assert status == 200 and taken["status"] == "FILLED"
    fill = next(e for e in taken["events"] if e["type"] == "fill")
    assert fill == {
        "type": "fill",
        "trade_id": fill["trade_id"],
        "order_id": taken["order_id"],
        "symbol": "BTC-USD",
        "price": 50_000,
        "quantity": 2,
        "aggressor_side": "BUY",
        "liquidity": "TAKER",
        "timestamp_ns": fill["timestamp_ns"],
    }
    # The counterparty's identity never leaks, and book updates are market data.
    assert "alice" not in str(taken)
    assert all(e["type"] != "book" for e in taken["events"])
    # The server generated a client order id for bob.
    assert taken["events"][0]["client_order_id"].startswith("api-")


async def test_client_id_comes_from_the_key_never_from_the_body(api):
    client, service = api
    status, body = await post(client, "/v1/orders", {**SELL, "client_id": "bob"}, ALICE)
    assert status == 400 and body["error"]["field"] == "client_id"
    assert body["error"]["code"] == "unknown_field"
    await post(client, "/v1/orders", SELL, ALICE)
    (command,) = service.submitted[-1]
    assert isinstance(command, NewOrder) and command.client_id == "alice"


async def test_same_client_order_id_is_applied_once(api):
    client, _service = api
    first = await post(client, "/v1/orders", {**SELL, "client_order_id": "dup"}, ALICE)
    again = await post(client, "/v1/orders", {**SELL, "client_order_id": "dup"}, ALICE)
    assert first == again
    open_orders = await (await client.get("/v1/orders", headers=ALICE)).json()
    assert len(open_orders["orders"]) == 1


async def test_market_order_and_ioc_and_defaults(api):
    client, _ = api
    await post(client, "/v1/orders", SELL, ALICE)
    status, body = await post(
        client,
        "/v1/orders",
        {"symbol": "BTC-USD", "side": "BUY", "order_type": "MARKET", "quantity": 5},
        BOB,
    )
    assert status == 200
    assert body["status"] == "EXPIRED"  # 3 filled, the rest of a market order expires
    assert sum(e["quantity"] for e in body["events"] if e["type"] == "fill") == 3
    status, body = await post(
        client, "/v1/orders", {**BUY, "time_in_force": "IOC", "price": 49_000}, BOB
    )
    assert status == 200 and body["status"] == "EXPIRED"


async def test_engine_rejection_is_422_with_reason_and_the_logged_result(api):
    client, _ = api
    await post(client, "/v1/orders", SELL, ALICE)
    status, body = await post(
        client, "/v1/orders", {**BUY, "post_only": True, "client_order_id": "po"}, BOB
    )
    assert status == 422
    assert body["error"]["code"] == "post_only_would_take"
    assert body["error"]["reason"] == "POST_ONLY_WOULD_TAKE"
    assert body["error"]["field"] == "post_only"
    assert body["result"]["status"] == "REJECTED"


async def test_batch_results_in_order_in_one_log_entry(api):
    client, service = api
    orders = [
        {"symbol": "BTC-USD", "side": "SELL", "price": 50_000 + 5 * i, "quantity": 1}
        for i in range(10)
    ]
    orders.append({**BUY, "post_only": True, "price": 50_010})  # would take: rejected
    entries_before = service.index
    status, body = await post(client, "/v1/orders/batch", {"orders": orders}, ALICE)
    assert status == 200
    assert service.index == entries_before + 1  # one entry for the whole batch
    results = body["results"]
    assert [r.get("order_id") for r in results[:10]] == list(range(1, 11))
    assert all(r["status"] == "NEW" for r in results[:10])
    assert results[10]["status"] == 422
    assert results[10]["error"]["reason"] == "POST_ONLY_WOULD_TAKE"


async def test_batch_limit_is_enforced_and_documented(make_client):
    client, service = await make_client(max_batch=3)
    order = {"symbol": "BTC-USD", "side": "SELL", "price": 50_000, "quantity": 1}
    status, body = await post(client, "/v1/orders/batch", {"orders": [order] * 4}, ALICE)
    assert status == 413
    assert body["error"] == {
        "code": "batch_too_large",
        "message": "orders has 4 items; the limit is 3",
        "field": "orders",
    }
    assert service.submitted == []
    status, _ = await post(client, "/v1/orders/batch", {"orders": [order] * 3}, ALICE)
    assert status == 200
    doc = await (await client.get("/openapi.json")).json()
    assert doc["components"]["schemas"]["Batch"]["properties"]["orders"]["maxItems"] == 3


async def test_get_order_by_id_and_client_id_and_open_orders(api):
    client, _ = api
    _, placed = await post(client, "/v1/orders", {**SELL, "client_order_id": "mine"}, ALICE)
    order_id = placed["order_id"]
    by_id = await (await client.get(f"/v1/orders/{order_id}", headers=ALICE)).json()
    by_coid = await (await client.get("/v1/orders/by-client-id/mine", headers=ALICE)).json()
    assert by_id == by_coid
    assert by_id["client_order_id"] == "mine" and by_id["leaves_quantity"] == 3
    listed = await (await client.get("/v1/orders?symbol=BTC-USD", headers=ALICE)).json()
    read = by_id.pop("read")
    assert listed["orders"] == [by_id]
    assert read == {"consistency": "linearizable", "applied_index": 1}
    empty = await (await client.get("/v1/orders?symbol=ETH-USD", headers=ALICE)).json()
    assert empty == {"orders": [], "read": {"consistency": "linearizable", "applied_index": 1}}


async def test_orders_of_another_client_are_forbidden(api):
    client, service = api
    _, placed = await post(client, "/v1/orders", {**SELL, "client_order_id": "x"}, ALICE)
    order_id = placed["order_id"]
    submitted = len(service.submitted)
    for method, path, body in [
        ("GET", f"/v1/orders/{order_id}", None),
        ("DELETE", f"/v1/orders/{order_id}", None),
        ("POST", f"/v1/orders/{order_id}/replace", {"price": 50_005, "quantity": 1}),
    ]:
        response = await client.request(method, path, json=body, headers=BOB)
        assert response.status == 403, path
        assert (await response.json())["error"]["code"] == "forbidden"
    assert len(service.submitted) == submitted  # nothing reached the log
    # Client order ids are per client: bob's "x" is not alice's "x".
    response = await client.get("/v1/orders/by-client-id/x", headers=BOB)
    assert response.status == 404
    response = await client.delete("/v1/orders/by-client-id/x", headers=BOB)
    assert response.status == 404
    assert (await response.json())["error"]["reason"] == "UNKNOWN_ORDER"
    still = await (await client.get(f"/v1/orders/{order_id}", headers=ALICE)).json()
    assert still["status"] == "NEW"


async def test_cancel_by_id_and_by_client_id(api):
    client, _ = api
    _, a = await post(client, "/v1/orders", {**SELL, "client_order_id": "c1"}, ALICE)
    await post(client, "/v1/orders", {**SELL, "client_order_id": "c2"}, ALICE)
    response = await client.delete(f"/v1/orders/{a['order_id']}", headers=ALICE)
    body = await response.json()
    assert response.status == 200 and body["status"] == "CANCELLED"
    assert body["events"][0]["type"] == "cancelled"
    response = await client.delete("/v1/orders/by-client-id/c2", headers=ALICE)
    assert response.status == 200 and (await response.json())["status"] == "CANCELLED"
    response = await client.delete("/v1/orders/by-client-id/c2", headers=ALICE)
    assert response.status == 404  # already gone


async def test_replace_by_id_and_by_client_id(api):
    client, _ = api
    _, placed = await post(client, "/v1/orders", {**SELL, "client_order_id": "r1"}, ALICE)
    status, body = await post(
        client,
        f"/v1/orders/{placed['order_id']}/replace",
        {"price": 50_010, "quantity": 5, "new_client_order_id": "r2"},
        ALICE,
    )
    assert status == 200
    replaced = body["events"][0]
    assert replaced["type"] == "replaced" and replaced["new_client_order_id"] == "r2"
    status, body = await post(
        client, "/v1/orders/by-client-id/r2/replace", {"price": 50_005, "quantity": 4}, ALICE
    )
    assert status == 200 and body["events"][0]["price"] == 50_005
    view = await (await client.get(f"/v1/orders/{placed['order_id']}", headers=ALICE)).json()
    assert view["price"] == 50_005 and view["quantity"] == 4


async def test_mass_cancel_all_or_one_symbol(api):
    client, _ = api
    await post(client, "/v1/orders", SELL, ALICE)
    await post(
        client,
        "/v1/orders",
        {"symbol": "ETH-USD", "side": "BUY", "price": 2_900, "quantity": 10},
        ALICE,
    )
    status, body = await post(client, "/v1/orders/mass-cancel", {"symbol": "ETH-USD"}, ALICE)
    assert status == 200 and [e["symbol"] for e in body["events"]] == ["ETH-USD"]
    response = await client.post("/v1/orders/mass-cancel", headers=ALICE)  # no body: all
    body = await response.json()
    assert response.status == 200 and [e["symbol"] for e in body["events"]] == ["BTC-USD"]


async def test_market_data_endpoints(api):
    client, _ = api
    await post(client, "/v1/orders", SELL, ALICE)
    await post(client, "/v1/orders", {**SELL, "price": 50_005}, ALICE)
    await post(client, "/v1/orders", {**BUY, "price": 49_990}, BOB)
    await post(client, "/v1/orders", {**BUY, "quantity": 1}, BOB)

    book = await (await client.get("/v1/book/BTC-USD?depth=1")).json()
    assert book == {
        "symbol": "BTC-USD",
        "seq": book["seq"],
        "bids": [[49_990, 2]],
        "asks": [[50_000, 2]],
        "read": {"consistency": "linearizable", "applied_index": 4},
    }
    full = await (await client.get("/v1/book/BTC-USD")).json()
    assert full["asks"] == [[50_000, 2], [50_005, 3]]

    bbo = await (await client.get("/v1/bbo/BTC-USD")).json()
    assert bbo == {
        "symbol": "BTC-USD",
        "bid_price": 49_990,
        "bid_quantity": 2,
        "ask_price": 50_000,
        "ask_quantity": 2,
        "seq": book["seq"],
        "read": {"consistency": "linearizable", "applied_index": 4},
    }
    trades = await (await client.get("/v1/trades/BTC-USD?limit=5")).json()
    assert [(t["price"], t["quantity"]) for t in trades["trades"]] == [(50_000, 1)]
    assert set(trades["trades"][0]) == {
        "trade_id",
        "symbol",
        "price",
        "quantity",
        "aggressor_side",
        "timestamp_ns",
    }
    analytics = await (await client.get("/v1/analytics/BTC-USD")).json()
    assert analytics["trade_count"] == 1 and analytics["last_price"] == 50_000
    symbols = await (await client.get("/v1/symbols")).json()
    assert [s["symbol"] for s in symbols["symbols"]] == ["BTC-USD", "ETH-USD"]
    assert symbols["symbols"][0]["tick_size"] == 5

    positions = await (await client.get("/v1/positions", headers=BOB)).json()
    assert positions["client_id"] == "bob"
    assert positions["positions"]["BTC-USD"]["quantity"] == 1
    assert (await (await client.get("/v1/positions", headers=CAROL)).json())["positions"] == {}


async def test_reads_are_linearizable_unless_stale_is_asked(api):
    client, service = api
    await client.get("/v1/book/BTC-USD")
    await client.get("/v1/positions", headers=ALICE)
    assert service.barriers == 2
    for path in ["/v1/book/BTC-USD?consistency=stale", "/v1/positions?consistency=stale"]:
        assert (await client.get(path, headers=ALICE)).status == 200
    assert service.barriers == 2
    response = await client.get("/v1/bbo/BTC-USD?consistency=eventual")
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "consistency"


async def test_cluster_view_is_public_and_built_from_status(api):
    client, _ = api
    view = await (await client.get("/v1/cluster")).json()
    assert view["role"] == "leader" and view["leader"] == 1 and view["term"] == 3
    assert [(m["id"], m["role"]) for m in view["members"]] == [
        (1, "leader"),
        (2, "follower"),
        (3, "learner"),
    ]
    assert "state_hash" not in view and "grpc_address" not in str(view)


async def test_missing_or_invalid_key_is_401_on_private_routes(make_client):
    # Many failures from one address: a burst large enough that none is 429 here
    # (tests/security/test_client_limits.py checks the failure limit).
    client, service = await make_client(auth_failure_burst=1_000)
    routes = [
        ("POST", "/v1/orders", SELL),
        ("POST", "/v1/orders/batch", {"orders": [SELL]}),
        ("GET", "/v1/orders", None),
        ("GET", "/v1/orders/1", None),
        ("DELETE", "/v1/orders/1", None),
        ("POST", "/v1/orders/1/replace", {"price": 5, "quantity": 1}),
        ("GET", "/v1/orders/by-client-id/a", None),
        ("DELETE", "/v1/orders/by-client-id/a", None),
        ("POST", "/v1/orders/by-client-id/a/replace", {"price": 5, "quantity": 1}),
        ("POST", "/v1/orders/mass-cancel", {}),
        ("GET", "/v1/positions", None),
    ]
    for headers in [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic dG9rLWFsaWNlOg=="},
        {"Authorization": "tok-alice"},
    ]:
        for method, path, body in routes:
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status == 401, (method, path, headers)
            error = (await response.json())["error"]
            assert error["code"] == "unauthorized" and error["field"] == "Authorization"
    assert service.submitted == []
    # Public market data: no key needed, but a wrong key is still refused.
    assert (await client.get("/v1/symbols")).status == 200
    assert (await client.get("/v1/symbols", headers={"Authorization": "Bearer x"})).status == 401


async def test_market_data_can_require_a_key(make_client):
    client, _ = await make_client(public_market_data=False)
    assert (await client.get("/v1/book/BTC-USD")).status == 401
    assert (await client.get("/v1/cluster")).status == 401
    assert (await client.get("/v1/book/BTC-USD", headers=ALICE)).status == 200


async def test_rate_limit_per_key_answers_429_with_retry_after(make_client):
    # One token per 1000 s: nothing refills during the test, whatever the machine's speed.
    client, service = await make_client(rate_limit_per_second=0.001, rate_limit_burst=2)
    for _ in range(2):
        assert (await client.post("/v1/orders", json=SELL, headers=ALICE)).status == 200
    response = await client.post("/v1/orders", json=SELL, headers=ALICE)
    assert response.status == 429
    assert response.headers["Retry-After"] == "1000"
    assert (await response.json())["error"]["code"] == "rate_limited"
    assert len(service.submitted) == 2
    # Another key has its own bucket.
    assert (await client.post("/v1/orders", json=SELL, headers=BOB)).status == 200


async def test_a_batch_costs_one_token_per_order(make_client):
    # Burst 10, nothing refills during the test: the limit counts orders, not requests.
    client, service = await make_client(rate_limit_per_second=0.001, rate_limit_burst=10)
    batch = {"orders": [SELL] * 8}
    assert (await client.post("/v1/orders/batch", json=batch, headers=ALICE)).status == 200
    # 2 tokens left: one more order goes, then the key is refused before its body is read.
    assert (await client.post("/v1/orders/batch", json=batch, headers=ALICE)).status == 200
    response = await client.post("/v1/orders", json=SELL, headers=ALICE)
    assert response.status == 429
    # In debt by 6 orders: 7 tokens to wait for at 0.001/s (the second batch, at the
    # key's limit, was paced: up to API_PACE_MAX_SPAN_S later, a thousandth of a token).
    assert response.headers["Retry-After"] in ("6999", "7000")
    error = (await response.json())["error"]
    assert error["code"] == "rate_limited" and error["limit"] == "rate_limit_per_second"
    assert error["rate"] == 0.001 and error["burst"] == 10
    assert sum(map(len, service.submitted)) == 16  # two batches
    # Another key is not charged for alice's orders.
    assert (await client.post("/v1/orders/batch", json=batch, headers=BOB)).status == 200


async def test_a_key_of_its_own_rate_limit_gets_more(make_client):
    client, _ = await make_client(
        rate_limit_per_second=0.001,
        rate_limit_burst=2,
        key_rate_limits={"tok-bob": (0.001, 50)},
    )
    batch = {"orders": [SELL] * 40}
    assert (await client.post("/v1/orders/batch", json=batch, headers=BOB)).status == 200
    assert (await client.post("/v1/orders/batch", json=batch, headers=BOB)).status == 200
    assert (await client.post("/v1/orders/batch", json=batch, headers=BOB)).status == 429
    assert (await client.post("/v1/orders/batch", json=batch, headers=ALICE)).status == 200
    assert (await client.post("/v1/orders/batch", json=batch, headers=ALICE)).status == 429


async def test_unknown_symbol_on_market_data_is_404(api):
    client, _ = api
    for path in ["/v1/book/NOPE", "/v1/trades/NOPE", "/v1/bbo/NOPE", "/v1/analytics/NOPE"]:
        response = await client.get(path)
        assert response.status == 404, path
        error = (await response.json())["error"]
        assert error["code"] == "unknown_symbol" and error["field"] == "symbol"


async def test_every_read_says_its_consistency_and_applied_index(api):
    client, service = api
    await post(client, "/v1/orders", SELL, ALICE)
    await post(client, "/v1/orders", BUY, BOB)
    reads = [
        "/v1/orders",
        "/v1/orders/1",
        "/v1/orders/by-client-id/none",
        "/v1/positions",
        "/v1/symbols",
        "/v1/book/BTC-USD",
        "/v1/trades/BTC-USD",
        "/v1/bbo/BTC-USD",
        "/v1/analytics/BTC-USD",
    ]
    for path in reads:
        for mode in ("linearizable", "stale"):
            response = await client.get(f"{path}?consistency={mode}", headers=ALICE)
            if response.status == 404:
                continue  # an order that does not exist: an error, not a read's answer
            assert response.status == 200, path
            assert response.headers["X-Consistency"] == mode, path
            assert response.headers["X-Applied-Index"] == "2", path
            body = await response.json()
            assert body["read"] == {"consistency": mode, "applied_index": 2}, path
    barriers = service.barriers
    await client.get("/v1/book/BTC-USD?consistency=stale")
    assert service.barriers == barriers  # a stale read takes no barrier

"""Bad input on every endpoint: a 4xx whose JSON body names the field and the problem,
and nothing reaches ``service.submit``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_fakes import ALICE

ORDER = {"symbol": "BTC-USD", "side": "BUY", "price": 50_000, "quantity": 2}
REPLACE = {"price": 50_005, "quantity": 2}

# Bodies that are wrong in the same way wherever a body is taken.
RAW_CASES: list[tuple[str, bytes, str, int, str, str | None]] = [
    # (name, raw body, content type, status, code, field)
    ("malformed", b'{"symbol": "BTC-USD",', "application/json", 400, "malformed_json", "body"),
    ("nan", b'{"price": NaN}', "application/json", 400, "malformed_json", "body"),
    ("infinity", b'{"price": Infinity}', "application/json", 400, "malformed_json", "body"),
    ("minus-infinity", b'{"price": -Infinity}', "application/json", 400, "malformed_json", "body"),
    ("huge-float", b'{"price": 1e999}', "application/json", 400, "malformed_json", "body"),
    ("trailing", b'{"a": 1} {"b": 2}', "application/json", 400, "malformed_json", "body"),
    ("not-utf8", b'{"symbol": "\xff"}', "application/json", 400, "malformed_json", "body"),
    (
        "5000-digit-int",
        b'{"quantity": ' + b"9" * 5000 + b"}",
        "application/json",
        400,
        "malformed_json",
        "body",
    ),
    (
        "deep-nesting",
        b"[" * 100_000 + b"]" * 100_000,
        "application/json",
        400,
        "malformed_json",
        "body",
    ),
    (
        "text-plain",
        json.dumps(ORDER).encode(),
        "text/plain",
        415,
        "unsupported_media_type",
        "Content-Type",
    ),
    (
        "form",
        b"symbol=BTC-USD",
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
        "Content-Type",
    ),
    ("array", b"[]", "application/json", 400, "invalid_type", None),
    ("string", b'"order"', "application/json", 400, "invalid_type", None),
    ("null", b"null", "application/json", 400, "invalid_type", None),
]

BODY_ROUTES = [
    "/v1/orders",
    "/v1/orders/batch",
    "/v1/orders/1/replace",
    "/v1/orders/by-client-id/abc/replace",
    "/v1/orders/mass-cancel",
]


@pytest.fixture
async def seeded(api):
    client, service = api
    # Order 1, alice's, client order id "abc": replace routes reach validation.
    response = await client.post(
        "/v1/orders",
        json={
            "symbol": "BTC-USD",
            "side": "SELL",
            "price": 60_000,
            "quantity": 1,
            "client_order_id": "abc",
        },
        headers=ALICE,
    )
    assert response.status == 200
    return client, service, len(service.submitted)


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("case", RAW_CASES, ids=[c[0] for c in RAW_CASES])
async def test_raw_body_problems_on_every_body_route(seeded, route, case):
    client, service, submitted = seeded
    _name, raw, ctype, status, code, field = case
    response = await client.post(route, data=raw, headers={**ALICE, "Content-Type": ctype})
    assert response.status == status, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == code
    assert error["field"] == field
    assert error["message"]
    assert len(service.submitted) == submitted


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_oversized_body_is_413_on_every_body_route(make_client, route):
    client, service = await make_client(max_body_bytes=2048)
    big = json.dumps({"symbol": "BTC-USD", "pad": "x" * 5000}).encode()
    response = await client.post(
        route, data=big, headers={**ALICE, "Content-Type": "application/json"}
    )
    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == "body_too_large" and error["field"] == "body"
    # Without a Content-Length (chunked) the limit holds too.

    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1000

    response = await client.post(
        route, data=chunks(), headers={**ALICE, "Content-Type": "application/json"}
    )
    assert response.status == 413
    assert service.submitted == []


def _with(**changes: Any) -> dict[str, Any]:
    body = dict(ORDER)
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


_DROP: Any = object()

ORDER_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # (name, body, code, field)
    ("missing-symbol", _with(symbol=_DROP), "missing_field", "symbol"),
    ("missing-side", _with(side=_DROP), "missing_field", "side"),
    ("missing-quantity", _with(quantity=_DROP), "missing_field", "quantity"),
    ("missing-limit-price", _with(price=_DROP), "missing_field", "price"),
    ("unknown-field", _with(colour="red"), "unknown_field", "colour"),
    ("client-id-field", _with(client_id="bob"), "unknown_field", "client_id"),
    ("bool-quantity", _with(quantity=True), "invalid_type", "quantity"),
    ("bool-price", _with(price=False), "invalid_type", "price"),
    ("float-quantity", _with(quantity=2.0), "invalid_type", "quantity"),
    ("string-price", _with(price="50000"), "invalid_type", "price"),
    ("null-quantity", _with(quantity=None), "invalid_type", "quantity"),
    ("int-symbol", _with(symbol=7), "invalid_type", "symbol"),
    ("string-post-only", _with(post_only="yes"), "invalid_type", "post_only"),
    ("int-post-only", _with(post_only=1), "invalid_type", "post_only"),
    ("zero-quantity", _with(quantity=0), "invalid_value", "quantity"),
    ("negative-quantity", _with(quantity=-5), "invalid_value", "quantity"),
    ("huge-quantity", _with(quantity=1 << 63), "invalid_value", "quantity"),
    ("negative-price", _with(price=-5), "invalid_value", "price"),
    ("zero-limit-price", _with(price=0), "invalid_value", "price"),
    ("off-tick", _with(price=50_003), "price_off_tick", "price"),
    ("off-lot", _with(symbol="ETH-USD", price=3_000, quantity=15), "quantity_off_lot", "quantity"),
    ("unknown-symbol", _with(symbol="DOGE-USD"), "unknown_symbol", "symbol"),
    ("bad-symbol-chars", _with(symbol="BTC USD"), "invalid_value", "symbol"),
    ("lowercase-side", _with(side="buy"), "invalid_value", "side"),
    ("bad-order-type", _with(order_type="STOP"), "invalid_value", "order_type"),
    ("bad-tif", _with(time_in_force="DAY"), "invalid_value", "time_in_force"),
    ("bad-stp", _with(stp="NONE"), "invalid_value", "stp"),
    ("market-with-price", _with(order_type="MARKET"), "invalid_value", "price"),
    ("post-only-ioc", _with(post_only=True, time_in_force="IOC"), "invalid_value", "post_only"),
    (
        "post-only-market",
        _with(post_only=True, order_type="MARKET", price=_DROP),
        "invalid_value",
        "post_only",
    ),
    ("empty-client-order-id", _with(client_order_id=""), "invalid_value", "client_order_id"),
    ("long-client-order-id", _with(client_order_id="x" * 65), "invalid_value", "client_order_id"),
    ("slash-client-order-id", _with(client_order_id="a/b"), "invalid_value", "client_order_id"),
]


@pytest.mark.parametrize("case", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
async def test_new_order_field_problems(api, case):
    client, service = api
    _name, body, code, field = case
    response = await client.post("/v1/orders", json=body, headers=ALICE)
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == (code, field), error
    assert service.submitted == []


@pytest.mark.parametrize("case", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
async def test_batch_names_the_failing_item_and_submits_nothing(api, case):
    client, service = api
    _name, body, code, field = case
    response = await client.post(
        "/v1/orders/batch", json={"orders": [ORDER, ORDER, body]}, headers=ALICE
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == (code, f"orders[2].{field}"), error
    assert service.submitted == []


@pytest.mark.parametrize(
    "body,status,code,field",
    [
        ({}, 400, "missing_field", "orders"),
        ({"orders": []}, 400, "invalid_value", "orders"),
        ({"orders": {}}, 400, "invalid_type", "orders"),
        ({"orders": [ORDER], "extra": 1}, 400, "unknown_field", "extra"),
        ({"orders": [ORDER, 5]}, 400, "invalid_type", "orders[1]"),
        ({"orders": [ORDER] * 501}, 413, "batch_too_large", "orders"),
    ],
)
async def test_batch_shape_problems(api, body, status, code, field):
    client, service = api
    response = await client.post("/v1/orders/batch", json=body, headers=ALICE)
    assert response.status == status
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert service.submitted == []


REPLACE_CASES = [
    ("missing-price", {"quantity": 2}, "missing_field", "price"),
    ("missing-quantity", {"price": 50_005}, "missing_field", "quantity"),
    ("unknown-field", {**REPLACE, "side": "BUY"}, "unknown_field", "side"),
    ("bool-price", {**REPLACE, "price": True}, "invalid_type", "price"),
    ("zero-quantity", {**REPLACE, "quantity": 0}, "invalid_value", "quantity"),
    ("negative-price", {**REPLACE, "price": -1}, "invalid_value", "price"),
    ("off-tick", {**REPLACE, "price": 50_001}, "price_off_tick", "price"),
    (
        "bad-new-id",
        {**REPLACE, "new_client_order_id": "a b"},
        "invalid_value",
        "new_client_order_id",
    ),
]


@pytest.mark.parametrize("route", ["/v1/orders/1/replace", "/v1/orders/by-client-id/abc/replace"])
@pytest.mark.parametrize("case", REPLACE_CASES, ids=[c[0] for c in REPLACE_CASES])
async def test_replace_field_problems(seeded, route, case):
    client, service, submitted = seeded
    _name, body, code, field = case
    response = await client.post(route, json=body, headers=ALICE)
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert len(service.submitted) == submitted


@pytest.mark.parametrize(
    "body,code,field",
    [
        ({"symbol": "NOPE"}, "unknown_symbol", "symbol"),
        ({"symbol": 5}, "invalid_type", "symbol"),
        ({"all": True}, "unknown_field", "all"),
    ],
)
async def test_mass_cancel_field_problems(api, body, code, field):
    client, service = api
    response = await client.post("/v1/orders/mass-cancel", json=body, headers=ALICE)
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert service.submitted == []


@pytest.mark.parametrize(
    "method,path,field",
    [
        ("GET", "/v1/orders/abc", "order_id"),
        ("GET", "/v1/orders/-1", "order_id"),
        ("GET", "/v1/orders/0", "order_id"),
        ("GET", "/v1/orders/99999999999999999999999", "order_id"),
        ("DELETE", "/v1/orders/1.5", "order_id"),
        ("POST", "/v1/orders/x/replace", "order_id"),
        ("GET", "/v1/orders/by-client-id/a%20b", "client_order_id"),
        ("DELETE", "/v1/orders/by-client-id/" + "x" * 65, "client_order_id"),
        ("GET", "/v1/book/BTC-USD?depth=0", "depth"),
        ("GET", "/v1/book/BTC-USD?depth=abc", "depth"),
        ("GET", "/v1/book/BTC-USD?depth=1001", "depth"),
        ("GET", "/v1/trades/BTC-USD?limit=-1", "limit"),
        ("GET", "/v1/trades/BTC-USD?limit=1.5", "limit"),
        ("GET", "/v1/positions?consistency=weak", "consistency"),
        ("GET", "/v1/orders?symbol=NOPE", "symbol"),
    ],
)
async def test_path_and_query_problems(api, method, path, field):
    client, service = api
    body = REPLACE if method == "POST" else None
    response = await client.request(method, path, json=body, headers=ALICE)
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["field"] == field
    assert service.submitted == []


async def test_unknown_routes_and_methods_answer_json(api):
    client, _ = api
    response = await client.get("/v1/nothing/here")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    response = await client.put("/v1/orders", json={})
    assert response.status == 405
    assert "POST" in response.headers["Allow"]
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    response = await client.get("/v1/orders/a%2Fb", headers=ALICE)  # an encoded slash
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "order_id"


async def test_websocket_order_entry_names_the_field_for_every_order_case(api):
    client, service = api
    ws = await client.ws_connect("/v1/ws", headers=ALICE)
    assert (await ws.receive_json(timeout=10))["type"] == "hello"
    for i, (name, body, code, field) in enumerate(ORDER_CASES):
        await ws.send_json({"op": "order", "id": i, **body})
        answer = await ws.receive_json(timeout=10)
        assert answer["type"] == "error" and answer["id"] == i, name
        assert answer["status"] == 400, name
        assert (answer["error"]["code"], answer["error"]["field"]) == (code, field), name
    for bad in [{"op": "cancel"}, {"op": "cancel", "order_id": 1, "client_order_id": "a"}]:
        await ws.send_json(bad)
        assert (await ws.receive_json(timeout=10))["status"] == 400
    await ws.send_json({"op": "cancel", "order_id": True})
    assert (await ws.receive_json(timeout=10))["error"]["field"] == "order_id"
    await ws.close()
    assert service.submitted == []

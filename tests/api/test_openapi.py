"""/openapi.json matches the real behaviour: every documented operation answers a real
request with a documented status and a body of the documented shape, and every real
route is documented."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from api_fakes import ALICE, BOB, EngineService
from exchange_node.api import ApiConfig, create_app
from exchange_node.api.openapi import build_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC = build_openapi(ApiConfig())
OPERATIONS = [
    (path, method)
    for path, item in DOC["paths"].items()
    for method in item
    if method in ("get", "post", "delete", "put", "patch")
]

VALID_BODIES = {
    "NewOrder": {"symbol": "BTC-USD", "side": "BUY", "price": 49_000, "quantity": 1},
    "Batch": {"orders": [{"symbol": "BTC-USD", "side": "BUY", "price": 49_000, "quantity": 1}]},
    "Replace": {"price": 50_005, "quantity": 2},
    "MassCancel": {"symbol": "BTC-USD"},
}


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    registry = Registry().with_resource(
        "urn:api", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    rewritten = _rewrite_refs(schema)
    return jsonschema.Draft202012Validator(rewritten, registry=registry)


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: ("urn:api" + v if k == "$ref" and v.startswith("#") else _rewrite_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def check_documented(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered undocumented {status}"
    content = responses[str(status)].get("content")
    if content is None:
        return
    _validator(doc, content["application/json"]["schema"]).validate(body)


def test_every_real_route_is_documented_and_every_documented_route_is_real():
    app = create_app(EngineService(), ApiConfig())
    real = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert real == set(OPERATIONS)


def test_the_document_is_valid_openapi_3_1_json_schema():
    assert DOC["openapi"] == "3.1.0"
    # Every schema in the document is a valid 2020-12 schema and every $ref resolves.
    for name, schema in DOC["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
        _validator(DOC, {"$ref": f"#/components/schemas/{name}"})
    for path, item in DOC["paths"].items():
        for key, operation in item.items():
            if key == "parameters":
                continue
            assert operation["responses"], path
            assert operation["operationId"]


async def _seed(client: Any) -> dict[str, Any]:
    order = {"symbol": "BTC-USD", "side": "SELL", "price": 50_000, "quantity": 3}
    resting = await client.post(
        "/v1/orders", json={**order, "client_order_id": "seed"}, headers=ALICE
    )
    await client.post("/v1/orders", json={**order, "side": "BUY", "quantity": 1}, headers=BOB)
    return {
        "order_id": (await resting.json())["order_id"],
        "client_order_id": "seed",
        "symbol": "BTC-USD",
    }


def _url(path: str, values: dict[str, Any]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", str(value))
    return path


def _body_name(operation: dict[str, Any]) -> str | None:
    body = operation.get("requestBody")
    if body is None:
        return None
    ref: str = body["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]


@pytest.mark.parametrize("path,method", OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
async def test_real_requests_get_documented_answers(make_client, path, method):
    client, service = await make_client()
    served = await (await client.get("/openapi.json")).json()
    assert served == DOC
    operation = DOC["paths"][path][method]
    values = await _seed(client)
    url = _url(path, values)
    body_name = _body_name(operation)
    json_body = VALID_BODIES[body_name] if body_name else None
    secured = operation["security"] == [{"bearer": []}]

    async def call(
        target: str, headers: dict[str, str], body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        if raw is not None:
            response = await client.request(
                method, target, data=raw, headers={**headers, "Content-Type": "application/json"}
            )
        else:
            response = await client.request(method, target, json=body, headers=headers)
        if response.status == 101 or path == "/v1/ws":
            return (
                response.status,
                await response.json() if response.content_type == "application/json" else None,
            )
        assert response.content_type == "application/json"
        return response.status, await response.json()

    if path == "/v1/ws":
        ws = await client.ws_connect(url, headers=ALICE)  # 101: documented
        assert "101" in operation["responses"]
        await ws.close()
        status, answer = await call(url, ALICE)  # no upgrade headers
        check_documented(DOC, path, method, status, answer)
        status, answer = await call(url + "?token=bad", {})
        check_documented(DOC, path, method, status, answer)
        return

    # The happy path.
    status, answer = await call(url, ALICE, json_body)
    assert status == 200, answer
    check_documented(DOC, path, method, status, answer)

    # Without a key (and with a wrong one).
    status, answer = await call(url, {}, json_body)
    assert status == (401 if secured else 200)
    check_documented(DOC, path, method, status, answer)
    if operation["security"] != [{}]:  # /openapi.json itself takes no key at all
        status, answer = await call(url, {"Authorization": "Bearer wrong"}, json_body)
        assert status == 401
        check_documented(DOC, path, method, status, answer)

    # Bad input of each kind the operation takes.
    if body_name:
        for raw in (b"{", b'{"x": NaN}', b"[]", b'{"unknown": 1}'):
            status, answer = await call(url, ALICE, raw=raw)
            assert status == 400
            check_documented(DOC, path, method, status, answer)
        response = await client.request(
            method, url, data=b"{}", headers={**ALICE, "Content-Type": "text/plain"}
        )
        check_documented(DOC, path, method, response.status, await response.json())
        status, answer = await call(url, ALICE, raw=b" " * (2 << 20))
        assert status == 413
        check_documented(DOC, path, method, status, answer)
    if "{symbol}" in path:
        status, answer = await call(_url(path, {**values, "symbol": "NOPE"}), ALICE)
        assert status == 404
        check_documented(DOC, path, method, status, answer)
    if "{order_id}" in path:
        for bad_id in ("abc", "999999"):
            status, answer = await call(
                _url(path, {**values, "order_id": bad_id}), ALICE, json_body
            )
            check_documented(DOC, path, method, status, answer)
        status, answer = await call(url, BOB, json_body)  # alice's order
        assert status == 403
        check_documented(DOC, path, method, status, answer)
    if "{client_order_id}" in path:
        status, answer = await call(
            _url(path, {**values, "client_order_id": "nope"}), ALICE, json_body
        )
        check_documented(DOC, path, method, status, answer)
    if any(p.get("name") == "consistency" for p in operation.get("parameters", [])):
        status, answer = await call(url + "?consistency=bogus", ALICE)
        assert status == 400
        check_documented(DOC, path, method, status, answer)

    # Service failures.
    from exchange_node.service import Timeout, Unavailable

    service.fail_submit = service.fail_read = Unavailable("down")
    status, answer = await call(url, ALICE, json_body)
    check_documented(DOC, path, method, status, answer)
    service.fail_submit = service.fail_read = Timeout()
    status, answer = await call(url, ALICE, json_body)
    check_documented(DOC, path, method, status, answer)

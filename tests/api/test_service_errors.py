"""Service errors become 503/504 answers; a follower forwards writes to the leader."""

from __future__ import annotations

import socket

import pytest
from api_fakes import ALICE, BOB, EngineService
from exchange_node.service import NotLeader, Overloaded, Timeout, Unavailable

ORDER = {"symbol": "BTC-USD", "side": "SELL", "price": 50_000, "quantity": 1}


async def test_overloaded_is_503_with_retry_after(api):
    client, service = api
    service.fail_submit = Overloaded(retry_after_seconds=2.5)
    response = await client.post("/v1/orders", json=ORDER, headers=ALICE)
    assert response.status == 503
    assert response.headers["Retry-After"] == "3"
    assert (await response.json())["error"]["code"] == "overloaded"


async def test_unavailable_is_503_with_retry_after_for_writes_and_reads(api):
    client, service = api
    service.fail_submit = Unavailable("no quorum")
    service.fail_read = Unavailable("no leader is known")
    for response in [
        await client.post("/v1/orders", json=ORDER, headers=ALICE),
        await client.get("/v1/book/BTC-USD"),
        await client.get("/v1/positions", headers=ALICE),
    ]:
        assert response.status == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert (await response.json())["error"]["code"] == "unavailable"
    # A stale read does not need the leader.
    assert (await client.get("/v1/book/BTC-USD?consistency=stale")).status == 200


async def test_timeout_is_504_and_says_the_outcome_is_unknown(api):
    client, service = api
    service.fail_submit = Timeout()
    response = await client.post(
        "/v1/orders", json={**ORDER, "client_order_id": "t-1"}, headers=ALICE
    )
    assert response.status == 504
    error = (await response.json())["error"]
    assert error["code"] == "timeout"
    assert "unknown" in error["message"] and "same client_order_id is safe" in error["message"]
    # The retry with the same id, once the service recovers, places exactly one order.
    service.fail_submit = None
    for _ in range(2):
        response = await client.post(
            "/v1/orders", json={**ORDER, "client_order_id": "t-1"}, headers=ALICE
        )
        assert response.status == 200
    listed = await (await client.get("/v1/orders", headers=ALICE)).json()
    assert len(listed["orders"]) == 1


async def test_batch_submits_raise_the_same_mapping(api):
    client, service = api
    service.fail_submit = Timeout()
    response = await client.post("/v1/orders/batch", json={"orders": [ORDER]}, headers=ALICE)
    assert response.status == 504


async def test_follower_forwards_writes_to_the_leader_with_the_callers_key(make_client):
    leader_client, leader = await make_client()
    follower = EngineService(node_id=2)
    follower_client, _ = await make_client(follower)
    leader_http = f"127.0.0.1:{leader_client.port}"
    follower.fail_submit = NotLeader(1, leader_http)

    response = await follower_client.post(
        "/v1/orders", json={**ORDER, "client_order_id": "fwd-1"}, headers=ALICE
    )
    assert response.status == 200
    assert response.headers["X-Exchange-Forwarded-By"] == "1"
    assert response.headers["X-Exchange-Leader"] == leader_http
    body = await response.json()
    assert body["events"][0]["client_id"] == "alice"
    # It was applied on the leader, under the caller's own client id.
    (command,) = leader.submitted[-1]
    assert command.client_id == "alice" and command.client_order_id == "fwd-1"
    assert follower.submitted == []

    # The leader's answer is relayed as is, errors included.
    response = await follower_client.delete("/v1/orders/1", headers=BOB)
    assert response.status == 403
    response = await follower_client.post(
        "/v1/orders/batch", json={"orders": [ORDER, ORDER]}, headers=BOB
    )
    assert response.status == 200 and len((await response.json())["results"]) == 2
    response = await follower_client.post("/v1/orders/mass-cancel", headers=BOB)
    assert response.status == 200
    # A bad key is refused by the follower itself, before any forwarding.
    response = await follower_client.post(
        "/v1/orders", json=ORDER, headers={"Authorization": "Bearer nope"}
    )
    assert response.status == 401


async def test_follower_forwards_linearizable_reads_when_the_barrier_needs_the_leader(make_client):
    leader_client, leader = await make_client()
    follower = EngineService(node_id=2)
    follower_client, _ = await make_client(follower)
    leader.apply([])  # leader is one entry ahead
    await leader_client.post("/v1/orders", json=ORDER, headers=ALICE)
    follower.fail_read = NotLeader(1, f"127.0.0.1:{leader_client.port}")
    book = await (await follower_client.get("/v1/book/BTC-USD")).json()
    assert book["asks"] == [[50_000, 1]]
    stale = await (await follower_client.get("/v1/book/BTC-USD?consistency=stale")).json()
    assert stale["asks"] == []


async def test_forwarding_stops_after_one_hop(make_client):
    # A follower that believes it is its own leader's follower: forwarding would loop.
    service = EngineService()
    client, _ = await make_client(service)
    service.fail_submit = NotLeader(2, f"127.0.0.1:{client.port}")
    response = await client.post("/v1/orders", json=ORDER, headers=ALICE)
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["error"]["code"] == "no_leader"


async def test_unknown_leader_is_503_with_retry_after(api):
    client, service = api
    service.fail_submit = NotLeader(0, None)
    response = await client.post("/v1/orders", json=ORDER, headers=ALICE)
    assert response.status == 503
    assert "Retry-After" in response.headers
    assert (await response.json())["error"]["code"] == "no_leader"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_leader_is_503_nothing_was_sent(api):
    client, service = api
    service.fail_submit = NotLeader(3, f"127.0.0.1:{_closed_port()}")
    response = await client.post("/v1/orders", json=ORDER, headers=ALICE)
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "unavailable"


async def test_redirect_mode_answers_421_with_the_leader(make_client):
    client, service = await make_client(follower_writes="redirect")
    service.fail_submit = NotLeader(3, "10.0.0.3:8080")
    response = await client.post("/v1/orders", json=ORDER, headers=ALICE)
    assert response.status == 421
    error = (await response.json())["error"]
    assert error["leader"] == 3 and error["leader_address"] == "10.0.0.3:8080"


@pytest.mark.parametrize("method,path", [("GET", "/v1/cluster"), ("GET", "/openapi.json")])
async def test_service_independent_routes_work_while_the_service_fails(api, method, path):
    client, service = api
    service.fail_read = Unavailable("down")
    service.fail_submit = Unavailable("down")
    assert (await client.request(method, path)).status == 200

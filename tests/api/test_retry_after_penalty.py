"""A key that keeps sending before its Retry-After is shut out, cheaply.

HTTP/1.1 answers in order, so a request on a keep-alive connection that was
answered 429 shows that its client read the 429: sent again before the delay,
it ignored Retry-After. The key is then shut out for a time that doubles with
every early request, and its refusals are answered without reading the body,
closing the connection (the node does not receive a body it will throw away).
"""

from __future__ import annotations

import asyncio

import pytest
from api_fakes import ALICE, BOB
from exchange_node.api.app import API_KEY
from exchange_node.api.auth import RateLimiter
from exchange_node.limits import API_MAX_TOLD_TO_WAIT, API_PENALTY_FIRST_S, API_PENALTY_MAX_S

SELL = {"symbol": "BTC-USD", "side": "SELL", "price": 50_000, "quantity": 3}


def test_an_early_request_shuts_the_key_out_for_longer_each_time():
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=1, clock=lambda: now[0])
    assert limiter.acquire("k") == 0
    assert limiter.acquire("k") > 0  # refused: 0.1 s to its next token
    assert not limiter.penalised("k")
    limiter.ignored("k")
    assert limiter.penalised("k")
    now[0] = 0.2  # its token is back, but the shut-out is not over
    assert limiter.acquire("k") == pytest.approx(API_PENALTY_FIRST_S - 0.2)
    limiter.ignored("k")
    assert limiter.acquire("k") == pytest.approx(2 * API_PENALTY_FIRST_S)
    for _ in range(20):
        limiter.ignored("k")
    assert limiter.acquire("k") == pytest.approx(API_PENALTY_MAX_S)  # capped
    assert limiter.debit("k", 5) == pytest.approx(API_PENALTY_MAX_S)
    assert limiter.acquire("other") == 0  # only this key
    now[0] += API_PENALTY_MAX_S  # waited it out: admitted, and it starts afresh
    assert limiter.acquire("k") == 0 and not limiter.penalised("k")
    assert limiter.acquire("k") > 0 and not limiter.penalised("k")


def test_a_disabled_limit_never_penalises():
    limiter = RateLimiter(rate=0, burst=1)
    limiter.ignored("k")
    assert not limiter.penalised("k") and limiter.acquire("k") == 0


async def test_sending_again_before_retry_after_on_the_same_connection(make_client):
    client, service = await make_client(rate_limit_per_second=0.001, rate_limit_burst=1)
    assert (await client.post("/v1/orders", json=SELL, headers=ALICE)).status == 200
    refused = await client.post("/v1/orders", json=SELL, headers=ALICE)
    assert refused.status == 429
    assert (await refused.json())["error"]["limit"] == "rate_limit_per_second"
    assert refused.headers.get("Connection", "").lower() != "close"  # keep-alive
    # At once, on the same connection (the client's pool reuses it): ignored.
    early = await client.post("/v1/orders/batch", json={"orders": [SELL] * 3}, headers=ALICE)
    assert early.status == 429
    assert early.headers["Connection"].lower() == "close"
    error = (await early.json())["error"]
    assert error["code"] == "rate_limited" and error["limit"] == "retry_after_ignored"
    assert client.app[API_KEY].refusals["retry_after_ignored"] == 1
    assert len(service.submitted) == 1
    # Another key is not shut out.
    assert (await client.post("/v1/orders", json=SELL, headers=BOB)).status == 200


async def test_a_client_that_waits_retry_after_is_never_shut_out(make_client):
    client, _ = await make_client(rate_limit_per_second=20, rate_limit_burst=1)
    accepted = 0
    for _ in range(6):
        response = await client.post("/v1/orders", json=SELL, headers=ALICE)
        if response.status == 429:
            assert (await response.json())["error"]["limit"] == "rate_limit_per_second"
            await asyncio.sleep(0.06)  # the 1/20 s it was told, and a little more
        else:
            assert response.status == 200
            accepted += 1
    assert accepted >= 3
    assert client.app[API_KEY].refusals["retry_after_ignored"] == 0


async def test_another_key_on_the_refused_connection_is_not_penalised(make_client):
    # A proxy's (or a forwarding follower's) pool sends several keys on one connection.
    client, _ = await make_client(rate_limit_per_second=0.001, rate_limit_burst=1)
    assert (await client.post("/v1/orders", json=SELL, headers=ALICE)).status == 200
    assert (await client.post("/v1/orders", json=SELL, headers=ALICE)).status == 429
    bob = await client.post("/v1/orders", json=SELL, headers=BOB)
    assert bob.status == 200
    assert client.app[API_KEY].refusals["retry_after_ignored"] == 0


class _Transport:
    """Like uvloop's TLS transport: no weak references."""

    __slots__ = ()


class _Request:
    def __init__(self, token: str) -> None:
        self.headers = {"Authorization": f"Bearer {token}"}
        self.remote = "192.0.2.1"
        self.transport = _Transport()


def test_connections_told_to_wait_are_bounded_and_need_no_weak_references():
    from exchange_node.api.auth import Authenticator
    from exchange_node.api.errors import ApiError

    auth = Authenticator({"tok": "alice"}, RateLimiter(rate=0.001, burst=1))
    auth.client_for(_Request("tok"))  # type: ignore[arg-type]
    for _ in range(API_MAX_TOLD_TO_WAIT + 50):
        with pytest.raises(ApiError):
            auth.client_for(_Request("tok"))  # type: ignore[arg-type]
    assert len(auth._told_to_wait) <= API_MAX_TOLD_TO_WAIT


async def test_a_shut_out_keys_refusal_is_held_for_its_delay_and_holds_are_bounded(
    make_client, monkeypatch
):
    """A client that retries at once is answered only after the delay (at most
    API_TARPIT_MAX_S): its connections carry a request a second, not hundreds.
    Held answers are bounded node-wide; beyond the bound they go at once."""
    from exchange_node.api import app as api_app

    cap = API_PENALTY_FIRST_S * 0.8  # below the first shut-out: the cap decides
    monkeypatch.setattr(api_app, "API_TARPIT_MAX_S", cap)
    client, _ = await make_client(rate_limit_per_second=0.001, rate_limit_burst=1)
    api = client.app[API_KEY]
    assert (await client.post("/v1/orders", json=SELL, headers=ALICE)).status == 200
    assert (await client.post("/v1/orders", json=SELL, headers=ALICE)).status == 429
    assert api.tarpitted_total == 0  # a plain 429 is answered at once
    loop = asyncio.get_running_loop()
    started = loop.time()
    early = await client.post("/v1/orders", json=SELL, headers=ALICE)
    assert early.status == 429
    assert (await early.json())["error"]["limit"] == "retry_after_ignored"
    assert loop.time() - started >= cap * 0.95  # held for the (capped) delay
    assert (api.tarpitted_total, api.tarpitted) == (1, 0)  # held once, released
    # At the bound, a refusal is answered at once.
    monkeypatch.setattr(api_app, "API_TARPIT_MAX_HELD", 0)
    again = await client.post("/v1/orders", json=SELL, headers=ALICE)
    assert again.status == 429 and api.tarpitted_total == 1
    # Another key is neither shut out nor held.
    assert (await client.post("/v1/orders", json=SELL, headers=BOB)).status == 200
    assert api.tarpitted_total == 1

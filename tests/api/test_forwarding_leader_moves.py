"""A forwarded request gives up when leadership moves while it waits at the old leader.

After a partition the old leader may never answer: waiting out the forward
timeout held clients for seconds (issue 14). The follower watches its own view
of the leader; when it changes, a forwarded write is answered 504 (outcome
unknown: retry with the same client order id) and a read 503, at once.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from exchange_node.api.errors import ApiError
from exchange_node.api.forwarding import Forwarder


async def _silent_leader() -> TestServer:
    """A leader cut off by a partition: it takes the request and never answers."""

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.mark.parametrize(("write", "status"), [(True, 504), (False, 503)])
async def test_leadership_moving_ends_the_wait_at_once(write, status):
    old = await _silent_leader()
    address = f"127.0.0.1:{old.port}"
    view = {"leader": address}
    forwarder = Forwarder(3600, 1, 1.0, leader_now=lambda: view["leader"])
    try:
        attempt = asyncio.ensure_future(
            forwarder.exchange(
                "POST", f"http://{address}/v1/orders", {}, b"{}", address, write=write
            )
        )
        await asyncio.sleep(0.3)
        assert not attempt.done()  # still waiting at the silent leader
        view["leader"] = "127.0.0.1:1"  # this node learns of a new leader
        with pytest.raises(ApiError) as refused:
            await asyncio.wait_for(attempt, 30)
        assert refused.value.status == status
        assert "leadership moved" in refused.value.message
    finally:
        await forwarder.close()
        await old.close()


async def test_without_a_leader_view_the_forward_only_times_out():
    old = await _silent_leader()
    address = f"127.0.0.1:{old.port}"
    forwarder = Forwarder(0.5, 1, 1.0)
    try:
        with pytest.raises(ApiError) as refused:
            await forwarder.exchange("POST", f"http://{address}/x", {}, b"{}", address, write=True)
        assert refused.value.status == 504
        assert "leadership moved" not in refused.value.message
    finally:
        await forwarder.close()
        await old.close()

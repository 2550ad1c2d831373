"""The cluster bench's minimal HTTP/1.1 client reads real aiohttp answers correctly."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from exchange_node.tools.bench.cluster import HttpError, LeanClient


@pytest.fixture
async def server():
    seen: list[tuple[str, dict, str]] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append((request.path, body, request.headers.get("Authorization", "")))
        status = 400 if body.get("bad") else 200
        return web.json_response({"got": body}, status=status)

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        return web.json_response({"slow": True})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"{}")
        await response.write_eof()
        return response

    async def hang_up(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(0.1)
        return web.Response()

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/slow", slow)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/hang-up", hang_up)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"127.0.0.1:{port}", seen
    await runner.cleanup()


def post(client: LeanClient, path: str, doc: dict) -> bytes:
    return client.build("POST", path, json.dumps(doc).encode(), {"Authorization": "Bearer t"})


async def test_answers_come_back_in_full_over_one_kept_alive_connection(server) -> None:
    address, seen = server
    client = LeanClient(address)
    try:
        for i in range(5):
            status, body = await client.send(post(client, "/echo", {"i": i, "pad": "x" * 5000}))
            assert status == 200
            assert json.loads(body)["got"]["i"] == i
        status, body = await client.send(post(client, "/echo", {"bad": True}))
        assert status == 400 and json.loads(body) == {"got": {"bad": True}}
        assert len(client._all) == 1
        assert [(path, doc.get("i"), auth) for path, doc, auth in seen[:2]] == [
            ("/echo", 0, "Bearer t"),
            ("/echo", 1, "Bearer t"),
        ]
    finally:
        client.close()


async def test_concurrent_requests_get_connections_of_their_own(server) -> None:
    address, _ = server
    client = LeanClient(address)
    try:
        answers = await asyncio.gather(*(client.send(post(client, "/slow", {})) for _ in range(4)))
        assert [status for status, _ in answers] == [200] * 4
        assert len(client._all) == 4
    finally:
        client.close()


async def test_what_it_cannot_read_is_an_error_not_a_wrong_answer(server) -> None:
    address, _ = server
    client = LeanClient(address)
    try:
        with pytest.raises(HttpError, match="response head"):
            await asyncio.wait_for(client.send(post(client, "/chunked", {})), 5)
        with pytest.raises(HttpError, match="connection lost"):
            await asyncio.wait_for(client.send(post(client, "/hang-up", {})), 5)
        # A broken connection is not reused: the next request works.
        status, _ = await client.send(post(client, "/echo", {"i": 1}))
        assert status == 200
    finally:
        client.close()


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/ok", ok)
    runner = web.AppRunner(app, keepalive_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    client = LeanClient(f"127.0.0.1:{runner.addresses[0][1]}")
    try:
        assert (await client.send(post(client, "/ok", {})))[0] == 200
        await asyncio.sleep(0.5)  # the server closes the idle connection
        status, _ = await asyncio.wait_for(client.send(post(client, "/ok", {})), 5)
        assert status == 200
        assert len(client._all) == 2
    finally:
        client.close()
        await runner.cleanup()

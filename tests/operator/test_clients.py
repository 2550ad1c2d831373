"""The operator's HTTP clients against small loopback servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import kopf
import pytest
from aiohttp import web
from exchange_operator.admin import DEFAULT_URL_TEMPLATE, AdminClient, AdminError, admin_base_url
from exchange_operator.kube import KubeClient


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def configmap(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer fresh":
            return web.json_response({"message": "Unauthorized"}, status=401)
        return web.json_response({"metadata": {"name": request.match_info["name"]}})

    async def status(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer admin":
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response(
            {"node_id": 2, "name": "xc-1", "role": "follower", "term": 3, "leader": 1,
             "commit_index": 10, "applied_index": 9,
             "members": [{"id": 1, "address": "xc-0.xc-peers.ns.svc:7070", "voter": True}]}
        )  # fmt: skip

    async def members(request: web.Request) -> web.Response:
        return web.json_response({"leader": 1, "leader_address": "xc-0"}, status=421)

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{ns}/configmaps/{name}", configmap)
    app.router.add_get("/xc-1/v1/admin/status", status)
    app.router.add_post("/xc-1/v1/admin/members", members)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_kube_client_rereads_a_rotated_token(
    server: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, seen = server
    token_file = tmp_path / "token"
    token_file.write_text("fresh\n")
    client = KubeClient(
        kopf.ConnectionInfo(server=url, scheme="Bearer", token="stale"), str(token_file)
    )
    try:
        obj = await client.get("ConfigMap", "ns", "a")
    finally:
        await client.close()
    assert obj == {"metadata": {"name": "a"}}
    assert seen == ["Bearer stale", "Bearer fresh"]


async def test_kube_client_raises_when_the_token_stays_bad(
    server: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _ = server
    token_file = tmp_path / "token"
    token_file.write_text("stale")
    client = KubeClient(
        kopf.ConnectionInfo(server=url, scheme="Bearer", token="stale"), str(token_file)
    )
    try:
        with pytest.raises(Exception, match="401"):
            await client.get("ConfigMap", "ns", "a")
    finally:
        await client.close()


async def test_admin_client(server: tuple[str, list[str]]) -> None:
    url, _ = server
    base = admin_base_url(url + "/{pod}", "xc", "ns", "xc-1")
    async with aiohttp.ClientSession() as session:
        status = await AdminClient(session, "admin").status(base)
        assert status is not None and status.node_id == 2 and status.leader == 1
        assert status.members[0].address.startswith("xc-0.")
        assert await AdminClient(session, "wrong").status(base) is None
        assert (
            await AdminClient(session, "admin", timeout=0.5).status("http://127.0.0.1:9/x") is None
        )
        with pytest.raises(AdminError) as refused:
            await AdminClient(session, "admin").add_learner(base, 7, "xc-3.xc-peers.ns.svc:7070")
        assert refused.value.status == 421


def test_default_admin_url_uses_the_headless_service_and_the_admin_port() -> None:
    assert (
        admin_base_url(DEFAULT_URL_TEMPLATE, "xc", "trading", "xc-2")
        == "https://xc-2.xc-peers.trading.svc:8081"
    )


def test_cli_arguments() -> None:
    import argparse

    from exchange_operator import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.namespaces_from(parser.parse_args(["-n", "a", "-n", "b"])) == (False, ["a", "b"])
    assert cli.namespaces_from(parser.parse_args(["--all-namespaces"])) == (True, [])
    with pytest.raises(SystemExit):
        parser.parse_args(["-n", "a", "--all-namespaces"])

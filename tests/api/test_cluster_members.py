"""GET /v1/cluster/members: the node asks its members itself (real HTTP between real
aiohttp servers on loopback), with a short bounded timeout, and shares one round of
fetches between callers."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from api_fakes import EngineService
from exchange_node.api import ApiConfig, create_app
from exchange_node.service import MemberStatus, NodeStatus


class ClusterService(EngineService):
    """A follower (node 1) whose members are at the given HTTP addresses."""

    def __init__(self, addresses: dict[int, str]) -> None:
        super().__init__(node_id=1)
        self.addresses = addresses

    def status(self) -> NodeStatus:
        return NodeStatus(
            node_id=1,
            name="node-1",
            role="follower",
            term=7,
            leader=2,
            commit_index=90,
            applied_index=88,
            state_hash="ab" * 32,
            diverged=False,
            members=[
                MemberStatus(i, f"node-{i}", f"g:{i}", addr, True, 0, 0, True)
                for i, addr in sorted(self.addresses.items())
            ],
        )


def leader_view(hits: list[float]) -> web.Application:
    """Node 2, the leader: answers /v1/cluster with its own view and its followers' lag."""

    async def cluster(_request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        return web.json_response(
            {
                "node_id": 2,
                "name": "node-2",
                "role": "leader",
                "term": 7,
                "leader": 2,
                "commit_index": 95,
                "applied_index": 95,
                "members": [
                    {"id": 1, "lag": 5},
                    {"id": 2, "lag": 0},
                    {"id": 3, "lag": 95},
                ],
            }
        )

    app = web.Application()
    app.router.add_get("/v1/cluster", cluster)
    return app


async def test_members_are_fetched_server_side_with_a_bounded_timeout() -> None:
    hits: list[float] = []
    leader = TestServer(leader_view(hits), host="127.0.0.1")
    await leader.start_server()
    # node 3 is frozen: its port accepts connections (the backlog) but nobody answers
    frozen = socket.socket()
    frozen.bind(("127.0.0.1", 0))
    frozen.listen(8)
    addresses = {
        1: "127.0.0.1:1",  # this node: answered locally, never fetched
        2: f"127.0.0.1:{leader.port}",
        3: f"127.0.0.1:{frozen.getsockname()[1]}",
    }
    service = ClusterService(addresses)
    app = create_app(service, ApiConfig(member_status_timeout_seconds=0.3))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        started = time.monotonic()
        answer = await client.get("/v1/cluster/members")
        elapsed = time.monotonic() - started
        assert answer.status == 200
        body: dict[str, Any] = await answer.json()
        rows = {m["id"]: m for m in body["members"]}
        assert body["node_id"] == 1 and body["leader"] == 2
        assert rows[1]["role"] == "follower" and rows[1]["applied_index"] == 88
        assert rows[1]["lag"] == 5  # the leader's figure, not this follower's
        assert rows[2]["reachable"] and rows[2]["role"] == "leader"
        assert rows[2]["commit_index"] == 95
        assert rows[3]["reachable"] is False and "0.3 s" in rows[3]["error"]
        assert rows[3]["lag"] == 95
        print(f"a frozen member costs {elapsed:.2f} s (timeout 0.3 s)")

        # many concurrent callers inside the cache interval: one round of fetches
        before = len(hits)
        await asyncio.gather(*(client.get("/v1/cluster/members") for _ in range(20)))
        assert len(hits) - before <= 1
    finally:
        await client.close()
        await leader.close()
        frozen.close()


async def test_every_member_unreachable_still_answers_200() -> None:
    service = ClusterService({1: "127.0.0.1:1", 2: "127.0.0.1:9", 3: ""})
    client = TestClient(TestServer(create_app(service, ApiConfig()), host="127.0.0.1"))
    await client.start_server()
    try:
        body = await (await client.get("/v1/cluster/members")).json()
        rows = {m["id"]: m for m in body["members"]}
        assert rows[1]["reachable"] is True
        assert rows[2]["reachable"] is False and rows[2]["error"]
        assert rows[3]["error"] == "no HTTP address known"
        assert body["leader"] == 2  # this node's own idea when the leader cannot be asked
    finally:
        await client.close()


def _tls_context(pair: Any, tmp_path: Any, name: str) -> Any:
    import ssl

    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_over_https_members_are_checked_against_the_clusters_ca(tmp_path) -> None:
    import ssl

    from exchange_node.security import certs

    ca = certs.generate_ca("members-test-ca", valid_days=2)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    server = certs.issue_server_cert(ca, ["localhost"], ["127.0.0.1"], valid_days=2)
    hits: list[float] = []
    leader = TestServer(leader_view(hits), host="127.0.0.1")
    await leader.start_server(ssl=_tls_context(server, tmp_path, "l"))
    addresses = {1: "127.0.0.1:1", 2: f"127.0.0.1:{leader.port}", 3: ""}
    client_tls = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    try:
        for ca_file, reachable in ((str(tmp_path / "ca.crt"), True), (None, False)):
            app = create_app(ClusterService(addresses), ApiConfig(member_status_ca_file=ca_file))
            node = TestServer(app, host="127.0.0.1")
            await node.start_server(ssl=_tls_context(server, tmp_path, "n"))
            client = TestClient(node)
            await client.start_server()
            try:
                answer = await client.get("/v1/cluster/members", ssl=client_tls)
                rows = {m["id"]: m for m in (await answer.json())["members"]}
            finally:
                await client.close()
            # an https request makes https fetches; without the CA the certificate is refused
            assert rows[2]["reachable"] is reachable, rows[2]["error"]
            if not reachable:
                assert "Certificate" in rows[2]["error"] or "SSL" in rows[2]["error"], rows[2]
    finally:
        await leader.close()

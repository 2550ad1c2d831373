"""A WebSocket order on a follower served over HTTPS is forwarded to the leader over
HTTPS (real TLS servers on loopback, the cluster's CA checking the leader)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from api_fakes import ALICE, KEYS, EngineService
from exchange_node.api import ApiConfig, create_app
from exchange_node.security import certs
from exchange_node.service import NotLeader
from test_ws import SELL, recv


def _server_tls(pair: Any, tmp_path: Path, name: str) -> ssl.SSLContext:
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_a_follower_over_https_forwards_socket_orders_over_https(tmp_path: Path) -> None:
    ca = certs.generate_ca("ws-forward-test-ca", valid_days=2)
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    pair = certs.issue_server_cert(ca, ["localhost"], ["127.0.0.1"], valid_days=2)
    leader = EngineService(node_id=1)
    leader_server = TestServer(create_app(leader, ApiConfig(api_keys=dict(KEYS))), host="127.0.0.1")
    await leader_server.start_server(ssl=_server_tls(pair, tmp_path, "leader"))
    follower = EngineService(node_id=2)
    follower.fail_submit = NotLeader(1, f"127.0.0.1:{leader_server.port}")
    config = ApiConfig(api_keys=dict(KEYS), member_status_ca_file=str(ca_file))
    follower_server = TestServer(create_app(follower, config), host="127.0.0.1")
    await follower_server.start_server(ssl=_server_tls(pair, tmp_path, "follower"))
    client = TestClient(follower_server)
    await client.start_server()
    try:
        ws = await client.ws_connect(
            "/v1/ws", headers=ALICE, ssl=ssl.create_default_context(cafile=str(ca_file))
        )
        assert (await recv(ws))["type"] == "hello"
        await ws.send_json({"op": "order", "id": 1, **SELL})
        ack = await recv(ws, id=1)
        assert ack["type"] == "ack" and ack["status"] == 200, ack
        (command,) = leader.submitted[-1]
        assert command.client_id == "alice"
        await ws.close()
    finally:
        await client.close()
        await leader_server.close()

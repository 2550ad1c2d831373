"""The WebSocket ``stats`` channel: what the node applied per interval, all symbols
and clients together (the live view's orders/s chart)."""

from __future__ import annotations

import pytest
from api_fakes import ALICE, BOB
from exchange_node.api import API_KEY
from exchange_node.api import ws as ws_module
from test_ws import BUY, SELL, connect, recv


async def test_stats_count_orders_and_trades_per_interval(api, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ws_module, "API_WS_STATS_INTERVAL_S", 0.05)
    client, _ = api
    ws = await connect(client)  # anonymous: stats is public
    await ws.send_json({"op": "subscribe", "id": 1, "channels": ["stats"]})
    assert (await recv(ws, id=1))["type"] == "subscribed"
    await client.post("/v1/orders", json=SELL, headers=ALICE)
    await client.post("/v1/orders", json=BUY, headers=BOB)  # crosses: one trade
    await client.post("/v1/orders", json={**BUY, "price": 49_000}, headers=BOB)
    orders = trades = 0
    while orders < 3:
        stats = await recv(ws, channel="stats")
        assert stats["type"] == "stats" and stats["interval_ms"] > 0
        orders += stats["orders"]
        trades += stats["trades"]
    assert (orders, trades) == (3, 1)
    assert stats["log_index"] >= 3

    await ws.send_json({"op": "unsubscribe", "id": 2, "channels": ["stats"]})
    await recv(ws, id=2)
    hub = client.app[API_KEY].hub
    assert not hub.stats_subs
    await ws.close()


async def test_unknown_channel_error_lists_stats(api):
    client, _ = api
    ws = await connect(client)
    await ws.send_json({"op": "subscribe", "id": 1, "channels": ["weather"]})
    error = await recv(ws, id=1)
    assert "stats" in error["error"]["message"]
    await ws.close()

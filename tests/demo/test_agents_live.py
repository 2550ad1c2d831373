"""The trading agents against a real 3-node cluster."""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp
import pytest
from demo_support import http
from exchange_node.agents import cli as agents_cli
from exchange_node.agents.client import ExchangeClient
from exchange_node.tools.local import CLUSTER_FILE, free_ports

pytestmark = pytest.mark.slow


def agent_args(cluster, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    agents_cli.add_arguments(parser)
    args = parser.parse_args(["--cluster-file", str(cluster.root / CLUSTER_FILE)])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_population_trades_and_reports(cluster):
    args = agent_args(
        cluster, market_makers=2, momentum=1, arbitrage=1, noise=1, duration=6.0, summary_every=2.0
    )
    lines: list[str] = []

    class Out:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    report = asyncio.run(agents_cli.run_agents(args, out=Out()))
    assert report["agents"] == {"market-maker": 2, "momentum": 1, "arbitrage": 1, "noise": 1}
    assert report["orders"] > 50 and report["accepted"] > 0
    assert report["fills"] > 0, report
    assert report["failures"] == 0
    assert any("orders/s" in line for line in lines), lines  # live summary lines were printed
    # the exchange saw the agents trade: their positions are non-trivial
    key = next(t for t, c in cluster.spec.api_keys.items() if c == "alice")
    status, body = http(
        "GET", f"http://{cluster.spec.members[0].http}/v1/trades/BTC-USD?limit=5", key
    )
    assert status == 200 and body["trades"], body


def test_a_retried_order_never_doubles(cluster):
    leader = cluster.wait_for_leader(30)
    live = f"http://{cluster.member(leader).http}"
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens: the first attempt fails
    token = cluster.key_for("carol")
    order = {
        "client_order_id": "retry-1",
        "symbol": "ETH-USD",
        "side": "BUY",
        "price": 2_900,
        "quantity": 3,
    }

    async def scenario():
        async with aiohttp.ClientSession() as session:
            client = ExchangeClient([dead, live], token, session, timeout=2.0)
            first = await client.new_order(dict(order))
            again = await client.new_order(dict(order))  # a retry of the same order by the app
            return client.stats, first, again

    stats, (s1, b1), (s2, b2) = asyncio.run(scenario())
    assert stats.unreachable >= 1  # the dead address was tried and the client moved on
    assert s1 == s2 == 200, (b1, b2)
    assert b1["order_id"] == b2["order_id"]
    status, body = http("GET", f"{live}/v1/orders", token)
    assert status == 200
    mine = [o for o in body["orders"] if o["client_order_id"] == "retry-1"]
    assert len(mine) == 1 and mine[0]["quantity"] == 3, json.dumps(body)[:500]

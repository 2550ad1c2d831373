"""`exchange demo`: a local 3-node cluster with trading agents, ready to look at.

The first run creates ``--data-root`` with the cluster's ports, keys and a
symbol list whose reference prices come from yfinance (or, offline, from the
documented fallback prices); later runs resume the same cluster on its data.
Ctrl-C stops the agents, then every node (a leader hands leadership over).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

from exchange_node.agents import cli as agents_cli
from exchange_node.agents.marketdata import ReferencePrices
from exchange_node.tools.local import CLUSTER_FILE, LocalCluster

DEMO_TICKERS = ("AAPL", "MSFT", "NVDA", "SPY")
PRICE_SCALE = 100
"""Integer price units per dollar: prices are in cents."""
AGENT_KEYS = 12


class UsageError(Exception):
    """A flag's value cannot work; the message names the flag."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=3, help="members (default 3)")
    parser.add_argument(
        "--data-root", type=Path, default=Path(".demo"), help="cluster data (default .demo)"
    )
    parser.add_argument(
        "--base-port", type=int, default=8080, help="HTTP of node i is base+i-1 (default 8080)"
    )
    parser.add_argument("--noise-rate", type=float, default=4.0, help="orders/s per noise trader")
    parser.add_argument(
        "--duration", type=float, default=0.0, help="seconds to run (0: until Ctrl-C)"
    )
    parser.add_argument(
        "--summary-every", type=float, default=5.0, help="seconds between agent summaries"
    )


def write_symbols(path: Path) -> list[str]:
    """The demo's symbol list with reference prices in cents; returns notes to print."""
    prices = ReferencePrices().load(DEMO_TICKERS)
    symbols = [
        {
            "name": ticker,
            "tick_size": 1,
            "lot_size": 1,
            "price_band_bps": 1_000,
            "reference_price": max(1, round(price.price * PRICE_SCALE)),
        }
        for ticker, price in prices.items()
    ]
    doc = {
        "symbols": symbols,
        "risk": {"max_order_qty": 10_000, "max_notional": 10**10, "max_position": 100_000},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    notes = [f"{t}: ${p.price:,.2f} ({p.source})" for t, p in prices.items()]
    if any(p.source == "fallback" for p in prices.values()):
        notes.append("offline: documented fallback prices; the agents move them with a random walk")
    return notes


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def prepare(args: argparse.Namespace) -> tuple[LocalCluster, list[str]]:
    root: Path = args.data_root.resolve()
    notes: list[str] = []
    if (root / CLUSTER_FILE).exists():
        cluster = LocalCluster.create(root, args.nodes)
        notes.append(f"resuming the cluster in {root} on its data")
        return cluster, notes
    for port in range(args.base_port, args.base_port + args.nodes):
        if not _port_free(port) or not _port_free(port + 100):
            raise UsageError(
                f"exchange demo: error: --base-port {args.base_port}: port {port} or {port + 100} is in use"
            )
    root.mkdir(parents=True, exist_ok=True)
    config = root / "exchange.yaml"
    notes += write_symbols(config)
    cluster = LocalCluster.create(
        root, args.nodes, base_port=args.base_port, extra_args=[f"--config={config}"]
    )
    for i in range(AGENT_KEYS):
        cluster.spec.api_keys[f"key-agent-{i}-{secrets.token_hex(6)}"] = f"agent-{i}"
    cluster.spec.save(root)
    return cluster, notes


def where_to_look(cluster: LocalCluster, leader: int) -> str:
    first = cluster.spec.members[0]
    token = cluster.key_for("alice")
    # a bid 1% under the reference price: inside the price band, resting on the book
    listed = yaml.safe_load((cluster.root / "exchange.yaml").read_text())["symbols"][0]
    price = listed["reference_price"] * 99 // 100
    order = json.dumps({"symbol": listed["name"], "side": "BUY", "price": price, "quantity": 5})
    lines = [
        f"cluster up: {len(cluster.procs)} nodes, leader is node {leader}",
        "",
        f"  live view   http://{first.http}/",
        f"  API         http://{first.http}/v1   (OpenAPI: http://{first.http}/openapi.json)",
        f"  stream      ws://{first.http}/v1/ws",
        f"  metrics     http://{first.http}/metrics",
        "  members     "
        + "  ".join(
            f"node {m.node_id}: http://{m.http}"
            for m in cluster.spec.members
            if m.node_id in cluster.procs
        ),
        f"  status      .venv/bin/exchange local status --data-root {cluster.root}",
        f"  logs        {cluster.root}/node-*.log",
        "",
        "  place an order (as alice):",
        f"  curl -s -X POST http://{first.http}/v1/orders -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d '{order}'",
        "",
        "Ctrl-C stops the agents and the cluster; `make demo` again resumes on the same data.",
    ]
    return "\n".join(lines)


def agent_args(cluster: LocalCluster, args: argparse.Namespace) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    agents_cli.add_arguments(parser)
    ns = parser.parse_args(["--cluster-file", str(cluster.root / CLUSTER_FILE)])
    ns.noise_rate = args.noise_rate
    ns.summary_every = args.summary_every
    ns.duration = args.duration
    ns.noise = 4
    ns.market_makers = 3
    ns.momentum = 2
    ns.arbitrage = 2
    return ns


async def supervise(cluster: LocalCluster, stop: asyncio.Event) -> None:
    """Restart a node that exits on its own (a crash), as `exchange local up` does."""
    while not stop.is_set():
        await asyncio.sleep(0.5)
        for node_id, proc in list(cluster.procs.items()):
            if proc.poll() is not None and not stop.is_set():
                print(f"node {node_id} exited with {proc.returncode}; restarting it", flush=True)
                cluster.start(node_id)


def main(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 7:
        print("exchange demo: error: --nodes must be between 1 and 7", file=sys.stderr)
        return 2
    try:
        cluster, notes = prepare(args)
    except UsageError as exc:
        print(f"exchange demo: error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(note)
    cluster.start_all()
    try:
        leader = cluster.wait_for_leader(60.0)
    except (TimeoutError, RuntimeError) as exc:
        print(f"exchange demo: the cluster did not elect a leader: {exc}", file=sys.stderr)
        cluster.stop_all()
        return 1
    print(where_to_look(cluster, leader), flush=True)

    async def run() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watcher = asyncio.create_task(supervise(cluster, stop))
        try:
            return await agents_cli.run_agents(agent_args(cluster, args), stop=stop)
        finally:
            stop.set()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    try:
        report = asyncio.run(run())
        print("agents' report: " + json.dumps(report))
    finally:
        print("stopping the cluster...", flush=True)
        cluster.stop_all()
    return 0

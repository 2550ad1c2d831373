"""`exchange demo`: a local 3-node cluster with trading agents, ready to look at.

The first run creates ``--data-root`` with the cluster's ports, keys and a
symbol list whose reference prices come from yfinance (or, offline, from the
documented fallback prices); later runs resume the same cluster on its data.
Ctrl-C stops the agents, then every node (a leader hands leadership over).

``--universe sp500`` lists the S&P 500 constituents (yfinance closes, cached;
offline, the shipped reference prices) and sizes a larger agent population to
the machine's cores; the run ends by saying what rate it sustained.
``--replay DAY`` drives the agents' fair values through that day's daily bars
(yfinance or the cache, or ``--replay-bars FILE``) in ``--replay-minutes``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

from exchange_node.agents import cli as agents_cli
from exchange_node.agents.marketdata import (
    DEMO_TICKERS,
    UNIVERSES,
    DailyBar,
    ReferencePrices,
    ReplayFairValues,
    ReplayPath,
    daily_bars,
    read_bars_file,
    universe,
)
from exchange_node.tools.local import CLUSTER_FILE, LocalCluster

__all__ = ["DEMO_TICKERS", "main", "population_for"]
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
    parser.add_argument(
        "--universe",
        choices=UNIVERSES,
        default=None,
        help="demo (4 tickers, the default) or sp500 (the S&P 500 constituents; a larger "
        "population sized to the machine)",
    )
    parser.add_argument(
        "--replay",
        type=_day,
        default=None,
        metavar="YYYY-MM-DD",
        help="replay that day's daily bars (yfinance or the cache) as the agents' fair values",
    )
    parser.add_argument(
        "--replay-bars",
        type=Path,
        default=None,
        help="bars for --replay from this JSON file instead ({symbol: {day, open, high, low, "
        "close, volume}})",
    )
    parser.add_argument(
        "--replay-minutes",
        type=float,
        default=10.0,
        help="wall-clock minutes one replayed session takes (default 10)",
    )


def _day(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


MAX_CORES_USED = 8
"""Beyond this many cores the population stops growing: the three nodes, not the
agents, are then what limits the rate, and every agent holds a key and connections."""


def population_for(universe_name: str, cores: int) -> dict[str, int]:
    """Agents per kind for a universe on a machine with ``cores`` cores. The demo's
    four tickers keep the small population; the S&P 500 gets one market maker per
    core (each cycles through every symbol) and more takers per core, so the three
    nodes and the agents share the machine without starving one another."""
    cores = min(max(1, cores), MAX_CORES_USED)
    if universe_name == "sp500":
        return {
            "market_makers": min(4, cores),
            "momentum": 2 * cores,
            "arbitrage": 2 * cores,
            "noise": 6 * cores,
        }
    return {"market_makers": 3, "momentum": 2, "arbitrage": 2, "noise": 4}


def write_symbols(
    path: Path, universe_name: str = "demo", bars: dict[str, DailyBar] | None = None
) -> list[str]:
    """The demo's symbol list with reference prices in cents; returns notes to print.
    With ``bars`` (a replay) a symbol's reference is its bar's open."""
    offline = universe(universe_name)
    loaded = ReferencePrices().load(offline, fallback=offline)
    prices = {t: p.price for t, p in loaded.items()}
    sources = {} if bars else loaded
    for ticker, bar in (bars or {}).items():
        if ticker in prices:
            prices[ticker] = bar.open
    symbols = [
        {
            "name": ticker,
            "tick_size": 1,
            "lot_size": 1,
            # a replayed day may move more than 10 % from its open
            "price_band_bps": 2_500 if bars else 1_000,
            "reference_price": max(1, round(price * PRICE_SCALE)),
            "price_scale": PRICE_SCALE,
        }
        for ticker, price in prices.items()
    ]
    doc = {
        "symbols": symbols,
        "risk": {"max_order_qty": 10_000, "max_notional": 10**10, "max_position": 100_000},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    if bars:
        return [f"replay: {len(bars)} of {len(prices)} symbols have a bar; reference = the open"]
    by_source: dict[str, int] = {}
    for p in sources.values():
        by_source[p.source] = by_source.get(p.source, 0) + 1
    if len(sources) > 12:
        notes = [
            f"{universe_name}: {len(sources)} symbols, reference prices: "
            + ", ".join(f"{n} {src}" for src, n in sorted(by_source.items()))
        ]
    else:
        notes = [f"{t}: ${p.price:,.2f} ({p.source})" for t, p in sources.items()]
    if by_source.get("fallback"):
        notes.append(
            "offline: shipped/documented fallback prices; the agents move them with a random walk"
        )
    return notes


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def replay_bars(args: argparse.Namespace, universe_name: str) -> dict[str, DailyBar] | None:
    if args.replay is None:
        if args.replay_bars is not None:
            raise UsageError("--replay-bars needs --replay DAY")
        return None
    if args.replay_bars is not None:
        try:
            bars = read_bars_file(args.replay_bars)
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"--replay-bars {args.replay_bars}: {exc}") from None
        bars = {s: b for s, b in bars.items() if b.day == args.replay.isoformat()}
    else:
        bars = daily_bars(universe(universe_name), args.replay)
    if not bars:
        raise UsageError(
            f"--replay {args.replay}: no daily bars for that day (yfinance unreachable and "
            "nothing cached, or not a trading day); pass --replay-bars FILE"
        )
    return bars


def universe_of(args: argparse.Namespace, root: Path) -> str:
    """The universe asked for, else the one the data root was made with."""
    if args.universe:
        return str(args.universe)
    try:
        listed = yaml.safe_load((root / "exchange.yaml").read_text())["symbols"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return "demo"
    return "sp500" if len(listed) > len(DEMO_TICKERS) else "demo"


def ensure_agent_keys(cluster: LocalCluster, count: int) -> None:
    have = sum(1 for client in cluster.spec.api_keys.values() if client.startswith("agent-"))
    for i in range(have, count):
        cluster.spec.api_keys[f"key-agent-{i}-{secrets.token_hex(6)}"] = f"agent-{i}"
    cluster.spec.save(cluster.root)


def prepare(args: argparse.Namespace) -> tuple[LocalCluster, list[str]]:
    root: Path = args.data_root.resolve()
    notes: list[str] = []
    universe_name = universe_of(args, root)
    bars = replay_bars(args, universe_name)
    args.bars = bars
    agents = sum(population_for(universe_name, os.cpu_count() or 1).values())
    if (root / CLUSTER_FILE).exists():
        cluster = LocalCluster.create(root, args.nodes)
        notes.append(f"resuming the cluster in {root} on its data")
        if args.universe or bars:  # list what was asked for (symbols are never delisted)
            notes += write_symbols(root / "exchange.yaml", universe_name, bars)
        ensure_agent_keys(cluster, max(AGENT_KEYS, agents))
        return cluster, notes
    for port in range(args.base_port, args.base_port + args.nodes):
        if not _port_free(port) or not _port_free(port + 100):
            raise UsageError(
                f"exchange demo: error: --base-port {args.base_port}: port {port} or {port + 100} is in use"
            )
    root.mkdir(parents=True, exist_ok=True)
    config = root / "exchange.yaml"
    notes += write_symbols(config, universe_name, bars)
    cluster = LocalCluster.create(
        root, args.nodes, base_port=args.base_port, extra_args=[f"--config={config}"]
    )
    ensure_agent_keys(cluster, max(AGENT_KEYS, agents))
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
    for kind, count in population_for(universe_of(args, cluster.root), os.cpu_count() or 1).items():
        setattr(ns, kind, count)
    bars = getattr(args, "bars", None)
    if bars:
        paths = {s: ReplayPath(b, seed=ns.seed) for s, b in bars.items()}
        seconds = args.replay_minutes * 60

        def replay(_symbols: Any, walk: Any) -> ReplayFairValues:
            return ReplayFairValues(paths, PRICE_SCALE, seconds, walk)

        ns.fair_values = replay
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
            return await agents_cli.run_agents(agents, stop=stop)
        finally:
            stop.set()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    agents = agent_args(cluster, args)
    universe_name = universe_of(args, cluster.root)
    print(
        f"universe {universe_name}: {agents.market_makers} market makers, {agents.momentum} "
        f"momentum, {agents.arbitrage} arbitrage, {agents.noise} noise traders "
        f"(sized for {os.cpu_count()} cores)"
        + (f"; replaying {args.replay} over {args.replay_minutes:g} min" if args.replay else ""),
        flush=True,
    )
    try:
        report = asyncio.run(run())
        shown = dict(report)
        if len(shown.get("spreads") or {}) > agents_cli.SPREADS_SHOWN:
            shown["spreads"] = f"{len(shown['spreads'])} symbols (not shown)"
        print("agents' report: " + json.dumps(shown))
        print(
            f"sustained {report['orders_per_second']:,.1f} orders/s over {report['seconds']:.0f} s "
            f"({report['orders']:,} orders, {report['fills']:,} fills, "
            f"{report['failures']:,} failures) on {os.cpu_count()} cores",
            flush=True,
        )
    finally:
        print("stopping the cluster...", flush=True)
        cluster.stop_all()
    return 0

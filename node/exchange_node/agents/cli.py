"""`exchange agents`: a population of trading agents against any cluster address."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from .client import ClientStats, ExchangeClient
from .marketdata import ReferencePrices
from .population import (
    Agent,
    Arbitrageur,
    FairValues,
    MarketMaker,
    MomentumTrader,
    NoiseTrader,
    SymbolInfo,
)

ENV_KEYS = "EXCHANGE_AGENT_KEYS"


class UsageError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        help="a node's HTTP address, e.g. http://127.0.0.1:8080 (repeat for every member)",
    )
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument(
        "--cluster-file", type=Path, help="a local cluster's cluster.json (keys and URLs)"
    )
    keys.add_argument(
        "--keys-file", type=Path, help="API keys, one 'token=client_id' per line or JSON/YAML map"
    )
    parser.add_argument("--market-makers", type=int, default=2)
    parser.add_argument("--momentum", type=int, default=1)
    parser.add_argument("--arbitrage", type=int, default=1)
    parser.add_argument("--noise", type=int, default=3)
    parser.add_argument("--noise-rate", type=float, default=5.0, help="orders/s per noise trader")
    parser.add_argument(
        "--spread-bps", type=float, default=20.0, help="market makers' quoted spread"
    )
    parser.add_argument(
        "--skew-bps", type=float, default=2.0, help="quote skew per lot of inventory"
    )
    parser.add_argument(
        "--volatility", type=float, default=0.0004, help="fair-value walk step (log)"
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="seconds to run (0: until Ctrl-C)"
    )
    parser.add_argument(
        "--summary-every", type=float, default=2.0, help="seconds between summaries"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-report", action="store_true", help="print the final report as JSON")


def load_keys(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(urls, tokens) from the flags, a cluster file, a keys file or $EXCHANGE_AGENT_KEYS."""
    urls = list(args.url)
    tokens: list[str] = []
    if args.cluster_file:
        try:
            spec = json.loads(args.cluster_file.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--cluster-file: cannot read {args.cluster_file}: {exc}") from None
        tokens = [t for t, client in spec["api_keys"].items() if client.startswith("agent-")]
        tokens = tokens or list(spec["api_keys"])
        urls = urls or [f"http://127.0.0.1:{m['http_port']}" for m in spec["members"]]
    elif args.keys_file:
        try:
            text = args.keys_file.read_text()
        except OSError as exc:
            raise UsageError(f"--keys-file: cannot read {args.keys_file}: {exc}") from None
        tokens = _parse_keys(text, "--keys-file")
    elif os.environ.get(ENV_KEYS):
        tokens = _parse_keys(os.environ[ENV_KEYS].replace(",", "\n"), ENV_KEYS)
    else:
        raise UsageError("API keys needed: give --cluster-file, --keys-file or $" + ENV_KEYS)
    if not urls:
        raise UsageError("--url: at least one cluster address is needed")
    return urls, tokens


def _parse_keys(text: str, where: str) -> list[str]:
    text = text.strip()
    if text.startswith("{"):
        return list(json.loads(text))
    tokens = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token, sep, _client = line.replace(":", "=", 1).partition("=")
        if not sep:
            raise UsageError(f"{where}: line {line[:12]!r}... is not token=client_id")
        tokens.append(token.strip())
    return tokens


async def build_population(
    args: argparse.Namespace, urls: list[str], tokens: list[str], session: aiohttp.ClientSession
) -> tuple[list[Agent], FairValues, list[str]]:
    counts = {
        "--market-makers": args.market_makers,
        "--momentum": args.momentum,
        "--arbitrage": args.arbitrage,
        "--noise": args.noise,
    }
    for flag, n in counts.items():
        if n < 0:
            raise UsageError(f"{flag} must be >= 0")
    if args.noise_rate <= 0:
        raise UsageError("--noise-rate must be > 0")
    total = sum(counts.values())
    if total == 0:
        raise UsageError("no agents: give at least one of " + ", ".join(counts))
    if len(tokens) < total:
        raise UsageError(
            f"{total} agents need {total} API keys, found {len(tokens)} (each agent is its own client)"
        )
    probe = ExchangeClient(urls, tokens[0], session)
    listed = await probe.symbols()
    if not listed:
        raise UsageError("the cluster lists no symbols")
    notes = []
    symbols = {
        s["symbol"]: SymbolInfo(s["symbol"], s["tick_size"], s["lot_size"], s["reference_price"])
        for s in listed
        if not s.get("halted")
    }
    missing_reference = [s for s, info in symbols.items() if info.reference_price <= 0]
    if missing_reference:
        prices = ReferencePrices().load(missing_reference)
        for symbol in missing_reference:
            ref = prices[symbol]
            symbols[symbol].reference_price = symbols[symbol].snap(ref.price * 100)
            notes.append(f"{symbol}: reference {ref.price} from {ref.source}")
    fair: Any = FairValues(symbols, seed=args.seed, volatility=args.volatility)
    replay = getattr(args, "fair_values", None)
    if replay is not None:  # `exchange demo --replay DAY`: past bars drive the fair values
        fair = replay(symbols, fair)
    run_id = f"{int(time.time()) % 10**6:06d}{secrets.token_hex(2)}"
    agents: list[Agent] = []
    keys = iter(tokens)
    names = sorted(symbols)
    common = {"run_id": run_id}

    def make(cls: type[Agent], kind: str, i: int, interval: float, **kw: Any) -> None:
        client = ExchangeClient(urls, next(keys), session)
        seed = args.seed * 1000 + len(agents)
        agents.append(
            cls(f"{kind}{i}", client, symbols, fair, seed=seed, interval=interval, **common, **kw)
        )

    for i in range(args.market_makers):
        make(
            MarketMaker,
            "mm",
            i,
            0.5,
            spread_bps=args.spread_bps,
            skew_bps=args.skew_bps,
            levels=3,
            size_lots=5,
        )
    for i in range(args.momentum):
        make(MomentumTrader, "mom", i, 0.25)
    pairs = (
        [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]
        if len(names) > 1
        else []
    )
    for i in range(args.arbitrage if pairs else 0):
        make(Arbitrageur, "arb", i, 0.3, pair=pairs[i % len(pairs)])
    for i in range(args.noise):
        make(NoiseTrader, "noise", i, 0.0, rate=args.noise_rate)
    return agents, fair, notes


def totals(agents: list[Agent]) -> ClientStats:
    total = ClientStats()
    for agent in agents:
        total.merge(agent.client.stats)
    return total


def spreads(agents: list[Agent]) -> dict[str, int | None]:
    latest: dict[str, dict[str, Any]] = {}
    for agent in agents:
        latest.update(agent.last_bbo)
    out: dict[str, int | None] = {}
    for symbol, bbo in sorted(latest.items()):
        bid, ask = bbo.get("bid_price"), bbo.get("ask_price")
        out[symbol] = ask - bid if bid and ask else None
    return out


SPREADS_SHOWN = 8
"""Symbols whose spread a summary line shows (a universe of 500 would fill a screen)."""


def summary_line(
    elapsed: float, stats: ClientStats, previous_orders: int, interval: float, agents: list[Agent]
) -> str:
    rate = (stats.orders - previous_orders) / interval if interval > 0 else 0.0
    rejects = ", ".join(f"{k}={v}" for k, v in stats.rejects.most_common(4)) or "none"
    shown = list(spreads(agents).items())
    spread = " ".join(f"{s}:{v if v is not None else '-'}" for s, v in shown[:SPREADS_SHOWN])
    if len(shown) > SPREADS_SHOWN:
        spread += f" (+{len(shown) - SPREADS_SHOWN} symbols)"
    return (
        f"[{elapsed:6.1f}s] {rate:7.1f} orders/s  orders={stats.orders} fills={stats.fills} "
        f"retries={stats.retries} rejects: {rejects}  spread {spread}"
    )


async def run_agents(
    args: argparse.Namespace, *, stop: asyncio.Event | None = None, out: Any = sys.stdout
) -> dict[str, Any]:
    urls, tokens = load_keys(args)
    stop = stop or asyncio.Event()
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        agents, fair, notes = await build_population(args, urls, tokens, session)
        kinds = Counter(a.kind for a in agents)
        print(f"agents: {dict(kinds)} against {', '.join(urls)}", file=out, flush=True)
        for note in notes:
            print(f"  {note}", file=out)
        if any("fallback" in n for n in notes):
            print(
                "  (offline: starting from documented fallback prices with a random walk)",
                file=out,
                flush=True,
            )

        async def walk() -> None:
            while not stop.is_set():
                fair.step()
                await asyncio.sleep(0.1)

        started = time.monotonic()
        tasks = [asyncio.create_task(a.run(stop)) for a in agents] + [asyncio.create_task(walk())]
        previous = 0
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=args.summary_every)
                stats = totals(agents)
                print(
                    summary_line(
                        time.monotonic() - started, stats, previous, args.summary_every, agents
                    ),
                    file=out,
                    flush=True,
                )
                previous = stats.orders
                if args.duration and time.monotonic() - started >= args.duration:
                    stop.set()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.monotonic() - started
        stats = totals(agents)
        report = {
            "seconds": round(elapsed, 2),
            "agents": dict(kinds),
            "orders": stats.orders,
            "orders_per_second": round(stats.orders / elapsed, 1) if elapsed else 0.0,
            "accepted": stats.accepted,
            "fills": stats.fills,
            "filled_quantity": stats.filled_quantity,
            "retries": stats.retries,
            "failures": stats.failures,
            "rejects": dict(stats.rejects),
            "spreads": spreads(agents),
        }
        return report


def main(args: argparse.Namespace) -> int:
    try:
        load_keys(args)
    except UsageError as exc:
        print(f"exchange agents: error: {exc}", file=sys.stderr)
        return 2

    async def runner() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_agents(args, stop=stop)

    try:
        report = asyncio.run(runner())
    except UsageError as exc:
        print(f"exchange agents: error: {exc}", file=sys.stderr)
        return 2
    if args.json_report:
        print(json.dumps(report))
    else:
        print("final report:")
        for key, value in report.items():
            print(f"  {key:18} {value}")
    return 0 if report["orders"] and report["failures"] < report["orders"] else 1

"""The agents: market makers, momentum traders, arbitrageurs and noise traders.

Every agent is one client of the exchange with its own API key, talking to
the public HTTP API only. Each order gets a fresh ``client_order_id``
(``<agent>-<run>-<n>``) that a retry reuses, so a retried order never
doubles. Prices are integer price units snapped to the symbol's tick grid.

- ``MarketMaker`` quotes both sides around a fair value (a seeded random walk
  started at the symbol's reference price) with ``spread_bps``, skewing both
  quotes against its inventory by ``skew_bps`` per lot held, post-only, and
  requotes every cycle (mass cancel + one batch).
- ``MomentumTrader`` keeps a short and a long moving average of the mid and
  crosses the spread (IOC) in the direction of the short average.
- ``Arbitrageur`` watches a pair of related symbols whose prices started in a
  known ratio and trades the gap (IOC) when their mids drift apart.
- ``NoiseTrader`` sends random limit and market orders at ``rate`` per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from .client import ExchangeClient
from .marketdata import RandomWalk


@dataclass
class SymbolInfo:
    symbol: str
    tick_size: int
    lot_size: int
    reference_price: int

    def snap(self, price: float) -> int:
        return max(self.tick_size, round(price / self.tick_size) * self.tick_size)


class FairValues:
    """The shared hidden fair value per symbol: a seeded random walk."""

    def __init__(self, symbols: dict[str, SymbolInfo], *, seed: int, volatility: float) -> None:
        self.walks = {
            name: RandomWalk(max(1, info.reference_price), volatility=volatility, seed=seed + i)
            for i, (name, info) in enumerate(sorted(symbols.items()))
        }

    def step(self) -> None:
        for walk in self.walks.values():
            walk.step()

    def __getitem__(self, symbol: str) -> int:
        return self.walks[symbol].ticks


class Agent:
    kind = "agent"

    def __init__(
        self,
        name: str,
        client: ExchangeClient,
        symbols: dict[str, SymbolInfo],
        fair: FairValues,
        *,
        run_id: str,
        seed: int,
        interval: float,
    ) -> None:
        self.name = name
        self.client = client
        self.symbols = symbols
        self.fair = fair
        self.rng = random.Random(seed)
        self.interval = interval
        self._run_id = run_id
        self._sequence = 0
        self.last_bbo: dict[str, dict[str, Any]] = {}

    def next_client_order_id(self) -> str:
        self._sequence += 1
        return f"{self.name}-{self._run_id}-{self._sequence}"

    def order(
        self, symbol: str, side: str, quantity: int, price: int | None = None, **extra: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_order_id": self.next_client_order_id(),
            "symbol": symbol,
            "side": side,
            "quantity": quantity,
        }
        if price is None:
            body["order_type"] = "MARKET"
            body["time_in_force"] = "IOC"
        else:
            body["price"] = price
        body.update(extra)
        return body

    async def mid(self, symbol: str) -> float | None:
        bbo = await self.client.bbo(symbol)
        if not bbo:
            return None
        self.last_bbo[symbol] = bbo
        bid, ask = bbo.get("bid_price"), bbo.get("ask_price")
        if bid and ask:
            return (bid + ask) / 2
        return None

    async def step(self) -> None:
        raise RuntimeError(f"{type(self).__name__} does not define step()")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)


class MarketMaker(Agent):
    kind = "market-maker"

    def __init__(
        self, *args: Any, spread_bps: float, skew_bps: float, levels: int, size_lots: int, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.spread_bps = spread_bps
        self.skew_bps = skew_bps
        self.levels = levels
        self.size_lots = size_lots
        self.inventory: dict[str, int] = {}

    async def step(self) -> None:
        positions = await self.client.positions()
        for symbol, info in self.symbols.items():
            position = positions.get(symbol, {})
            lots = (
                int(position.get("quantity", position.get("net_quantity", 0)) or 0) // info.lot_size
            )
            self.inventory[symbol] = lots
            fair = self.fair[symbol]
            skew = -self.skew_bps * lots / 10_000 * fair
            half = self.spread_bps / 20_000 * fair
            quotes = []
            for level in range(self.levels):
                offset = half + level * max(info.tick_size, half / 2)
                size = self.size_lots * info.lot_size
                bid = info.snap(fair + skew - offset)
                ask = max(info.snap(fair + skew + offset), bid + info.tick_size)
                quotes.append(self.order(symbol, "BUY", size, bid, post_only=True))
                quotes.append(self.order(symbol, "SELL", size, ask, post_only=True))
            await self.client.mass_cancel(symbol)
            await self.client.batch(quotes)


class MomentumTrader(Agent):
    kind = "momentum"

    def __init__(
        self, *args: Any, short: int = 5, long: int = 20, size_lots: int = 2, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.size_lots = size_lots
        self.short, self.long = short, long
        self.history: dict[str, deque[float]] = {s: deque(maxlen=long) for s in self.symbols}

    async def step(self) -> None:
        symbol = self.rng.choice(sorted(self.symbols))
        info = self.symbols[symbol]
        mid = await self.mid(symbol)
        if mid is None:
            return
        history = self.history[symbol]
        history.append(mid)
        if len(history) < self.long:
            return
        short = sum(list(history)[-self.short :]) / self.short
        long = sum(history) / len(history)
        bbo = self.last_bbo[symbol]
        size = self.size_lots * info.lot_size
        if short > long * 1.0002 and bbo.get("ask_price"):
            await self.client.new_order(
                self.order(symbol, "BUY", size, bbo["ask_price"], time_in_force="IOC")
            )
        elif short < long * 0.9998 and bbo.get("bid_price"):
            await self.client.new_order(
                self.order(symbol, "SELL", size, bbo["bid_price"], time_in_force="IOC")
            )


class Arbitrageur(Agent):
    kind = "arbitrage"

    def __init__(
        self,
        *args: Any,
        pair: tuple[str, str],
        threshold_bps: float = 15,
        size_lots: int = 1,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.pair = pair
        a, b = (self.symbols[s] for s in pair)
        self.ratio = a.reference_price / max(1, b.reference_price)
        self.threshold = threshold_bps / 10_000
        self.size_lots = size_lots

    async def step(self) -> None:
        a, b = self.pair
        mid_a, mid_b = await self.mid(a), await self.mid(b)
        if not mid_a or not mid_b:
            return
        gap = mid_a / mid_b / self.ratio - 1
        bbo_a, bbo_b = self.last_bbo[a], self.last_bbo[b]
        size_a = self.size_lots * self.symbols[a].lot_size
        size_b = self.size_lots * self.symbols[b].lot_size
        if gap > self.threshold:  # a rich, b cheap
            await self.client.new_order(
                self.order(a, "SELL", size_a, bbo_a["bid_price"], time_in_force="IOC")
            )
            await self.client.new_order(
                self.order(b, "BUY", size_b, bbo_b["ask_price"], time_in_force="IOC")
            )
        elif gap < -self.threshold:
            await self.client.new_order(
                self.order(a, "BUY", size_a, bbo_a["ask_price"], time_in_force="IOC")
            )
            await self.client.new_order(
                self.order(b, "SELL", size_b, bbo_b["bid_price"], time_in_force="IOC")
            )


class NoiseTrader(Agent):
    kind = "noise"

    def __init__(self, *args: Any, rate: float, market_share: float = 0.3, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.rate = rate
        self.market_share = market_share

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.rng.expovariate(self.rate))

    async def step(self) -> None:
        symbol = self.rng.choice(sorted(self.symbols))
        info = self.symbols[symbol]
        side = self.rng.choice(("BUY", "SELL"))
        quantity = self.rng.randint(1, 5) * info.lot_size
        if self.rng.random() < self.market_share:
            await self.client.new_order(self.order(symbol, side, quantity))
            return
        fair = self.fair[symbol]
        away = self.rng.randint(0, 10) * info.tick_size
        price = info.snap(fair - away if side == "BUY" else fair + away)
        await self.client.new_order(self.order(symbol, side, quantity, price))

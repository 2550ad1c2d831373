"""Candles against a naive recomputation from every fill.

The engine updates candles once per taker (all its fills share a time) and caches when
the newest candles close; this recomputes OHLCV and notional per bucket from the fill
events themselves, for two intervals, multi-level sweeps in both directions, times that
cross bucket boundaries, and a restore from a snapshot in the middle."""

from __future__ import annotations

import random

from exchange_node.engine.commands import AddSymbol, NewOrder, OrderType, Side, TimeInForce
from exchange_node.engine.engine import Engine
from exchange_node.engine.events import Fill

INTERVALS = (1_000, 7_000)
HISTORY = 50


def _naive(fills: list[Fill], interval: int) -> list[tuple[int, ...]]:
    buckets: dict[int, list[int]] = {}
    for f in fills:
        start = f.timestamp_ns - f.timestamp_ns % interval
        c = buckets.get(start)
        if c is None:
            buckets[start] = [start, f.price, f.price, f.price, f.price, 0, 0]
            c = buckets[start]
        c[2] = max(c[2], f.price)
        c[3] = min(c[3], f.price)
        c[4] = f.price
        c[5] += f.quantity
        c[6] += f.price * f.quantity
    return [tuple(c) for c in sorted(buckets.values())][-HISTORY:]


def _engine_candles(engine: Engine, interval: int) -> list[tuple[int, ...]]:
    analytics = engine.analytics("AAA")
    assert analytics is not None
    return [
        (c.start_ns, c.open, c.high, c.low, c.close, c.volume, c.notional)
        for c in analytics.candles[interval]
    ]


def test_candles_equal_a_recomputation_from_every_fill() -> None:
    rng = random.Random(5)
    engine = Engine(
        [AddSymbol("AAA", 1, 1, 0, 1_000)], candle_intervals_ns=INTERVALS, candle_history=HISTORY
    )
    fills: list[Fill] = []
    now = 1_000_000
    for n in range(3_000):
        now += rng.choice((0, 0, 50, 300, 999, 1_000, 2_500))
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        if rng.random() < 0.7:  # resting liquidity on several levels
            price = 1_000 + (rng.randint(1, 6) if side is Side.SELL else -rng.randint(1, 6))
            tif, order_type = TimeInForce.GTC, OrderType.LIMIT
        else:  # a taker sweeping one or more levels
            price, tif, order_type = 0, TimeInForce.IOC, OrderType.MARKET
        command = NewOrder(
            f"c{n % 5}", f"o{n}", "AAA", side, order_type, tif, price, rng.randint(1, 30)
        )
        result = engine.apply(command, n + 1, now)
        fills += [e for e in result.events if isinstance(e, Fill)]
        if n == 1_500:  # the restored engine starts without the candle cache
            engine = Engine.restore(engine.snapshot())
    assert len({f.timestamp_ns for f in fills}) > 200
    prices_by_taker: dict[int, set[int]] = {}
    for f in fills:
        prices_by_taker.setdefault(f.taker_order_id, set()).add(f.price)
    assert sum(len(p) > 1 for p in prices_by_taker.values()) > 20  # multi-level sweeps
    for interval in INTERVALS:
        assert _engine_candles(engine, interval) == _naive(fills, interval)

"""The engine's own invariant checks: they hold on a random workload and catch planted faults.

``EngineState.check_invariants`` is the full check; the write path asserts the cheap
parts (never crossed after matching, positive quantities). Each planted fault below
breaks one rule by hand and the check must name it.
"""

from __future__ import annotations

import random

import pytest
from engine_workload import SYMBOLS, random_command
from exchange_node.engine import engine as engine_module
from exchange_node.engine.commands import NewOrder, OrderType, SelfTradeMode, Side, TimeInForce
from exchange_node.engine.engine import Engine


def _busy_engine(seed: int = 7, commands: int = 3_000, *, check: bool = True) -> Engine:
    engine = Engine(SYMBOLS)
    rng = random.Random(seed)
    for n in range(1, commands + 1):
        engine.apply(random_command(rng, n), n, 1_000 + n)
        if check and n % 500 == 0:
            engine.state.check_invariants()
    return engine


def _order(client: str, coid: str, side: Side, price: int, quantity: int) -> NewOrder:
    return NewOrder(
        client,
        coid,
        "AAA",
        side,
        OrderType.LIMIT,
        TimeInForce.GTC,
        price,
        quantity,
        False,
        SelfTradeMode.CANCEL_INCOMING,
    )


@pytest.fixture(scope="module")
def busy() -> Engine:
    engine = _busy_engine()
    assert engine.state.orders, "the workload left nothing resting"
    return engine


def test_invariants_hold_on_a_random_workload_and_after_restore(busy: Engine) -> None:
    busy.state.check_invariants()
    Engine.restore(busy.snapshot()).state.check_invariants()


def _fresh(busy: Engine) -> Engine:
    return Engine.restore(busy.snapshot())


def test_planted_level_total_is_caught(busy: Engine) -> None:
    engine = _fresh(busy)
    order = next(iter(engine.state.orders.values()))
    book = engine.state.symbols[order.symbol]
    side = book.bids if order.side is Side.BUY else book.asks
    side.levels[side.sign * order.price].total += 1
    with pytest.raises(AssertionError, match="total"):
        engine.state.check_invariants()


def test_planted_orphan_in_the_order_index_is_caught(busy: Engine) -> None:
    engine = _fresh(busy)
    order = next(iter(engine.state.orders.values()))
    del engine.state.orders[order.order_id]
    with pytest.raises(AssertionError, match="order index"):
        engine.state.check_invariants()


def test_planted_position_that_breaks_conservation_is_caught(busy: Engine) -> None:
    engine = _fresh(busy)
    _client, by_symbol = next(iter(engine.state.positions.items()))
    symbol, position = next(iter(by_symbol.items()))
    position.quantity += 1
    with pytest.raises(AssertionError, match=f"{symbol}: positions sum to 1"):
        engine.state.check_invariants()


def test_planted_stale_best_key_is_caught(busy: Engine) -> None:
    engine = _fresh(busy)
    side = next(
        side
        for state in engine.state.symbols.values()
        for side in (state.bids, state.asks)
        if side.levels
    )
    side.best_key += 1
    with pytest.raises(AssertionError, match="best key"):
        engine.state.check_invariants()


def test_planted_exactly_once_table_out_of_fifo_order_is_caught(busy: Engine) -> None:
    # The snapshot writes the table in its own order, taken to be the FIFO's: a table
    # whose order differs (the oldest key moved to the end) must be named.
    engine = _fresh(busy)
    results = engine.state.results
    assert len(results) > 1
    oldest = next(iter(results))
    results[oldest] = results.pop(oldest)
    with pytest.raises(AssertionError, match="in order"):
        engine.state.check_invariants()


def test_write_path_refuses_to_leave_a_crossed_book(monkeypatch: pytest.MonkeyPatch) -> None:
    """A matcher that trades nothing leaves a crossing order resting: the write path asserts."""
    engine = Engine(SYMBOLS)
    engine.apply(_order("a", "1", Side.SELL, 100, 5), 1, 1)
    engine.apply(_order("b", "2", Side.BUY, 99, 5), 2, 2)  # rests below: fine
    monkeypatch.setattr(Engine, "_match", lambda self, *args: False)
    with pytest.raises(AssertionError, match="AAA book crossed"):
        engine.apply(_order("b", "3", Side.BUY, 101, 5), 3, 3)


def test_write_path_refuses_a_fill_of_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resting order with no quantity left but still live (a planted bookkeeping slip)."""
    engine = Engine(SYMBOLS)
    engine.apply(_order("a", "1", Side.SELL, 100, 5), 1, 1)
    resting = engine.state.orders[1]
    resting.leaves = -1  # live (non-zero) yet not positive
    with pytest.raises(AssertionError, match="a fill of -1"):
        engine.apply(_order("b", "2", Side.BUY, 100, 5), 2, 2)


def test_the_planted_double_fill_of_the_chaos_suite_breaks_conservation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tests/chaos/planted's double_fill: the full check sees it (the write path cannot, cheaply)."""
    original = engine_module._apply_fill

    def twice(position: object, signed_quantity: int, price: int) -> None:
        original(position, signed_quantity, price)
        original(position, signed_quantity, price)

    monkeypatch.setattr(engine_module, "_apply_fill", twice)
    engine = _busy_engine(commands=1_000, check=False)
    with pytest.raises(AssertionError, match="positions sum to"):
        engine.state.check_invariants()

"""Random command sequences: the engine against the naive reference model, plus invariants.

After every command: identical results (events, statuses, ids), identical
books (order ids, prices, quantities, priority order), identical positions;
and the engine's own invariants: never crossed, level totals and counts
consistent, no negative quantity, quantities conserved per order, FOK
all-or-nothing, IOC/market never rest, post-only never takes, fills in
price priority.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from engine_reference import ReferenceExchange, normalise
from engine_workload import CLIENTS, SYMBOLS, random_commands
from exchange_node.engine.commands import (
    AddSymbol,
    Cancel,
    CancelReplace,
    Command,
    HaltSymbol,
    MassCancel,
    NewOrder,
    OrderType,
    ResumeSymbol,
    SelfTradeMode,
    SetRiskLimits,
    Side,
    TimeInForce,
)
from exchange_node.engine.engine import Engine
from exchange_node.engine.events import (
    Accepted,
    Cancelled,
    CommandResult,
    Expired,
    Fill,
    Replaced,
)
from hypothesis import given, settings
from hypothesis import strategies as st

DEDUP_MAX_KEYS = 6
DEDUP_HORIZON_NS = 9_000_000
"""Nine steps of the sequences below (1 ms apart): both the cap and the horizon evict."""

clients = st.sampled_from(CLIENTS[:3])
coids = st.sampled_from([f"o{i}" for i in range(10)])
sides = st.sampled_from([Side.BUY, Side.SELL])
stps = st.sampled_from(list(SelfTradeMode))
odd_prices = st.sampled_from([0, -5, 1, 85, 101, 103, 115, 1_000])
odd_quantities = st.sampled_from([0, -1, 7, 15, 1_000])


@st.composite
def new_orders(draw: st.DrawFn) -> NewOrder:
    """Mostly well-formed orders near the touch; now and then a malformed field."""
    symbol = draw(st.sampled_from(["AAA", "AAA", "AAA", "BBB", "BBB"]))
    if symbol == "AAA":
        price = draw(st.integers(96, 104))
        quantity = draw(st.integers(1, 25))
    else:
        price = draw(st.sampled_from([90, 95, 100, 105, 110]))
        quantity = draw(st.sampled_from([10, 20, 30, 40]))
    kind = draw(st.sampled_from(["gtc"] * 6 + ["ioc", "fok", "market", "post"]))
    order_type = OrderType.MARKET if kind == "market" else OrderType.LIMIT
    tif = {"ioc": TimeInForce.IOC, "fok": TimeInForce.FOK}.get(kind, TimeInForce.GTC)
    if kind == "market":
        price = 0
        tif = draw(st.sampled_from(list(TimeInForce)))
    order = NewOrder(
        draw(clients),
        draw(coids),
        symbol,
        draw(sides),
        order_type,
        tif,
        price,
        quantity,
        kind == "post",
        draw(stps),
    )
    odd = draw(st.sampled_from([None] * 12 + ["price", "quantity", "symbol", "post", "id"]))
    if odd == "price":
        order.price = draw(odd_prices)
    elif odd == "quantity":
        order.quantity = draw(odd_quantities)
    elif odd == "symbol":
        order.symbol = "ZZZ"
    elif odd == "post":
        order.post_only = True
    elif odd == "id":
        order.client_order_id = ""
    return order


prices = st.one_of(st.integers(96, 104), st.sampled_from([90, 95, 100, 105, 110]), odd_prices)
quantities = st.one_of(st.integers(1, 25), st.sampled_from([10, 20, 30]), odd_quantities)
cancels = st.one_of(
    st.builds(Cancel, clients, st.integers(1, 30), st.none()),
    st.builds(Cancel, clients, st.none(), coids),
    st.builds(Cancel, clients, st.integers(1, 3), coids),
)
replaces = st.one_of(
    st.builds(CancelReplace, clients, st.integers(1, 30), st.none(), coids, prices, quantities),
    st.builds(CancelReplace, clients, st.none(), coids, coids, prices, quantities),
)
admin = st.one_of(
    st.builds(MassCancel, clients, st.sampled_from([None, "AAA", "BBB", "ZZZ"])),
    st.builds(HaltSymbol, st.sampled_from(["AAA", "BBB", "ZZZ"])),
    st.builds(ResumeSymbol, st.sampled_from(["AAA", "BBB"])),
    st.builds(
        SetRiskLimits,
        st.one_of(st.none(), clients),
        st.sampled_from([0, 0, 20]),
        st.sampled_from([0, 0, 1_500]),
        st.sampled_from([0, 0, 30]),
    ),
    st.builds(
        AddSymbol, st.sampled_from(["CCC", "AAA"]), st.just(1), st.just(1), st.just(0), st.just(0)
    ),
)
_by_kind = {"order": new_orders(), "cancel": cancels, "replace": replaces, "admin": admin}
commands = st.sampled_from(["order"] * 12 + ["cancel"] * 4 + ["replace"] * 3 + ["admin"]).flatmap(
    _by_kind.__getitem__
)


def check_engine_invariants(engine: Engine) -> None:
    """The engine's own full check (books, order index, open quantities, conservation)."""
    engine.state.check_invariants()


class OrderLedger:
    """Per order: total asked (after replaces) against filled + open + cancelled + expired."""

    def __init__(self) -> None:
        self.total: dict[int, int] = {}
        self.filled: dict[int, int] = defaultdict(int)
        self.closed: dict[int, int] = defaultdict(int)
        self.seen_results: set[int] = set()
        self.kept: list[CommandResult] = []

    def record(self, result: CommandResult) -> bool:
        """Account for a result once (a repeated key returns the same object)."""
        if id(result) in self.seen_results:
            return False
        self.seen_results.add(id(result))
        self.kept.append(result)
        for event in result.events:
            if isinstance(event, (Accepted, Replaced)):
                self.total[event.order_id] = event.quantity
            elif isinstance(event, Fill):
                self.filled[event.maker_order_id] += event.quantity
                self.filled[event.taker_order_id] += event.quantity
            elif isinstance(event, Cancelled | Expired):
                self.closed[event.order_id] += event.quantity
        return True

    def check(self, engine: Engine) -> None:
        for order_id, total in self.total.items():
            live = engine.state.orders.get(order_id)
            open_quantity = live.leaves if live is not None else 0
            assert total == self.filled[order_id] + open_quantity + self.closed[order_id], order_id
            assert self.filled[order_id] >= 0 and open_quantity >= 0


def check_order_rules(command: Command, result: CommandResult, engine: Engine) -> None:
    if not isinstance(command, NewOrder) or result.order_id is None:
        return
    accepted = result.events[0]
    if not isinstance(accepted, Accepted) or accepted.order_id != result.order_id:
        return  # a repeated key: the original result of another command shape
    order_id = result.order_id
    taker_fills = [e for e in result.events if isinstance(e, Fill) and e.taker_order_id == order_id]
    filled = sum(fill.quantity for fill in taker_fills)
    if command.time_in_force == TimeInForce.FOK:
        assert filled in (0, command.quantity), "FOK partially filled"
    if command.time_in_force != TimeInForce.GTC or command.order_type == OrderType.MARKET:
        assert order_id not in engine.state.orders, "IOC/FOK/market order rests"
    if command.post_only:
        assert not taker_fills, "post-only order took liquidity"
    fill_prices = [fill.price for fill in taker_fills]
    if command.side == Side.BUY:
        assert fill_prices == sorted(fill_prices)
        if command.order_type == OrderType.LIMIT:
            assert all(price <= command.price for price in fill_prices)
    else:
        assert fill_prices == sorted(fill_prices, reverse=True)
        if command.order_type == OrderType.LIMIT:
            assert all(price >= command.price for price in fill_prices)


def run_against_model(sequence: list[tuple[Command, int]]) -> Engine:
    engine = Engine(
        SYMBOLS,
        dedup_max_keys=DEDUP_MAX_KEYS,
        dedup_horizon_ns=DEDUP_HORIZON_NS,
        finished_window=8,
        trade_history=5,
    )
    model = ReferenceExchange(SYMBOLS, DEDUP_MAX_KEYS, DEDUP_HORIZON_NS)
    ledger = OrderLedger()
    for step, (command, clock_jitter) in enumerate(sequence):
        log_index = step // 3 + 1  # several commands per log entry, like a batch
        timestamp_ns = 1_000_000 * step - clock_jitter
        result = engine.apply(command, log_index=log_index, timestamp_ns=timestamp_ns)
        expected = model.apply(command, log_index, timestamp_ns)
        got: dict[str, Any] = normalise(result.to_dict())
        assert got == expected, f"step {step}: {command}"
        for symbol in ("AAA", "BBB"):
            bids, asks = engine.live_orders_in_priority(symbol)
            assert (
                [(o.order_id, o.price, o.quantity, o.leaves) for o in bids],
                [(o.order_id, o.price, o.quantity, o.leaves) for o in asks],
            ) == model.book_view(symbol), f"step {step}: book of {symbol}"
        for client_id in CLIENTS[:3]:
            positions = {s: p.to_dict() for s, p in engine.positions(client_id).items()}
            assert positions == model.position_view(client_id), f"step {step}: {client_id}"
        check_engine_invariants(engine)
        assert list(engine.state.result_fifo) == [key for key, _, _ in model.retained], step
        assert list(engine.state.result_times) == [t for _, _, t in model.retained], step
        assert engine.state.results_evicted_by_cap == model.evicted_by_cap, step
        if ledger.record(result):
            check_order_rules(command, result, engine)
        ledger.check(engine)
    return engine


@settings(settings.get_profile("engine"), max_examples=300)
@given(
    st.lists(st.tuples(commands, st.sampled_from([0, 0, 0, 5_000_000])), min_size=5, max_size=80)
)
def test_engine_matches_reference_model(sequence: list[tuple[Command, int]]) -> None:
    run_against_model(sequence)


@settings(settings.get_profile("engine"), max_examples=80)
@given(
    st.lists(
        st.tuples(st.one_of(new_orders(), new_orders(), cancels), st.just(0)),
        min_size=20,
        max_size=120,
    )
)
def test_busy_books_match_reference_model(sequence: list[tuple[Command, int]]) -> None:
    run_against_model(sequence)


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_long_seeded_runs_match_reference_model(seed: int) -> None:
    run_against_model([(command, 0) for command in random_commands(seed, 700)])


narrow_prices = st.sampled_from([99, 100, 101])
narrow_orders = st.builds(
    NewOrder,
    clients,
    coids,
    st.just("AAA"),
    sides,
    st.just(OrderType.LIMIT),
    st.sampled_from([TimeInForce.GTC] * 4 + [TimeInForce.IOC]),
    narrow_prices,
    st.integers(1, 12),
    st.just(False),
    stps,
)
replacement_ids = st.sampled_from([f"r{i}" for i in range(40)])
narrow_replaces = st.builds(
    CancelReplace,
    clients,
    st.none(),
    st.one_of(coids, replacement_ids),
    replacement_ids,  # mostly fresh keys, so the replace runs rather than replays
    narrow_prices,
    st.integers(1, 14),
)


@settings(settings.get_profile("engine"), max_examples=250)
@given(
    st.lists(
        st.tuples(
            st.one_of(narrow_orders, narrow_orders, narrow_replaces, narrow_replaces, cancels),
            st.just(0),
        ),
        min_size=10,
        max_size=70,
    )
)
def test_replace_heavy_books_on_three_prices_match_reference_model(
    sequence: list[tuple[Command, int]],
) -> None:
    """Replaces that keep or lose priority inside crowded levels, against the model."""
    run_against_model(sequence)

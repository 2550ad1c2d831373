"""One test per rule and per reject reason of the engine."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from exchange_node.engine.commands import (
    AddSymbol,
    Cancel,
    CancelReplace,
    Command,
    HaltSymbol,
    MassCancel,
    NewOrder,
    OrderType,
    RejectReason,
    ResumeSymbol,
    SelfTradeMode,
    SetRiskLimits,
    Side,
    TimeInForce,
    encode_batch,
)
from exchange_node.engine.engine import Engine
from exchange_node.engine.events import (
    Accepted,
    BookUpdate,
    Cancelled,
    CancelReason,
    CommandResult,
    Expired,
    Fill,
    Rejected,
    Replaced,
    Status,
    TradingStatus,
)
from exchange_node.engine.views import RiskLimits
from hypothesis import given, settings
from hypothesis import strategies as st

BUY, SELL = Side.BUY, Side.SELL
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK


class Desk:
    """An engine plus a log-index counter, with short spellings for the tests."""

    def __init__(self, **engine_options: Any) -> None:
        self.engine = Engine(
            [AddSymbol("AAA", 1, 1, 500, 100), AddSymbol("BBB", 5, 10, 0, 0)], **engine_options
        )
        self.log_index = 0
        self.clock = 1_000

    def do(self, command: Command, *, timestamp_ns: int | None = None) -> CommandResult:
        self.log_index += 1
        if timestamp_ns is None:
            self.clock += 1_000
            timestamp_ns = self.clock
        return self.engine.apply(command, log_index=self.log_index, timestamp_ns=timestamp_ns)

    def limit(
        self,
        client: str,
        coid: str,
        side: Side,
        price: int,
        quantity: int,
        *,
        symbol: str = "AAA",
        tif: TimeInForce = GTC,
        post_only: bool = False,
        stp: SelfTradeMode = SelfTradeMode.CANCEL_INCOMING,
    ) -> CommandResult:
        return self.do(
            NewOrder(
                client, coid, symbol, side, OrderType.LIMIT, tif, price, quantity, post_only, stp
            )
        )

    def market(
        self, client: str, coid: str, side: Side, quantity: int, *, tif: TimeInForce = IOC
    ) -> CommandResult:
        return self.do(NewOrder(client, coid, "AAA", side, OrderType.MARKET, tif, 0, quantity))

    def book(self, symbol: str = "AAA") -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        depth = self.engine.depth(symbol, 100)
        assert depth is not None
        return depth.bids, depth.asks


def events_of(result: CommandResult, kind: type) -> list[Any]:
    return [event for event in result.events if isinstance(event, kind)]


def reason(result: CommandResult) -> RejectReason:
    assert result.status == Status.REJECTED
    (rejected,) = result.events
    assert isinstance(rejected, Rejected)
    return rejected.reason


# ---------------------------------------------------------------- matching


def test_price_time_priority_and_fills_at_the_resting_price() -> None:
    desk = Desk()
    first = desk.limit("a", "1", SELL, 101, 10).order_id
    second = desk.limit("b", "1", SELL, 101, 10).order_id
    best = desk.limit("c", "1", SELL, 100, 5).order_id
    result = desk.limit("d", "1", BUY, 102, 18)
    fills = events_of(result, Fill)
    assert [(f.maker_order_id, f.price, f.quantity) for f in fills] == [
        (best, 100, 5),
        (first, 101, 10),
        (second, 101, 3),
    ]
    assert all(f.aggressor_side == BUY and f.taker_order_id == result.order_id for f in fills)
    assert result.status == Status.FILLED
    assert desk.book() == ([], [(101, 7)])


def test_a_limit_remainder_rests_and_reports_partially_filled() -> None:
    desk = Desk()
    desk.limit("a", "1", SELL, 101, 4)
    result = desk.limit("b", "1", BUY, 101, 10)
    assert result.status == Status.PARTIALLY_FILLED
    assert desk.book() == ([(101, 6)], [])
    view = desk.engine.order(result.order_id)
    assert view is not None and (view.filled_quantity, view.leaves_quantity) == (4, 6)


def test_market_order_sweeps_only_up_to_the_price_band_and_the_rest_expires() -> None:
    desk = Desk()  # AAA: reference 100, band 500 bps -> [95, 105]
    for n, price in enumerate([96, 99, 101]):
        desk.limit("maker", f"m{n}", SELL, price, 10)
    desk.limit("x", "1", BUY, 96, 10)  # last trade 96 -> band [92, 100]
    result = desk.market("taker", "t", BUY, 100)
    assert [f.price for f in events_of(result, Fill)] == [99]
    (expired,) = events_of(result, Expired)
    assert expired.quantity == 90 and result.status == Status.EXPIRED
    assert desk.book() == ([], [(101, 10)])


def test_market_order_without_a_band_sweeps_the_whole_book() -> None:
    desk = Desk()
    for n, price in enumerate([100, 500, 1_000]):
        desk.limit("maker", f"m{n}", BUY, price, 10, symbol="BBB")
    result = desk.do(NewOrder("t", "t", "BBB", SELL, OrderType.MARKET, GTC, 0, 30))
    assert [f.price for f in events_of(result, Fill)] == [1_000, 500, 100]
    assert result.status == Status.FILLED


def test_market_order_on_an_empty_book_expires() -> None:
    desk = Desk()
    result = desk.market("t", "t", SELL, 5)
    assert [type(e) for e in result.events] == [Accepted, Expired]


def test_fok_fills_entirely_or_not_at_all() -> None:
    desk = Desk()
    desk.limit("m", "1", SELL, 101, 5)
    desk.limit("m", "2", SELL, 102, 5)
    before = desk.engine.depth("AAA")
    killed = desk.limit("t", "1", BUY, 102, 11, tif=FOK)
    assert killed.status == Status.EXPIRED and not events_of(killed, Fill)
    assert events_of(killed, Expired)[0].quantity == 11
    assert desk.engine.depth("AAA") == before
    filled = desk.limit("t", "2", BUY, 102, 10, tif=FOK)
    assert filled.status == Status.FILLED and sum(f.quantity for f in events_of(filled, Fill)) == 10


def test_ioc_never_rests() -> None:
    desk = Desk()
    desk.limit("m", "1", SELL, 101, 5)
    result = desk.limit("t", "1", BUY, 101, 8, tif=IOC)
    assert events_of(result, Expired)[0].quantity == 3
    assert desk.book() == ([], [])
    assert desk.engine.order(result.order_id).status == Status.EXPIRED  # type: ignore[union-attr]


def test_post_only_never_takes() -> None:
    desk = Desk()
    desk.limit("m", "1", SELL, 101, 5)
    assert reason(desk.limit("p", "1", BUY, 101, 5, post_only=True)) == (
        RejectReason.POST_ONLY_WOULD_TAKE
    )
    rested = desk.limit("p", "2", BUY, 100, 5, post_only=True)
    assert rested.status == Status.NEW
    assert desk.book() == ([(100, 5)], [(101, 5)])


# ---------------------------------------------------------------- self-trade prevention


def _self_cross(mode: SelfTradeMode) -> tuple[Desk, CommandResult, int]:
    desk = Desk()
    own = desk.limit("a", "rest", SELL, 101, 5).order_id
    assert own is not None
    desk.limit("b", "other", SELL, 102, 5)
    return desk, desk.limit("a", "take", BUY, 102, 8, stp=mode), own


def test_stp_cancel_resting_cancels_the_resting_order_and_keeps_matching() -> None:
    desk, result, own = _self_cross(SelfTradeMode.CANCEL_RESTING)
    (cancelled,) = events_of(result, Cancelled)
    assert (cancelled.order_id, cancelled.reason) == (own, CancelReason.SELF_TRADE)
    assert [f.maker_client_id for f in events_of(result, Fill)] == ["b"]
    assert result.status == Status.PARTIALLY_FILLED
    assert desk.book() == ([(102, 3)], [])


def test_stp_cancel_incoming_cancels_the_incoming_remainder_only() -> None:
    desk, result, own = _self_cross(SelfTradeMode.CANCEL_INCOMING)
    (cancelled,) = events_of(result, Cancelled)
    assert (cancelled.order_id, cancelled.quantity) == (result.order_id, 8)
    assert not events_of(result, Fill) and result.status == Status.CANCELLED
    assert desk.book() == ([], [(101, 5), (102, 5)])
    assert desk.engine.order(own).status == Status.NEW  # type: ignore[union-attr]


def test_stp_cancel_both() -> None:
    desk, result, own = _self_cross(SelfTradeMode.CANCEL_BOTH)
    assert [c.order_id for c in events_of(result, Cancelled)] == [own, result.order_id]
    assert result.status == Status.CANCELLED
    assert desk.book() == ([], [(102, 5)])


def test_stp_blocks_a_fok_that_would_need_the_own_order() -> None:
    desk = Desk()
    desk.limit("a", "rest", SELL, 101, 5)
    desk.limit("b", "other", SELL, 102, 5)
    result = desk.limit("a", "fok", BUY, 102, 5, tif=FOK, stp=SelfTradeMode.CANCEL_INCOMING)
    assert result.status == Status.EXPIRED and desk.book() == ([], [(101, 5), (102, 5)])
    skipping = desk.limit("a", "fok2", BUY, 102, 5, tif=FOK, stp=SelfTradeMode.CANCEL_RESTING)
    assert skipping.status == Status.FILLED and desk.book() == ([], [])


# ---------------------------------------------------------------- risk and band


def test_risk_limits_reject_and_a_rejected_order_changes_nothing() -> None:
    desk = Desk(default_risk=RiskLimits(max_order_qty=50, max_notional=4_000, max_position=60))
    desk.limit("m", "1", SELL, 100, 30)
    books = desk.book(), desk.engine.positions("a"), desk.engine.state.next_order_id
    assert reason(desk.limit("a", "1", BUY, 100, 51)) == RejectReason.RISK_MAX_ORDER_QTY
    assert reason(desk.limit("a", "2", BUY, 100, 41)) == RejectReason.RISK_MAX_NOTIONAL
    assert reason(desk.market("a", "3", BUY, 39)) == RejectReason.RISK_MAX_NOTIONAL  # at 105
    assert (desk.book(), desk.engine.positions("a"), desk.engine.state.next_order_id) == books
    desk.limit("a", "4", BUY, 96, 40)  # rests: open buy 40
    assert reason(desk.limit("a", "5", BUY, 97, 21)) == RejectReason.RISK_MAX_POSITION
    assert desk.limit("a", "6", SELL, 100, 40).status == Status.NEW  # sells do not add to longs
    desk.do(SetRiskLimits("a", 0, 0, 0))
    assert desk.limit("a", "7", BUY, 97, 500).status == Status.NEW
    assert desk.engine.risk_limits("a") == RiskLimits()
    assert desk.engine.risk_limits("z") == RiskLimits(50, 4_000, 60)


def test_position_limit_counts_the_position_and_same_side_open_orders() -> None:
    desk = Desk()
    desk.do(SetRiskLimits(None, 0, 0, 20))
    desk.limit("m", "1", SELL, 100, 15)
    assert desk.limit("a", "1", BUY, 100, 15).status == Status.FILLED  # position +15
    assert reason(desk.limit("a", "2", BUY, 99, 6)) == RejectReason.RISK_MAX_POSITION
    assert desk.limit("a", "3", BUY, 99, 5).status == Status.NEW
    assert desk.limit("a", "4", SELL, 101, 35).status == Status.NEW  # worst short 35 - 15 = 20
    assert reason(desk.limit("a", "5", SELL, 101, 1)) == RejectReason.RISK_MAX_POSITION


def test_price_band_follows_the_last_trade() -> None:
    desk = Desk()  # reference 100, 500 bps
    assert reason(desk.limit("a", "1", BUY, 94, 1)) == RejectReason.PRICE_BAND
    assert reason(desk.limit("a", "2", SELL, 106, 1)) == RejectReason.PRICE_BAND
    desk.limit("a", "3", SELL, 105, 1)
    desk.limit("b", "1", BUY, 105, 1)  # last trade 105 -> band [100, 110]
    assert desk.limit("a", "4", SELL, 110, 1).status == Status.NEW
    assert reason(desk.limit("a", "5", BUY, 99, 1)) == RejectReason.PRICE_BAND


# ---------------------------------------------------------------- format and state rejects


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (NewOrder("a", "1", "ZZZ", BUY, OrderType.LIMIT, GTC, 100, 1), RejectReason.UNKNOWN_SYMBOL),
        (
            NewOrder("a", "1", "AAA", BUY, OrderType.LIMIT, GTC, 100, 0),
            RejectReason.INVALID_QUANTITY,
        ),
        (NewOrder("a", "1", "AAA", BUY, OrderType.LIMIT, GTC, -1, 1), RejectReason.INVALID_PRICE),
        (
            NewOrder("a", "1", "BBB", BUY, OrderType.LIMIT, GTC, 101, 10),
            RejectReason.PRICE_OFF_TICK,
        ),
        (
            NewOrder("a", "1", "BBB", BUY, OrderType.LIMIT, GTC, 100, 15),
            RejectReason.QUANTITY_OFF_LOT,
        ),
        (NewOrder("", "1", "AAA", BUY, OrderType.LIMIT, GTC, 100, 1), RejectReason.INVALID_FIELD),
        (Cancel("a", 999, None), RejectReason.UNKNOWN_ORDER),
        (Cancel("a", None, "nope"), RejectReason.UNKNOWN_ORDER),
        (CancelReplace("a", 999, None, "n", 100, 1), RejectReason.UNKNOWN_ORDER),
        (MassCancel("a", "ZZZ"), RejectReason.UNKNOWN_SYMBOL),
        (AddSymbol("AAA", 1, 1, 0, 0), RejectReason.SYMBOL_EXISTS),
        (AddSymbol("NEW", 0, 1, 0, 0), RejectReason.INVALID_SYMBOL_SPEC),
        (HaltSymbol("ZZZ"), RejectReason.UNKNOWN_SYMBOL),
        (SetRiskLimits("a", -1, 0, 0), RejectReason.INVALID_FIELD),
    ],
)
def test_bad_commands_are_rejected_with_a_reason_and_change_nothing(
    command: Command, expected: RejectReason
) -> None:
    desk = Desk()
    desk.limit("a", "live", BUY, 99, 5)
    before = desk.engine.snapshot()
    result = desk.do(command)
    assert reason(result) == expected
    assert result.events[0].message  # type: ignore[union-attr]
    after = Engine.restore(desk.engine.snapshot())
    # Only the exactly-once table, the clock and the applied index may differ.
    restored_before = Engine.restore(before)
    assert desk.engine.depth("AAA") == restored_before.depth("AAA")
    assert after.positions("a") == restored_before.positions("a")
    assert after.state.next_order_id == restored_before.state.next_order_id
    assert after.symbols() == restored_before.symbols()


@pytest.mark.parametrize(
    "junk",
    [
        None,
        "text",
        NewOrder("a", "1", None, BUY, OrderType.LIMIT, GTC, 100, 1),  # type: ignore[arg-type]
        NewOrder("a", "1", "AAA", "BUY", OrderType.LIMIT, GTC, 100, 1),  # type: ignore[arg-type]
        NewOrder("a", "1", "AAA", BUY, OrderType.LIMIT, GTC, "100", 1),  # type: ignore[arg-type]
        NewOrder("a", "1", "AAA", BUY, OrderType.LIMIT, GTC, 100, 1.0),  # type: ignore[arg-type]
        NewOrder(["a"], "1", "AAA", BUY, OrderType.LIMIT, GTC, 100, 1),  # type: ignore[arg-type]
        Cancel("a", "1", None),  # type: ignore[arg-type]
        Cancel("a", True, None),  # type: ignore[arg-type]
        CancelReplace("a", None, 5, "n", 100, 1),  # type: ignore[arg-type]
        MassCancel(None),  # type: ignore[arg-type]
        AddSymbol(b"X", 1, 1, 0, 0),  # type: ignore[arg-type]
        SetRiskLimits(7, 0, 0, 0),  # type: ignore[arg-type]
        HaltSymbol({}),  # type: ignore[arg-type]
    ],
)
def test_apply_never_raises_on_junk(junk: Any) -> None:
    desk = Desk()
    desk.limit("a", "live", BUY, 99, 5)
    book = desk.book()
    result = desk.do(junk)
    assert result.status == Status.REJECTED
    assert desk.book() == book


def test_malformed_log_entry_is_one_rejection() -> None:
    desk = Desk()
    results = desk.engine.apply_entry(1, b"\x01garbage")
    assert [reason(r) for r in results] == [RejectReason.MALFORMED_BATCH]
    assert desk.engine.applied_index == 1
    assert desk.engine.apply_entry(1, encode_batch(0, [HaltSymbol("AAA")])) == []


# ---------------------------------------------------------------- exactly-once


def test_a_repeated_client_order_id_returns_the_original_result_and_changes_nothing() -> None:
    desk = Desk()
    desk.limit("m", "1", SELL, 101, 5)
    original = desk.limit("a", "x", BUY, 101, 8)
    state = desk.engine.state_hash()
    again = desk.limit("a", "x", BUY, 101, 8)
    assert again is original
    different_body = desk.limit("a", "x", SELL, 99, 1)
    assert different_body is original
    assert desk.engine.state_hash() != "" and desk.book() == ([(101, 3)], [])
    restored = Engine.restore(desk.engine.snapshot())
    replay = restored.apply(
        NewOrder("a", "x", "AAA", BUY, OrderType.LIMIT, GTC, 101, 8), log_index=99, timestamp_ns=0
    )
    assert replay.to_dict() == original.to_dict()
    assert restored.depth("AAA") == desk.engine.depth("AAA")
    rejected = desk.limit("a", "bad", BUY, 101, 0)
    assert desk.limit("a", "bad", BUY, 101, 1) is rejected
    assert state  # the hash only moves when a command changes something


def test_repeats_change_no_state_hash() -> None:
    desk = Desk()
    desk.limit("a", "x", BUY, 99, 8)
    state = desk.engine.state_hash()
    desk.engine.apply(
        NewOrder("a", "x", "AAA", BUY, OrderType.LIMIT, GTC, 99, 8),
        log_index=desk.log_index,
        timestamp_ns=desk.clock,
    )
    assert desk.engine.state_hash() == state


def test_retention_window_then_duplicate_while_live_then_new_once_gone() -> None:
    desk = Desk(dedup_max_keys=3)
    live = desk.limit("a", "keep", BUY, 99, 1)
    done = desk.limit("a", "gone", BUY, 98, 1)
    desk.do(Cancel("a", done.order_id, None))
    assert desk.limit("a", "keep", BUY, 99, 1) is live  # still retained
    for n in range(3):
        desk.limit("b", f"filler{n}", BUY, 97, 1)
    assert desk.engine.result_for("a", "keep") is None
    assert reason(desk.limit("a", "keep", BUY, 99, 1)) == RejectReason.DUPLICATE_CLIENT_ORDER_ID
    reused = desk.limit("a", "gone", BUY, 98, 1)
    assert reused.status == Status.NEW and reused.order_id != done.order_id


def test_replace_is_exactly_once_by_its_new_client_order_id() -> None:
    desk = Desk()
    order = desk.limit("a", "1", BUY, 99, 10)
    first = desk.do(CancelReplace("a", order.order_id, None, "2", 99, 5))
    assert desk.do(CancelReplace("a", order.order_id, None, "2", 99, 5)) is first
    assert desk.do(CancelReplace("a", None, "1", "2", 99, 4)) is first
    assert desk.book() == ([(99, 5)], [])


# ---------------------------------------------------------------- cancels and replaces


def test_cancel_by_id_or_client_order_id_only_by_the_owner() -> None:
    desk = Desk()
    one = desk.limit("a", "1", BUY, 99, 5)
    desk.limit("a", "2", BUY, 99, 5)
    assert reason(desk.do(Cancel("b", one.order_id, None))) == RejectReason.UNKNOWN_ORDER
    cancelled = desk.do(Cancel("a", one.order_id, None))
    assert cancelled.status == Status.CANCELLED
    (event,) = events_of(cancelled, Cancelled)
    assert (event.quantity, event.reason) == (5, CancelReason.REQUESTED)
    assert reason(desk.do(Cancel("a", one.order_id, None))) == RejectReason.UNKNOWN_ORDER
    assert desk.do(Cancel("a", None, "2")).status == Status.CANCELLED
    assert desk.book() == ([], [])


def _queue(desk: Desk) -> list[str]:
    bids, _ = desk.engine.live_orders_in_priority("AAA")
    return [order.client_id for order in bids]


def test_replace_quantity_down_keeps_priority() -> None:
    desk = Desk()
    first = desk.limit("a", "1", BUY, 99, 10)
    desk.limit("b", "1", BUY, 99, 10)
    result = desk.do(CancelReplace("a", first.order_id, None, "1b", 99, 4))
    (replaced,) = events_of(result, Replaced)
    assert replaced.kept_priority and replaced.leaves_quantity == 4
    assert _queue(desk) == ["a", "b"] and desk.book() == ([(99, 14)], [])
    assert desk.engine.order_by_client_id("a", "1b").order_id == first.order_id  # type: ignore[union-attr]
    assert desk.engine.order_by_client_id("a", "1") is None


@pytest.mark.parametrize(("price", "quantity"), [(99, 11), (98, 10), (98, 4)])
def test_replace_price_change_or_quantity_up_loses_priority(price: int, quantity: int) -> None:
    desk = Desk()
    first = desk.limit("a", "1", BUY, 99, 10)
    desk.limit("b", "1", BUY, price, 10)
    result = desk.do(CancelReplace("a", first.order_id, None, "1b", price, quantity))
    assert not events_of(result, Replaced)[0].kept_priority
    assert _queue(desk)[-1] == "a"


def test_replace_that_crosses_trades_as_the_aggressor() -> None:
    desk = Desk()
    desk.limit("m", "1", SELL, 101, 4)
    order = desk.limit("a", "1", BUY, 99, 10)
    result = desk.do(CancelReplace("a", order.order_id, None, "2", 101, 10))
    (fill,) = events_of(result, Fill)
    assert (fill.taker_order_id, fill.quantity, fill.aggressor_side) == (order.order_id, 4, BUY)
    assert result.status == Status.PARTIALLY_FILLED and desk.book() == ([(101, 6)], [])


def test_replace_to_not_more_than_filled_cancels_the_order() -> None:
    desk = Desk()
    order = desk.limit("a", "1", BUY, 100, 10)
    desk.limit("m", "1", SELL, 100, 6)
    result = desk.do(CancelReplace("a", order.order_id, None, "2", 100, 6))
    (event,) = events_of(result, Cancelled)
    assert (event.quantity, event.reason) == (4, CancelReason.REPLACED_TO_FILLED)
    assert result.status == Status.CANCELLED and desk.book() == ([], [])


def test_replace_rejections() -> None:
    desk = Desk(dedup_max_keys=1)  # so "other" below is a live order, not a retained result
    order = desk.limit("a", "1", BUY, 99, 10, post_only=True)
    desk.limit("a", "other", BUY, 98, 1)
    desk.limit("m", "1", SELL, 101, 5)
    assert reason(desk.do(CancelReplace("b", order.order_id, None, "2", 99, 5))) == (
        RejectReason.UNKNOWN_ORDER
    )
    assert reason(desk.do(CancelReplace("a", order.order_id, None, "other", 99, 5))) == (
        RejectReason.DUPLICATE_CLIENT_ORDER_ID
    )
    assert reason(desk.do(CancelReplace("a", order.order_id, None, "3", 101, 5))) == (
        RejectReason.POST_ONLY_WOULD_TAKE
    )
    assert reason(desk.do(CancelReplace("a", order.order_id, None, "4", 110, 5))) == (
        RejectReason.PRICE_BAND
    )
    desk.do(HaltSymbol("AAA"))
    assert reason(desk.do(CancelReplace("a", order.order_id, None, "5", 99, 5))) == (
        RejectReason.SYMBOL_HALTED
    )
    assert desk.book() == ([(99, 10), (98, 1)], [(101, 5)])


def test_replace_off_the_tick_grid_is_rejected() -> None:
    desk = Desk()
    order = desk.limit("a", "1", BUY, 100, 10, symbol="BBB")
    assert reason(desk.do(CancelReplace("a", order.order_id, None, "2", 101, 10))) == (
        RejectReason.PRICE_OFF_TICK
    )
    assert reason(desk.do(CancelReplace("a", order.order_id, None, "3", 100, 15))) == (
        RejectReason.QUANTITY_OFF_LOT
    )


def test_mass_cancel_in_order_id_order_and_per_symbol() -> None:
    desk = Desk()
    ids = [
        desk.limit("a", "1", BUY, 99, 1).order_id,
        desk.limit("a", "2", SELL, 102, 1).order_id,
        desk.limit("a", "3", BUY, 100, 10, symbol="BBB").order_id,
        desk.limit("b", "1", BUY, 99, 1).order_id,
    ]
    one_symbol = desk.do(MassCancel("a", "BBB"))
    assert [e.order_id for e in events_of(one_symbol, Cancelled)] == [ids[2]]
    everything = desk.do(MassCancel("a"))
    assert [e.order_id for e in events_of(everything, Cancelled)] == ids[:2]
    assert all(e.reason == CancelReason.MASS_CANCEL for e in events_of(everything, Cancelled))
    assert everything.status == Status.ACCEPTED
    assert desk.book() == ([(99, 1)], [])
    assert desk.do(MassCancel("a")).events == []


def test_halt_blocks_new_orders_but_not_cancels_and_resume_reopens() -> None:
    desk = Desk()
    order = desk.limit("a", "1", BUY, 99, 1)
    halted = desk.do(HaltSymbol("AAA"))
    assert halted.events == [TradingStatus("AAA", True)]
    assert desk.engine.symbols()["AAA"].halted
    assert reason(desk.limit("a", "2", BUY, 99, 1)) == RejectReason.SYMBOL_HALTED
    assert desk.do(Cancel("a", order.order_id, None)).status == Status.CANCELLED
    desk.do(ResumeSymbol("AAA"))
    assert desk.limit("a", "3", BUY, 99, 1).status == Status.NEW


def test_add_symbol_by_command() -> None:
    desk = Desk()
    result = desk.do(AddSymbol("NEW", 2, 1, 0, 0))
    assert result.status == Status.ACCEPTED and "NEW" in desk.engine.symbols()
    assert desk.limit("a", "1", BUY, 4, 1, symbol="NEW").status == Status.NEW


# ---------------------------------------------------------------- positions, trades, market data


def test_positions_and_realised_pnl_in_integer_units() -> None:
    desk = Desk()
    desk.limit("m", "1", SELL, 100, 10)
    desk.limit("a", "1", BUY, 100, 10)
    desk.limit("m", "2", BUY, 104, 4)
    desk.limit("a", "2", SELL, 104, 4)
    position = desk.engine.positions("a")["AAA"]
    assert (position.quantity, position.open_cost, position.realised_pnl) == (6, 600, 16)
    desk.limit("m", "3", BUY, 99, 10)
    desk.limit("a", "3", SELL, 99, 10)  # closes 6 at 99 (-6), opens short 4 at 99
    position = desk.engine.positions("a")["AAA"]
    assert (position.quantity, position.open_cost, position.realised_pnl) == (-4, -396, 10)
    assert (position.bought_quantity, position.sold_quantity) == (10, 14)
    maker = desk.engine.positions("m")["AAA"]
    assert maker.quantity == 4 and maker.realised_pnl == -10
    assert desk.engine.positions("nobody") == {}


def test_trade_ids_come_from_the_log_position() -> None:
    desk = Desk()
    desk.limit("m", "1", SELL, 101, 1)
    desk.limit("m", "2", SELL, 101, 1)
    desk.limit("m", "3", SELL, 101, 1)
    batch = encode_batch(
        5_000,
        [
            NewOrder("a", "1", "AAA", BUY, OrderType.LIMIT, IOC, 101, 2),
            NewOrder("a", "2", "AAA", BUY, OrderType.LIMIT, IOC, 101, 1),
        ],
    )
    results = desk.engine.apply_entry(40, batch)
    trade_ids = [f.trade_id for r in results for f in events_of(r, Fill)]
    assert trade_ids == [(40 << 24) | 0, (40 << 24) | 1, (40 << 24) | 2]
    assert all(f.timestamp_ns == 5_000 for r in results for f in events_of(r, Fill))


def test_book_updates_carry_per_symbol_sequence_numbers() -> None:
    desk = Desk()
    a1 = events_of(desk.limit("a", "1", BUY, 99, 1), BookUpdate)
    b1 = events_of(desk.limit("a", "2", BUY, 100, 10, symbol="BBB"), BookUpdate)
    a2 = events_of(desk.limit("a", "3", BUY, 99, 2), BookUpdate)
    assert [(u.symbol, u.seq, u.quantity) for u in a1 + b1 + a2] == [
        ("AAA", 1, 1),
        ("BBB", 1, 10),
        ("AAA", 2, 3),
    ]
    sweep = desk.limit("m", "1", SELL, 99, 3)
    assert [(u.side, u.price, u.quantity, u.seq) for u in events_of(sweep, BookUpdate)] == [
        (BUY, 99, 0, 3)
    ]
    bbo = desk.engine.best_bid_offer("AAA")
    assert bbo is not None and bbo.bid_price is None and bbo.seq == 3


def test_recent_trades_ring_and_analytics_candles() -> None:
    desk = Desk(trade_history=3, candle_intervals_ns=(1_000,), candle_history=2)
    prices = [100, 102, 101, 103]
    for n, price in enumerate(prices):
        desk.limit("m", f"s{n}", SELL, price, 2)
        desk.do(
            NewOrder("a", f"b{n}", "AAA", BUY, OrderType.LIMIT, IOC, price, 2),
            timestamp_ns=10_000 + n * 600,
        )
    trades = desk.engine.recent_trades("AAA", 10)
    assert [t.price for t in trades] == prices[1:]
    assert [t.price for t in desk.engine.recent_trades("AAA", 1)] == [103]
    analytics = desk.engine.analytics("AAA")
    assert analytics is not None
    assert analytics.trade_count == 4 and analytics.volume == 8
    assert analytics.notional == 2 * sum(prices) and analytics.vwap == sum(prices) / 4
    candles = analytics.candles[1_000]
    # times 10_000, 10_600, 11_200, 11_800 -> buckets 10_000 and 11_000 (bounded to 2)
    assert [(c.start_ns, c.open, c.high, c.low, c.close, c.volume) for c in candles] == [
        (10_000, 100, 102, 100, 102, 4),
        (11_000, 101, 103, 101, 103, 4),
    ]
    assert desk.engine.analytics("ZZZ") is None and desk.engine.recent_trades("ZZZ") == []


def test_the_clock_never_runs_backwards() -> None:
    desk = Desk()
    desk.limit("m", "1", SELL, 101, 2)
    desk.do(NewOrder("a", "1", "AAA", BUY, OrderType.LIMIT, IOC, 101, 1), timestamp_ns=50_000)
    late = desk.do(
        NewOrder("a", "2", "AAA", BUY, OrderType.LIMIT, IOC, 101, 1), timestamp_ns=20_000
    )
    assert events_of(late, Fill)[0].timestamp_ns == 50_000


def test_queries() -> None:
    desk = Desk()
    resting = desk.limit("a", "1", BUY, 99, 5)
    desk.limit("a", "2", BUY, 98, 5)
    desk.limit("b", "1", SELL, 101, 7)
    gone = desk.limit("c", "1", SELL, 99, 5)  # fills against a's 99
    bbo = desk.engine.best_bid_offer("AAA")
    assert bbo is not None and (bbo.bid_price, bbo.bid_quantity, bbo.ask_price) == (98, 5, 101)
    assert desk.engine.depth("AAA", 1) is not None
    assert desk.engine.depth("AAA", 1).bids == [(98, 5)]  # type: ignore[union-attr]
    assert desk.engine.order(resting.order_id).status == Status.FILLED  # type: ignore[union-attr]
    assert desk.engine.order_by_client_id("c", "1").order_id == gone.order_id  # type: ignore[union-attr]
    assert [o.client_order_id for o in desk.engine.open_orders("a")] == ["2"]
    assert desk.engine.order(12345) is None and desk.engine.best_bid_offer("ZZZ") is None
    assert resting.to_dict()["events"][0]["type"] == "accepted"
    assert desk.engine.order(resting.order_id).to_dict()["status"] == "FILLED"  # type: ignore[union-attr]


# ---------------------------------------------------------------- odd inputs and snapshots


def test_lone_surrogates_are_rejected_not_raised() -> None:
    desk = Desk()
    for command in (
        NewOrder("\ud800", "1", "AAA", BUY, OrderType.LIMIT, GTC, 99, 1),
        NewOrder("a", "\udfff", "AAA", BUY, OrderType.LIMIT, GTC, 99, 1),
        CancelReplace("a", 1, None, "\ud800", 99, 1),
        AddSymbol("\ud800", 1, 1, 0, 0),
    ):
        assert reason(desk.do(command)) == RejectReason.INVALID_FIELD
    restored = Engine.restore(desk.engine.snapshot())
    assert restored.state_hash() == desk.engine.state_hash()


def test_retained_results_with_out_of_range_ids_survive_a_snapshot() -> None:
    desk = Desk()
    huge = desk.do(CancelReplace("a", (1 << 64) - 1, None, "n1", 99, 1))
    flag = desk.do(CancelReplace("a", True, None, "n2", 99, 1))  # type: ignore[arg-type]
    assert reason(huge) == RejectReason.UNKNOWN_ORDER
    assert huge.events[0].order_id == (1 << 64) - 1  # type: ignore[union-attr]
    assert flag.events[0].order_id is None  # type: ignore[union-attr]
    restored = Engine.restore(desk.engine.snapshot())
    assert restored.result_for("a", "n1").to_dict() == huge.to_dict()  # type: ignore[union-attr]
    assert restored.result_for("a", "n2").to_dict() == flag.to_dict()  # type: ignore[union-attr]
    assert restored.state_hash() == desk.engine.state_hash()


JUNK = [None, True, 0, -1, 1.5, 2**70, "", "AAA", "\ud800", ["AAA"], {}, b"AAA", BUY, GTC]


@settings(settings.get_profile("engine"), max_examples=300)
@given(
    st.sampled_from(
        [NewOrder, Cancel, CancelReplace, MassCancel, AddSymbol, SetRiskLimits, HaltSymbol]
    ).flatmap(
        lambda cls: st.tuples(
            st.just(cls),
            st.lists(st.sampled_from(JUNK), min_size=len(fields(cls)), max_size=len(fields(cls))),
        )
    )
)
def test_any_field_values_are_rejected_or_applied_never_raised(case: tuple[type, list]) -> None:
    cls, values = case
    desk = Desk()
    desk.limit("a", "live", BUY, 99, 5)
    result = desk.do(cls(*values))
    assert isinstance(result, CommandResult)
    restored = Engine.restore(desk.engine.snapshot())
    assert restored.state_hash() == desk.engine.state_hash()

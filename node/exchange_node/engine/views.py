"""Records the engine's queries return (and the few it keeps as state).

All integers: prices in price units, quantities in lots' units, money
(notional, open cost, realised P&L) in price-unit x quantity. The only float
is ``Analytics.vwap``, computed when asked, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from exchange_node.engine.commands import OrderType, SelfTradeMode, Side, TimeInForce
from exchange_node.engine.events import Status


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


class _View:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(slots=True, frozen=True)
class RiskLimits(_View):
    """Pre-trade limits of a client, each per symbol; 0 means unlimited."""

    max_order_qty: int = 0
    max_notional: int = 0
    max_position: int = 0


@dataclass(slots=True)
class Position(_View):
    """A client's position in one symbol.

    Average-cost accounting in integers. ``open_cost`` is the signed sum of
    ``price * quantity`` of the open position (negative when short). Closing
    ``c`` of an open position ``p`` removes ``open_cost * c // |p|`` of cost
    (floor division); the remainder stays in ``open_cost`` so no unit is lost:
    ``realised_pnl`` plus the mark-to-market of ``open_cost`` always accounts
    for every fill exactly. ``open_buy_quantity`` / ``open_sell_quantity`` are
    the client's resting orders' open quantities (the position-limit check
    assumes they all fill).
    """

    quantity: int = 0
    open_cost: int = 0
    realised_pnl: int = 0
    bought_quantity: int = 0
    sold_quantity: int = 0
    open_buy_quantity: int = 0
    open_sell_quantity: int = 0


@dataclass(slots=True)
class OrderView(_View):
    order_id: int
    client_id: str
    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int
    quantity: int
    filled_quantity: int
    leaves_quantity: int
    status: Status
    post_only: bool
    stp: SelfTradeMode


@dataclass(slots=True, frozen=True)
class BestBidOffer(_View):
    symbol: str
    bid_price: int | None
    bid_quantity: int
    ask_price: int | None
    ask_quantity: int
    seq: int


@dataclass(slots=True, frozen=True)
class Depth(_View):
    """Top levels, best first, as (price, total open quantity); ``seq`` as of this view."""

    symbol: str
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    seq: int


@dataclass(slots=True, frozen=True)
class Candle(_View):
    start_ns: int
    interval_ns: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    notional: int


@dataclass(slots=True, frozen=True)
class Analytics(_View):
    symbol: str
    trade_count: int
    volume: int
    notional: int
    vwap: float | None
    last_price: int | None
    candles: dict[int, list[Candle]] = field(default_factory=dict)
    """Interval (ns) -> candles, oldest first (bounded history)."""


__all__ = [
    "Analytics",
    "BestBidOffer",
    "Candle",
    "Depth",
    "OrderView",
    "Position",
    "RiskLimits",
]

"""What applying a command produced: typed event records and the command's result.

Every command yields one ``CommandResult``: the order id it concerned (if
any), a ``Status`` and the events in the order they happened. For an order
the events are: ``Accepted`` (or a single ``Rejected``), then ``Fill``,
``Cancelled`` (self-trade prevention) and ``Expired`` events as matching
proceeds, then one ``BookUpdate`` per price level whose total changed, with
the level's final total and the symbol's next sequence number. A
market-data client that sees a gap in a symbol's ``seq`` has missed an update.

``to_dict()`` gives plain JSON-ready values (enums by name).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum, IntEnum
from typing import Any

from exchange_node.engine.commands import OrderType, RejectReason, Side, TimeInForce


class Status(IntEnum):
    """The state of an order after a command, or the outcome of a non-order command."""

    ACCEPTED = 0
    """A non-order command (mass cancel, admin) took effect."""
    REJECTED = 1
    """The command changed nothing (see the ``Rejected`` event)."""
    NEW = 2
    """The order rests on the book with nothing filled."""
    PARTIALLY_FILLED = 3
    """The order rests on the book with part of it filled."""
    FILLED = 4
    CANCELLED = 5
    EXPIRED = 6


class CancelReason(IntEnum):
    REQUESTED = 0
    MASS_CANCEL = 1
    SELF_TRADE = 2
    """Self-trade prevention removed this order (see ``SelfTradeMode``)."""
    REPLACED_TO_FILLED = 3
    """A replace asked for a total quantity not above what was already filled."""


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.name
    return value


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
"""Per event class, its field names: ``dataclasses.fields`` rebuilds them on every call,
and answers call ``to_dict`` for every event of every order."""


class _Record:
    __slots__ = ()
    kind = "event"

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values. The records clients see in every answer
        override it with their fields spelled out (about 3x faster than this loop;
        tests/engine/test_events.py checks each against it)."""
        return self.generic_dict()

    def generic_dict(self) -> dict[str, Any]:
        names = _FIELD_NAMES.get(type(self))
        if names is None:
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in fields(self))  # type: ignore[arg-type]
        out: dict[str, Any] = {"type": self.kind}
        for name in names:
            value = getattr(self, name)
            out[name] = value.name if isinstance(value, Enum) else value
        return out


@dataclass(slots=True)
class Accepted(_Record):
    kind = "accepted"
    order_id: int
    client_id: str
    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int
    quantity: int
    timestamp_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "accepted",
            "order_id": self.order_id,
            "client_id": self.client_id,
            "client_order_id": self.client_order_id,
            "symbol": self.symbol,
            "side": self.side.name,
            "order_type": self.order_type.name,
            "time_in_force": self.time_in_force.name,
            "price": self.price,
            "quantity": self.quantity,
            "timestamp_ns": self.timestamp_ns,
        }


@dataclass(slots=True)
class Rejected(_Record):
    kind = "rejected"
    reason: RejectReason
    message: str
    client_id: str | None = None
    client_order_id: str | None = None
    order_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "rejected",
            "reason": self.reason.name,
            "message": self.message,
            "client_id": self.client_id,
            "client_order_id": self.client_order_id,
            "order_id": self.order_id,
        }


@dataclass(slots=True)
class Fill(_Record):
    kind = "fill"
    trade_id: int
    symbol: str
    price: int
    quantity: int
    aggressor_side: Side
    maker_order_id: int
    taker_order_id: int
    maker_client_id: str
    taker_client_id: str
    timestamp_ns: int


@dataclass(slots=True)
class Cancelled(_Record):
    kind = "cancelled"
    order_id: int
    client_id: str
    client_order_id: str
    symbol: str
    quantity: int
    """The quantity that was still open and is now cancelled."""
    reason: CancelReason

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "cancelled",
            "order_id": self.order_id,
            "client_id": self.client_id,
            "client_order_id": self.client_order_id,
            "symbol": self.symbol,
            "quantity": self.quantity,
            "reason": self.reason.name,
        }


@dataclass(slots=True)
class Expired(_Record):
    """The unfilled remainder of an IOC, FOK or market order."""

    kind = "expired"
    order_id: int
    client_id: str
    client_order_id: str
    symbol: str
    quantity: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "expired",
            "order_id": self.order_id,
            "client_id": self.client_id,
            "client_order_id": self.client_order_id,
            "symbol": self.symbol,
            "quantity": self.quantity,
        }


@dataclass(slots=True)
class Replaced(_Record):
    kind = "replaced"
    order_id: int
    client_id: str
    old_client_order_id: str
    new_client_order_id: str
    symbol: str
    price: int
    quantity: int
    """The new total quantity of the order (filled plus open)."""
    leaves_quantity: int
    kept_priority: bool


@dataclass(slots=True)
class BookUpdate(_Record):
    """Level-2 change: the new total open quantity at ``price`` (0: the level is gone)."""

    kind = "book"
    symbol: str
    side: Side
    price: int
    quantity: int
    seq: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "book",
            "symbol": self.symbol,
            "side": self.side.name,
            "price": self.price,
            "quantity": self.quantity,
            "seq": self.seq,
        }


@dataclass(slots=True)
class TradingStatus(_Record):
    """A symbol was listed, halted or resumed."""

    kind = "trading_status"
    symbol: str
    halted: bool


Event = Accepted | Rejected | Fill | Cancelled | Expired | Replaced | BookUpdate | TradingStatus


@dataclass(slots=True)
class CommandResult:
    """The outcome of one command. A repeated (client_id, client_order_id) gets this same object."""

    log_index: int
    order_id: int | None
    status: Status
    events: list[Event]

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_index": self.log_index,
            "order_id": self.order_id,
            "status": self.status.name,
            "events": [event.to_dict() for event in self.events],
        }

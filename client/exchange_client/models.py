"""Typed views of the API's JSON: symbols (with their price scale), orders, fills,
books, trades, positions and the cluster. Each has ``from_json`` and keeps the
document it came from in ``raw`` (fields the server adds later are not lost).

Prices and quantities are integers on the wire. A price is in the symbol's price
unit: today hundredths of the quote currency (``DEFAULT_PRICE_SCALE`` = 100, so
``50000`` is 500.00); ``/v1/symbols`` names the scale as ``price_scale`` when the
server knows it. ``Symbol.to_price``/``Symbol.from_price`` convert, exactly, with
``decimal.Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

DEFAULT_PRICE_SCALE = 100
"""Price units per unit of the quote currency (hundredths) when the server names none."""


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


@dataclass(frozen=True, slots=True)
class Symbol:
    symbol: str
    tick_size: int
    lot_size: int
    price_band_bps: int
    reference_price: int
    halted: bool
    price_scale: int = DEFAULT_PRICE_SCALE
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Symbol:
        return cls(
            symbol=doc["symbol"],
            tick_size=int(doc["tick_size"]),
            lot_size=int(doc["lot_size"]),
            price_band_bps=int(doc.get("price_band_bps", 0)),
            reference_price=int(doc.get("reference_price", 0)),
            halted=bool(doc.get("halted", False)),
            price_scale=int(doc.get("price_scale") or DEFAULT_PRICE_SCALE),
            raw=doc,
        )

    def to_price(self, units: int) -> Decimal:
        """Integer price units -> the price in the quote currency (``50000`` -> 500.00)."""
        return Decimal(units) / Decimal(self.price_scale)

    def from_price(self, price: Decimal | str | int) -> int:
        """A price in the quote currency -> integer units, which must be on the tick
        grid (``ValueError`` otherwise: nothing is rounded silently)."""
        units = Decimal(str(price)) * self.price_scale
        if units != units.to_integral_value():
            raise ValueError(f"{price} is finer than 1/{self.price_scale} of a unit")
        value = int(units)
        if value % self.tick_size:
            raise ValueError(f"{price} is off the tick grid ({self.tick_size} units)")
        return value


@dataclass(frozen=True, slots=True)
class Fill:
    """One fill of your order (your side of the trade only)."""

    trade_id: int
    order_id: int
    symbol: str
    price: int
    quantity: int
    liquidity: str
    """``MAKER`` or ``TAKER``."""
    aggressor_side: str
    timestamp_ns: int

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Fill:
        return cls(
            trade_id=int(doc["trade_id"]),
            order_id=int(doc["order_id"]),
            symbol=doc["symbol"],
            price=int(doc["price"]),
            quantity=int(doc["quantity"]),
            liquidity=str(doc.get("liquidity", "")),
            aggressor_side=str(doc.get("aggressor_side", "")),
            timestamp_ns=int(doc.get("timestamp_ns", 0)),
        )


@dataclass(frozen=True, slots=True)
class OrderResult:
    """The answer to a write: committed and applied before it was sent."""

    log_index: int
    order_id: int | None
    status: str
    """``NEW``, ``PARTIALLY_FILLED``, ``FILLED``, ``CANCELLED``, ``EXPIRED``,
    ``ACCEPTED`` (a non-order command) or ``REJECTED`` (inside a batch)."""
    events: list[dict[str, Any]]
    client_order_id: str | None = None
    error: dict[str, Any] | None = None
    """For a rejected order of a batch: the error (``code``, ``reason``...)."""

    @classmethod
    def from_json(cls, doc: dict[str, Any], client_order_id: str | None = None) -> OrderResult:
        if isinstance(doc.get("status"), int):  # a batch item the engine rejected
            result = doc.get("result") or {}
            return cls(
                log_index=int(result.get("log_index", 0)),
                order_id=result.get("order_id"),
                status="REJECTED",
                events=list(result.get("events", [])),
                client_order_id=client_order_id,
                error=doc.get("error"),
            )
        return cls(
            log_index=int(doc.get("log_index", 0)),
            order_id=doc.get("order_id"),
            status=str(doc.get("status")),
            events=list(doc.get("events", [])),
            client_order_id=client_order_id,
        )

    @property
    def fills(self) -> list[Fill]:
        return [Fill.from_json(e) for e in self.events if e.get("type") == "fill"]

    @property
    def filled_quantity(self) -> int:
        return sum(f.quantity for f in self.fills)

    @property
    def rejected(self) -> bool:
        return self.status == "REJECTED"


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the exchange holds it (live, or recently finished)."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    price: int
    quantity: int
    filled_quantity: int
    leaves_quantity: int
    status: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Order:
        return cls(
            order_id=int(doc["order_id"]),
            client_order_id=str(doc.get("client_order_id", "")),
            symbol=doc["symbol"],
            side=str(doc["side"]),
            order_type=str(doc.get("order_type", "LIMIT")),
            time_in_force=str(doc.get("time_in_force", "GTC")),
            price=int(doc.get("price", 0)),
            quantity=int(doc["quantity"]),
            filled_quantity=int(doc.get("filled_quantity", 0)),
            leaves_quantity=int(doc.get("leaves_quantity", 0)),
            status=str(doc["status"]),
            raw=doc,
        )


@dataclass(frozen=True, slots=True)
class Level:
    price: int
    quantity: int


@dataclass(frozen=True, slots=True)
class Book:
    """A level-2 book: bids best (highest) first, asks best (lowest) first."""

    symbol: str
    seq: int
    bids: list[Level]
    asks: list[Level]

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Book:
        return cls(
            symbol=doc["symbol"],
            seq=int(doc["seq"]),
            bids=[Level(int(p), int(q)) for p, q in doc.get("bids", [])],
            asks=[Level(int(p), int(q)) for p, q in doc.get("asks", [])],
        )

    @property
    def best_bid(self) -> Level | None:
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> Level | None:
        return self.asks[0] if self.asks else None


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: int
    symbol: str
    price: int
    quantity: int
    aggressor_side: str
    timestamp_ns: int

    @classmethod
    def from_json(cls, doc: dict[str, Any], symbol: str = "") -> Trade:
        return cls(
            trade_id=int(doc["trade_id"]),
            symbol=str(doc.get("symbol") or symbol),
            price=int(doc["price"]),
            quantity=int(doc["quantity"]),
            aggressor_side=str(doc.get("aggressor_side", "")),
            timestamp_ns=int(doc.get("timestamp_ns", 0)),
        )


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    quantity: int
    realised_pnl: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, symbol: str, doc: dict[str, Any]) -> Position:
        return cls(
            symbol=symbol,
            quantity=int(doc.get("quantity", 0)),
            realised_pnl=int(doc.get("realised_pnl", 0)),
            raw=doc,
        )


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    role: str
    voter: bool
    http_address: str
    match_index: int
    lag: int
    healthy: bool

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Member:
        return cls(
            id=int(doc["id"]),
            name=str(doc.get("name", "")),
            role=str(doc.get("role", "learner" if not doc.get("voter", True) else "")),
            voter=bool(doc.get("voter", True)),
            http_address=str(doc.get("http_address", "")),
            match_index=int(doc.get("match_index", 0)),
            lag=int(doc.get("lag", 0)),
            healthy=bool(doc.get("healthy", False)),
        )


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """The cluster as one node sees it (``GET /v1/cluster`` or the admin status)."""

    node_id: int
    role: str
    term: int
    leader: int
    commit_index: int
    applied_index: int
    members: list[Member]
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ClusterStatus:
        return cls(
            node_id=int(doc["node_id"]),
            role=str(doc["role"]),
            term=int(doc["term"]),
            leader=int(doc.get("leader") or 0),
            commit_index=int(doc.get("commit_index", 0)),
            applied_index=int(doc.get("applied_index", 0)),
            members=[Member.from_json(m) for m in doc.get("members", [])],
            raw=doc,
        )

    def leader_member(self) -> Member | None:
        return next((m for m in self.members if m.id == self.leader), None)

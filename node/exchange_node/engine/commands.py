"""Commands the exchange engine applies, and their binary encoding in the Raft log.

One Raft log entry holds one *batch*: the leader's timestamp (nanoseconds, the
only clock the engine ever sees) and a list of commands. ``encode_batch`` and
``decode_batch`` are the only ways a batch becomes bytes and back.

Units. Prices are integers in the symbol's price unit ("ticks" of precision);
a limit price must be a positive multiple of the symbol's ``tick_size``; a
market order carries price 0. Quantities are positive multiples of the
symbol's ``lot_size``. Notional is ``price * quantity`` in the same integer
units. Nothing here is a float.

Wire format, version 1 (little endian, struct based)::

    batch   := u8 version=1 | i64 timestamp_ns | u32 count | command*count
    str     := u8 length | utf-8 bytes          (at most 255 bytes)
    optstr  := u8 present(0|1) [str]
    command := u8 tag | fields

    NEW_ORDER      1   str client_id, str client_order_id, str symbol,
                       u8 flags (bit0 side, bit1 order_type, bits2-3 time_in_force,
                       bit4 post_only, bits5-6 stp), i64 price, i64 quantity
    CANCEL         2   str client_id, u8 present(0|1) [u64 order_id], optstr client_order_id
    CANCEL_REPLACE 3   str client_id, u8 present [u64 order_id], optstr client_order_id,
                       str new_client_order_id, i64 price, i64 quantity
    MASS_CANCEL    4   str client_id, optstr symbol
    ADD_SYMBOL     16  str symbol, i64 tick_size, i64 lot_size, i64 price_band_bps,
                       i64 reference_price
    HALT_SYMBOL    17  str symbol
    RESUME_SYMBOL  18  str symbol
    SET_RISK_LIMITS 19 optstr client_id (absent: the default limits),
                       i64 max_order_qty, i64 max_notional, i64 max_position
    SET_ORDER_LIMITS 20 optstr client_id (absent: the default), i64 max_open_orders
    SET_RETENTION  21  i64 exactly_once_horizon_ns, i64 exactly_once_max_keys,
                       i64 finished_window

Quantities and prices are signed on the wire on purpose: a zero or negative
quantity is a *format* reject the engine reports, not an encoding failure.
``decode_batch`` raises ``CommandDecodeError`` for anything that is not a
well-formed batch (unknown version or tag, truncation, trailing bytes, bad
UTF-8, enum values out of range).

``validate_format`` is the check the engine itself runs first on every
command; the API calls the same function to refuse, before proposing to the
log, anything the engine would reject for format reasons.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, Protocol

from exchange_node.limits import (
    ENGINE_MAX_BATCH_COMMANDS,
    ENGINE_MAX_STRING_BYTES,
    ENGINE_RETENTION_MAX_ENTRIES,
    ENGINE_RETENTION_MAX_HORIZON_NS,
)

WIRE_VERSION = 1
MAX_STRING_BYTES = ENGINE_MAX_STRING_BYTES
MAX_BATCH_COMMANDS = ENGINE_MAX_BATCH_COMMANDS
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1


class Side(IntEnum):
    BUY = 0
    SELL = 1


class OrderType(IntEnum):
    LIMIT = 0
    MARKET = 1


class TimeInForce(IntEnum):
    GTC = 0
    """Good till cancelled: a limit remainder rests on the book."""
    IOC = 1
    """Immediate or cancel: fills what it can now, the remainder expires; never rests."""
    FOK = 2
    """Fill or kill: fills entirely and at once, or nothing happens and it expires."""


class SelfTradeMode(IntEnum):
    """What happens when an incoming order would match a resting order of the same client.

    The check is made maker by maker, in priority order, before each fill:

    - ``CANCEL_RESTING``: the resting order is cancelled (``Cancelled`` event for it)
      and matching continues with the next maker.
    - ``CANCEL_INCOMING``: the incoming order's remainder is cancelled (``Cancelled``
      event for it, after any fills it already had); the resting order is untouched.
    - ``CANCEL_BOTH``: both the resting order and the incoming remainder are cancelled.

    For a FOK order the fillable quantity is computed with the same rule (a
    self-match stops or skips liquidity exactly as it would during matching).
    """

    CANCEL_RESTING = 0
    CANCEL_INCOMING = 1
    CANCEL_BOTH = 2


class RejectReason(IntEnum):
    """Why a command changed nothing. Codes are stable: clients may switch on them."""

    INVALID_FIELD = 1
    """A required field is empty or a combination of fields is not allowed."""
    UNKNOWN_SYMBOL = 2
    INVALID_QUANTITY = 3
    """Zero or negative quantity."""
    INVALID_PRICE = 4
    """Limit price zero or negative, or a market order with a non-zero price."""
    PRICE_OFF_TICK = 5
    QUANTITY_OFF_LOT = 6
    SYMBOL_HALTED = 7
    UNKNOWN_ORDER = 8
    """No live order with that id (or client order id) belongs to this client."""
    DUPLICATE_CLIENT_ORDER_ID = 9
    """The client order id names a live order whose original result is no longer retained."""
    RISK_MAX_ORDER_QTY = 10
    RISK_MAX_NOTIONAL = 11
    RISK_MAX_POSITION = 12
    PRICE_BAND = 13
    """Limit price outside the band around the last trade (or the reference price)."""
    POST_ONLY_WOULD_TAKE = 14
    SYMBOL_EXISTS = 15
    INVALID_SYMBOL_SPEC = 16
    MALFORMED_BATCH = 17
    """The log entry could not be decoded (``CommandDecodeError``); nothing was applied."""
    RISK_MAX_OPEN_ORDERS = 18
    """A GTC limit order from a client that already has its maximum of resting orders."""


class Rejection(NamedTuple):
    reason: RejectReason
    message: str


@dataclass(slots=True)
class NewOrder:
    client_id: str
    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int
    """Limit price in integer price units; 0 for a market order."""
    quantity: int
    post_only: bool = False
    stp: SelfTradeMode = SelfTradeMode.CANCEL_INCOMING


@dataclass(slots=True)
class Cancel:
    """Cancel one live order of ``client_id``, named by exactly one of the two ids."""

    client_id: str
    order_id: int | None = None
    client_order_id: str | None = None


@dataclass(slots=True)
class CancelReplace:
    """Replace a live order's price and quantity; it takes ``new_client_order_id``.

    Quantity down at the same price keeps time priority; a price change or a
    quantity increase loses it (the order moves to the back of its new level).
    ``quantity`` is the new *total* quantity; if it is not above the quantity
    already filled, the order is cancelled instead.
    """

    client_id: str
    order_id: int | None
    client_order_id: str | None
    new_client_order_id: str
    price: int
    quantity: int


@dataclass(slots=True)
class MassCancel:
    """Cancel every live order of ``client_id`` (in one symbol, or in all when None)."""

    client_id: str
    symbol: str | None = None


@dataclass(slots=True)
class AddSymbol:
    """Admin: list a symbol. ``price_band_bps`` 0 means no band."""

    symbol: str
    tick_size: int
    lot_size: int
    price_band_bps: int
    reference_price: int


@dataclass(slots=True)
class HaltSymbol:
    """Admin: stop trading a symbol. New orders and replaces are rejected; cancels work."""

    symbol: str


@dataclass(slots=True)
class ResumeSymbol:
    symbol: str


@dataclass(slots=True)
class SetRiskLimits:
    """Admin: pre-trade limits for one client (``client_id`` None: the default for all).

    Every limit applies per client *and per symbol*; 0 means unlimited.
    ``max_position`` bounds the absolute position the order could reach if it
    filled completely (position plus same-side open quantity plus this order).
    """

    client_id: str | None
    max_order_qty: int
    max_notional: int
    max_position: int


@dataclass(slots=True)
class SetOrderLimits:
    """Admin: at most ``max_open_orders`` resting orders per client, all symbols
    together (``client_id`` None: the default for all; 0: unlimited). A GTC limit
    order from a client already at the limit is rejected ``RISK_MAX_OPEN_ORDERS``."""

    client_id: str | None
    max_open_orders: int


@dataclass(slots=True)
class SetRetention:
    """Admin: how long and how many exactly-once results the engine keeps, and how many
    finished orders it keeps for queries (docs/api.md, "Exactly once").

    The horizon is in engine time (the leader's stamps). Lowering the cap or the
    window forgets the oldest entries at once (counted like any cap eviction);
    lowering the horizon forgets what it no longer covers at once."""

    exactly_once_horizon_ns: int
    exactly_once_max_keys: int
    finished_window: int


Command = (
    NewOrder
    | Cancel
    | CancelReplace
    | MassCancel
    | AddSymbol
    | HaltSymbol
    | ResumeSymbol
    | SetRiskLimits
    | SetOrderLimits
    | SetRetention
)


@dataclass(slots=True)
class SymbolSpec:
    """A listed symbol's trading parameters, as the engine holds them."""

    symbol: str
    tick_size: int
    lot_size: int
    price_band_bps: int
    reference_price: int
    halted: bool = False


class _SymbolLike(Protocol):
    @property
    def tick_size(self) -> int: ...
    @property
    def lot_size(self) -> int: ...


# --------------------------------------------------------------------------- validation


def _check_str(value: object, name: str) -> Rejection | None:
    if not isinstance(value, str) or not value:
        return Rejection(RejectReason.INVALID_FIELD, f"{name} must be a non-empty string")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:  # lone surrogates
        return Rejection(RejectReason.INVALID_FIELD, f"{name} is not valid Unicode text")
    if size > MAX_STRING_BYTES:
        return Rejection(RejectReason.INVALID_FIELD, f"{name} longer than {MAX_STRING_BYTES} bytes")
    return None


def _check_int64(value: object, name: str) -> Rejection | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return Rejection(RejectReason.INVALID_FIELD, f"{name} must be an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        return Rejection(RejectReason.INVALID_FIELD, f"{name} out of 64-bit range")
    return None


def check_price_quantity(
    spec: _SymbolLike, price: int, quantity: int, *, market: bool = False
) -> Rejection | None:
    """The quantity and price rules of one symbol (shared by new orders and replaces)."""
    if quantity <= 0:
        return Rejection(RejectReason.INVALID_QUANTITY, f"quantity {quantity} must be positive")
    if quantity % spec.lot_size:
        return Rejection(
            RejectReason.QUANTITY_OFF_LOT,
            f"quantity {quantity} is not a multiple of lot size {spec.lot_size}",
        )
    if market:
        if price != 0:
            return Rejection(RejectReason.INVALID_PRICE, "a market order carries price 0")
        return None
    if price <= 0:
        return Rejection(RejectReason.INVALID_PRICE, f"limit price {price} must be positive")
    if price % spec.tick_size:
        return Rejection(
            RejectReason.PRICE_OFF_TICK,
            f"price {price} is not a multiple of tick size {spec.tick_size}",
        )
    return None


def validate_format(command: Command, symbols: Mapping[str, _SymbolLike]) -> Rejection | None:
    """Return why ``command`` is malformed for these listed ``symbols``, or None.

    Covers: empty ids, unknown symbol, zero/negative quantity, quantity off
    the lot grid, limit price zero/negative or off the tick grid, market order
    with a price, post-only that is not a GTC limit, cancel naming neither or
    both ids, bad symbol specs and negative risk limits. It does not look at
    live state (halts, risk, orders); for a ``CancelReplace`` the tick and lot
    checks need the order's symbol, so the engine makes them (with
    ``check_price_quantity``) when it finds the order.
    """
    if isinstance(command, NewOrder):
        return (
            _check_str(command.client_id, "client_id")
            or _check_str(command.client_order_id, "client_order_id")
            or _check_str(command.symbol, "symbol")
            or _check_int64(command.price, "price")
            or _check_int64(command.quantity, "quantity")
            or _validate_new_order(command, symbols)
        )
    if isinstance(command, Cancel):
        return _check_str(command.client_id, "client_id") or _check_order_ref(
            command.order_id, command.client_order_id
        )
    if isinstance(command, CancelReplace):
        rejection = (
            _check_str(command.client_id, "client_id")
            or _check_order_ref(command.order_id, command.client_order_id)
            or _check_str(command.new_client_order_id, "new_client_order_id")
            or _check_int64(command.price, "price")
            or _check_int64(command.quantity, "quantity")
        )
        if rejection:
            return rejection
        if command.quantity <= 0:
            return Rejection(
                RejectReason.INVALID_QUANTITY, f"quantity {command.quantity} must be positive"
            )
        if command.price <= 0:
            return Rejection(RejectReason.INVALID_PRICE, f"price {command.price} must be positive")
        return None
    if isinstance(command, MassCancel):
        rejection = _check_str(command.client_id, "client_id")
        if rejection:
            return rejection
        if command.symbol is not None and (
            not isinstance(command.symbol, str) or command.symbol not in symbols
        ):
            return Rejection(RejectReason.UNKNOWN_SYMBOL, f"unknown symbol {command.symbol!r}")
        return None
    if isinstance(command, AddSymbol):
        rejection = _check_str(command.symbol, "symbol")
        for name in ("tick_size", "lot_size", "price_band_bps", "reference_price"):
            rejection = rejection or _check_int64(getattr(command, name), name)
        if rejection:
            return rejection
        if command.symbol in symbols:
            return Rejection(RejectReason.SYMBOL_EXISTS, f"symbol {command.symbol!r} is listed")
        if command.tick_size <= 0 or command.lot_size <= 0:
            return Rejection(
                RejectReason.INVALID_SYMBOL_SPEC, "tick size and lot size must be positive"
            )
        if command.price_band_bps < 0 or command.price_band_bps > 1_000_000:
            return Rejection(
                RejectReason.INVALID_SYMBOL_SPEC, "price band must be 0..1,000,000 bps"
            )
        if command.reference_price < 0 or command.reference_price % command.tick_size:
            return Rejection(
                RejectReason.INVALID_SYMBOL_SPEC,
                "reference price must be 0 or a positive multiple of the tick size",
            )
        return None
    if isinstance(command, HaltSymbol | ResumeSymbol):
        rejection = _check_str(command.symbol, "symbol")
        if rejection:
            return rejection
        if command.symbol not in symbols:
            return Rejection(RejectReason.UNKNOWN_SYMBOL, f"unknown symbol {command.symbol!r}")
        return None
    if isinstance(command, SetRiskLimits):
        if command.client_id is not None:
            rejection = _check_str(command.client_id, "client_id")
            if rejection:
                return rejection
        for name in ("max_order_qty", "max_notional", "max_position"):
            value = getattr(command, name)
            rejection = _check_int64(value, name)
            if rejection:
                return rejection
            if value < 0:
                return Rejection(RejectReason.INVALID_FIELD, f"{name} must be >= 0 (0: unlimited)")
        return None
    if isinstance(command, SetOrderLimits):
        if command.client_id is not None:
            rejection = _check_str(command.client_id, "client_id")
            if rejection:
                return rejection
        rejection = _check_int64(command.max_open_orders, "max_open_orders")
        if rejection:
            return rejection
        if command.max_open_orders < 0:
            return Rejection(
                RejectReason.INVALID_FIELD, "max_open_orders must be >= 0 (0: unlimited)"
            )
        return None
    if isinstance(command, SetRetention):
        for name, most in (
            ("exactly_once_horizon_ns", ENGINE_RETENTION_MAX_HORIZON_NS),
            ("exactly_once_max_keys", ENGINE_RETENTION_MAX_ENTRIES),
            ("finished_window", ENGINE_RETENTION_MAX_ENTRIES),
        ):
            value = getattr(command, name)
            rejection = _check_int64(value, name)
            if rejection:
                return rejection
            if not 1 <= value <= most:
                return Rejection(RejectReason.INVALID_FIELD, f"{name} must be in 1..{most}")
        return None
    return Rejection(RejectReason.INVALID_FIELD, f"not a command: {type(command).__name__}")


def _validate_new_order(command: NewOrder, symbols: Mapping[str, _SymbolLike]) -> Rejection | None:
    spec = symbols.get(command.symbol)
    if spec is None:
        return Rejection(RejectReason.UNKNOWN_SYMBOL, f"unknown symbol {command.symbol!r}")
    if command.side not in (Side.BUY, Side.SELL):
        return Rejection(RejectReason.INVALID_FIELD, "side must be BUY or SELL")
    market = command.order_type == OrderType.MARKET
    if not market and command.order_type != OrderType.LIMIT:
        return Rejection(RejectReason.INVALID_FIELD, "order type must be LIMIT or MARKET")
    if command.time_in_force not in (TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK):
        return Rejection(RejectReason.INVALID_FIELD, "time in force must be GTC, IOC or FOK")
    if command.stp not in (
        SelfTradeMode.CANCEL_RESTING,
        SelfTradeMode.CANCEL_INCOMING,
        SelfTradeMode.CANCEL_BOTH,
    ):
        return Rejection(RejectReason.INVALID_FIELD, "unknown self-trade prevention mode")
    if command.post_only and (market or command.time_in_force != TimeInForce.GTC):
        return Rejection(RejectReason.INVALID_FIELD, "post-only requires a GTC limit order")
    return check_price_quantity(spec, command.price, command.quantity, market=market)


def _check_order_ref(order_id: int | None, client_order_id: str | None) -> Rejection | None:
    if (order_id is None) == (client_order_id is None):
        return Rejection(
            RejectReason.INVALID_FIELD, "name the order by exactly one of order_id, client_order_id"
        )
    if order_id is not None:
        if isinstance(order_id, bool) or not isinstance(order_id, int):
            return Rejection(RejectReason.INVALID_FIELD, "order_id must be an integer")
        if not 0 <= order_id <= UINT64_MAX:
            return Rejection(RejectReason.INVALID_FIELD, "order_id out of range")
        return None
    return _check_str(client_order_id, "client_order_id")


# --------------------------------------------------------------------------- encoding


class CommandDecodeError(ValueError):
    """The bytes are not a well-formed command batch of a version this code knows."""


class CommandEncodeError(ValueError):
    """A command cannot be represented on the wire (string too long, integer out of range)."""


TAG_NEW_ORDER = 1
TAG_CANCEL = 2
TAG_CANCEL_REPLACE = 3
TAG_MASS_CANCEL = 4
TAG_ADD_SYMBOL = 16
TAG_HALT_SYMBOL = 17
TAG_RESUME_SYMBOL = 18
TAG_SET_RISK_LIMITS = 19
TAG_SET_ORDER_LIMITS = 20
TAG_SET_RETENTION = 21

_HEADER = struct.Struct("<BqI")
_U8 = struct.Struct("<B")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_I64X2 = struct.Struct("<qq")
_I64X3 = struct.Struct("<qqq")
_I64X4 = struct.Struct("<qqqq")
_FLAGS_PRICE_QTY = struct.Struct("<Bqq")

_SIDES = (Side.BUY, Side.SELL)
_ORDER_TYPES = (OrderType.LIMIT, OrderType.MARKET)
_TIFS = (TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK)
_STPS = (SelfTradeMode.CANCEL_RESTING, SelfTradeMode.CANCEL_INCOMING, SelfTradeMode.CANCEL_BOTH)


def _put_str(out: bytearray, value: str, name: str) -> None:
    if not isinstance(value, str):
        raise CommandEncodeError(f"{name} must be a string")
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        raise CommandEncodeError(f"{name} is not valid Unicode text") from None
    if len(raw) > MAX_STRING_BYTES:
        raise CommandEncodeError(f"{name} longer than {MAX_STRING_BYTES} bytes")
    out.append(len(raw))
    out += raw


def _put_optstr(out: bytearray, value: str | None, name: str) -> None:
    if value is None:
        out.append(0)
    else:
        out.append(1)
        _put_str(out, value, name)


def _put_opt_order_id(out: bytearray, order_id: int | None) -> None:
    if order_id is None:
        out.append(0)
        return
    if isinstance(order_id, bool) or not isinstance(order_id, int):
        raise CommandEncodeError("order_id must be an integer")
    if not 0 <= order_id <= UINT64_MAX:
        raise CommandEncodeError("order_id out of range")
    out.append(1)
    out += _U64.pack(order_id)


def _pack(st: struct.Struct, *values: int) -> bytes:
    try:
        return st.pack(*values)
    except struct.error as exc:
        raise CommandEncodeError(f"integer field out of range: {exc}") from None


def encode_command(out: bytearray, command: Command) -> None:
    """Append one command's encoding to ``out``."""
    if isinstance(command, NewOrder):
        out.append(TAG_NEW_ORDER)
        _put_str(out, command.client_id, "client_id")
        _put_str(out, command.client_order_id, "client_order_id")
        _put_str(out, command.symbol, "symbol")
        side, order_type, tif, stp = (
            int(command.side),
            int(command.order_type),
            int(command.time_in_force),
            int(command.stp),
        )
        if not (0 <= side <= 1 and 0 <= order_type <= 1 and 0 <= tif <= 2 and 0 <= stp <= 2):
            raise CommandEncodeError("enum field out of range")
        flags = side | order_type << 1 | tif << 2 | (1 if command.post_only else 0) << 4 | stp << 5
        out += _pack(_FLAGS_PRICE_QTY, flags, command.price, command.quantity)
    elif isinstance(command, Cancel):
        out.append(TAG_CANCEL)
        _put_str(out, command.client_id, "client_id")
        _put_opt_order_id(out, command.order_id)
        _put_optstr(out, command.client_order_id, "client_order_id")
    elif isinstance(command, CancelReplace):
        out.append(TAG_CANCEL_REPLACE)
        _put_str(out, command.client_id, "client_id")
        _put_opt_order_id(out, command.order_id)
        _put_optstr(out, command.client_order_id, "client_order_id")
        _put_str(out, command.new_client_order_id, "new_client_order_id")
        out += _pack(_I64X2, command.price, command.quantity)
    elif isinstance(command, MassCancel):
        out.append(TAG_MASS_CANCEL)
        _put_str(out, command.client_id, "client_id")
        _put_optstr(out, command.symbol, "symbol")
    elif isinstance(command, AddSymbol):
        out.append(TAG_ADD_SYMBOL)
        _put_str(out, command.symbol, "symbol")
        out += _pack(
            _I64X4,
            command.tick_size,
            command.lot_size,
            command.price_band_bps,
            command.reference_price,
        )
    elif isinstance(command, HaltSymbol):
        out.append(TAG_HALT_SYMBOL)
        _put_str(out, command.symbol, "symbol")
    elif isinstance(command, ResumeSymbol):
        out.append(TAG_RESUME_SYMBOL)
        _put_str(out, command.symbol, "symbol")
    elif isinstance(command, SetRiskLimits):
        out.append(TAG_SET_RISK_LIMITS)
        _put_optstr(out, command.client_id, "client_id")
        out += _pack(_I64X3, command.max_order_qty, command.max_notional, command.max_position)
    elif isinstance(command, SetOrderLimits):
        out.append(TAG_SET_ORDER_LIMITS)
        _put_optstr(out, command.client_id, "client_id")
        out += _pack(_I64, command.max_open_orders)
    elif isinstance(command, SetRetention):
        out.append(TAG_SET_RETENTION)
        out += _pack(
            _I64X3,
            command.exactly_once_horizon_ns,
            command.exactly_once_max_keys,
            command.finished_window,
        )
    else:
        raise CommandEncodeError(f"not a command: {type(command).__name__}")


def encode_batch(timestamp_ns: int, commands: Sequence[Command]) -> bytes:
    """Encode one log entry's worth of commands, stamped with the leader's time."""
    if len(commands) > MAX_BATCH_COMMANDS:
        raise CommandEncodeError(f"more than {MAX_BATCH_COMMANDS} commands in one batch")
    out = bytearray(_pack(_HEADER, WIRE_VERSION, timestamp_ns, len(commands)))
    for command in commands:
        encode_command(out, command)
    return bytes(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u8(self) -> int:
        pos = self.pos
        if pos >= len(self.data):
            raise CommandDecodeError(f"truncated at byte {pos}")
        self.pos = pos + 1
        return self.data[pos]

    def unpack(self, st: struct.Struct) -> tuple[int, ...]:
        pos = self.pos
        end = pos + st.size
        if end > len(self.data):
            raise CommandDecodeError(f"truncated at byte {pos}")
        self.pos = end
        return st.unpack_from(self.data, pos)

    def string(self) -> str:
        length = self.u8()
        pos = self.pos
        end = pos + length
        if end > len(self.data):
            raise CommandDecodeError(f"truncated string at byte {pos}")
        self.pos = end
        try:
            return self.data[pos:end].decode()
        except UnicodeDecodeError:
            raise CommandDecodeError(f"invalid UTF-8 at byte {pos}") from None

    def optstr(self) -> str | None:
        present = self.u8()
        if present == 0:
            return None
        if present != 1:
            raise CommandDecodeError(f"bad presence byte {present} at {self.pos - 1}")
        return self.string()

    def opt_order_id(self) -> int | None:
        present = self.u8()
        if present == 0:
            return None
        if present != 1:
            raise CommandDecodeError(f"bad presence byte {present} at {self.pos - 1}")
        return self.unpack(_U64)[0]


def _decode_command(reader: _Reader) -> Command:
    tag = reader.u8()
    if tag == TAG_NEW_ORDER:
        client_id = reader.string()
        client_order_id = reader.string()
        symbol = reader.string()
        flags, price, quantity = reader.unpack(_FLAGS_PRICE_QTY)
        tif = (flags >> 2) & 3
        stp = (flags >> 5) & 3
        if flags & 0x80 or tif > 2 or stp > 2:
            raise CommandDecodeError(f"bad order flags {flags:#x}")
        return NewOrder(
            client_id,
            client_order_id,
            symbol,
            _SIDES[flags & 1],
            _ORDER_TYPES[(flags >> 1) & 1],
            _TIFS[tif],
            price,
            quantity,
            bool(flags & 0x10),
            _STPS[stp],
        )
    if tag == TAG_CANCEL:
        client_id = reader.string()
        order_id = reader.opt_order_id()
        return Cancel(client_id, order_id, reader.optstr())
    if tag == TAG_CANCEL_REPLACE:
        client_id = reader.string()
        order_id = reader.opt_order_id()
        replaced_client_order_id = reader.optstr()
        new_client_order_id = reader.string()
        price, quantity = reader.unpack(_I64X2)
        return CancelReplace(
            client_id, order_id, replaced_client_order_id, new_client_order_id, price, quantity
        )
    if tag == TAG_MASS_CANCEL:
        client_id = reader.string()
        return MassCancel(client_id, reader.optstr())
    if tag == TAG_ADD_SYMBOL:
        symbol = reader.string()
        tick_size, lot_size, band, reference = reader.unpack(_I64X4)
        return AddSymbol(symbol, tick_size, lot_size, band, reference)
    if tag == TAG_HALT_SYMBOL:
        return HaltSymbol(reader.string())
    if tag == TAG_RESUME_SYMBOL:
        return ResumeSymbol(reader.string())
    if tag == TAG_SET_RISK_LIMITS:
        limited_client = reader.optstr()
        max_order_qty, max_notional, max_position = reader.unpack(_I64X3)
        return SetRiskLimits(limited_client, max_order_qty, max_notional, max_position)
    if tag == TAG_SET_ORDER_LIMITS:
        limited_client = reader.optstr()
        return SetOrderLimits(limited_client, reader.unpack(_I64)[0])
    if tag == TAG_SET_RETENTION:
        return SetRetention(*reader.unpack(_I64X3))
    raise CommandDecodeError(f"unknown command tag {tag} at byte {reader.pos - 1}")


def decode_batch(data: bytes | bytearray | memoryview) -> tuple[int, list[Command]]:
    """Decode one log entry into ``(timestamp_ns, commands)``; raise ``CommandDecodeError``."""
    if not isinstance(data, bytes):
        try:
            data = bytes(data)
        except TypeError:
            raise CommandDecodeError("batch must be bytes") from None
    if not data:
        raise CommandDecodeError("empty batch")
    if data[0] != WIRE_VERSION:
        raise CommandDecodeError(f"unknown batch version {data[0]}")
    reader = _Reader(data)
    _version, timestamp_ns, count = reader.unpack(_HEADER)
    if count > MAX_BATCH_COMMANDS:
        raise CommandDecodeError(f"batch claims {count} commands (max {MAX_BATCH_COMMANDS})")
    commands = [_decode_command(reader) for _ in range(count)]
    if reader.pos != len(data):
        raise CommandDecodeError(f"{len(data) - reader.pos} trailing bytes after the batch")
    return timestamp_ns, commands

"""The engine's whole state as canonical bytes, and back.

Canonical means: two engines in the same state produce the same bytes, no
matter how they got there (applied the log, or restored from a snapshot).
Everything is written in a defined order: symbols, clients and positions by
name; books best level first and FIFO within a level (dead records left by
lazy cancels are not written); the exactly-once table and the finished
orders in their FIFO order; trades and candles oldest first. ``state_hash``
is BLAKE2b over these bytes.

Format, version 1 (little endian)::

    magic "EXSN" | u8 version
    config    u32 dedup_window, finished_window, trade_history, candle_history,
              u8 n + i64 interval_ns * n
    counters  i64 next_order_id, trade_log_index, trade_seq, now, log_index, applied_index
    risk      default limits, u32 n + (str client, limits) * n      limits := int int int
    clients   u32 n + str * n     (the string table the books refer to)
    symbols   u32 n + symbol * n
      symbol := str name, i64 tick, lot, band_bps, reference, u8 halted,
                i64 last_price, seq, trade_count, int volume, int notional,
                per candle interval: u32 n + (int start, open, high, low, close, volume, notional) * n,
                u32 n + event(fill) * n,
                bids, asks := u32 levels + (i64 price, u32 n + order * n) * levels
      order  := u64 order_id, i64 quantity, i64 leaves, u8 flags (post_only | stp << 1),
                u32 client index, u8 len + client_order_id
    positions u32 n + (str client, str symbol, int * 7) * n
    results   u32 n + (str client, str client_order_id, result) * n
      result := int log_index, optint order_id, u8 status, u32 n + event * n
    finished  u32 n + order_view * n

``str`` is u32 length + UTF-8; ``int`` is a u8 length + little-endian two's
complement (any size); ``optint`` is u8 present + int.
"""

from __future__ import annotations

import struct
from collections import deque
from enum import IntEnum
from typing import Any

from exchange_node.engine.book import RestingOrder
from exchange_node.engine.commands import (
    OrderType,
    RejectReason,
    SelfTradeMode,
    Side,
    SymbolSpec,
    TimeInForce,
)
from exchange_node.engine.engine import Engine, SymbolState, finished_view
from exchange_node.engine.events import (
    Accepted,
    BookUpdate,
    Cancelled,
    CancelReason,
    CommandResult,
    Event,
    Expired,
    Fill,
    Rejected,
    Replaced,
    Status,
    TradingStatus,
)
from exchange_node.engine.views import OrderView, Position, RiskLimits

MAGIC = b"EXSN"
SNAPSHOT_VERSION = 1


class SnapshotError(ValueError):
    """The bytes are not an engine snapshot this code can read."""


_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_I64X4 = struct.Struct("<qqqq")
_I64X6 = struct.Struct("<qqqqqq")
_ORDER = struct.Struct("<QqqBIB")
_LEVEL = struct.Struct("<qI")

_SIDES = tuple(Side)
_STPS = tuple(SelfTradeMode)

# Event field kinds: s str, S optional str, i int, I optional int, b bool, or an enum class.
_EVENT_SPECS: dict[type, tuple[int, tuple[Any, ...]]] = {
    Accepted: (1, ("i", "s", "s", "s", Side, OrderType, TimeInForce, "i", "i", "i")),
    Rejected: (2, (RejectReason, "s", "S", "S", "I")),
    Fill: (3, ("i", "s", "i", "i", Side, "i", "i", "s", "s", "i")),
    Cancelled: (4, ("i", "s", "s", "s", "i", CancelReason)),
    Expired: (5, ("i", "s", "s", "s", "i")),
    Replaced: (6, ("i", "s", "s", "s", "s", "i", "i", "i", "b")),
    BookUpdate: (7, ("s", Side, "i", "i", "i")),
    TradingStatus: (8, ("s", "b")),
}
_EVENT_BY_TAG: dict[int, tuple[type, tuple[Any, ...]]] = {
    tag: (cls, spec) for cls, (tag, spec) in _EVENT_SPECS.items()
}
_VIEW_SPEC: tuple[Any, ...] = (
    "i",
    "s",
    "s",
    "s",
    Side,
    OrderType,
    TimeInForce,
    "i",
    "i",
    "i",
    "i",
    Status,
    "b",
    SelfTradeMode,
)


class _Writer:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, value: int) -> None:
        self.parts.append(_U8.pack(value))

    def u32(self, value: int) -> None:
        self.parts.append(_U32.pack(value))

    def i64(self, value: int) -> None:
        self.parts.append(_I64.pack(value))

    def int(self, value: int) -> None:
        length = (value.bit_length() + 8) // 8
        self.parts.append(_U8.pack(length) + value.to_bytes(length, "little", signed=True))

    def optint(self, value: int | None) -> None:
        if value is None:
            self.parts.append(b"\x00")
        else:
            self.parts.append(b"\x01")
            self.int(value)

    def str(self, value: str) -> None:
        raw = value.encode()
        self.parts.append(_U32.pack(len(raw)) + raw)

    def optstr(self, value: str | None) -> None:
        if value is None:
            self.parts.append(b"\x00")
        else:
            self.parts.append(b"\x01")
            self.str(value)

    def fields(self, spec: tuple[Any, ...], values: Any) -> None:
        for kind, value in zip(spec, values, strict=True):
            if kind == "i":
                self.int(value)
            elif kind == "s":
                self.str(value)
            elif kind == "S":
                self.optstr(value)
            elif kind == "I":
                self.optint(value)
            elif kind == "b":
                self.u8(1 if value else 0)
            else:
                self.u8(int(value))

    def event(self, event: Event) -> None:
        tag, spec = _EVENT_SPECS[type(event)]
        self.u8(tag)
        self.fields(spec, [getattr(event, name) for name in event.__slots__])  # type: ignore[union-attr]


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> int:
        pos = self.pos
        end = pos + size
        if end > len(self.data):
            raise SnapshotError(f"truncated at byte {pos}")
        self.pos = end
        return pos

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        return st.unpack_from(self.data, self.take(st.size))

    def u8(self) -> int:
        return self.data[self.take(1)]

    def u32(self) -> int:
        value: int = _U32.unpack_from(self.data, self.take(4))[0]
        return value

    def i64(self) -> int:
        value: int = _I64.unpack_from(self.data, self.take(8))[0]
        return value

    def int(self) -> int:
        length = self.u8()
        pos = self.take(length)
        return int.from_bytes(self.data[pos : pos + length], "little", signed=True)

    def optint(self) -> int | None:
        return self.int() if self.flag() else None

    def flag(self) -> bool:
        value = self.u8()
        if value > 1:
            raise SnapshotError(f"bad flag byte {value} at {self.pos - 1}")
        return value == 1

    def str(self) -> str:
        length = self.u32()
        pos = self.take(length)
        try:
            return self.data[pos : pos + length].decode()
        except UnicodeDecodeError:
            raise SnapshotError(f"invalid UTF-8 at byte {pos}") from None

    def optstr(self) -> str | None:
        return self.str() if self.flag() else None

    def fields(self, spec: tuple[Any, ...]) -> list[Any]:
        values: list[Any] = []
        for kind in spec:
            if kind == "i":
                values.append(self.int())
            elif kind == "s":
                values.append(self.str())
            elif kind == "S":
                values.append(self.optstr())
            elif kind == "I":
                values.append(self.optint())
            elif kind == "b":
                values.append(self.flag())
            else:
                values.append(self.enum(kind))
        return values

    def enum(self, cls: type[IntEnum]) -> Any:
        value = self.u8()
        try:
            return cls(value)
        except ValueError:
            raise SnapshotError(f"bad {cls.__name__} value {value}") from None

    def event(self) -> Event:
        tag = self.u8()
        entry = _EVENT_BY_TAG.get(tag)
        if entry is None:
            raise SnapshotError(f"unknown event tag {tag}")
        cls, spec = entry
        event: Event = cls(*self.fields(spec))
        return event


def _write_limits(writer: _Writer, limits: RiskLimits) -> None:
    writer.int(limits.max_order_qty)
    writer.int(limits.max_notional)
    writer.int(limits.max_position)


def _read_limits(reader: _Reader) -> RiskLimits:
    return RiskLimits(reader.int(), reader.int(), reader.int())


def encode_snapshot(engine: Engine) -> bytes:
    writer = _Writer()
    parts = writer.parts
    parts.append(MAGIC)
    writer.u8(SNAPSHOT_VERSION)
    for size in (
        engine.dedup_window,
        engine.finished_window,
        engine.trade_history,
        engine.candle_history,
    ):
        writer.u32(size)
    writer.u8(len(engine.candle_intervals_ns))
    for interval in engine.candle_intervals_ns:
        writer.i64(interval)
    parts.append(
        _I64X6.pack(
            engine._next_order_id,
            engine._trade_log_index,
            engine._trade_seq,
            engine._now,
            engine._log_index,
            engine.applied_index,
        )
    )
    _write_limits(writer, engine._default_limits)
    writer.u32(len(engine._client_limits))
    for client_id, limits in sorted(engine._client_limits.items()):
        writer.str(client_id)
        _write_limits(writer, limits)

    clients = sorted({order.client_id for order in engine._orders.values()})
    client_index = {client_id: i for i, client_id in enumerate(clients)}
    writer.u32(len(clients))
    for client_id in clients:
        writer.str(client_id)

    writer.u32(len(engine._symbols))
    order_pack = _ORDER.pack
    level_pack = _LEVEL.pack
    append = parts.append
    for name, state in sorted(engine._symbols.items()):
        spec = state.spec
        writer.str(name)
        parts.append(
            _I64X4.pack(spec.tick_size, spec.lot_size, spec.price_band_bps, spec.reference_price)
        )
        writer.u8(1 if spec.halted else 0)
        writer.i64(state.last_price)
        writer.i64(state.seq)
        writer.i64(state.trade_count)
        writer.int(state.volume)
        writer.int(state.notional)
        for history in state.candles:
            writer.u32(len(history))
            for candle in history:
                for value in candle:
                    writer.int(value)
        writer.u32(len(state.trades))
        for fill in state.trades:
            writer.event(fill)
        for book_side in (state.bids, state.asks):
            writer.u32(len(book_side.keys))
            for level in book_side.iter_levels():
                append(level_pack(level.price, level.count))
                for order in level.orders:
                    if not order.leaves:
                        continue
                    coid = order.client_order_id.encode()
                    append(
                        order_pack(
                            order.order_id,
                            order.quantity,
                            order.leaves,
                            (1 if order.post_only else 0) | order.stp << 1,
                            client_index[order.client_id],
                            len(coid),
                        )
                    )
                    append(coid)

    positions = [
        (client_id, symbol, position)
        for client_id, by_symbol in engine._positions.items()
        for symbol, position in by_symbol.items()
    ]
    positions.sort(key=lambda item: (item[0], item[1]))
    writer.u32(len(positions))
    for client_id, symbol, position in positions:
        writer.str(client_id)
        writer.str(symbol)
        for value in (
            position.quantity,
            position.open_cost,
            position.realised_pnl,
            position.bought_quantity,
            position.sold_quantity,
            position.open_buy_quantity,
            position.open_sell_quantity,
        ):
            writer.int(value)

    retained = [
        (key, result) for key, result in engine._result_fifo if engine._results.get(key) is result
    ]
    writer.u32(len(retained))
    for (client_id, client_order_id), result in retained:
        writer.str(client_id)
        writer.str(client_order_id)
        writer.int(result.log_index)
        writer.optint(result.order_id)
        writer.u8(int(result.status))
        writer.u32(len(result.events))
        for event in result.events:
            writer.event(event)

    writer.u32(len(engine._finished_fifo))
    for order_id in engine._finished_fifo:
        view = finished_view(engine._finished[order_id])
        writer.fields(_VIEW_SPEC, [getattr(view, name) for name in view.__slots__])
    return b"".join(parts)


def decode_snapshot(data: bytes) -> Engine:
    try:
        return _decode(bytes(data))
    except SnapshotError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, struct.error) as exc:
        raise SnapshotError(f"corrupt snapshot: {exc}") from None


def _decode(data: bytes) -> Engine:
    if data[:4] != MAGIC:
        raise SnapshotError("not an engine snapshot (bad magic)")
    reader = _Reader(data)
    reader.take(4)
    version = reader.u8()
    if version != SNAPSHOT_VERSION:
        raise SnapshotError(f"unknown snapshot version {version}")
    dedup_window, finished_window, trade_history, candle_history = (
        reader.u32(),
        reader.u32(),
        reader.u32(),
        reader.u32(),
    )
    intervals = tuple(reader.i64() for _ in range(reader.u8()))
    engine = Engine(
        dedup_window=dedup_window,
        finished_window=finished_window,
        trade_history=trade_history,
        candle_intervals_ns=intervals,
        candle_history=candle_history,
    )
    (
        engine._next_order_id,
        engine._trade_log_index,
        engine._trade_seq,
        engine._now,
        engine._log_index,
        engine.applied_index,
    ) = reader.unpack(_I64X6)
    engine._default_limits = _read_limits(reader)
    for _ in range(reader.u32()):
        client_id = reader.str()
        engine._client_limits[client_id] = _read_limits(reader)
    clients = [reader.str() for _ in range(reader.u32())]

    orders = engine._orders
    live_by_client = engine._live_by_client
    for client_id in clients:
        live_by_client[client_id] = {}
    live_of = [live_by_client[client_id] for client_id in clients]
    order_unpack = _ORDER.unpack_from
    order_size = _ORDER.size
    level_unpack = _LEVEL.unpack_from
    level_size = _LEVEL.size
    for _ in range(reader.u32()):
        name = reader.str()
        tick_size, lot_size, band, reference = reader.unpack(_I64X4)
        halted = reader.flag()
        state = SymbolState(
            SymbolSpec(name, tick_size, lot_size, band, reference, halted),
            trade_history,
            len(intervals),
            candle_history,
        )
        engine._symbols[name] = state
        engine._specs[name] = state.spec
        state.last_price = reader.i64()
        state.seq = reader.i64()
        state.trade_count = reader.i64()
        state.volume = reader.int()
        state.notional = reader.int()
        for history in state.candles:
            for _ in range(reader.u32()):
                history.append([reader.int() for _ in range(7)])
        for _ in range(reader.u32()):
            fill = reader.event()
            if not isinstance(fill, Fill):
                raise SnapshotError("trade history holds a non-fill event")
            state.trades.append(fill)
        for book_side in (state.bids, state.asks):
            side = book_side.side
            sign = book_side.sign
            previous_key: int | None = None
            for _ in range(reader.u32()):
                price, count = level_unpack(data, reader.take(level_size))
                key = sign * price
                if count == 0 or (previous_key is not None and key <= previous_key):
                    raise SnapshotError(f"book levels out of order at price {price}")
                previous_key = key
                for _ in range(count):
                    pos = reader.take(order_size)
                    order_id, quantity, leaves, flags, client, coid_len = order_unpack(data, pos)
                    pos = reader.take(coid_len)
                    client_order_id = data[pos : pos + coid_len].decode()
                    client_id = clients[client]
                    order = RestingOrder(
                        order_id,
                        client_id,
                        client_order_id,
                        name,
                        side,
                        price,
                        quantity,
                        leaves,
                        bool(flags & 1),
                        _STPS[flags >> 1],
                        engine._position(client_id, name),
                    )
                    if leaves <= 0 or leaves > quantity:
                        raise SnapshotError(f"order {order_id} has bad quantities")
                    if order_id in orders or client_order_id in live_of[client]:
                        raise SnapshotError(f"order {order_id} appears twice")
                    book_side.add(order)
                    orders[order_id] = order
                    live_of[client][client_order_id] = order

    # Orders created their owners' (empty) positions above; fill those objects in place.
    created = sum(len(by_symbol) for by_symbol in engine._positions.values())
    count = reader.u32()
    for _ in range(count):
        position = engine._position(reader.str(), reader.str())
        (
            position.quantity,
            position.open_cost,
            position.realised_pnl,
            position.bought_quantity,
            position.sold_quantity,
            position.open_buy_quantity,
            position.open_sell_quantity,
        ) = (reader.int() for _ in range(7))
    if sum(len(by_symbol) for by_symbol in engine._positions.values()) != count or created > count:
        raise SnapshotError("positions section does not cover the live orders' owners")

    for _ in range(reader.u32()):
        key = (reader.str(), reader.str())
        log_index = reader.int()
        order_id = reader.optint()
        status = reader.enum(Status)
        events = [reader.event() for _ in range(reader.u32())]
        result = CommandResult(log_index, order_id, status, events)
        engine._results[key] = result
        engine._result_fifo.append((key, result))

    finished_fifo: deque[int] = engine._finished_fifo
    for _ in range(reader.u32()):
        view = OrderView(*reader.fields(_VIEW_SPEC))
        record = RestingOrder(
            view.order_id,
            view.client_id,
            view.client_order_id,
            view.symbol,
            view.side,
            view.price,
            view.quantity,
            0,
            view.post_only,
            view.stp,
            engine._positions.get(view.client_id, {}).get(view.symbol) or Position(),
        )
        engine._finished[view.order_id] = (
            record,
            view.order_type,
            view.time_in_force,
            view.status,
            view.filled_quantity,
        )
        finished_fifo.append(view.order_id)
    if reader.pos != len(data):
        raise SnapshotError(f"{len(data) - reader.pos} trailing bytes")
    return engine


__all__: list[str] = ["SnapshotError", "decode_snapshot", "encode_snapshot"]

"""The engine's whole state as canonical bytes, and back.

Canonical means: two engines in the same state produce the same bytes, no
matter how they got there (applied the log, or restored from a snapshot).
Everything is written in a defined order: symbols, clients and positions by
name; books best level first and FIFO within a level (dead records left by
lazy cancels are not written); the exactly-once table (with its keys'
times) and the finished orders in their FIFO order; trades and candles
oldest first. ``state_hash``
is BLAKE2b over these bytes in their canonical form: the exactly-once block
stored, not compressed (``encode_snapshot(state, compress=False)``, itself a
readable snapshot), so the digest does not depend on the zlib build. Strings go into one table, numbered in order of
first use during that canonical walk.

Format, version 5 (little endian); versions 2, 3 and 4 are read too::

    magic "EXSN" | u8 version
    strings   u32 n, u32[n] lengths in characters, UTF-8 of all n strings concatenated
    config    u32 dedup_max_keys, finished_window, trade_history, candle_history,
              u8 n + i64 interval_ns * n,
              (version 4) i64 dedup_horizon_ns
    counters  i64 next_order_id, trade_log_index, trade_seq, now, log_index, applied_index,
              (version 4) int results_evicted_by_cap, int results_expired
    risk      limits(default), u32 n + (ref client, limits) * n      limits := int * 3
    open      (versions 3 and 4) int max_open_orders(default), u32 n + (ref client, int) * n
    symbols   u32 n + symbol * n
      symbol := ref name, i64 tick, lot, band_bps, reference, u8 halted,
                i64 last_price, seq, trade_count, int volume, int notional,
                per candle interval: u32 n + int[7] * n,
                u32 n + event * n (recent fills),
                bids, asks
      side   := u32 levels, i64[levels] prices, u32[levels] counts, then for all the
                side's orders column by column: u64[] order ids, i64[] quantities,
                i64[] leaves, u8[] flags (post_only | stp << 1), u32[] client refs,
                u8[] client order id lengths (characters), u32 size + their UTF-8
    positions u32 n + (ref client, ref symbol, int * 7) * n
    results   (version 5) u8 compression (0 stored, 1 zlib), u32 size, u32 stored size,
              the exactly-once block (below), zlib-compressed at level 1 when 1
    results   (versions 2 to 4) u32 n + (ref client, ref client_order_id, i64 log_index,
              u8 has_order_id, i64 order_id, u8 status, u32 n + event * n) * n
    times     (version 4) u32 runs + (i64 time_ns, u32 keys) * runs: the results' times,
              run-length coded in the same order (runs of one time, keys > 0, times rising)
    finished  u32 n + finished order * n

The exactly-once block (version 5) holds the keys in FIFO order column by
column, then their events grouped by type, column by column::

    u32 n, u32[n] client refs, ids(n) client order ids, i64[n] log indexes,
    u8[n] has order id, i64[n] order ids (0 if none), u8[n] statuses,
    u32[n] event counts, i64[n] the keys' times (non-decreasing)
    u32 E, u8[E] event tags in order (tag, or tag + 128: the event is in misc)
    per columnar type (Accepted, Fill, Cancelled, Expired, Replaced, BookUpdate,
    TradingStatus): u32 count, then one column per field in field order
    (strings as u32 refs, client order ids as ids(count), i64/u64, enums and flags u8)
    u32 size + misc: the other events (Rejected; a type with an integer beyond its
    column) one after the other as in version 4
    ids(k) := u8[k] lengths in characters, u32 size, their UTF-8

Client order ids stay out of the string table (each is used once or twice); the
block is regular enough for zlib level 1 to shrink it about 8:1.

Versions 2 and 3 (written before the time horizon) had a count window and no
times: they are read with the default horizon and cap (the cap at least the old
window), and their retained keys count as retained at the snapshot's clock, so
they are remembered at least as long as before.

``ref`` is a u32 index into the string table; ``int`` a u8 length plus
little-endian two's complement (any size). An event is a u8 tag and one
fixed struct of its fields (strings as refs, optional strings as ref + 1
with 0 for None); an event with an integer too large for its struct slot is
written field by field instead, under its tag + 128. Trade ids are stored as
u64: a log index below 2^40 keeps them in range.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from collections.abc import Callable
from itertools import accumulate, chain, islice, repeat
from operator import and_, attrgetter, le, lt, rshift
from typing import Any

from exchange_node.engine.book import BookSide, Level, RestingOrder
from exchange_node.engine.commands import (
    OrderType,
    RejectReason,
    SelfTradeMode,
    Side,
    SymbolSpec,
    TimeInForce,
)
from exchange_node.engine.engine import Engine
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
from exchange_node.engine.queries import finished_view
from exchange_node.engine.state import EngineState, SymbolState
from exchange_node.engine.views import Position, RiskLimits
from exchange_node.limits import ENGINE_DEDUP_HORIZON_NS, ENGINE_DEDUP_MAX_KEYS

MAGIC = b"EXSN"
SNAPSHOT_VERSION = 5
"""Version 5 writes the exactly-once table as one compressed block of columns; 4 added the
exactly-once horizon (config, counters, the keys' times) and always has the open-order
limits; 3 added those limits (2 had none). All four are read."""
_GENERIC = 0x80


class SnapshotError(ValueError):
    """The bytes are not an engine snapshot this code can read."""


_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_I64X4 = struct.Struct("<qqqq")
_I64X6 = struct.Struct("<qqqqqq")
_TIME_RUN = struct.Struct("<qI")
_RESULTS_HEAD = struct.Struct("<BII")
_RESULTS_LEVEL = 1
"""zlib level of the exactly-once block: level 1 takes most of the redundancy (about 8:1
on a full table) at a fraction of the time of the default level."""
_MAX_RESULTS_BLOCK = 1 << 31
_SYMBOL_HEAD = struct.Struct("<IqqqqBqqq")
_RESULT_HEAD = struct.Struct("<IIqBqBI")
_FINISHED = struct.Struct("<qIIIBBBqqqBBB")

# Field kinds: s string, S optional string, q i64, Q u64, I optional i64, b bool, or an enum.
_EVENT_SPECS: dict[type, tuple[int, tuple[Any, ...]]] = {
    Accepted: (1, ("q", "s", "s", "s", Side, OrderType, TimeInForce, "q", "q", "q")),
    Rejected: (2, (RejectReason, "s", "S", "S", "I")),
    Fill: (3, ("Q", "s", "q", "q", Side, "q", "q", "s", "s", "q")),
    Cancelled: (4, ("q", "s", "s", "s", "q", CancelReason)),
    Expired: (5, ("q", "s", "s", "s", "q")),
    Replaced: (6, ("q", "s", "s", "s", "s", "q", "q", "q", "b")),
    BookUpdate: (7, ("s", Side, "q", "q", "q")),
    TradingStatus: (8, ("s", "b")),
}


def _struct_for(spec: tuple[Any, ...]) -> struct.Struct:
    codes = {"s": "I", "S": "I", "q": "q", "Q": "Q", "I": "Bq", "b": "B"}
    return struct.Struct("<B" + "".join(codes.get(kind, "B") for kind in spec))


_EVENT_STRUCTS = {cls: _struct_for(spec) for cls, (_, spec) in _EVENT_SPECS.items()}
_EVENT_BY_TAG: dict[int, tuple[type, tuple[Any, ...], struct.Struct]] = {
    tag: (cls, spec, _EVENT_STRUCTS[cls]) for cls, (tag, spec) in _EVENT_SPECS.items()
}
_ENUM_MEMBERS: dict[type, dict[int, Any]] = {
    cls: {int(member): member for member in cls}
    for cls in (Side, OrderType, TimeInForce, RejectReason, CancelReason, Status, SelfTradeMode)
}
_STPS = tuple(SelfTradeMode)


def _member(cls: type, value: int) -> Any:
    member = _ENUM_MEMBERS[cls].get(value)
    if member is None:
        raise SnapshotError(f"bad {cls.__name__} value {value}")
    return member


def _encode_accepted(ref: Callable[[str], int], e: Any) -> bytes:
    return _EVENT_STRUCTS[Accepted].pack(
        1,
        e.order_id,
        ref(e.client_id),
        ref(e.client_order_id),
        ref(e.symbol),
        e.side,
        e.order_type,
        e.time_in_force,
        e.price,
        e.quantity,
        e.timestamp_ns,
    )


def _encode_fill(ref: Callable[[str], int], e: Any) -> bytes:
    return _EVENT_STRUCTS[Fill].pack(
        3,
        e.trade_id,
        ref(e.symbol),
        e.price,
        e.quantity,
        e.aggressor_side,
        e.maker_order_id,
        e.taker_order_id,
        ref(e.maker_client_id),
        ref(e.taker_client_id),
        e.timestamp_ns,
    )


def _encode_cancelled(ref: Callable[[str], int], e: Any) -> bytes:
    return _EVENT_STRUCTS[Cancelled].pack(
        4,
        e.order_id,
        ref(e.client_id),
        ref(e.client_order_id),
        ref(e.symbol),
        e.quantity,
        e.reason,
    )


def _encode_expired(ref: Callable[[str], int], e: Any) -> bytes:
    return _EVENT_STRUCTS[Expired].pack(
        5, e.order_id, ref(e.client_id), ref(e.client_order_id), ref(e.symbol), e.quantity
    )


def _encode_book_update(ref: Callable[[str], int], e: Any) -> bytes:
    return _EVENT_STRUCTS[BookUpdate].pack(7, ref(e.symbol), e.side, e.price, e.quantity, e.seq)


_FAST_ENCODERS: dict[type, Callable[[Callable[[str], int], Any], bytes]] = {
    Accepted: _encode_accepted,
    Fill: _encode_fill,
    Cancelled: _encode_cancelled,
    Expired: _encode_expired,
    BookUpdate: _encode_book_update,
}


def _big(value: int) -> bytes:
    length = (value.bit_length() + 8) // 8
    return _U8.pack(length) + value.to_bytes(length, "little", signed=True)


# --------------------------------------------------------------------------- writing


class _Writer:
    __slots__ = ("parts", "string_index", "strings")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.strings: list[str] = []
        self.string_index: dict[str, int] = {}

    def ref(self, value: str) -> int:
        index = self.string_index.get(value)
        if index is None:
            index = self.string_index[value] = len(self.strings)
            self.strings.append(value)
        return index

    def u32(self, value: int) -> None:
        self.parts.append(_U32.pack(value))

    def big(self, value: int) -> None:
        self.parts.append(_big(value))

    def event(self, event: Event) -> None:
        cls = type(event)
        fast = _FAST_ENCODERS.get(cls)
        if fast is not None:
            try:
                self.parts.append(fast(self.ref, event))
                return
            except struct.error:
                pass  # an integer beyond its slot: the generic path below handles it
        tag, spec = _EVENT_SPECS[cls]
        values: list[Any] = [tag]
        ref = self.ref
        for kind, name in zip(spec, cls.__slots__, strict=True):
            value = getattr(event, name)
            if kind == "s":
                values.append(ref(value))
            elif kind == "S":
                values.append(0 if value is None else ref(value) + 1)
            elif kind == "I":
                values += (0, 0) if value is None else (1, value)
            else:
                values.append(int(value))
        try:
            self.parts.append(_EVENT_STRUCTS[cls].pack(*values))
        except struct.error:
            self._generic_event(tag, spec, event)

    def _generic_event(self, tag: int, spec: tuple[Any, ...], event: Event) -> None:
        parts = self.parts
        parts.append(_U8.pack(tag | _GENERIC))
        for kind, name in zip(spec, type(event).__slots__, strict=True):
            value = getattr(event, name)
            if kind == "s":
                parts.append(_U32.pack(self.ref(value)))
            elif kind == "S":
                parts.append(_U32.pack(0 if value is None else self.ref(value) + 1))
            elif kind == "I":
                parts.append(b"\x00" if value is None else b"\x01" + _big(value))
            elif kind in ("q", "Q"):
                parts.append(_big(value))
            else:
                parts.append(_U8.pack(int(value)))

    def limits(self, limits: RiskLimits) -> None:
        for value in (limits.max_order_qty, limits.max_notional, limits.max_position):
            self.big(value)


def encode_snapshot(st: EngineState, *, compress: bool = True) -> bytes:
    """The snapshot of ``st`` (see the module docstring); ``compress=False`` gives the
    canonical form (the exactly-once block stored as is), which ``state_hash`` hashes."""
    writer = _Writer()
    parts = writer.parts
    ref = writer.ref
    for size in (
        st.dedup_max_keys,
        st.finished_window,
        st.trade_history,
        st.candle_history,
    ):
        writer.u32(size)
    parts.append(_U8.pack(len(st.candle_intervals_ns)))
    for interval in st.candle_intervals_ns:
        parts.append(_I64.pack(interval))
    parts.append(_I64.pack(st.dedup_horizon_ns))
    parts.append(
        _I64X6.pack(
            st.next_order_id,
            st.trade_log_index,
            st.trade_seq,
            st.now,
            st.log_index,
            st.applied_index,
        )
    )
    writer.big(st.results_evicted_by_cap)
    writer.big(st.results_expired)
    writer.limits(st.default_limits)
    writer.u32(len(st.client_limits))
    for client_id, limits in sorted(st.client_limits.items()):
        writer.u32(ref(client_id))
        writer.limits(limits)
    writer.big(st.default_max_open)
    writer.u32(len(st.client_max_open))
    for client_id, max_open in sorted(st.client_max_open.items()):
        writer.u32(ref(client_id))
        writer.big(max_open)

    writer.u32(len(st.symbols))
    for name, state in sorted(st.symbols.items()):
        spec = state.spec
        parts.append(
            _SYMBOL_HEAD.pack(
                ref(name),
                spec.tick_size,
                spec.lot_size,
                spec.price_band_bps,
                spec.reference_price,
                1 if spec.halted else 0,
                state.last_price,
                state.seq,
                state.trade_count,
            )
        )
        writer.big(state.volume)
        writer.big(state.notional)
        for history in state.candles:
            writer.u32(len(history))
            for candle in history:
                parts.append(b"".join(_big(value) for value in candle))
        writer.u32(len(state.trades))
        for fill in state.trades:
            writer.event(fill)
        for book_side in (state.bids, state.asks):
            _write_side(writer, book_side.iter_levels())

    positions = sorted(
        (client_id, symbol, position)
        for client_id, by_symbol in st.positions.items()
        for symbol, position in by_symbol.items()
    )
    writer.u32(len(positions))
    for client_id, symbol, position in positions:
        writer.u32(ref(client_id))
        writer.u32(ref(symbol))
        for value in (
            position.quantity,
            position.open_cost,
            position.realised_pnl,
            position.bought_quantity,
            position.sold_quantity,
            position.open_buy_quantity,
            position.open_sell_quantity,
        ):
            writer.big(value)

    block = _encode_results(writer, st)
    stored = zlib.compress(block, _RESULTS_LEVEL) if compress else block
    parts.append(_RESULTS_HEAD.pack(1 if compress else 0, len(block), len(stored)))
    parts.append(stored)

    writer.u32(len(st.finished_fifo))
    for order_id in st.finished_fifo:
        view = finished_view(st.finished[order_id])
        parts.append(
            _FINISHED.pack(
                view.order_id,
                ref(view.client_id),
                ref(view.client_order_id),
                ref(view.symbol),
                int(view.side),
                int(view.order_type),
                int(view.time_in_force),
                view.price,
                view.quantity,
                view.filled_quantity,
                int(view.status),
                1 if view.post_only else 0,
                int(view.stp),
            )
        )

    strings = writer.strings
    lengths = array("I", map(len, strings))
    blob = "".join(strings).encode()
    header = [MAGIC, _U8.pack(SNAPSHOT_VERSION), _U32.pack(len(strings))]
    return b"".join([*header, lengths.tobytes(), _U32.pack(len(blob)), blob, *parts])


def _write_side(writer: _Writer, levels: Any) -> None:
    # The bulk of a large snapshot. Orders applied over time lie scattered in memory, so
    # each resting order is visited exactly once and all its fields are taken then (a
    # pass per column would pay the cache misses again for every column).
    ref = writer.ref
    client_refs: dict[str, int] = {}
    prices = array("q")
    counts = array("I")
    order_ids = array("Q")
    quantities = array("q")
    leaves_column = array("q")
    flags = bytearray()
    clients = array("I")
    client_order_ids: list[str] = []
    add_id = order_ids.append
    add_quantity = quantities.append
    add_leaves = leaves_column.append
    add_flags = flags.append
    add_client = clients.append
    add_client_order_id = client_order_ids.append
    for level in levels:
        prices.append(level.price)
        counts.append(level.count)
        for order in level.orders:
            leaves = order.leaves
            if not leaves:
                continue
            add_id(order.order_id)
            add_quantity(order.quantity)
            add_leaves(leaves)
            add_flags(order.post_only | order.stp << 1)
            client_id = order.client_id
            client = client_refs.get(client_id)
            if client is None:
                client = client_refs[client_id] = ref(client_id)
            add_client(client)
            add_client_order_id(order.client_order_id)
    client_order_id_blob = "".join(client_order_ids).encode()
    parts = writer.parts
    parts.append(_U32.pack(len(prices)))
    for column in (prices, counts, order_ids, quantities, leaves_column):
        parts.append(column.tobytes())
    parts.append(bytes(flags))
    parts.append(clients.tobytes())
    parts.append(array("B", map(len, client_order_ids)).tobytes())
    parts.append(_U32.pack(len(client_order_id_blob)))
    parts.append(client_order_id_blob)


# --------------------------------------------------------------------------- results (version 5)

# Fields holding a client order id: distinct per key, so kept out of the string table.
_ID_FIELDS = frozenset({"client_order_id", "old_client_order_id", "new_client_order_id"})
# Event types written column by column (no optional fields); others go to the misc stream.
_COLUMN_TYPES: tuple[type, ...] = (
    Accepted,
    Fill,
    Cancelled,
    Expired,
    Replaced,
    BookUpdate,
    TradingStatus,
)
_COLUMN_CODES = {"q": "q", "Q": "Q"}  # strings are u32 refs, enums and flags u8
_BOOLS = (False, True)


def _column_layout(cls: Any) -> tuple[tuple[str, Any], ...]:
    """(field name, kind) per field, in the event's field order."""
    return tuple(zip(cls.__slots__, _EVENT_SPECS[cls][1], strict=True))


_COLUMN_LAYOUTS = {cls: _column_layout(cls) for cls in _COLUMN_TYPES}


def _text_column(values: list[str]) -> list[bytes]:
    """u8 lengths in characters, u32 size, UTF-8 (as the book's client order ids)."""
    blob = "".join(values).encode()
    return [bytes(map(len, values)), _U32.pack(len(blob)), blob]


def _encode_results(writer: _Writer, st: EngineState) -> bytes:
    """The exactly-once table in columns (version 5), uncompressed (module docstring)."""
    results = st.results
    # The table's own order is its FIFO order (a key is only added when absent, and only
    # the oldest is removed; check_invariants checks it): no lookup per key.
    keys = list(results)
    retained = list(results.values())
    count = len(keys)
    ref = writer.ref
    index = writer.string_index
    out: list[bytes] = [_U32.pack(count)]
    client_ids = [key[0] for key in keys]
    for client_id in dict.fromkeys(client_ids):
        ref(client_id)
    out.append(array("I", map(index.__getitem__, client_ids)).tobytes())
    out += _text_column([key[1] for key in keys])
    out.append(array("q", [r.log_index for r in retained]).tobytes())
    order_ids = [r.order_id for r in retained]
    out.append(bytes([order_id is not None for order_id in order_ids]))
    out.append(array("q", [0 if o is None else o for o in order_ids]).tobytes())
    out.append(bytes([r.status for r in retained]))
    out.append(array("I", [len(r.events) for r in retained]).tobytes())
    out.append(array("q", st.result_times).tobytes())

    events = [event for r in retained for event in r.events]
    types = list(map(type, events))
    columns: list[bytes] = []
    columnar: set[type] = set()
    # One pass puts each event in its type's group (in order); a filtering pass per type
    # cost about three times as much on a full table.
    groups: dict[type, list[Event]] = {cls: [] for cls in _EVENT_SPECS}
    add = {cls: group.append for cls, group in groups.items()}
    for event, cls in zip(events, types, strict=True):
        add[cls](event)
    for cls in _COLUMN_TYPES:
        group = groups[cls]
        try:
            columns += _encode_columns(writer, cls, group)
            columnar.add(cls)
        except OverflowError:  # an integer beyond its column: the whole type goes to misc
            columns.append(_U32.pack(0))
    tag_of = {
        cls: tag if cls in columnar else tag | _GENERIC for cls, (tag, _) in _EVENT_SPECS.items()
    }
    tags = bytes(map(tag_of.__getitem__, types))
    misc = [event for event in events if type(event) not in columnar]
    out += [_U32.pack(len(events)), bytes(tags), *columns]
    saved = writer.parts
    writer.parts = []
    for event in misc:
        writer.event(event)
    misc_bytes = b"".join(writer.parts)
    writer.parts = saved
    out += [_U32.pack(len(misc_bytes)), misc_bytes]
    return b"".join(out)


def _encode_columns(writer: _Writer, cls: type, group: list[Event]) -> list[bytes]:
    out = [_U32.pack(len(group))]
    if not group:
        return out
    ref = writer.ref
    index = writer.string_index
    for name, kind in _COLUMN_LAYOUTS[cls]:
        values = list(map(attrgetter(name), group))
        if kind == "s":
            if name in _ID_FIELDS:
                out += _text_column(values)
                continue
            for value in dict.fromkeys(values):
                ref(value)
            out.append(array("I", map(index.__getitem__, values)).tobytes())
        elif kind in _COLUMN_CODES:
            out.append(array(_COLUMN_CODES[kind], values).tobytes())
        else:  # an enum or a flag
            out.append(bytes(values))
    return out


def _decode_results(reader: _Reader, st: EngineState, block: bytes) -> None:
    """Rebuild the exactly-once table from a version 5 block (its times included)."""
    sub = _Reader(block)
    sub.strings = strings = reader.strings
    count = sub.u32()
    client_ids = list(map(strings.__getitem__, sub.column("I", count)))
    client_order_ids = _read_text_column(sub, count)
    log_indexes = sub.column("q", count)
    has_order_id = sub.raw(count)
    order_ids = sub.column("q", count)
    statuses = list(map(_ENUM_MEMBERS[Status].__getitem__, sub.raw(count)))
    event_counts = sub.column("I", count)
    times = sub.column("q", count)
    if count and max(has_order_id) > 1:
        raise SnapshotError("bad retained result flag")

    total = sub.u32()
    tags = sub.raw(total)
    nexts: dict[int, Callable[[], Event]] = {}
    decoded: list[list[Event]] = []
    for cls in _COLUMN_TYPES:
        events = _decode_columns(sub, cls)
        decoded.append(events)
        nexts[_EVENT_SPECS[cls][0]] = iter(events).__next__
    misc_size = sub.u32()
    misc_at = sub.take(misc_size)
    misc = _Reader(block[misc_at : misc_at + misc_size])
    misc.strings = strings
    for tag in _EVENT_BY_TAG:
        nexts[tag | _GENERIC] = misc.event
    try:
        events = list(map(_call, map(nexts.__getitem__, tags)))
    except StopIteration:
        raise SnapshotError("more event tags than events") from None
    if len(events) != total or sub.pos != len(block):
        raise SnapshotError("results block does not end with its events")
    for cls, group in zip(_COLUMN_TYPES, decoded, strict=True):
        if tags.count(_EVENT_SPECS[cls][0]) != len(group):
            raise SnapshotError(f"{cls.__name__} events do not match their tags")
    if misc.pos != misc_size:
        raise SnapshotError("misc events do not match their tags")
    if sum(event_counts) != total:
        raise SnapshotError("result event counts do not cover the events")
    ends = list(accumulate(event_counts))
    starts = [0, *ends[:-1]] if ends else []
    lists = [events[start:end] for start, end in zip(starts, ends, strict=True)]
    optional_ids = [o if h else None for o, h in zip(order_ids, has_order_id, strict=True)]
    keys = list(zip(client_ids, client_order_ids, strict=True))
    results = st.results
    results.update(
        zip(keys, map(CommandResult, log_indexes, optional_ids, statuses, lists), strict=True)
    )
    if len(results) != count:
        raise SnapshotError("a retained key appears twice")
    st.result_fifo.extend(keys)
    st.result_times.extend(times)


def _call(function: Callable[[], Event]) -> Event:
    return function()


def _read_text_column(reader: _Reader, count: int) -> list[str]:
    lengths = reader.raw(count)
    size = reader.u32()
    pos = reader.take(size)
    text = reader.data[pos : pos + size].decode()
    if sum(lengths) != len(text):
        raise SnapshotError("text column lengths do not match its text")
    ends = list(accumulate(lengths))
    return [text[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=False)]


def _decode_columns(reader: _Reader, cls: type) -> list[Event]:
    count = reader.u32()
    if not count:
        return []
    strings = reader.strings
    columns: list[Any] = []
    for name, kind in _COLUMN_LAYOUTS[cls]:
        if kind == "s":
            if name in _ID_FIELDS:
                columns.append(_read_text_column(reader, count))
            else:
                columns.append(map(strings.__getitem__, reader.column("I", count)))
        elif kind in _COLUMN_CODES:
            columns.append(reader.column(_COLUMN_CODES[kind], count))
        elif kind == "b":
            columns.append(map(_BOOLS.__getitem__, reader.raw(count)))
        else:
            columns.append(map(_ENUM_MEMBERS[kind].__getitem__, reader.raw(count)))
    return list(map(cls, *columns))


# --------------------------------------------------------------------------- reading


class _Reader:
    __slots__ = ("data", "pos", "strings")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.strings: list[str] = []

    def take(self, size: int) -> int:
        pos = self.pos
        end = pos + size
        if size < 0 or end > len(self.data):
            raise SnapshotError(f"truncated at byte {pos}")
        self.pos = end
        return pos

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        return st.unpack_from(self.data, self.take(st.size))

    def u8(self) -> int:
        return self.data[self.take(1)]

    def raw(self, size: int) -> bytes:
        pos = self.take(size)
        return self.data[pos : pos + size]

    def u32(self) -> int:
        value: int = _U32.unpack_from(self.data, self.take(4))[0]
        return value

    def big(self) -> int:
        length = self.u8()
        pos = self.take(length)
        return int.from_bytes(self.data[pos : pos + length], "little", signed=True)

    def string(self, index: int) -> str:
        return self.strings[index]

    def optional_string(self, index: int) -> str | None:
        return None if index == 0 else self.strings[index - 1]

    def column(self, code: str, count: int) -> array[int]:
        column = array(code)
        pos = self.take(column.itemsize * count)
        column.frombytes(self.data[pos : pos + column.itemsize * count])
        return column

    def limits(self) -> RiskLimits:
        return RiskLimits(self.big(), self.big(), self.big())

    def event(self) -> Event:
        tag = self.u8()
        entry = _EVENT_BY_TAG.get(tag & ~_GENERIC)
        if entry is None:
            raise SnapshotError(f"unknown event tag {tag}")
        cls, spec, st = entry
        args: list[Any] = []
        if tag & _GENERIC:
            for kind in spec:
                if kind == "s":
                    args.append(self.strings[self.u32()])
                elif kind == "S":
                    args.append(self.optional_string(self.u32()))
                elif kind == "I":
                    args.append(self.big() if self.u8() else None)
                elif kind in ("q", "Q"):
                    args.append(self.big())
                else:
                    args.append(self._small(kind, self.u8()))
        else:
            # The struct starts with the tag byte, already read.
            values = st.unpack_from(self.data, self.take(st.size - 1) - 1)[1:]
            index = 0
            for kind in spec:
                value = values[index]
                index += 1
                if kind == "s":
                    args.append(self.strings[value])
                elif kind == "S":
                    args.append(self.optional_string(value))
                elif kind == "I":
                    args.append(values[index] if value else None)
                    index += 1
                elif kind in ("q", "Q"):
                    args.append(value)
                else:
                    args.append(self._small(kind, value))
        event: Event = cls(*args)
        return event

    @staticmethod
    def _small(kind: Any, value: int) -> Any:
        if kind == "b":
            if value > 1:
                raise SnapshotError(f"bad flag {value}")
            return value == 1
        return _member(kind, value)


def decode_snapshot(data: bytes) -> Engine:
    try:
        return _decode(bytes(data))
    except SnapshotError:
        raise
    except (
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        OverflowError,
        struct.error,
        zlib.error,
    ) as exc:
        raise SnapshotError(f"corrupt snapshot: {exc}") from None


def _decode(data: bytes) -> Engine:
    if data[:4] != MAGIC:
        raise SnapshotError("not an engine snapshot (bad magic)")
    reader = _Reader(data)
    reader.take(4)
    version = reader.u8()
    if version not in (2, 3, 4, SNAPSHOT_VERSION):
        raise SnapshotError(f"unknown snapshot version {version}")
    string_count = reader.u32()
    lengths = reader.column("I", string_count)
    blob_size = reader.u32()
    pos = reader.take(blob_size)
    text = data[pos : pos + blob_size].decode()
    if sum(lengths) != len(text):
        raise SnapshotError("string table lengths do not match its text")
    strings = reader.strings
    offset = 0
    for length in lengths:
        strings.append(text[offset : offset + length])
        offset += length

    dedup_max_keys, finished_window, trade_history, candle_history = (
        reader.u32(),
        reader.u32(),
        reader.u32(),
        reader.u32(),
    )
    intervals = tuple(reader.unpack(_I64)[0] for _ in range(reader.u8()))
    if version >= 4:
        horizon_ns = reader.unpack(_I64)[0]
    else:  # a count window before the horizon existed (module docstring)
        horizon_ns = ENGINE_DEDUP_HORIZON_NS
        dedup_max_keys = max(dedup_max_keys, ENGINE_DEDUP_MAX_KEYS)
    engine = Engine(
        dedup_horizon_ns=horizon_ns,
        dedup_max_keys=dedup_max_keys,
        finished_window=finished_window,
        trade_history=trade_history,
        candle_intervals_ns=intervals,
        candle_history=candle_history,
    )
    st = engine.state
    (
        st.next_order_id,
        st.trade_log_index,
        st.trade_seq,
        st.now,
        st.log_index,
        st.applied_index,
    ) = reader.unpack(_I64X6)
    if version >= 4:
        st.results_evicted_by_cap = reader.big()
        st.results_expired = reader.big()
    st.default_limits = reader.limits()
    for _ in range(reader.u32()):
        client_id = strings[reader.u32()]
        st.client_limits[client_id] = reader.limits()
    if version >= 3:
        st.default_max_open = reader.big()
        for _ in range(reader.u32()):
            client_id = strings[reader.u32()]
            st.client_max_open[client_id] = reader.big()

    for _ in range(reader.u32()):
        (
            name_ref,
            tick_size,
            lot_size,
            band,
            reference,
            halted,
            last_price,
            seq,
            trade_count,
        ) = reader.unpack(_SYMBOL_HEAD)
        name = strings[name_ref]
        if halted > 1 or name in st.symbols:
            raise SnapshotError(f"bad symbol record {name!r}")
        state = SymbolState(
            SymbolSpec(name, tick_size, lot_size, band, reference, halted == 1),
            trade_history,
            len(intervals),
            candle_history,
        )
        st.add_symbol_state(state)
        state.last_price = last_price
        state.seq = seq
        state.trade_count = trade_count
        state.volume = reader.big()
        state.notional = reader.big()
        for history in state.candles:
            for _ in range(reader.u32()):
                history.append([reader.big() for _ in range(7)])
        for _ in range(reader.u32()):
            fill = reader.event()
            if not isinstance(fill, Fill):
                raise SnapshotError("trade history holds a non-fill event")
            state.trades.append(fill)
        for book_side in (state.bids, state.asks):
            _read_side(reader, st, name, book_side)

    # Orders created their owners' (empty) positions above; fill those objects in place.
    created = sum(len(by_symbol) for by_symbol in st.positions.values())
    count = reader.u32()
    for _ in range(count):
        position = st.position(strings[reader.u32()], strings[reader.u32()])
        (
            position.quantity,
            position.open_cost,
            position.realised_pnl,
            position.bought_quantity,
            position.sold_quantity,
            position.open_buy_quantity,
            position.open_sell_quantity,
        ) = (reader.big() for _ in range(7))
    if sum(len(by_symbol) for by_symbol in st.positions.values()) != count or created > count:
        raise SnapshotError("positions section does not cover the live orders' owners")

    if version >= 5:
        _read_results(reader, st, dedup_max_keys, horizon_ns)
    else:
        _read_results_v4(reader, st, version, dedup_max_keys, horizon_ns)

    for _ in range(reader.u32()):
        (
            order_id,
            client_ref,
            coid_ref,
            symbol_ref,
            side,
            order_type,
            time_in_force,
            price,
            quantity,
            filled,
            status,
            post_only,
            stp,
        ) = reader.unpack(_FINISHED)
        client_id = strings[client_ref]
        symbol = strings[symbol_ref]
        if post_only > 1 or order_id in st.finished:
            raise SnapshotError(f"bad finished order {order_id}")
        record = RestingOrder(
            order_id,
            client_id,
            strings[coid_ref],
            symbol,
            _member(Side, side),
            price,
            quantity,
            0,
            post_only == 1,
            _member(SelfTradeMode, stp),
            st.positions.get(client_id, {}).get(symbol) or Position(),
        )
        st.finished[order_id] = (
            record,
            _member(OrderType, order_type),
            _member(TimeInForce, time_in_force),
            _member(Status, status),
            filled,
        )
        st.finished_fifo.append(order_id)
    if reader.pos != len(data):
        raise SnapshotError(f"{len(data) - reader.pos} trailing bytes")
    return engine


def _read_results(reader: _Reader, st: EngineState, max_keys: int, horizon_ns: int) -> None:
    """Version 5: the exactly-once block, zlib or stored, then its checks."""
    compression, size, stored_size = reader.unpack(_RESULTS_HEAD)
    if compression > 1 or size > _MAX_RESULTS_BLOCK:
        raise SnapshotError(f"bad exactly-once block header ({compression}, {size})")
    pos = reader.take(stored_size)
    stored = reader.data[pos : pos + stored_size]
    if compression:
        inflater = zlib.decompressobj()
        block = inflater.decompress(stored, size + 1)
        if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
            raise SnapshotError("exactly-once block: bad compressed stream")
    else:
        block = stored
    if len(block) != size:
        raise SnapshotError("exactly-once block: wrong size")
    _decode_results(reader, st, block)
    times = st.result_times
    if not all(map(le, times, islice(times, 1, None))):
        raise SnapshotError("exactly-once times go backwards")
    if len(times) > max_keys or (times and times[0] <= st.now - horizon_ns):
        raise SnapshotError("exactly-once table beyond its cap or horizon")


def _read_results_v4(
    reader: _Reader, st: EngineState, version: int, dedup_max_keys: int, horizon_ns: int
) -> None:
    """Versions 2 to 4: one record per key, then (version 4) the time runs."""
    strings = reader.strings
    for _ in range(reader.u32()):
        client_ref, coid_ref, log_index, has_order_id, order_id, status, events = reader.unpack(
            _RESULT_HEAD
        )
        key = (strings[client_ref], strings[coid_ref])
        if key in st.results or has_order_id > 1:
            raise SnapshotError(f"bad retained result {key!r}")
        result = CommandResult(
            log_index,
            order_id if has_order_id else None,
            _member(Status, status),
            [reader.event() for _ in range(events)],
        )
        st.results[key] = result
        st.result_fifo.append(key)
    times = st.result_times
    if version >= 4:
        previous = None
        for _ in range(reader.u32()):
            time_ns, keys = reader.unpack(_TIME_RUN)
            if (
                keys == 0
                or (previous is not None and time_ns <= previous)
                or len(times) + keys > len(st.result_fifo)
            ):
                raise SnapshotError(f"bad exactly-once time run at {time_ns}")
            previous = time_ns
            times.extend([time_ns] * keys)
        if len(times) != len(st.result_fifo):
            raise SnapshotError("exactly-once times do not cover its keys")
        if len(times) > dedup_max_keys or (times and times[0] <= st.now - horizon_ns):
            raise SnapshotError("exactly-once table beyond its cap or horizon")
    else:
        times.extend([st.now] * len(st.result_fifo))


def _read_side(reader: _Reader, st: EngineState, symbol: str, book_side: BookSide) -> None:
    level_count = reader.u32()
    prices = reader.column("q", level_count)
    counts = reader.column("I", level_count)
    total = sum(counts)
    order_ids = reader.column("Q", total)
    quantities = reader.column("q", total)
    leaves_column = reader.column("q", total)
    flags = reader.raw(total)
    clients = reader.column("I", total)
    client_order_ids = _read_text_column(reader, total)
    if not total:
        if level_count:
            raise SnapshotError("an empty book level")
        return
    if min(counts) == 0 or not all(map(lt, *_keys_of(book_side.sign, prices))):
        raise SnapshotError("book levels out of order or empty")
    if min(leaves_column) <= 0 or not all(map(le, leaves_column, quantities)):
        raise SnapshotError("a resting order with bad leaves")
    strings = reader.strings
    live_by_client = st.live_by_client
    position_of: dict[int, Position] = {}
    live_of: dict[int, dict[str, RestingOrder]] = {}
    for client in dict.fromkeys(clients):  # first use order, as the write path creates them
        client_id = strings[client]
        position_of[client] = st.position(client_id, symbol)
        live_of[client] = live_by_client.setdefault(client_id, {})
    side = book_side.side
    new_orders = list(
        map(
            RestingOrder,
            order_ids,
            map(strings.__getitem__, clients),
            client_order_ids,
            repeat(symbol),
            repeat(side),
            chain.from_iterable(map(repeat, prices, counts)),
            quantities,
            leaves_column,
            map(_BOOLS.__getitem__, map(and_, flags, repeat(1))),
            map(_STPS.__getitem__, map(rshift, flags, repeat(1))),
            map(position_of.__getitem__, clients),
        )
    )
    orders = st.orders
    before = len(orders)
    orders.update(zip(order_ids, new_orders, strict=True))
    live_before = sum(map(len, live_of.values()))
    for client, client_order_id, order in zip(clients, client_order_ids, new_orders, strict=True):
        live_of[client][client_order_id] = order
    if len(orders) != before + total or sum(map(len, live_of.values())) != live_before + total:
        raise SnapshotError("a resting order id or client order id appears twice")
    sign = book_side.sign
    levels = book_side.levels
    start = 0
    for price, count in zip(prices, counts, strict=True):
        level = Level(price)
        end = start + count
        level.orders.extend(new_orders[start:end])
        level.total = sum(leaves_column[start:end])
        level.count = count
        levels[sign * price] = level
        start = end
    book_side.keys.update(levels)
    book_side.best_key = book_side.keys[0]


def _keys_of(sign: int, prices: array[int]) -> tuple[list[int], list[int]]:
    """(keys, the keys shifted by one): levels must be strictly rising in key."""
    keys = [sign * price for price in prices]
    return keys, keys[1:]


__all__: list[str] = ["SnapshotError", "decode_snapshot", "encode_snapshot"]

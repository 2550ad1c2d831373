"""The exchange state machine: apply committed commands, answer queries, snapshot.

Determinism. The engine reads no clock, no random source and no environment.
Time is the leader's stamp on the log entry, made monotonic here (the engine's
clock is ``max(previous, stamp)`` so a new leader with a slower clock cannot
move it backwards). Order ids are a counter; trade ids are
``(log_index << 24) | n`` for the n-th fill of that log entry. Every
iteration whose order can show in events or state is over a canonical order
(book priority, order id, FIFO), never over a hash or a dict filled in a
different order after a restore.

Rules, in the order the checks are made for a new order:

1. Exactly-once. A command carrying a ``(client_id, client_order_id)`` key
   (a ``NewOrder``, or a ``CancelReplace`` by its ``new_client_order_id``)
   whose key is in the retention table returns the *original* result object
   and changes nothing. Retention, whatever the outcome: a time horizon in
   engine time (``dedup_horizon_ns``, default 24 h) and a cap on keys
   (``dedup_max_keys``, default 262,144, all clients together). A key
   retained by an entry stamped ``t`` is forgotten before the first entry
   whose stamp moves the engine clock to ``t + horizon`` or later is applied;
   a retry in an entry stamped below that returns the original result. When
   a command would take the table past the cap, the oldest key goes first
   (apply order) and ``results_evicted_by_cap`` counts it: the horizon is then
   shorter than configured. Both are part of the replicated state (snapshots
   carry the keys' times and the counters), so every replica forgets the
   same key at the same entry. After a key is forgotten, a command reusing
   it is rejected ``DUPLICATE_CLIENT_ORDER_ID`` while the order it named is
   still live, and is a new command once that order is gone.
2. Format (``validate_format``): ids, symbol, quantity > 0 and on the lot
   grid, limit price > 0 and on the tick grid, market price 0, post-only
   only for GTC limits.
3. ``DUPLICATE_CLIENT_ORDER_ID``, then ``SYMBOL_HALTED``.
4. Price band: with ``price_band_bps`` > 0 and a reference (the last trade,
   else the symbol's reference price, else no band) a limit price must lie in
   ``[ceil(ref * (1 - bps/10^4)), floor(ref * (1 + bps/10^4))]``; a market
   order sweeps only up to that bound (its collar) and its remainder expires.
5. Risk, per client and symbol (``SetRiskLimits``; 0 = unlimited): quantity
   <= ``max_order_qty``; ``price * quantity`` <= ``max_notional`` (a market
   order is valued at its collar, or the reference price without a band);
   worst-case absolute position (position + same-side open quantity + this
   order) <= ``max_position``. Then, per client over all symbols
   (``SetOrderLimits``; 0 = unlimited): a GTC limit order (one that may rest)
   from a client with ``max_open_orders`` resting orders already is rejected
   ``RISK_MAX_OPEN_ORDERS``, whether or not it would have traded.
6. Post-only: rejected ``POST_ONLY_WOULD_TAKE`` if it would cross.
7. Accepted. FOK: if the quantity it could fill now (walking the book in
   priority order under the self-trade rule) is short, it expires whole and
   nothing else happens. Then price-time matching (fills at the resting
   order's price), self-trade prevention by the *incoming* order's mode
   (``SelfTradeMode``), and the remainder rests (GTC limit) or expires (IOC,
   FOK, market).

Self-trade prevention (``SelfTradeMode``, chosen by the incoming order, default
``CANCEL_INCOMING``): before each fill against a resting order of the same
client, ``CANCEL_RESTING`` cancels that resting order and goes on matching;
``CANCEL_INCOMING`` cancels the incoming remainder (fills already made stand);
``CANCEL_BOTH`` does both.

Other commands:

- ``Cancel`` (by order id or client order id; only the owner's live orders,
  else ``UNKNOWN_ORDER``; allowed while halted). ``MassCancel`` cancels the
  client's live orders (one symbol or all) in order-id order.
- ``CancelReplace``: exactly-once by ``new_client_order_id``; then format,
  ``UNKNOWN_ORDER``, ``DUPLICATE_CLIENT_ORDER_ID``, ``SYMBOL_HALTED``, tick and
  lot; a new total quantity not above the filled quantity cancels the order;
  then band (if the price changes), risk (as if the old order were gone) and
  post-only. Same price and quantity not increased keeps time priority;
  otherwise the order leaves the book and re-enters as an aggressor (it may
  trade) at the back of its new level. The order id stays; its client order id
  becomes the new one.
- Admin: ``AddSymbol``, ``HaltSymbol`` / ``ResumeSymbol`` (new orders and
  replaces rejected while halted), ``SetRiskLimits``, ``SetOrderLimits``,
  ``SetRetention`` (the exactly-once horizon and cap and the finished-order
  window, in force at once: lowering one forgets the oldest entries now).

Events: ``BookUpdate`` events come last in a result, one per level whose total
changed, in the order the levels first changed, each with the symbol's next
sequence number. Positions and realised P&L use integer average cost
(``Position``). Queries answer live orders and the last ``finished_window``
finished ones (a count, not a time: it serves queries, not exactly-once, and
its cap is its memory bound, so a time limit could only make it shorter); ``recent_trades`` keeps ``trade_history`` fills per symbol and
``analytics`` keeps ``candle_history`` candles per interval, bucketed by the
engine clock (a late stamp is folded into the newest candle).

A rejected command changes nothing but the retention table. Nothing a command
carries makes ``apply`` raise: malformed input is a ``Rejected`` event.
"""

from __future__ import annotations

import gc
import hashlib
from collections import deque
from collections.abc import Iterable
from operator import attrgetter
from typing import Any

from exchange_node.engine.book import BookSide, Level, RestingOrder
from exchange_node.engine.commands import (
    AddSymbol,
    Cancel,
    CancelReplace,
    Command,
    CommandDecodeError,
    HaltSymbol,
    MassCancel,
    NewOrder,
    OrderType,
    Rejection,
    RejectReason,
    ResumeSymbol,
    SelfTradeMode,
    SetOrderLimits,
    SetRetention,
    SetRiskLimits,
    Side,
    SymbolSpec,
    TimeInForce,
    check_price_quantity,
    decode_batch,
    validate_format,
)
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
from exchange_node.engine.queries import EngineQueries
from exchange_node.engine.state import EngineState, SymbolState
from exchange_node.engine.views import Position, RiskLimits
from exchange_node.limits import (
    ENGINE_CANDLE_HISTORY,
    ENGINE_CANDLE_INTERVALS_NS,
    ENGINE_DEDUP_HORIZON_NS,
    ENGINE_DEDUP_MAX_KEYS,
    ENGINE_FINISHED_WINDOW,
    ENGINE_TRADE_HISTORY,
)

TRADE_SEQ_BITS = 24
"""Trade id = (log_index << 24) | n: room for 16.7 million fills per log entry."""
MARKET_BUY_LIMIT = (1 << 63) - 1

_BUY = Side.BUY
_SELL = Side.SELL
_GTC = TimeInForce.GTC
_FOK = TimeInForce.FOK
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_CANCEL_RESTING = SelfTradeMode.CANCEL_RESTING
_CANCEL_INCOMING = SelfTradeMode.CANCEL_INCOMING
_TIFS = (TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK)
_STPS = (SelfTradeMode.CANCEL_RESTING, SelfTradeMode.CANCEL_INCOMING, SelfTradeMode.CANCEL_BOTH)
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1
# Enum members bound once: attribute access on an Enum class is slow in Python 3.11.
_S_ACCEPTED = Status.ACCEPTED
_S_REJECTED = Status.REJECTED
_S_NEW = Status.NEW
_S_PARTIALLY_FILLED = Status.PARTIALLY_FILLED
_S_FILLED = Status.FILLED
_S_CANCELLED = Status.CANCELLED
_S_EXPIRED = Status.EXPIRED
_C_REQUESTED = CancelReason.REQUESTED
_C_MASS_CANCEL = CancelReason.MASS_CANCEL
_C_SELF_TRADE = CancelReason.SELF_TRADE
_C_REPLACED_TO_FILLED = CancelReason.REPLACED_TO_FILLED

Touched = list[tuple[SymbolState, BookSide, int]]

_ORDER_ID = attrgetter("order_id")
_EMPTY = BookSide.EMPTY


_new_object = object.__new__
"""Hot paths build their records as ``_new_object(Cls)`` plus one store per slot (every
slot, in field order) instead of ``Cls(...)``: calling a class whose ``__init__`` is
Python code re-enters the interpreter from C, which on CPython 3.11 costs about 1,000
machine instructions per object, the biggest single cost of applying a command. The
records are the same dataclass instances either way (tests compare them field by field
with the reference model's)."""


def _reject(
    reason: RejectReason,
    message: str,
    log_index: int,
    client_id: Any = None,
    client_order_id: Any = None,
    order_id: int | None = None,
) -> CommandResult:
    rejected = _new_object(Rejected)
    rejected.reason = reason
    rejected.message = message
    rejected.client_id = client_id if isinstance(client_id, str) else None
    rejected.client_order_id = client_order_id if isinstance(client_order_id, str) else None
    rejected.order_id = order_id if type(order_id) is int else None
    result = _new_object(CommandResult)
    result.log_index = log_index
    result.order_id = None
    result.status = _S_REJECTED
    result.events = [rejected]
    return result


def _good_key_part(value: object) -> bool:
    """A well-formed id: a non-empty ``str`` of at most 255 UTF-8 bytes."""
    if type(value) is not str or not value:
        return False
    if len(value) <= 255 and value.isascii():
        return True
    try:
        return len(value.encode()) <= 255
    except UnicodeEncodeError:  # lone surrogates
        return False


class Engine(EngineQueries):
    """The deterministic exchange state machine. See the module docstring for the rules.

    Applying commands is here; queries are in ``EngineQueries`` (``queries.py``).
    """

    def __init__(
        self,
        symbols: Iterable[AddSymbol | SymbolSpec] = (),
        default_risk: RiskLimits | None = None,
        *,
        dedup_horizon_ns: int = ENGINE_DEDUP_HORIZON_NS,
        dedup_max_keys: int = ENGINE_DEDUP_MAX_KEYS,
        finished_window: int = ENGINE_FINISHED_WINDOW,
        trade_history: int = ENGINE_TRADE_HISTORY,
        candle_intervals_ns: tuple[int, ...] = ENGINE_CANDLE_INTERVALS_NS,
        candle_history: int = ENGINE_CANDLE_HISTORY,
    ) -> None:
        if dedup_max_keys < 1 or finished_window < 1 or trade_history < 1 or candle_history < 1:
            raise ValueError("retention sizes must be >= 1")
        if not 0 < dedup_horizon_ns <= _INT64_MAX:
            raise ValueError("the exactly-once horizon must be a positive i64 of nanoseconds")
        if any(interval <= 0 for interval in candle_intervals_ns):
            raise ValueError("candle intervals must be positive")
        self.state = EngineState(
            dedup_horizon_ns=dedup_horizon_ns,
            dedup_max_keys=dedup_max_keys,
            finished_window=finished_window,
            trade_history=trade_history,
            candle_intervals_ns=tuple(candle_intervals_ns),
            candle_history=candle_history,
            default_limits=default_risk or RiskLimits(),
        )
        """All the engine holds (``state.py``); only the methods below change it."""
        st = self.state
        self._handlers: dict[type, Any] = {
            NewOrder: self._new_order,
            Cancel: self._cancel,
            CancelReplace: self._cancel_replace,
            MassCancel: self._mass_cancel,
            AddSymbol: self._add_symbol,
            HaltSymbol: self._halt_symbol,
            ResumeSymbol: self._resume_symbol,
            SetRiskLimits: self._set_risk_limits,
            SetOrderLimits: self._set_order_limits,
            SetRetention: self._set_retention,
        }
        for item in symbols:
            spec = item if isinstance(item, SymbolSpec) else None
            command = (
                AddSymbol(
                    item.symbol,
                    item.tick_size,
                    item.lot_size,
                    item.price_band_bps,
                    item.reference_price,
                )
                if spec is not None
                else item
            )
            assert isinstance(command, AddSymbol)
            rejection = validate_format(command, st.specs)
            if rejection is not None:
                raise ValueError(f"bad initial symbol {command.symbol!r}: {rejection.message}")
            st.list_symbol(command, halted=spec.halted if spec is not None else False)

    @property
    def applied_index(self) -> int:
        """Highest log index applied; ``apply_entry`` skips entries at or below it."""
        return self.state.applied_index

    # ------------------------------------------------------------------ applying

    def apply_entry(self, log_index: int, data: bytes) -> list[CommandResult]:
        """Apply one committed log entry (a batch); one result per command.

        An entry at or below ``applied_index`` was applied already (for example
        it is older than the snapshot this engine was restored from) and is
        skipped: the result is an empty list. A batch that does not decode
        yields one ``MALFORMED_BATCH`` rejection and changes nothing else.
        """
        st = self.state
        if log_index <= st.applied_index:
            return []
        try:
            timestamp_ns, commands = decode_batch(data)
        except CommandDecodeError as exc:
            st.applied_index = log_index
            return [_reject(RejectReason.MALFORMED_BATCH, str(exc), log_index)]
        # What apply() does per command, done once for the batch (same log index and time).
        st.log_index = log_index
        if type(timestamp_ns) is int and st.now < timestamp_ns <= _INT64_MAX:
            st.now = timestamp_ns
            times = st.result_times
            if times and times[0] <= timestamp_ns - st.dedup_horizon_ns:
                st.expire_results()
        st.applied_index = log_index
        handlers = self._handlers
        results = []
        for command in commands:
            handler = handlers.get(type(command))
            results.append(
                handler(command)
                if handler is not None
                else _reject(
                    RejectReason.INVALID_FIELD,
                    f"not a command: {type(command).__name__}",
                    log_index,
                )
            )
        return results

    def apply(self, command: Command, log_index: int, timestamp_ns: int) -> CommandResult:
        """Apply one command stamped with the log position and the leader's time."""
        st = self.state
        handler = self._handlers.get(type(command))
        if handler is None:
            return _reject(
                RejectReason.INVALID_FIELD, f"not a command: {type(command).__name__}", log_index
            )
        st.log_index = log_index
        if type(timestamp_ns) is int and st.now < timestamp_ns <= _INT64_MAX:
            st.now = timestamp_ns
            times = st.result_times
            if times and times[0] <= timestamp_ns - st.dedup_horizon_ns:
                st.expire_results()
        if log_index > st.applied_index:
            st.applied_index = log_index
        result: CommandResult = handler(command)
        return result

    # ------------------------------------------------------------------ new orders

    def _new_order(self, command: NewOrder) -> CommandResult:
        st = self.state
        client_id = command.client_id
        client_order_id = command.client_order_id
        # The common case (short ASCII ids) without encoding them.
        if (
            type(client_id) is str
            and type(client_order_id) is str
            and 0 < len(client_id) <= 255
            and 0 < len(client_order_id) <= 255
            and client_id.isascii()
            and client_order_id.isascii()
        ):
            keyed = True
        else:
            keyed = _good_key_part(client_id) and _good_key_part(client_order_id)
        key = (client_id, client_order_id)
        results = st.results
        if keyed:
            original = results.get(key)
            if original is not None:
                return original
            # A fast sufficient test that validate_format would accept the order (both ids are
            # well formed when keyed); anything unusual takes the full check.
            symbol = command.symbol
            spec = st.specs.get(symbol) if type(symbol) is str else None
            quantity = command.quantity
            price = command.price
            order_type = command.order_type
            plain = (
                spec is not None
                and type(quantity) is int
                and type(price) is int
                and 0 < quantity <= _INT64_MAX
                and not quantity % spec.lot_size
                and type(command.side) is Side
                and type(command.time_in_force) is TimeInForce
                and type(command.stp) is SelfTradeMode
                and command.post_only is False
                and (
                    (
                        order_type is _LIMIT
                        and 0 < price <= _INT64_MAX
                        and not price % spec.tick_size
                    )
                    or (order_type is _MARKET and price == 0)
                )
            )
        else:
            plain = False
        if not plain:
            rejection = validate_format(command, st.specs)
            if rejection is not None:
                result = _reject(
                    rejection.reason,
                    rejection.message,
                    st.log_index,
                    client_id,
                    client_order_id,
                )
                if keyed:
                    st.retain(key, result)
                return result

        # Accepting. One function with the checks above (the hottest path: a call costs);
        # every result below is retained for exactly-once, rejections included.
        log_index = st.log_index
        live = st.live_by_client.get(client_id)
        if live is not None and client_order_id in live:
            return st.retain(
                key,
                _reject(
                    RejectReason.DUPLICATE_CLIENT_ORDER_ID,
                    f"client order id {client_order_id!r} names live order "
                    f"{live[client_order_id].order_id}",
                    log_index,
                    client_id,
                    client_order_id,
                ),
            )
        symbol = command.symbol
        state = st.symbols[symbol]
        spec = state.spec
        if spec.halted:
            return st.retain(
                key,
                _reject(
                    RejectReason.SYMBOL_HALTED,
                    f"{symbol} is halted",
                    log_index,
                    client_id,
                    client_order_id,
                ),
            )
        quantity = command.quantity
        price = command.price
        if plain:  # the fields are enum members already
            side = command.side
            order_type = command.order_type
            time_in_force = command.time_in_force
            stp = command.stp
        else:  # plain ints equal to members passed validation; events carry the members
            side = _BUY if command.side == _BUY else _SELL
            order_type = _MARKET if command.order_type == _MARKET else _LIMIT
            time_in_force = _TIFS[command.time_in_force]
            stp = _STPS[command.stp]
        buy = side is _BUY
        market = order_type is _MARKET

        # Price band, and a market order's collar.
        reference = state.last_price or spec.reference_price
        if spec.price_band_bps and reference:
            if reference != state.band_reference:
                state.set_band(reference)
            low = state.band_low
            high = state.band_high
            if market:
                limit = high if buy else low
                valuation = limit
            else:
                if price < low or price > high:
                    return st.retain(
                        key,
                        _reject(
                            RejectReason.PRICE_BAND,
                            f"price {price} outside band [{low}, {high}] around {reference}",
                            log_index,
                            client_id,
                            client_order_id,
                        ),
                    )
                limit = valuation = price
        elif market:
            limit = MARKET_BUY_LIMIT if buy else 0
            valuation = reference
        else:
            limit = valuation = price

        # Pre-trade risk.
        limits = st.client_limits.get(client_id, st.default_limits)
        positions = st.positions.get(client_id)
        position = positions.get(symbol) if positions is not None else None
        if limits.max_order_qty or limits.max_notional or limits.max_position:
            rejection = _risk_check(limits, buy, quantity, valuation, position)
            if rejection is not None:
                return st.retain(
                    key,
                    _reject(
                        rejection.reason, rejection.message, log_index, client_id, client_order_id
                    ),
                )
        if time_in_force is _GTC and not market:
            client_max = st.client_max_open
            max_open = (
                client_max.get(client_id, st.default_max_open)
                if client_max
                else st.default_max_open
            )
            if max_open:
                live = st.live_by_client.get(client_id)
                if live is not None and len(live) >= max_open:
                    return st.retain(
                        key,
                        _reject(
                            RejectReason.RISK_MAX_OPEN_ORDERS,
                            f"{len(live)} resting orders: the limit is {max_open}",
                            log_index,
                            client_id,
                            client_order_id,
                        ),
                    )

        opposite = state.asks if buy else state.bids
        limit_key = limit if buy else -limit
        crosses = opposite.best_key <= limit_key  # an empty side's best key is above all
        if command.post_only and crosses:
            return st.retain(
                key,
                _reject(
                    RejectReason.POST_ONLY_WOULD_TAKE,
                    f"post-only {side.name} at {price} would trade",
                    log_index,
                    client_id,
                    client_order_id,
                ),
            )

        # Accepted: nothing below rejects.
        if position is None:
            position = st.position(client_id, symbol)
        order_id = st.next_order_id
        st.next_order_id = order_id + 1
        # Objects on this path are built with object.__new__ and slot stores (see _new_object).
        order = _new_object(RestingOrder)
        order.order_id = order_id
        order.client_id = client_id
        order.client_order_id = client_order_id
        order.symbol = symbol
        order.side = side
        order.price = price
        order.quantity = quantity
        order.leaves = quantity
        order.post_only = bool(command.post_only)
        order.stp = stp
        order.position = position
        accepted = _new_object(Accepted)
        accepted.order_id = order_id
        accepted.client_id = client_id
        accepted.client_order_id = client_order_id
        accepted.symbol = symbol
        accepted.side = side
        accepted.order_type = order_type
        accepted.time_in_force = time_in_force
        accepted.price = price
        accepted.quantity = quantity
        accepted.timestamp_ns = st.now
        events: list[Event] = [accepted]
        if time_in_force is _FOK and not (
            crosses and _fillable(opposite, limit_key, quantity, client_id, stp)
        ):
            events.append(Expired(order_id, client_id, client_order_id, symbol, quantity))
            st.finish(order, order_type, time_in_force, _S_EXPIRED, 0)
            return st.retain(key, CommandResult(log_index, order_id, _S_EXPIRED, events))

        touched: Touched | None = None  # the levels that changed (none unless it crossed)
        stp_cancelled = False
        if crosses:
            touched = []
            stp_cancelled = self._match(state, order, opposite, limit_key, events, touched)
        leaves = order.leaves
        if stp_cancelled or not leaves or market or time_in_force is not _GTC:
            if stp_cancelled:
                status = _S_CANCELLED
            elif not leaves:
                status = _S_FILLED
            else:
                events.append(Expired(order_id, client_id, client_order_id, symbol, leaves))
                status = _S_EXPIRED
            # EngineState.finish, inlined.
            finished = st.finished
            finished[order_id] = (order, order_type, time_in_force, status, quantity - leaves)
            finished_fifo = st.finished_fifo
            finished_fifo.append(order_id)
            if len(finished_fifo) > st.finished_window:
                del finished[finished_fifo.popleft()]
        else:
            own = state.bids if buy else state.asks
            # BookSide.add, inlined.
            own_key = own.sign * price
            level = own.levels.get(own_key)
            if level is None:
                level = _new_object(Level)
                level.price = price
                level.orders = deque()
                level.total = 0
                level.count = 0
                own.levels[own_key] = level
                own.keys.add(own_key)
                if own_key < own.best_key:
                    own.best_key = own_key
            # Never crossed after matching: matching only takes from the opposite side, so
            # only a resting remainder can cross it (bid keys are minus prices).
            assert own_key + opposite.best_key > 0, f"{symbol} book crossed"
            level.orders.append(order)
            level.total += leaves
            level.count += 1
            if buy:
                position.open_buy_quantity += leaves
            else:
                position.open_sell_quantity += leaves
            st.orders[order_id] = order
            if live is None:
                live = st.live_by_client[client_id] = {}
            live[client_order_id] = order
            if not touched:
                # Rested without trading (the commonest outcome): one level changed.
                state.seq = state.seq + 1
                update = _new_object(BookUpdate)
                update.symbol = symbol
                update.side = side
                update.price = price
                update.quantity = level.total
                update.seq = state.seq
                events.append(update)
                status = _S_NEW
            else:
                touched.append((state, own, price))
                status = _S_NEW if leaves == quantity else _S_PARTIALLY_FILLED
        if not touched:
            pass
        elif len(touched) == 1:
            # The common case (one level changed), without the general helper.
            state.seq = seq = state.seq + 1
            _state, book_side, changed_price = touched[0]
            changed = book_side.levels.get(book_side.sign * changed_price)
            update = _new_object(BookUpdate)
            update.symbol = symbol
            update.side = book_side.side
            update.price = changed_price
            update.quantity = 0 if changed is None else changed.total
            update.seq = seq
            events.append(update)
        else:
            self._book_updates(touched, events)
        result = _new_object(CommandResult)
        result.log_index = log_index
        result.order_id = order_id
        result.status = status
        result.events = events
        # EngineState.retain, inlined.
        results[key] = result
        fifo = st.result_fifo
        fifo.append(key)
        times = st.result_times
        times.append(st.now)
        if len(fifo) > st.dedup_max_keys:
            del results[fifo.popleft()]
            times.popleft()
            st.results_evicted_by_cap += 1
        return result

    def _match(
        self,
        state: SymbolState,
        taker: RestingOrder,
        opposite: BookSide,
        limit_key: int,
        events: list[Event],
        touched: Touched,
    ) -> bool:
        """Trade ``taker`` against ``opposite`` up to ``limit_key``.

        Returns True when self-trade prevention cancelled the taker's remainder
        (the ``Cancelled`` event is already in ``events``; ``taker.leaves`` is
        left as the cancelled quantity for the caller's records).
        """
        st = self.state
        keys = opposite.keys
        levels = opposite.levels
        taker_client = taker.client_id
        stp = taker.stp
        symbol = state.spec.symbol
        taker_side = taker.side
        taker_buy = taker_side is _BUY
        now = st.now
        taker_position = taker.position
        live_orders = st.orders
        live_by_client = st.live_by_client
        finished = st.finished
        finished_fifo = st.finished_fifo
        finished_window = st.finished_window
        trades = state.trades
        if st.trade_log_index != st.log_index:
            st.trade_log_index = st.log_index
            st.trade_seq = 0
        trade_base = st.log_index << TRADE_SEQ_BITS
        taker_cancelled = False
        # Market data is updated once per call from these running totals: every fill of one
        # taker has the same time (one candle bucket) and prices that only move away from
        # the first, so the first and last price are the extremes.
        first_price = 0
        fill_price = 0
        fill_count = 0
        fill_volume = 0
        fill_notional = 0
        while taker.leaves:
            key = opposite.best_key
            if key > limit_key:  # also when the side is empty (BookSide.EMPTY)
                break
            level = levels[key]
            price = level.price
            orders = level.orders
            level_changed = False
            while orders:
                maker = orders[0]
                maker_leaves = maker.leaves
                if not maker_leaves:
                    orders.popleft()
                    continue
                if maker.client_id == taker_client:
                    if stp is not _CANCEL_INCOMING:
                        level_changed = True
                        orders.popleft()
                        level.total -= maker_leaves
                        level.count -= 1
                        self._close_resting(maker, _S_CANCELLED)
                        events.append(
                            Cancelled(
                                maker.order_id,
                                maker.client_id,
                                maker.client_order_id,
                                symbol,
                                maker_leaves,
                                _C_SELF_TRADE,
                            )
                        )
                    if stp is not _CANCEL_RESTING:
                        taker_cancelled = True
                        events.append(
                            Cancelled(
                                taker.order_id,
                                taker_client,
                                taker.client_order_id,
                                symbol,
                                taker.leaves,
                                _C_SELF_TRADE,
                            )
                        )
                        break
                    continue
                level_changed = True
                taker_leaves = taker.leaves
                quantity = maker_leaves if maker_leaves < taker_leaves else taker_leaves
                # Quantities stay positive: a resting remainder is what its fills (each > 0)
                # left of a positive quantity, and a live maker has leaves > 0.
                assert quantity > 0, f"a fill of {quantity} against order {maker.order_id}"
                seq = st.trade_seq
                st.trade_seq = seq + 1
                fill = _new_object(Fill)
                fill.trade_id = trade_base | seq
                fill.symbol = symbol
                fill.price = price
                fill.quantity = quantity
                fill.aggressor_side = taker_side
                fill.maker_order_id = maker.order_id
                fill.taker_order_id = taker.order_id
                fill.maker_client_id = maker.client_id
                fill.taker_client_id = taker_client
                fill.timestamp_ns = now
                events.append(fill)
                trades.append(fill)
                taker.leaves = taker_leaves - quantity
                maker.leaves = maker_leaves - quantity
                level.total -= quantity
                notional = price * quantity
                # Positions. A fill that opens or extends a position (the common case) is
                # inlined; one that reduces it takes _apply_fill's average-cost path.
                maker_position = maker.position
                if taker_buy:
                    maker_position.open_sell_quantity -= quantity
                    held = maker_position.quantity
                    if held <= 0:
                        maker_position.sold_quantity += quantity
                        maker_position.quantity = held - quantity
                        maker_position.open_cost -= notional
                    else:
                        _apply_fill(maker_position, -quantity, price)
                    held = taker_position.quantity
                    if held >= 0:
                        taker_position.bought_quantity += quantity
                        taker_position.quantity = held + quantity
                        taker_position.open_cost += notional
                    else:
                        _apply_fill(taker_position, quantity, price)
                else:
                    maker_position.open_buy_quantity -= quantity
                    held = maker_position.quantity
                    if held >= 0:
                        maker_position.bought_quantity += quantity
                        maker_position.quantity = held + quantity
                        maker_position.open_cost += notional
                    else:
                        _apply_fill(maker_position, quantity, price)
                    held = taker_position.quantity
                    if held <= 0:
                        taker_position.sold_quantity += quantity
                        taker_position.quantity = held - quantity
                        taker_position.open_cost -= notional
                    else:
                        _apply_fill(taker_position, -quantity, price)
                if not fill_count:
                    first_price = price
                fill_count += 1
                fill_volume += quantity
                fill_notional += notional
                fill_price = price
                if maker_leaves == quantity:
                    # The maker is done (inline _close_resting: its open quantity is already off).
                    orders.popleft()
                    level.count -= 1
                    maker_id = maker.order_id
                    del live_orders[maker_id]
                    del live_by_client[maker.client_id][maker.client_order_id]
                    finished[maker_id] = (maker, _LIMIT, _GTC, _S_FILLED, maker.quantity)
                    finished_fifo.append(maker_id)
                    if len(finished_fifo) > finished_window:
                        del finished[finished_fifo.popleft()]
                if not taker.leaves:
                    break
            if level_changed:
                touched.append((state, opposite, price))
            if level.count == 0:
                # BookSide.drop_level of the best level, inlined.
                del levels[key]
                keys.pop(0)
                try:
                    opposite.best_key = keys[0]
                except IndexError:  # the side is empty now
                    opposite.best_key = _EMPTY
            if taker_cancelled:
                break
        if fill_count:
            state.last_price = fill_price
            state.trade_count += fill_count
            state.volume += fill_volume
            state.notional += fill_notional
            high, low = (fill_price, first_price) if taker_buy else (first_price, fill_price)
            if now >= state.candle_until:
                # Some interval's newest candle may have closed (the bucket arithmetic on
                # nanosecond times is costly, so it runs only then): open the missing ones
                # at this taker's first price; the loop below adds the fills.
                until = _INT64_MAX
                for interval, history in zip(st.candle_intervals_ns, state.candles, strict=True):
                    start = now - now % interval
                    if not history or history[-1][0] < start:
                        history.append([start, first_price, first_price, first_price, 0, 0, 0])
                    until = min(until, start + interval)
                state.candle_until = until
            for history in state.candles:
                candle = history[-1]
                if high > candle[2]:
                    candle[2] = high
                if low < candle[3]:
                    candle[3] = low
                candle[4] = fill_price
                candle[5] += fill_volume
                candle[6] += fill_notional
        return taker_cancelled

    # ------------------------------------------------------------------ cancels

    def _find_live(
        self, client_id: str, order_id: int | None, client_order_id: str | None
    ) -> RestingOrder | None:
        st = self.state
        if order_id is not None:
            order = st.orders.get(order_id)
            if order is not None and order.client_id == client_id:
                return order
            return None
        live = st.live_by_client.get(client_id)
        if live is None or client_order_id is None:
            return None
        return live.get(client_order_id)

    def _cancel(self, command: Cancel) -> CommandResult:
        st = self.state
        log_index = st.log_index
        client_id = command.client_id
        order_id = command.order_id
        client_order_id = command.client_order_id
        plain = type(client_id) is str and 0 < len(client_id) <= 255 and client_id.isascii()
        if plain:
            if order_id is None:
                plain = (
                    type(client_order_id) is str
                    and 0 < len(client_order_id) <= 255
                    and client_order_id.isascii()
                )
            else:
                plain = (
                    client_order_id is None
                    and type(order_id) is int
                    and 0 <= order_id <= _UINT64_MAX
                )
        rejection = None if plain else validate_format(command, st.specs)
        if rejection is not None:
            return _reject(
                rejection.reason,
                rejection.message,
                log_index,
                command.client_id,
                command.client_order_id,
                command.order_id,
            )
        order = self._find_live(client_id, order_id, client_order_id)
        if order is None:
            return _reject(
                RejectReason.UNKNOWN_ORDER,
                "no such live order for this client",
                log_index,
                command.client_id,
                command.client_order_id,
                command.order_id,
            )
        events: list[Event] = []
        touched: Touched = []
        self._cancel_resting(order, _C_REQUESTED, events, touched)
        state, book_side, price = touched[0]
        level = book_side.levels.get(book_side.sign * price)
        state.seq = state.seq + 1
        update = _new_object(BookUpdate)
        update.symbol = order.symbol
        update.side = order.side
        update.price = price
        update.quantity = 0 if level is None else level.total
        update.seq = state.seq
        events.append(update)
        result = _new_object(CommandResult)
        result.log_index = log_index
        result.order_id = order.order_id
        result.status = _S_CANCELLED
        result.events = events
        return result

    def _cancel_resting(
        self, order: RestingOrder, reason: CancelReason, events: list[Event], touched: Touched
    ) -> None:
        st = self.state
        state = st.symbols[order.symbol]
        book_side = state.bids if order.side is _BUY else state.asks
        leaves = order.leaves
        cancelled = _new_object(Cancelled)
        cancelled.order_id = order.order_id
        cancelled.client_id = order.client_id
        cancelled.client_order_id = order.client_order_id
        cancelled.symbol = order.symbol
        cancelled.quantity = leaves
        cancelled.reason = reason
        events.append(cancelled)
        # BookSide.remove and _close_resting, inlined (the cancel path's hottest part).
        price = order.price
        key = book_side.sign * price
        level = book_side.levels[key]
        level.total -= leaves
        level.count -= 1
        if level.count == 0:
            del book_side.levels[key]
            keys = book_side.keys
            if key != book_side.best_key:
                keys.remove(key)
            else:
                keys.pop(0)
                try:
                    book_side.best_key = keys[0]
                except IndexError:  # the side is empty now
                    book_side.best_key = _EMPTY
        elif len(level.orders) > 2 * level.count + 8:
            level.compact()
        position = order.position
        if order.side is _BUY:
            position.open_buy_quantity -= leaves
        else:
            position.open_sell_quantity -= leaves
        order_id = order.order_id
        del st.orders[order_id]
        del st.live_by_client[order.client_id][order.client_order_id]
        finished = st.finished
        finished[order_id] = (order, _LIMIT, _GTC, _S_CANCELLED, order.quantity - leaves)
        finished_fifo = st.finished_fifo
        finished_fifo.append(order_id)
        if len(finished_fifo) > st.finished_window:
            del finished[finished_fifo.popleft()]
        order.leaves = 0
        touched.append((state, book_side, price))

    def _close_resting(self, order: RestingOrder, status: Status) -> None:
        """Forget a live order (not its book entry): open quantity, indexes, finished record."""
        st = self.state
        leaves = order.leaves
        position = order.position
        if order.side is _BUY:
            position.open_buy_quantity -= leaves
        else:
            position.open_sell_quantity -= leaves
        del st.orders[order.order_id]
        # A client's (possibly empty) index stays: callers may hold it across matching.
        del st.live_by_client[order.client_id][order.client_order_id]
        filled = order.quantity - order.leaves if status is not _S_FILLED else order.quantity
        st.finish(order, _LIMIT, _GTC, status, filled)
        order.leaves = 0

    def _mass_cancel(self, command: MassCancel) -> CommandResult:
        st = self.state
        log_index = st.log_index
        rejection = validate_format(command, st.specs)
        if rejection is not None:
            return _reject(rejection.reason, rejection.message, log_index, command.client_id)
        live = st.live_by_client.get(command.client_id)
        events: list[Event] = []
        if live:
            symbol = command.symbol
            doomed = sorted(
                (order for order in live.values() if symbol is None or order.symbol == symbol),
                key=_ORDER_ID,
            )
            touched: Touched = []
            for order in doomed:
                self._cancel_resting(order, _C_MASS_CANCEL, events, touched)
            self._book_updates(touched, events)
        return CommandResult(log_index, None, _S_ACCEPTED, events)

    # ------------------------------------------------------------------ cancel-replace

    def _cancel_replace(self, command: CancelReplace) -> CommandResult:
        st = self.state
        client_id = command.client_id
        new_client_order_id = command.new_client_order_id
        keyed = _good_key_part(client_id) and _good_key_part(new_client_order_id)
        key = (client_id, new_client_order_id)
        if keyed:
            original = st.results.get(key)
            if original is not None:
                return original
        result = self._replace_checked(command, key)
        if keyed:
            st.retain(key, result)
        return result

    def _replace_checked(self, command: CancelReplace, key: tuple[str, str]) -> CommandResult:
        st = self.state
        client_id, new_client_order_id = key
        log_index = st.log_index

        def reject(reason: RejectReason, message: str) -> CommandResult:
            return _reject(
                reason, message, log_index, client_id, new_client_order_id, command.order_id
            )

        rejection = validate_format(command, st.specs)
        if rejection is not None:
            return reject(rejection.reason, rejection.message)
        order = self._find_live(client_id, command.order_id, command.client_order_id)
        if order is None:
            return reject(RejectReason.UNKNOWN_ORDER, "no such live order for this client")
        live = st.live_by_client[client_id]
        other = live.get(new_client_order_id)
        if other is not None and other is not order:
            return reject(
                RejectReason.DUPLICATE_CLIENT_ORDER_ID,
                f"client order id {new_client_order_id!r} names live order {other.order_id}",
            )
        state = st.symbols[order.symbol]
        spec = state.spec
        if spec.halted:
            return reject(RejectReason.SYMBOL_HALTED, f"{spec.symbol} is halted")
        price = command.price
        quantity = command.quantity
        rejection = check_price_quantity(spec, price, quantity)
        if rejection is not None:
            return reject(rejection.reason, rejection.message)
        buy = order.side == _BUY
        filled = order.quantity - order.leaves
        events: list[Event] = []
        touched: Touched = []
        if quantity <= filled:
            self._rename(order, new_client_order_id)
            self._cancel_resting(order, _C_REPLACED_TO_FILLED, events, touched)
            self._book_updates(touched, events)
            return CommandResult(log_index, order.order_id, _S_CANCELLED, events)
        new_leaves = quantity - filled
        price_changed = price != order.price
        if price_changed:
            reference = state.last_price or spec.reference_price
            if spec.price_band_bps and reference:
                if reference != state.band_reference:
                    state.set_band(reference)
                low = state.band_low
                high = state.band_high
                if price < low or price > high:
                    return reject(
                        RejectReason.PRICE_BAND,
                        f"price {price} outside band [{low}, {high}] around {reference}",
                    )
        limits = st.client_limits.get(client_id, st.default_limits)
        position = st.positions[client_id][order.symbol]
        if limits.max_order_qty or limits.max_notional or limits.max_position:
            # Judge the replaced order as if the old one were already gone.
            adjusted = Position(
                position.quantity,
                0,
                0,
                0,
                0,
                position.open_buy_quantity - (order.leaves if buy else 0),
                position.open_sell_quantity - (0 if buy else order.leaves),
            )
            rejection = _risk_check(
                limits, buy, quantity, price, adjusted, open_quantity=new_leaves
            )
            if rejection is not None:
                return reject(rejection.reason, rejection.message)
        opposite = state.asks if buy else state.bids
        limit_key = price if buy else -price
        crosses = opposite.best_key <= limit_key
        if order.post_only and crosses:
            return reject(
                RejectReason.POST_ONLY_WOULD_TAKE, f"post-only replace to {price} would trade"
            )

        own = state.bids if buy else state.asks
        old_client_order_id = order.client_order_id
        if not price_changed and quantity <= order.quantity:
            # Quantity down (or unchanged) at the same price keeps time priority.
            delta = order.quantity - quantity
            self._rename(order, new_client_order_id)
            if delta:
                order.leaves -= delta
                order.quantity = quantity
                own.levels[own.sign * price].total -= delta
                if buy:
                    position.open_buy_quantity -= delta
                else:
                    position.open_sell_quantity -= delta
                touched.append((state, own, price))
            events.append(
                Replaced(
                    order.order_id,
                    client_id,
                    old_client_order_id,
                    new_client_order_id,
                    spec.symbol,
                    price,
                    quantity,
                    order.leaves,
                    True,
                )
            )
            self._book_updates(touched, events)
            status = _S_NEW if order.leaves == quantity else _S_PARTIALLY_FILLED
            return CommandResult(log_index, order.order_id, status, events)

        # Loses priority: the old record leaves the book, a new one enters at the back.
        old_leaves = order.leaves
        own.remove(order)
        touched.append((state, own, order.price))
        if buy:
            position.open_buy_quantity -= old_leaves
        else:
            position.open_sell_quantity -= old_leaves
        del st.orders[order.order_id]
        del live[old_client_order_id]
        replacement = RestingOrder(
            order.order_id,
            client_id,
            new_client_order_id,
            order.symbol,
            order.side,
            price,
            quantity,
            new_leaves,
            order.post_only,
            order.stp,
            order.position,
        )
        events.append(
            Replaced(
                order.order_id,
                client_id,
                old_client_order_id,
                new_client_order_id,
                spec.symbol,
                price,
                quantity,
                new_leaves,
                False,
            )
        )
        stp_cancelled = False
        if crosses:
            stp_cancelled = self._match(state, replacement, opposite, limit_key, events, touched)
        leaves = replacement.leaves
        if stp_cancelled:
            status = _S_CANCELLED
            st.finish(replacement, _LIMIT, _GTC, status, quantity - leaves)
        elif leaves == 0:
            status = _S_FILLED
            st.finish(replacement, _LIMIT, _GTC, status, quantity)
        else:
            own.add(replacement)
            if buy:
                position.open_buy_quantity += leaves
            else:
                position.open_sell_quantity += leaves
            st.orders[replacement.order_id] = replacement
            live[new_client_order_id] = replacement
            touched.append((state, own, price))
            status = _S_NEW if leaves == quantity else _S_PARTIALLY_FILLED
        # Never crossed (bid keys are minus prices; an empty side's key is above every price).
        assert state.bids.best_key + state.asks.best_key > 0, f"{spec.symbol} book crossed"
        self._book_updates(touched, events)
        return CommandResult(log_index, order.order_id, status, events)

    def _rename(self, order: RestingOrder, new_client_order_id: str) -> None:
        st = self.state
        live = st.live_by_client[order.client_id]
        del live[order.client_order_id]
        order.client_order_id = new_client_order_id
        live[new_client_order_id] = order

    # ------------------------------------------------------------------ admin

    def _add_symbol(self, command: AddSymbol) -> CommandResult:
        st = self.state
        rejection = validate_format(command, st.specs)
        if rejection is not None:
            return _reject(rejection.reason, rejection.message, st.log_index)
        st.list_symbol(command)
        return CommandResult(
            st.log_index, None, _S_ACCEPTED, [TradingStatus(command.symbol, False)]
        )

    def _set_halted(self, command: HaltSymbol | ResumeSymbol, halted: bool) -> CommandResult:
        st = self.state
        rejection = validate_format(command, st.specs)
        if rejection is not None:
            return _reject(rejection.reason, rejection.message, st.log_index)
        st.specs[command.symbol].halted = halted
        return CommandResult(
            st.log_index, None, _S_ACCEPTED, [TradingStatus(command.symbol, halted)]
        )

    def _halt_symbol(self, command: HaltSymbol) -> CommandResult:
        return self._set_halted(command, True)

    def _resume_symbol(self, command: ResumeSymbol) -> CommandResult:
        return self._set_halted(command, False)

    def _set_risk_limits(self, command: SetRiskLimits) -> CommandResult:
        st = self.state
        rejection = validate_format(command, st.specs)
        if rejection is not None:
            return _reject(rejection.reason, rejection.message, st.log_index)
        limits = RiskLimits(command.max_order_qty, command.max_notional, command.max_position)
        if command.client_id is None:
            st.default_limits = limits
        else:
            st.client_limits[command.client_id] = limits
        return CommandResult(st.log_index, None, _S_ACCEPTED, [])

    def _set_order_limits(self, command: SetOrderLimits) -> CommandResult:
        st = self.state
        rejection = validate_format(command, st.specs)
        if rejection is not None:
            return _reject(rejection.reason, rejection.message, st.log_index)
        if command.client_id is None:
            st.default_max_open = command.max_open_orders
        else:
            st.client_max_open[command.client_id] = command.max_open_orders
        return CommandResult(st.log_index, None, _S_ACCEPTED, [])

    def _set_retention(self, command: SetRetention) -> CommandResult:
        st = self.state
        rejection = validate_format(command, st.specs)
        if rejection is not None:
            return _reject(rejection.reason, rejection.message, st.log_index)
        st.set_retention(
            command.exactly_once_horizon_ns,
            command.exactly_once_max_keys,
            command.finished_window,
        )
        return CommandResult(st.log_index, None, _S_ACCEPTED, [])

    # ------------------------------------------------------------------ bookkeeping

    def _book_updates(self, touched: Touched, events: list[Event]) -> None:
        for state, book_side, price in touched if len(touched) == 1 else dict.fromkeys(touched):
            level = book_side.levels.get(book_side.sign * price)
            state.seq += 1
            events.append(
                BookUpdate(
                    state.spec.symbol,
                    book_side.side,
                    price,
                    0 if level is None else level.total,
                    state.seq,
                )
            )

    # ------------------------------------------------------------------ memory

    def retention_stats(self) -> dict[str, int]:
        """What the retention tables hold now, for ``/metrics`` (O(1)).

        - ``exactly_once_keys``: remembered (client id, client order id) keys;
        - ``exactly_once_max_keys``, ``exactly_once_horizon_ns``: their cap and horizon;
        - ``exactly_once_evicted_by_cap``: keys dropped by the cap before their horizon
          (rising means the horizon is shorter than configured);
        - ``exactly_once_expired``: keys forgotten at their horizon;
        - ``exactly_once_oldest_ns``: engine time of the oldest remembered key (0: none);
        - ``exactly_once_covered_ns``: engine clock minus that time (0: none), the
          span retries are answered over now;
        - ``finished_orders``, ``finished_max_orders``: finished orders kept for queries;
        - ``engine_clock_ns``: the engine clock (the highest leader stamp applied).
        """
        st = self.state
        times = st.result_times
        oldest = times[0] if times else 0
        return {
            "exactly_once_keys": len(st.results),
            "exactly_once_max_keys": st.dedup_max_keys,
            "exactly_once_horizon_ns": st.dedup_horizon_ns,
            "exactly_once_evicted_by_cap": st.results_evicted_by_cap,
            "exactly_once_expired": st.results_expired,
            "exactly_once_oldest_ns": oldest,
            "exactly_once_covered_ns": st.now - oldest if times else 0,
            "finished_orders": len(st.finished),
            "finished_max_orders": st.finished_window,
            "engine_clock_ns": st.now,
        }

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The whole state in the canonical, versioned snapshot format (``snapshot.py``)."""
        from exchange_node.engine.snapshot import encode_snapshot

        return encode_snapshot(self.state)

    @classmethod
    def restore(cls, data: bytes) -> Engine:
        """Rebuild an engine from ``snapshot()`` bytes; raises ``SnapshotError`` if malformed."""
        from exchange_node.engine.snapshot import decode_snapshot

        return decode_snapshot(data)

    def state_hash(self) -> str:
        """BLAKE2b-256 hex digest of the canonical snapshot (its exactly-once block not
        compressed, so the digest does not depend on the zlib build): equal on every replica."""
        from exchange_node.engine.snapshot import encode_snapshot

        return hashlib.blake2b(
            encode_snapshot(self.state, compress=False), digest_size=32
        ).hexdigest()


def tune_garbage_collector(gen0_threshold: int = 20_000) -> None:
    """Make cyclic garbage collection rare in a process that hosts an engine.

    The engine's hot path creates no reference cycles (everything it allocates
    is freed by reference counting), but it allocates several container
    objects per command and keeps millions alive (resting orders, retained
    results), so CPython's default thresholds (700, 10, 10) spend about half
    the apply time in collections that find nothing. Call once at start-up
    (the node and ``exchange bench engine`` do): it freezes what exists and
    raises the thresholds. Process-wide; the engine never calls it itself.

    The young generation's threshold bounds how long one collection holds the
    event loop, not how much collecting costs in all: every surviving object is
    scanned once there whatever the threshold, and the middle threshold (250)
    keeps the older generations collected every 5 million allocations, as with
    100,000 and 50. At 100,000 a young collection took 50-370 ms of CPU under
    1,024 WebSocket orders in flight (CPython counts every freed object, old or
    young, against the young generation's count, so after the engine frees old
    results the young list grows to several times the threshold), and each one
    that passed about 300 ms cost the leader its leadership (docs/performance.md).
    At 20,000 the longest took 110 ms; ``exchange bench engine`` measured the same
    apply throughput either way.
    """
    gc.freeze()
    gc.set_threshold(gen0_threshold, 250, 100)


def _risk_check(
    limits: RiskLimits,
    buy: bool,
    quantity: int,
    valuation_price: int,
    position: Position | None,
    *,
    open_quantity: int | None = None,
) -> Rejection | None:
    """Pre-trade limits; ``open_quantity`` is what this order adds to its side (default all)."""
    if limits.max_order_qty and quantity > limits.max_order_qty:
        return Rejection(
            RejectReason.RISK_MAX_ORDER_QTY,
            f"quantity {quantity} above the limit {limits.max_order_qty}",
        )
    if limits.max_notional and valuation_price * quantity > limits.max_notional:
        return Rejection(
            RejectReason.RISK_MAX_NOTIONAL,
            f"notional {valuation_price * quantity} above the limit {limits.max_notional}",
        )
    if limits.max_position:
        adds = quantity if open_quantity is None else open_quantity
        current = position.quantity if position is not None else 0
        if buy:
            open_same = position.open_buy_quantity if position is not None else 0
            worst = current + open_same + adds
        else:
            open_same = position.open_sell_quantity if position is not None else 0
            worst = open_same + adds - current
        if worst > limits.max_position:
            return Rejection(
                RejectReason.RISK_MAX_POSITION,
                f"worst-case position {worst} above the limit {limits.max_position}",
            )
    return None


def _fillable(
    opposite: BookSide, limit_key: int, quantity: int, client_id: str, stp: SelfTradeMode
) -> bool:
    """Whether a FOK of ``quantity`` would fill completely right now (no state change)."""
    available = 0
    for key in opposite.keys.irange(maximum=limit_key):
        level: Level = opposite.levels[key]
        for maker in level.orders:
            if not maker.leaves:
                continue
            if maker.client_id == client_id:
                if stp == _CANCEL_RESTING:
                    continue
                return False
            available += maker.leaves
            if available >= quantity:
                return True
    return False


def _apply_fill(position: Position, signed_quantity: int, price: int) -> None:
    """Average-cost position update (see ``Position``)."""
    if signed_quantity > 0:
        position.bought_quantity += signed_quantity
    else:
        position.sold_quantity -= signed_quantity
    current = position.quantity
    if current == 0 or (current > 0) == (signed_quantity > 0):
        position.quantity = current + signed_quantity
        position.open_cost += price * signed_quantity
        return
    size = current if current > 0 else -current
    traded = signed_quantity if signed_quantity > 0 else -signed_quantity
    closing = traded if traded < size else size
    removed_cost = position.open_cost * closing // size
    closing_signed = closing if signed_quantity > 0 else -closing
    position.realised_pnl += -(price * closing_signed) - removed_cost
    position.open_cost -= removed_cost
    position.quantity = current + closing_signed
    rest = signed_quantity - closing_signed
    if rest:
        position.quantity += rest
        position.open_cost += price * rest

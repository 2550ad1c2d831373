"""The engine's state: books, orders, positions, retention tables and counters.

:class:`EngineState` is all the engine knows; :class:`~exchange_node.engine.engine.Engine`
changes it (the write path), :mod:`~exchange_node.engine.queries` reads it, and
:mod:`~exchange_node.engine.snapshot` writes and rebuilds it through the public
attributes below. Nothing here reads a clock or a random source.

:meth:`EngineState.check_invariants` checks, in full, what must never break
(the write path asserts the cheap parts of it as it goes).
"""

from __future__ import annotations

from collections import deque

from exchange_node.engine.book import BookSide, RestingOrder
from exchange_node.engine.commands import AddSymbol, OrderType, Side, SymbolSpec, TimeInForce
from exchange_node.engine.events import CommandResult, Fill, Status
from exchange_node.engine.views import Position, RiskLimits

FinishedOrder = tuple[RestingOrder, OrderType, TimeInForce, Status, int]
"""A finished order's record: (order, order type, time in force, status, filled quantity)."""


class SymbolState:
    """A listed symbol: its spec, its two book sides, market data and analytics."""

    __slots__ = (
        "asks",
        "band_high",
        "band_low",
        "band_reference",
        "bids",
        "candle_until",
        "candles",
        "last_price",
        "notional",
        "seq",
        "spec",
        "trade_count",
        "trades",
        "volume",
    )

    def __init__(self, spec: SymbolSpec, trade_history: int, candle_slots: int, history: int):
        self.spec = spec
        self.bids = BookSide(Side.BUY)
        self.asks = BookSide(Side.SELL)
        self.last_price = 0
        """Price of the last trade, 0 before the first."""
        self.seq = 0
        """Sequence number of the last ``BookUpdate`` of this symbol."""
        self.trades: deque[Fill] = deque(maxlen=trade_history)
        self.trade_count = 0
        self.volume = 0
        self.notional = 0
        self.candles: list[deque[list[int]]] = [deque(maxlen=history) for _ in range(candle_slots)]
        """Per interval: [start_ns, open, high, low, close, volume, notional], oldest first."""
        self.candle_until = 0
        """A cache: fills before this time belong to the newest candle of every interval
        (0: unknown). Not state: a restored engine recomputes it at its first fill."""
        self.band_reference = 0
        """The reference the cached band bounds were computed from (0: none yet)."""
        self.band_low = 0
        self.band_high = 0

    def set_band(self, reference: int) -> None:
        """Cache ``[ceil(ref * (1 - bps/10^4)), floor(ref * (1 + bps/10^4))]``."""
        bps = self.spec.price_band_bps
        self.band_reference = reference
        self.band_low = -((-reference * (10_000 - bps)) // 10_000)
        self.band_high = (reference * (10_000 + bps)) // 10_000

    def live_orders_in_priority(self) -> tuple[list[RestingOrder], list[RestingOrder]]:
        """(bids, asks) live orders best first, FIFO within a level."""
        return (
            [o for level in self.bids.iter_levels() for o in level.live_orders()],
            [o for level in self.asks.iter_levels() for o in level.live_orders()],
        )


class EngineState:
    """Everything the engine holds. Public attributes; only the engine's write path changes them.

    Retention settings (``dedup_horizon_ns``, ``dedup_max_keys``, ``finished_window``
    ...) are fixed at construction and part of the state (a snapshot carries them).
    """

    __slots__ = (
        "applied_index",
        "candle_history",
        "candle_intervals_ns",
        "client_limits",
        "client_max_open",
        "dedup_horizon_ns",
        "dedup_max_keys",
        "default_limits",
        "default_max_open",
        "finished",
        "finished_fifo",
        "finished_window",
        "live_by_client",
        "log_index",
        "next_order_id",
        "now",
        "orders",
        "positions",
        "result_fifo",
        "result_times",
        "results",
        "results_evicted_by_cap",
        "results_expired",
        "specs",
        "symbols",
        "trade_history",
        "trade_log_index",
        "trade_seq",
    )

    def __init__(
        self,
        *,
        dedup_horizon_ns: int,
        dedup_max_keys: int,
        finished_window: int,
        trade_history: int,
        candle_intervals_ns: tuple[int, ...],
        candle_history: int,
        default_limits: RiskLimits,
    ) -> None:
        self.dedup_horizon_ns = dedup_horizon_ns
        """Exactly-once horizon in engine time: a key is forgotten at the first entry
        stamped ``horizon`` or more after the entry that retained it."""
        self.dedup_max_keys = dedup_max_keys
        """Cap on remembered keys: beyond it the oldest is dropped before its horizon."""
        self.finished_window = finished_window
        self.trade_history = trade_history
        self.candle_intervals_ns = candle_intervals_ns
        self.candle_history = candle_history

        self.symbols: dict[str, SymbolState] = {}
        self.specs: dict[str, SymbolSpec] = {}
        """The listed symbols' specs (the same objects as ``symbols[name].spec``)."""
        self.orders: dict[int, RestingOrder] = {}
        """Live (resting) orders by order id."""
        self.live_by_client: dict[str, dict[str, RestingOrder]] = {}
        """Live orders by client id, then client order id (the same objects as ``orders``)."""
        self.results: dict[tuple[str, str], CommandResult] = {}
        """Exactly-once table: the results of the keyed commands within the horizon
        (at most ``dedup_max_keys`` of them)."""
        self.result_fifo: deque[tuple[str, str]] = deque()
        """The keys of ``results`` in apply order (oldest first)."""
        self.result_times: deque[int] = deque()
        """Engine time at which each key of ``result_fifo`` was retained (same positions;
        non-decreasing, since the engine clock is)."""
        self.results_evicted_by_cap = 0
        """Keys dropped by ``dedup_max_keys`` before their horizon (replicated, in snapshots)."""
        self.results_expired = 0
        """Keys forgotten at their horizon."""
        self.finished: dict[int, FinishedOrder] = {}
        """The last ``finished_window`` finished orders by order id."""
        self.finished_fifo: deque[int] = deque()
        self.positions: dict[str, dict[str, Position]] = {}
        """Positions by client id, then symbol."""
        self.default_limits = default_limits
        self.client_limits: dict[str, RiskLimits] = {}
        self.default_max_open = 0
        self.client_max_open: dict[str, int] = {}
        self.next_order_id = 1
        self.trade_log_index = -1
        """The log index ``trade_seq`` counts fills of."""
        self.trade_seq = 0
        self.now = 0
        """The engine clock: the highest leader stamp applied so far."""
        self.log_index = 0
        """The log index of the command being applied."""
        self.applied_index = 0
        """Highest log index applied; ``apply_entry`` skips entries at or below it."""

    # ------------------------------------------------------------------ bookkeeping

    def position(self, client_id: str, symbol: str) -> Position:
        """The client's position in ``symbol``, created empty on first use."""
        positions = self.positions.get(client_id)
        if positions is None:
            positions = self.positions[client_id] = {}
        position = positions.get(symbol)
        if position is None:
            position = positions[symbol] = Position()
        return position

    def retain(self, key: tuple[str, str], result: CommandResult) -> CommandResult:
        """Add a result to the exactly-once table at the engine's time; beyond the cap,
        drop the oldest key (counted in ``results_evicted_by_cap``).

        A key is only ever added when absent (a present key returns its result
        first), so the FIFO holds each retained key exactly once.
        """
        self.results[key] = result
        fifo = self.result_fifo
        fifo.append(key)
        self.result_times.append(self.now)
        if len(fifo) > self.dedup_max_keys:
            del self.results[fifo.popleft()]
            self.result_times.popleft()
            self.results_evicted_by_cap += 1
        return result

    def expire_results(self) -> None:
        """Forget the keys retained at or before ``now - dedup_horizon_ns``.

        Called whenever the engine clock moves forward (the only time a key can
        reach its horizon), before the entry's commands are applied. The times
        are in apply order and non-decreasing, so expired keys are a prefix.
        """
        times = self.result_times
        cutoff = self.now - self.dedup_horizon_ns
        if not times or times[0] > cutoff:
            return
        fifo = self.result_fifo
        results = self.results
        expired = 0
        while times and times[0] <= cutoff:
            times.popleft()
            del results[fifo.popleft()]
            expired += 1
        self.results_expired += expired

    def set_retention(self, horizon_ns: int, max_keys: int, finished_window: int) -> None:
        """New retention settings (a validated SetRetention), in force at once: the
        oldest exactly-once keys beyond the new cap and finished orders beyond the new
        window are forgotten now, and so are keys the new horizon no longer covers."""
        self.dedup_horizon_ns = horizon_ns
        self.dedup_max_keys = max_keys
        self.finished_window = finished_window
        fifo, times, results = self.result_fifo, self.result_times, self.results
        while len(fifo) > max_keys:
            del results[fifo.popleft()]
            times.popleft()
            self.results_evicted_by_cap += 1
        finished_fifo = self.finished_fifo
        while len(finished_fifo) > finished_window:
            del self.finished[finished_fifo.popleft()]
        self.expire_results()

    def finish(
        self,
        order: RestingOrder,
        order_type: OrderType,
        time_in_force: TimeInForce,
        status: Status,
        filled: int,
    ) -> None:
        """Record a finished order (kept for the last ``finished_window`` of them)."""
        order_id = order.order_id
        self.finished[order_id] = (order, order_type, time_in_force, status, filled)
        fifo = self.finished_fifo
        fifo.append(order_id)
        if len(fifo) > self.finished_window:
            del self.finished[fifo.popleft()]

    def list_symbol(self, command: AddSymbol, *, halted: bool = False) -> SymbolSpec:
        """List a symbol with empty books (the command was validated by the caller)."""
        spec = SymbolSpec(
            command.symbol,
            command.tick_size,
            command.lot_size,
            command.price_band_bps,
            command.reference_price,
            halted,
        )
        self.add_symbol_state(
            SymbolState(
                spec, self.trade_history, len(self.candle_intervals_ns), self.candle_history
            )
        )
        return spec

    def add_symbol_state(self, state: SymbolState) -> None:
        self.symbols[state.spec.symbol] = state
        self.specs[state.spec.symbol] = state.spec

    # ------------------------------------------------------------------ invariants

    def check_invariants(self) -> None:
        """Check, in full, what must never break; raise ``AssertionError`` naming the first.

        Cost: O(state). The write path asserts the cheap parts as it goes (a book
        never crossed after matching, positive quantities); this is the debug check
        for tests and tools:

        - every level of every book is sorted, non-empty, and its ``count`` and
          ``total`` are those of its live orders; every live order has
          ``0 < leaves <= quantity`` and sits at its own price, side and symbol;
        - no book is crossed (best bid < best ask);
        - the order index is the books: ``orders`` and ``live_by_client`` hold
          exactly the live orders on the books, under their own ids;
        - open quantities in positions are the live orders' leaves;
        - per symbol, positions sum to zero (every fill has a buyer and a seller);
        - the exactly-once table holds each key of its FIFO once and in its order (the
          snapshot writes the table in its own order), at most
          ``dedup_max_keys`` of them, with non-decreasing times all within the horizon.
        """
        on_books: dict[int, RestingOrder] = {}
        open_buy: dict[tuple[str, str], int] = {}
        open_sell: dict[tuple[str, str], int] = {}
        for symbol, state in self.symbols.items():
            _check(self.specs.get(symbol) is state.spec, f"{symbol}: spec index differs")
            for book_side in (state.bids, state.asks):
                _check(
                    list(book_side.keys) == sorted(book_side.levels),
                    f"{symbol} {book_side.side.name}: level keys differ from levels",
                )
                _check(
                    book_side.best_key
                    == (book_side.keys[0] if book_side.keys else book_side.EMPTY),
                    f"{symbol} {book_side.side.name}: cached best key is stale",
                )
                opens = open_buy if book_side.side is Side.BUY else open_sell
                for key, level in book_side.levels.items():
                    live = [o for o in level.orders if o.leaves]
                    _check(bool(live), f"{symbol}: an empty level at {level.price} stayed")
                    _check(level.count == len(live), f"{symbol} {level.price}: count")
                    _check(
                        level.total == sum(o.leaves for o in live), f"{symbol} {level.price}: total"
                    )
                    _check(key == book_side.sign * level.price, f"{symbol} {level.price}: key")
                    for order in live:
                        _check(
                            0 < order.leaves <= order.quantity,
                            f"order {order.order_id}: leaves {order.leaves} of {order.quantity}",
                        )
                        _check(
                            order.price == level.price
                            and order.symbol == symbol
                            and order.side is book_side.side,
                            f"order {order.order_id} sits at the wrong level",
                        )
                        _check(order.order_id not in on_books, f"order {order.order_id} twice")
                        on_books[order.order_id] = order
                        owner = (order.client_id, symbol)
                        opens[owner] = opens.get(owner, 0) + order.leaves
            bid = state.bids.best()
            ask = state.asks.best()
            if bid is not None and ask is not None:
                _check(bid.price < ask.price, f"{symbol} book crossed: {bid.price} >= {ask.price}")
        _check(self.orders.keys() == on_books.keys(), "the order index differs from the books")
        for order_id, order in self.orders.items():
            _check(on_books[order_id] is order, f"order {order_id}: index holds another record")
        indexed = 0
        for client_id, by_coid in self.live_by_client.items():
            for client_order_id, order in by_coid.items():
                indexed += 1
                _check(
                    order.client_id == client_id
                    and order.client_order_id == client_order_id
                    and self.orders.get(order.order_id) is order,
                    f"client index entry {client_id}/{client_order_id} names no live order",
                )
        _check(indexed == len(self.orders), "the client index differs from the order index")
        net: dict[str, int] = {}
        for client_id, by_symbol in self.positions.items():
            for symbol, position in by_symbol.items():
                owner = (client_id, symbol)
                _check(
                    position.open_buy_quantity == open_buy.get(owner, 0)
                    and position.open_sell_quantity == open_sell.get(owner, 0),
                    f"{client_id} {symbol}: open quantities differ from the live orders",
                )
                net[symbol] = net.get(symbol, 0) + position.quantity
        for symbol, total in net.items():
            _check(total == 0, f"{symbol}: positions sum to {total}, not 0")
        fifo, times = self.result_fifo, self.result_times
        _check(
            len(fifo) == len(times) == len(self.results) and list(fifo) == list(self.results),
            "the exactly-once FIFO (in order), its times and its table differ",
        )
        _check(len(fifo) <= self.dedup_max_keys, f"{len(fifo)} keys above the cap")
        _check(
            all(a <= b for a, b in zip(times, list(times)[1:], strict=False)),
            "exactly-once times go backwards",
        )
        _check(
            not times or times[0] > self.now - self.dedup_horizon_ns,
            f"a key retained at {times[0] if times else 0} outlived the horizon",
        )


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)

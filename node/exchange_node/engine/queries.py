"""What queries read from the engine's state; nothing here changes it.

:class:`EngineQueries` is the read side of :class:`~exchange_node.engine.engine.Engine`
(which inherits it): every method reads ``self.state`` (``state.py``) and returns
views (``views.py``) or copies, never the live records.
"""

from __future__ import annotations

from operator import attrgetter

from exchange_node.engine.book import BookSide, RestingOrder
from exchange_node.engine.commands import OrderType, SymbolSpec, TimeInForce
from exchange_node.engine.events import CommandResult, Fill, Status
from exchange_node.engine.state import EngineState, FinishedOrder
from exchange_node.engine.views import (
    Analytics,
    BestBidOffer,
    Candle,
    Depth,
    OrderView,
    Position,
    RiskLimits,
)

_ORDER_ID = attrgetter("order_id")


class EngineQueries:
    """Read-only queries over ``self.state``."""

    state: EngineState

    def resting_order_count(self) -> int:
        return len(self.state.orders)

    def symbols(self) -> dict[str, SymbolSpec]:
        """Listed symbols by name (copies), in name order."""
        return {
            name: SymbolSpec(
                spec.symbol,
                spec.tick_size,
                spec.lot_size,
                spec.price_band_bps,
                spec.reference_price,
                spec.halted,
            )
            for name, spec in sorted(self.state.specs.items())
        }

    def best_bid_offer(self, symbol: str) -> BestBidOffer | None:
        state = self.state.symbols.get(symbol)
        if state is None:
            return None
        bid = state.bids.best()
        ask = state.asks.best()
        return BestBidOffer(
            symbol,
            None if bid is None else bid.price,
            0 if bid is None else bid.total,
            None if ask is None else ask.price,
            0 if ask is None else ask.total,
            state.seq,
        )

    def depth(self, symbol: str, levels: int = 10) -> Depth | None:
        state = self.state.symbols.get(symbol)
        if state is None:
            return None

        def top(book_side: BookSide) -> list[tuple[int, int]]:
            out: list[tuple[int, int]] = []
            for level in book_side.iter_levels():
                if len(out) >= levels:
                    break
                out.append((level.price, level.total))
            return out

        return Depth(symbol, top(state.bids), top(state.asks), state.seq)

    def order(self, order_id: int) -> OrderView | None:
        """A live order, or a finished one still in the finished window (``finished_window``)."""
        order = self.state.orders.get(order_id)
        if order is not None:
            return _live_view(order)
        finished = self.state.finished.get(order_id)
        return None if finished is None else finished_view(finished)

    def order_by_client_id(self, client_id: str, client_order_id: str) -> OrderView | None:
        live = self.state.live_by_client.get(client_id)
        if live is not None:
            order = live.get(client_order_id)
            if order is not None:
                return _live_view(order)
        result = self.state.results.get((client_id, client_order_id))
        if result is not None and result.order_id is not None:
            view = self.order(result.order_id)
            if view is not None and view.client_order_id == client_order_id:
                return view
        return None

    def result_for(self, client_id: str, client_order_id: str) -> CommandResult | None:
        """The retained result of the command that used this key, if still retained."""
        return self.state.results.get((client_id, client_order_id))

    def open_orders(self, client_id: str, symbol: str | None = None) -> list[OrderView]:
        live = self.state.live_by_client.get(client_id, {})
        return [
            _live_view(order)
            for order in sorted(live.values(), key=_ORDER_ID)
            if symbol is None or order.symbol == symbol
        ]

    def recent_trades(self, symbol: str, limit: int = 100) -> list[Fill]:
        """The last ``limit`` trades of ``symbol``, oldest first (at most ``trade_history``)."""
        state = self.state.symbols.get(symbol)
        if state is None or limit <= 0:
            return []
        trades = list(state.trades)
        return trades[-limit:]

    def positions(self, client_id: str) -> dict[str, Position]:
        """The client's positions by symbol (copies), in symbol order."""
        positions = self.state.positions.get(client_id, {})
        return {
            symbol: Position(
                p.quantity,
                p.open_cost,
                p.realised_pnl,
                p.bought_quantity,
                p.sold_quantity,
                p.open_buy_quantity,
                p.open_sell_quantity,
            )
            for symbol, p in sorted(positions.items())
        }

    def max_open_orders(self, client_id: str | None = None) -> int:
        """Resting orders ``client_id`` may have (the default with None); 0: unlimited."""
        if client_id is None:
            return self.state.default_max_open
        return self.state.client_max_open.get(client_id, self.state.default_max_open)

    def risk_limits(self, client_id: str | None = None) -> RiskLimits:
        if client_id is None:
            return self.state.default_limits
        return self.state.client_limits.get(client_id, self.state.default_limits)

    def analytics(self, symbol: str) -> Analytics | None:
        state = self.state.symbols.get(symbol)
        if state is None:
            return None
        candles = {
            interval: [Candle(c[0], interval, *c[1:]) for c in history]
            for interval, history in zip(self.state.candle_intervals_ns, state.candles, strict=True)
        }
        return Analytics(
            symbol,
            state.trade_count,
            state.volume,
            state.notional,
            state.notional / state.volume if state.volume else None,
            state.last_price or None,
            candles,
        )

    def live_orders_in_priority(self, symbol: str) -> tuple[list[RestingOrder], list[RestingOrder]]:
        """(bids, asks) live orders best first, FIFO within a level (tests and snapshots)."""
        return self.state.symbols[symbol].live_orders_in_priority()


def finished_view(record: FinishedOrder) -> OrderView:
    order, order_type, time_in_force, status, filled = record
    return OrderView(
        order.order_id,
        order.client_id,
        order.client_order_id,
        order.symbol,
        order.side,
        order_type,
        time_in_force,
        order.price,
        order.quantity,
        filled,
        0,
        status,
        order.post_only,
        order.stp,
    )


def _live_view(order: RestingOrder) -> OrderView:
    filled = order.quantity - order.leaves
    return OrderView(
        order.order_id,
        order.client_id,
        order.client_order_id,
        order.symbol,
        order.side,
        OrderType.LIMIT,
        TimeInForce.GTC,
        order.price,
        order.quantity,
        filled,
        order.leaves,
        Status.NEW if filled == 0 else Status.PARTIALLY_FILLED,
        order.post_only,
        order.stp,
    )

"""A deliberately naive second implementation of the engine's rules.

Lists and linear scans only: the book is one list of live orders per symbol,
re-sorted for every decision; positions' open quantities are recomputed by
scanning. It shares only the pure format check (``validate_format``,
``check_price_quantity``) with the engine, which has its own unit tests.

``apply`` returns results as plain dicts (``CommandResult.to_dict`` shape,
rejection messages dropped) so tests compare the two implementations
event by event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange_node.engine.commands import (
    AddSymbol,
    Cancel,
    CancelReplace,
    HaltSymbol,
    MassCancel,
    NewOrder,
    OrderType,
    RejectReason,
    ResumeSymbol,
    SelfTradeMode,
    SetRiskLimits,
    Side,
    SymbolSpec,
    TimeInForce,
    check_price_quantity,
    validate_format,
)

INT64_MAX = (1 << 63) - 1


def normalise(result_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop what the model does not reproduce word for word: rejection messages."""
    events = []
    for event in result_dict["events"]:
        event = dict(event)
        if event["type"] == "rejected":
            event.pop("message")
        events.append(event)
    return {**result_dict, "events": events}


@dataclass
class ModelOrder:
    order_id: int
    client_id: str
    client_order_id: str
    symbol: str
    side: Side
    price: int
    quantity: int
    leaves: int
    post_only: bool
    stp: SelfTradeMode
    arrival: int


@dataclass
class ModelPosition:
    quantity: int = 0
    open_cost: int = 0
    realised_pnl: int = 0
    bought_quantity: int = 0
    sold_quantity: int = 0


def key_ok(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value.encode()) <= 255


class ReferenceExchange:
    def __init__(
        self, symbols: list[AddSymbol], dedup_max_keys: int, dedup_horizon_ns: int
    ) -> None:
        self.specs: dict[str, SymbolSpec] = {}
        self.last_price: dict[str, int] = {}
        self.seq: dict[str, int] = {}
        self.book: list[ModelOrder] = []
        self.positions: dict[tuple[str, str], ModelPosition] = {}
        self.default_limits = (0, 0, 0)
        self.client_limits: dict[str, tuple[int, int, int]] = {}
        self.retained: list[tuple[tuple[str, str], dict[str, Any], int]] = []
        """(key, result, engine time when retained), oldest first."""
        self.dedup_max_keys = dedup_max_keys
        self.dedup_horizon_ns = dedup_horizon_ns
        self.evicted_by_cap = 0
        self.next_order_id = 1
        self.arrivals = 0
        self.now = 0
        self.log_index = 0
        self.trade_log_index = -1
        self.trade_seq = 0
        for command in symbols:
            self.specs[command.symbol] = SymbolSpec(
                command.symbol,
                command.tick_size,
                command.lot_size,
                command.price_band_bps,
                command.reference_price,
            )
            self.seq[command.symbol] = 0

    # ---------------------------------------------------------------- helpers

    def sorted_side(self, symbol: str, side: Side) -> list[ModelOrder]:
        orders = [o for o in self.book if o.symbol == symbol and o.side == side]
        if side == Side.BUY:
            return sorted(orders, key=lambda o: (-o.price, o.arrival))
        return sorted(orders, key=lambda o: (o.price, o.arrival))

    def level_total(self, symbol: str, side: Side, price: int) -> int:
        return sum(
            o.leaves
            for o in self.book
            if o.symbol == symbol and o.side == side and o.price == price
        )

    def open_quantity(self, client_id: str, symbol: str, side: Side) -> int:
        return sum(
            o.leaves
            for o in self.book
            if o.client_id == client_id and o.symbol == symbol and o.side == side
        )

    def live(self, client_id: str) -> list[ModelOrder]:
        return [o for o in self.book if o.client_id == client_id]

    def retained_result(self, key: tuple[str, str]) -> dict[str, Any] | None:
        for retained_key, result, _time in reversed(self.retained):
            if retained_key == key:
                return result
        return None

    def retain(self, key: tuple[str, str], result: dict[str, Any]) -> None:
        self.retained.append((key, result, self.now))
        if len(self.retained) > self.dedup_max_keys:
            self.retained.pop(0)
            self.evicted_by_cap += 1

    def result(self, order_id: int | None, status: str, events: list[dict[str, Any]]) -> dict:
        return {
            "log_index": self.log_index,
            "order_id": order_id,
            "status": status,
            "events": events,
        }

    def reject(
        self,
        reason: RejectReason,
        client_id: Any = None,
        client_order_id: Any = None,
        order_id: Any = None,
    ) -> dict[str, Any]:
        event = {
            "type": "rejected",
            "reason": reason.name,
            "client_id": client_id if isinstance(client_id, str) else None,
            "client_order_id": client_order_id if isinstance(client_order_id, str) else None,
            "order_id": order_id if type(order_id) is int else None,
        }
        return self.result(None, "REJECTED", [event])

    def band(self, symbol: str) -> tuple[int, int] | None:
        spec = self.specs[symbol]
        reference = self.last_price.get(symbol) or spec.reference_price
        if not spec.price_band_bps or not reference:
            return None
        low = reference * (10_000 - spec.price_band_bps)
        low = low // 10_000 + (1 if low % 10_000 else 0)
        high = reference * (10_000 + spec.price_band_bps) // 10_000
        return low, high

    def limits(self, client_id: str) -> tuple[int, int, int]:
        return self.client_limits.get(client_id, self.default_limits)

    def risk(
        self,
        client_id: str,
        symbol: str,
        side: Side,
        quantity: int,
        valuation: int,
        adds: int,
        exclude: ModelOrder | None = None,
    ) -> RejectReason | None:
        max_qty, max_notional, max_position = self.limits(client_id)
        if max_qty and quantity > max_qty:
            return RejectReason.RISK_MAX_ORDER_QTY
        if max_notional and valuation * quantity > max_notional:
            return RejectReason.RISK_MAX_NOTIONAL
        if max_position:
            position = self.positions.get((client_id, symbol), ModelPosition()).quantity
            open_same = sum(
                o.leaves
                for o in self.book
                if o.client_id == client_id
                and o.symbol == symbol
                and o.side == side
                and o is not exclude
            )
            worst = position + open_same + adds if side == Side.BUY else open_same + adds - position
            if worst > max_position:
                return RejectReason.RISK_MAX_POSITION
        return None

    def touch(self, touched: list[tuple[str, Side, int]], symbol: str, side: Side, price: int):
        if (symbol, side, price) not in touched:
            touched.append((symbol, side, price))

    def book_updates(self, touched: list[tuple[str, Side, int]]) -> list[dict[str, Any]]:
        events = []
        for symbol, side, price in touched:
            self.seq[symbol] += 1
            events.append(
                {
                    "type": "book",
                    "symbol": symbol,
                    "side": side.name,
                    "price": price,
                    "quantity": self.level_total(symbol, side, price),
                    "seq": self.seq[symbol],
                }
            )
        return events

    def position(self, client_id: str, symbol: str) -> ModelPosition:
        return self.positions.setdefault((client_id, symbol), ModelPosition())

    def apply_fill(self, client_id: str, symbol: str, signed: int, price: int) -> None:
        position = self.position(client_id, symbol)
        if signed > 0:
            position.bought_quantity += signed
        else:
            position.sold_quantity += -signed
        # Unit by unit would be naive but slow; do it in two legs, close then open.
        while signed:
            if position.quantity == 0 or (position.quantity > 0) == (signed > 0):
                position.quantity += signed
                position.open_cost += price * signed
                return
            size = abs(position.quantity)
            closing = min(abs(signed), size)
            removed = position.open_cost * closing // size
            closing_signed = closing if signed > 0 else -closing
            position.realised_pnl += -(price * closing_signed) - removed
            position.open_cost -= removed
            position.quantity += closing_signed
            signed -= closing_signed

    def cancelled(self, order: ModelOrder, reason: str) -> dict[str, Any]:
        return {
            "type": "cancelled",
            "order_id": order.order_id,
            "client_id": order.client_id,
            "client_order_id": order.client_order_id,
            "symbol": order.symbol,
            "quantity": order.leaves,
            "reason": reason,
        }

    def crossing(self, order: ModelOrder, limit: int) -> list[ModelOrder]:
        opposite = Side.SELL if order.side == Side.BUY else Side.BUY
        return [
            o
            for o in self.sorted_side(order.symbol, opposite)
            if (o.price <= limit if order.side == Side.BUY else o.price >= limit)
        ]

    def fok_fillable(self, order: ModelOrder, limit: int) -> bool:
        available = 0
        for maker in self.crossing(order, limit):
            if maker.client_id == order.client_id:
                if order.stp == SelfTradeMode.CANCEL_RESTING:
                    continue
                return False
            available += maker.leaves
            if available >= order.leaves:
                return True
        return False

    def match(
        self, taker: ModelOrder, limit: int, events: list, touched: list
    ) -> bool:  # True: STP cancelled the taker
        while taker.leaves:
            candidates = self.crossing(taker, limit)
            if not candidates:
                return False
            maker = candidates[0]
            if maker.client_id == taker.client_id:
                if taker.stp != SelfTradeMode.CANCEL_INCOMING:
                    events.append(self.cancelled(maker, "SELF_TRADE"))
                    self.book.remove(maker)
                    self.touch(touched, maker.symbol, maker.side, maker.price)
                if taker.stp != SelfTradeMode.CANCEL_RESTING:
                    events.append(self.cancelled(taker, "SELF_TRADE"))
                    return True
                continue
            quantity = min(maker.leaves, taker.leaves)
            if self.trade_log_index != self.log_index:
                self.trade_log_index = self.log_index
                self.trade_seq = 0
            events.append(
                {
                    "type": "fill",
                    "trade_id": (self.log_index << 24) | self.trade_seq,
                    "symbol": taker.symbol,
                    "price": maker.price,
                    "quantity": quantity,
                    "aggressor_side": taker.side.name,
                    "maker_order_id": maker.order_id,
                    "taker_order_id": taker.order_id,
                    "maker_client_id": maker.client_id,
                    "taker_client_id": taker.client_id,
                    "timestamp_ns": self.now,
                }
            )
            self.trade_seq += 1
            maker.leaves -= quantity
            taker.leaves -= quantity
            self.last_price[taker.symbol] = maker.price
            sign = 1 if taker.side == Side.BUY else -1
            self.apply_fill(taker.client_id, taker.symbol, sign * quantity, maker.price)
            self.apply_fill(maker.client_id, maker.symbol, -sign * quantity, maker.price)
            self.touch(touched, maker.symbol, maker.side, maker.price)
            if maker.leaves == 0:
                self.book.remove(maker)
        return False

    # ---------------------------------------------------------------- commands

    def apply(self, command: Any, log_index: int, timestamp_ns: int) -> dict[str, Any]:
        self.log_index = log_index
        self.now = max(self.now, timestamp_ns)
        # Exactly-once horizon: a key retained at t is gone once the clock reaches t + horizon.
        self.retained = [
            item for item in self.retained if item[2] > self.now - self.dedup_horizon_ns
        ]
        if isinstance(command, NewOrder):
            return self.new_order(command)
        if isinstance(command, Cancel):
            return self.cancel(command)
        if isinstance(command, CancelReplace):
            return self.replace(command)
        if isinstance(command, MassCancel):
            return self.mass_cancel(command)
        rejection = validate_format(command, self.specs)
        if rejection:
            return self.reject(rejection.reason)
        if isinstance(command, AddSymbol):
            self.specs[command.symbol] = SymbolSpec(
                command.symbol,
                command.tick_size,
                command.lot_size,
                command.price_band_bps,
                command.reference_price,
            )
            self.seq[command.symbol] = 0
            status_event = {"type": "trading_status", "symbol": command.symbol, "halted": False}
            return self.result(None, "ACCEPTED", [status_event])
        if isinstance(command, HaltSymbol | ResumeSymbol):
            halted = isinstance(command, HaltSymbol)
            self.specs[command.symbol].halted = halted
            status_event = {"type": "trading_status", "symbol": command.symbol, "halted": halted}
            return self.result(None, "ACCEPTED", [status_event])
        assert isinstance(command, SetRiskLimits)
        limits = (command.max_order_qty, command.max_notional, command.max_position)
        if command.client_id is None:
            self.default_limits = limits
        else:
            self.client_limits[command.client_id] = limits
        return self.result(None, "ACCEPTED", [])

    def new_order(self, command: NewOrder) -> dict[str, Any]:
        key = (command.client_id, command.client_order_id)
        keyed = key_ok(command.client_id) and key_ok(command.client_order_id)
        if keyed:
            original = self.retained_result(key)
            if original is not None:
                return original
        result = self.new_order_checked(command)
        if keyed:
            self.retain(key, result)
        return result

    def new_order_checked(self, command: NewOrder) -> dict[str, Any]:
        client_id, client_order_id = command.client_id, command.client_order_id

        def reject(reason: RejectReason) -> dict[str, Any]:
            return self.reject(reason, client_id, client_order_id)

        rejection = validate_format(command, self.specs)
        if rejection:
            return reject(rejection.reason)
        if any(o.client_order_id == client_order_id for o in self.live(client_id)):
            return reject(RejectReason.DUPLICATE_CLIENT_ORDER_ID)
        symbol = command.symbol
        spec = self.specs[symbol]
        if spec.halted:
            return reject(RejectReason.SYMBOL_HALTED)
        side = Side(command.side)
        market = command.order_type == OrderType.MARKET
        band = self.band(symbol)
        if market:
            if band is not None:
                limit = band[1] if side == Side.BUY else band[0]
                valuation = limit
            else:
                limit = INT64_MAX if side == Side.BUY else 0
                valuation = self.last_price.get(symbol) or spec.reference_price
        else:
            if band is not None and not band[0] <= command.price <= band[1]:
                return reject(RejectReason.PRICE_BAND)
            limit = valuation = command.price
        reason = self.risk(client_id, symbol, side, command.quantity, valuation, command.quantity)
        if reason:
            return reject(reason)
        order = ModelOrder(
            self.next_order_id,
            client_id,
            client_order_id,
            symbol,
            side,
            command.price,
            command.quantity,
            command.quantity,
            command.post_only,
            SelfTradeMode(command.stp),
            0,
        )
        crossing = self.crossing(order, limit)
        if command.post_only and crossing:
            return reject(RejectReason.POST_ONLY_WOULD_TAKE)
        self.next_order_id += 1
        self.position(client_id, symbol)
        events: list[dict[str, Any]] = [
            {
                "type": "accepted",
                "order_id": order.order_id,
                "client_id": client_id,
                "client_order_id": client_order_id,
                "symbol": symbol,
                "side": side.name,
                "order_type": OrderType(command.order_type).name,
                "time_in_force": TimeInForce(command.time_in_force).name,
                "price": command.price,
                "quantity": command.quantity,
                "timestamp_ns": self.now,
            }
        ]
        expired = {
            "type": "expired",
            "order_id": order.order_id,
            "client_id": client_id,
            "client_order_id": client_order_id,
            "symbol": symbol,
        }
        if command.time_in_force == TimeInForce.FOK and not self.fok_fillable(order, limit):
            events.append({**expired, "quantity": command.quantity})
            return self.result(order.order_id, "EXPIRED", events)
        touched: list[tuple[str, Side, int]] = []
        stp_cancelled = self.match(order, limit, events, touched)
        if stp_cancelled:
            status = "CANCELLED"
        elif order.leaves == 0:
            status = "FILLED"
        elif market or command.time_in_force != TimeInForce.GTC:
            events.append({**expired, "quantity": order.leaves})
            status = "EXPIRED"
        else:
            self.arrivals += 1
            order.arrival = self.arrivals
            self.book.append(order)
            self.touch(touched, symbol, side, order.price)
            status = "NEW" if order.leaves == order.quantity else "PARTIALLY_FILLED"
        events += self.book_updates(touched)
        return self.result(order.order_id, status, events)

    def find(self, client_id: str, order_id: Any, client_order_id: Any) -> ModelOrder | None:
        for order in self.book:
            if order.client_id != client_id:
                continue
            if order_id is not None and order.order_id == order_id:
                return order
            if order_id is None and order.client_order_id == client_order_id:
                return order
        return None

    def cancel(self, command: Cancel) -> dict[str, Any]:
        rejection = validate_format(command, self.specs)
        if rejection:
            return self.reject(
                rejection.reason, command.client_id, command.client_order_id, command.order_id
            )
        order = self.find(command.client_id, command.order_id, command.client_order_id)
        if order is None:
            return self.reject(
                RejectReason.UNKNOWN_ORDER,
                command.client_id,
                command.client_order_id,
                command.order_id,
            )
        events = [self.cancelled(order, "REQUESTED")]
        self.book.remove(order)
        events += self.book_updates([(order.symbol, order.side, order.price)])
        return self.result(order.order_id, "CANCELLED", events)

    def mass_cancel(self, command: MassCancel) -> dict[str, Any]:
        rejection = validate_format(command, self.specs)
        if rejection:
            return self.reject(rejection.reason, command.client_id)
        doomed = sorted(
            (
                o
                for o in self.live(command.client_id)
                if command.symbol is None or o.symbol == command.symbol
            ),
            key=lambda o: o.order_id,
        )
        events: list[dict[str, Any]] = []
        touched: list[tuple[str, Side, int]] = []
        for order in doomed:
            events.append(self.cancelled(order, "MASS_CANCEL"))
            self.book.remove(order)
            self.touch(touched, order.symbol, order.side, order.price)
        events += self.book_updates(touched)
        return self.result(None, "ACCEPTED", events)

    def replace(self, command: CancelReplace) -> dict[str, Any]:
        key = (command.client_id, command.new_client_order_id)
        keyed = key_ok(command.client_id) and key_ok(command.new_client_order_id)
        if keyed:
            original = self.retained_result(key)
            if original is not None:
                return original
        result = self.replace_checked(command)
        if keyed:
            self.retain(key, result)
        return result

    def replace_checked(self, command: CancelReplace) -> dict[str, Any]:
        client_id = command.client_id
        new_id = command.new_client_order_id

        def reject(reason: RejectReason) -> dict[str, Any]:
            return self.reject(reason, client_id, new_id, command.order_id)

        rejection = validate_format(command, self.specs)
        if rejection:
            return reject(rejection.reason)
        order = self.find(client_id, command.order_id, command.client_order_id)
        if order is None:
            return reject(RejectReason.UNKNOWN_ORDER)
        if any(o.client_order_id == new_id and o is not order for o in self.live(client_id)):
            return reject(RejectReason.DUPLICATE_CLIENT_ORDER_ID)
        spec = self.specs[order.symbol]
        if spec.halted:
            return reject(RejectReason.SYMBOL_HALTED)
        rejection = check_price_quantity(spec, command.price, command.quantity)
        if rejection:
            return reject(rejection.reason)
        filled = order.quantity - order.leaves
        old_id = order.client_order_id
        if command.quantity <= filled:
            order.client_order_id = new_id
            events = [self.cancelled(order, "REPLACED_TO_FILLED")]
            self.book.remove(order)
            events += self.book_updates([(order.symbol, order.side, order.price)])
            return self.result(order.order_id, "CANCELLED", events)
        new_leaves = command.quantity - filled
        price_changed = command.price != order.price
        if price_changed:
            band = self.band(order.symbol)
            if band is not None and not band[0] <= command.price <= band[1]:
                return reject(RejectReason.PRICE_BAND)
        reason = self.risk(
            client_id,
            order.symbol,
            order.side,
            command.quantity,
            command.price,
            new_leaves,
            exclude=order,
        )
        if reason:
            return reject(reason)
        probe = ModelOrder(**{**order.__dict__, "price": command.price})
        crossing = self.crossing(probe, command.price)
        if order.post_only and crossing:
            return reject(RejectReason.POST_ONLY_WOULD_TAKE)
        replaced = {
            "type": "replaced",
            "order_id": order.order_id,
            "client_id": client_id,
            "old_client_order_id": old_id,
            "new_client_order_id": new_id,
            "symbol": order.symbol,
            "price": command.price,
            "quantity": command.quantity,
            "leaves_quantity": new_leaves,
        }
        touched: list[tuple[str, Side, int]] = []
        order.client_order_id = new_id
        if not price_changed and command.quantity <= order.quantity:
            if command.quantity != order.quantity:
                touched.append((order.symbol, order.side, order.price))
            order.leaves = new_leaves
            order.quantity = command.quantity
            events = [{**replaced, "kept_priority": True}]
            events += self.book_updates(touched)
            status = "NEW" if order.leaves == order.quantity else "PARTIALLY_FILLED"
            return self.result(order.order_id, status, events)
        self.book.remove(order)
        touched.append((order.symbol, order.side, order.price))
        events = [{**replaced, "kept_priority": False}]
        order.price = command.price
        order.quantity = command.quantity
        order.leaves = new_leaves
        stp_cancelled = self.match(order, command.price, events, touched)
        if stp_cancelled:
            status = "CANCELLED"
        elif order.leaves == 0:
            status = "FILLED"
        else:
            self.arrivals += 1
            order.arrival = self.arrivals
            self.book.append(order)
            self.touch(touched, order.symbol, order.side, order.price)
            status = "NEW" if order.leaves == order.quantity else "PARTIALLY_FILLED"
        events += self.book_updates(touched)
        return self.result(order.order_id, status, events)

    # ---------------------------------------------------------------- views

    def book_view(self, symbol: str) -> tuple[list[tuple[int, int, int, int]], ...]:
        def rows(side: Side) -> list[tuple[int, int, int, int]]:
            return [
                (o.order_id, o.price, o.quantity, o.leaves) for o in self.sorted_side(symbol, side)
            ]

        return rows(Side.BUY), rows(Side.SELL)

    def position_view(self, client_id: str) -> dict[str, dict[str, int]]:
        out = {}
        for (client, symbol), position in sorted(self.positions.items()):
            if client != client_id:
                continue
            out[symbol] = {
                "quantity": position.quantity,
                "open_cost": position.open_cost,
                "realised_pnl": position.realised_pnl,
                "bought_quantity": position.bought_quantity,
                "sold_quantity": position.sold_quantity,
                "open_buy_quantity": self.open_quantity(client_id, symbol, Side.BUY),
                "open_sell_quantity": self.open_quantity(client_id, symbol, Side.SELL),
            }
        return out

"""One symbol's order book: price levels in price-time priority.

Each side keeps its levels in a ``SortedList`` of *keys* where the best level
comes first: an ask's key is its price, a bid's key is minus its price. So
"the best opposite level crosses a limit" is ``key <= limit_key`` on both
sides, with ``limit_key = price`` for a buyer and ``-price`` for a seller.

The best key is also cached in ``BookSide.best_key`` (``BookSide.EMPTY``, above
every key, when the side is empty), so "does the incoming order cross" is one
comparison, ``best_key <= limit_key``, without a call into the sorted list.

A level is a FIFO ``deque`` of resting orders. Removing an order from the
middle of a level (a cancel) is lazy: the order is marked dead
(``leaves == 0``) and skipped when it reaches the front; the level is
compacted once dead entries outnumber live ones, so the cost stays amortised
O(1) and the memory bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from sortedcontainers import SortedList

from exchange_node.engine.commands import SelfTradeMode, Side
from exchange_node.engine.views import Position


class RestingOrder:
    """A live order (resting on the book, or being matched right now).

    ``quantity`` is the order's total (after replaces), ``leaves`` what is still
    open; ``quantity - leaves`` has filled. ``leaves == 0`` marks the record
    dead: filled, cancelled, or superseded by a replace that lost priority.
    """

    __slots__ = (
        "client_id",
        "client_order_id",
        "leaves",
        "order_id",
        "position",
        "post_only",
        "price",
        "quantity",
        "side",
        "stp",
        "symbol",
    )

    def __init__(
        self,
        order_id: int,
        client_id: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        price: int,
        quantity: int,
        leaves: int,
        post_only: bool,
        stp: SelfTradeMode,
        position: Position,
    ) -> None:
        self.order_id = order_id
        self.client_id = client_id
        self.client_order_id = client_order_id
        self.symbol = symbol
        self.side = side
        self.price = price
        self.quantity = quantity
        self.leaves = leaves
        self.post_only = post_only
        self.stp = stp
        self.position = position
        """The owner's ``Position`` in this symbol (kept here to spare lookups per fill)."""


class Level:
    """The resting orders at one price, oldest first."""

    __slots__ = ("count", "orders", "price", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.orders: deque[RestingOrder] = deque()
        self.total = 0
        """Sum of ``leaves`` of the live orders."""
        self.count = 0
        """Number of live orders (the deque may also hold dead ones)."""

    def live_orders(self) -> Iterator[RestingOrder]:
        for order in self.orders:
            if order.leaves:
                yield order

    def compact(self) -> None:
        if len(self.orders) > 2 * self.count + 8:
            self.orders = deque(order for order in self.orders if order.leaves)


class BookSide:
    __slots__ = ("best_key", "keys", "levels", "side", "sign")

    EMPTY = 1 << 64
    """``best_key`` of an empty side: above every key (keys are prices within +-2^63)."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.sign = 1 if side == Side.SELL else -1
        self.keys: SortedList = SortedList()
        self.levels: dict[int, Level] = {}
        self.best_key = self.EMPTY
        """``keys[0]``, or ``EMPTY``: kept by ``add`` and ``drop_level`` (and their inlined
        copies on the engine's hot paths; ``check_invariants`` checks it)."""

    def drop_level(self, key: int) -> None:
        """Take the level under ``key`` off the book."""
        del self.levels[key]
        keys = self.keys
        if key != self.best_key:
            keys.remove(key)
            return
        keys.pop(0)
        try:
            self.best_key = keys[0]
        except IndexError:  # the side is empty now
            self.best_key = self.EMPTY

    def add(self, order: RestingOrder) -> Level:
        """Append ``order`` at the back of its price level; return the level."""
        key = self.sign * order.price
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = Level(order.price)
            self.keys.add(key)
            if key < self.best_key:
                self.best_key = key
        level.orders.append(order)
        level.total += order.leaves
        level.count += 1
        return level

    def remove(self, order: RestingOrder) -> None:
        """Take a live ``order`` off the book (marks it dead; the caller keeps its record)."""
        key = self.sign * order.price
        level = self.levels[key]
        level.total -= order.leaves
        level.count -= 1
        order.leaves = 0
        if level.count == 0:
            self.drop_level(key)
        else:
            level.compact()

    def best(self) -> Level | None:
        return self.levels.get(self.best_key)

    def iter_levels(self) -> Iterator[Level]:
        """Levels best first."""
        levels = self.levels
        for key in self.keys:
            yield levels[key]

"""The model of one order's life as the API shows it, for the linearizability search.

What one order goes through (the engine's rules, ``engine/engine.py``):
``submit`` creates it (or is rejected), then it is *live* (``NEW`` /
``PARTIALLY_FILLED``) until it is ``FILLED``, ``CANCELLED`` or ``EXPIRED``;
``replace`` changes a live order's price, quantity and client order id;
``cancel`` and ``mass_cancel`` end a live one; reads show it.

Two things happen to an order that its own operations do not show, so the
model allows them between any two steps, nondeterministically:

* fills by other clients' orders: a live order's filled quantity only grows,
  up to its quantity, when it is ``FILLED``;
* with a self-trade mode other than ``CANCEL_INCOMING`` in the client's
  orders, a resting order may be cancelled by the same client's next order.

A live state's ``filled`` is therefore a lower bound. A finished state's
``filled`` is exact once an answer showed it (``exact``); after an
indeterminate step it is only a lower bound until a read fixes it.

Retries of one ``submit`` (same client order id), and of one ``replace``
(same new client order id), are one operation here: exactly-once means the
engine applied it once, somewhere between the first attempt's call and the
first definite answer, and every answer is that one result. Whether the
answers agree is the exactly-once check's business, not this model's.

A stale read may show any earlier state, so it is given a call time of 0:
it may be linearized anywhere before it returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

ABSENT, REJECTED, LIVE, FILLED, CANCELLED, EXPIRED = range(6)
PHASE_NAMES = ("ABSENT", "REJECTED", "LIVE", "FILLED", "CANCELLED", "EXPIRED")
_TERMINAL_STATUS = {"FILLED": FILLED, "CANCELLED": CANCELLED, "EXPIRED": EXPIRED}
_LIVE_STATUS = ("NEW", "PARTIALLY_FILLED")


class OrderState(NamedTuple):
    phase: int
    order_id: int | None
    client_order_id: str
    price: int
    quantity: int
    filled: int
    exact: bool
    """For a finished order: ``filled`` is known exactly (else it is a lower bound)."""

    def describe(self) -> str:
        if self.phase in (ABSENT, REJECTED):
            return PHASE_NAMES[self.phase]
        bound = "=" if self.exact and self.phase != LIVE else ">="
        return (
            f"{PHASE_NAMES[self.phase]} order_id={self.order_id} "
            f"client_order_id={self.client_order_id} {self.quantity}@{self.price} "
            f"filled{bound}{self.filled}"
        )


@dataclass(slots=True, frozen=True)
class OrderOp:
    """One operation on one order, as the model needs it."""

    kind: str
    """``submit``, ``cancel``, ``replace``, ``mass_cancel`` or ``read``."""
    outcome: str
    """``ok``, ``fail`` (definite, with an effect the model knows) or ``info``."""
    args: Any
    answer: Any = None
    status: int | None = None
    source: tuple[int, ...] = ()
    """Ids of the history operations this stands for."""
    cancelled_quantity: int | None = None
    """For a mass cancel's ok: the quantity it cancelled of this order (None: not this one)."""
    cancelled_order_id: int | None = None
    """... and the order id its answer gave."""
    observed_on: str | None = None
    """For the final state observed on a replica (a read at the end): which one."""


def _ref_matches(state: OrderState, args: Any) -> bool:
    if "client_order_id" in args:
        return bool(args["client_order_id"] == state.client_order_id)
    return state.order_id is None or args.get("order_id") == state.order_id


def _same_id(state: OrderState, order_id: Any) -> bool:
    """Is ``order_id`` (from an answer) a well-formed id that may be this order's?"""
    if not isinstance(order_id, int) or isinstance(order_id, bool):
        return False
    return state.order_id is None or order_id == state.order_id


def _own_fills(events: Any, order_id: Any) -> int | None:
    """Sum of this order's fill events; None if the events are not a list of objects."""
    if not isinstance(events, list):
        return None
    total = 0
    for event in events:
        if not isinstance(event, dict):
            return None
        if event.get("type") == "fill" and event.get("order_id") == order_id:
            quantity = event.get("quantity")
            if not isinstance(quantity, int) or quantity <= 0:
                return None
            total += quantity
    return total


def _event(events: Any, kind: str, order_id: Any) -> dict[str, Any] | None:
    for event in events if isinstance(events, list) else ():
        if (
            isinstance(event, dict)
            and event.get("type") == kind
            and event.get("order_id") == order_id
        ):
            return event
    return None


class OrderModel:
    """``linearizability.Model`` of one order (one partition)."""

    def __init__(self, initial: OrderState, self_trade_cancels: bool = False) -> None:
        self.initial = initial
        self.self_trade_cancels = self_trade_cancels

    def init(self) -> OrderState:
        return self.initial

    def observes(self, op: OrderOp) -> bool:
        return op.kind == "read"

    def settled(self, state: OrderState) -> bool:
        # A rejected or finished order: a submit, cancel or replace of it can only be
        # refused, and a read can only confirm it.
        return state.phase not in (ABSENT, LIVE)

    def step(self, state: OrderState, op: OrderOp) -> Iterable[OrderState]:
        handler = getattr(self, "_" + op.kind)
        result: Iterable[OrderState] = handler(state, op)
        return result

    # ------------------------------------------------------------------ helpers

    def _ended_by_others(self, state: OrderState) -> list[OrderState]:
        """States a live order may reach without any operation of its own that ends it."""
        out = [state._replace(phase=FILLED, filled=state.quantity, exact=True)]
        if self.self_trade_cancels:
            out.append(state._replace(phase=CANCELLED, exact=False))
        return out

    def _finished_by_cancel(
        self, state: OrderState, quantity: Any, order_id: Any
    ) -> OrderState | None:
        """A live order cancelled with ``quantity`` still open (then ``filled`` is exact)."""
        if state.phase != LIVE or not isinstance(quantity, int) or not _same_id(state, order_id):
            return None
        filled = state.quantity - quantity
        if quantity <= 0 or filled < state.filled:
            return None
        return state._replace(phase=CANCELLED, order_id=order_id, filled=filled, exact=True)

    # ------------------------------------------------------------------ operations

    def _submit(self, state: OrderState, op: OrderOp) -> list[OrderState]:
        if state.phase != ABSENT:
            return []
        args = op.args
        quantity = state.quantity
        rests = args["order_type"] == "LIMIT" and args["time_in_force"] == "GTC"
        if op.outcome == "fail":
            return [state._replace(phase=REJECTED)]
        if op.outcome == "info":
            out = [
                state._replace(phase=REJECTED),
                state._replace(phase=FILLED, filled=quantity, exact=True),
                state._replace(phase=CANCELLED, exact=False),
            ]
            out.append(
                state._replace(phase=LIVE) if rests else state._replace(phase=EXPIRED, exact=False)
            )
            return out
        answer = op.answer
        order_id = answer.get("order_id")
        status = answer.get("status")
        if not isinstance(status, str):
            return []
        filled = _own_fills(answer.get("events"), order_id)
        if not isinstance(order_id, int) or filled is None or filled > quantity:
            return []
        created = state._replace(order_id=order_id, filled=filled)
        if status in _LIVE_STATUS:
            if not rests or filled >= quantity or (status == "NEW") != (filled == 0):
                return []
            return [created._replace(phase=LIVE)]
        phase = _TERMINAL_STATUS.get(status)
        if phase is None or (phase == FILLED) != (filled == quantity):
            return []
        if args["time_in_force"] == "FOK" and filled not in (0, quantity):
            return []
        return [created._replace(phase=phase, exact=True)]

    def _cancel(self, state: OrderState, op: OrderOp) -> list[OrderState]:
        if op.outcome == "ok":
            answer = op.answer
            order_id = answer.get("order_id")
            event = _event(answer.get("events"), "cancelled", order_id)
            if answer.get("status") != "CANCELLED" or event is None:
                return []
            if not _ref_matches(state, op.args):
                return []
            after = self._finished_by_cancel(state, event.get("quantity"), order_id)
            return [] if after is None else [after]
        live = state.phase == LIVE and _ref_matches(state, op.args)
        if op.outcome == "fail":  # 404: no such live order at that moment
            return self._ended_by_others(state) if live else [state]
        if live:
            return [state._replace(phase=CANCELLED, exact=False)]
        return [state]

    def _mass_cancel(self, state: OrderState, op: OrderOp) -> list[OrderState]:
        if op.outcome == "ok":
            if op.cancelled_quantity is None:
                return self._ended_by_others(state) if state.phase == LIVE else [state]
            after = self._finished_by_cancel(state, op.cancelled_quantity, op.cancelled_order_id)
            return [] if after is None else [after]
        if state.phase == LIVE:
            return [state._replace(phase=CANCELLED, exact=False)]
        return [state]

    def _replace(self, state: OrderState, op: OrderOp) -> list[OrderState]:
        args = op.args
        live = state.phase == LIVE and _ref_matches(state, args)
        new_coid = args["new_client_order_id"]
        price = args["price"]
        quantity = args["quantity"]
        if op.outcome == "info":
            if not live:
                return [state]
            out = [state]  # rejected
            if quantity < state.quantity:  # a total not above what had filled: cancelled
                out.append(state._replace(phase=CANCELLED, client_order_id=new_coid, exact=False))
            replaced = state._replace(client_order_id=new_coid, price=price, quantity=quantity)
            if quantity > state.filled:
                out.append(replaced)
            out.append(replaced._replace(phase=FILLED, filled=quantity, exact=True))
            out.append(replaced._replace(phase=CANCELLED, exact=False))
            return out
        if op.outcome == "fail":
            if op.status == 404:
                return self._ended_by_others(state) if live else [state]
            return [state] if live else []  # rejected (422): it was live then
        if not live:
            return []
        answer = op.answer
        order_id = answer.get("order_id")
        if not _same_id(state, order_id):
            return []
        events = answer.get("events")
        status = answer.get("status")
        replaced_event = _event(events, "replaced", order_id)
        if replaced_event is None:
            # New total not above the filled quantity: the order is cancelled instead.
            cancelled = _event(events, "cancelled", order_id)
            if status != "CANCELLED" or cancelled is None:
                return []
            after = self._finished_by_cancel(state, cancelled.get("quantity"), order_id)
            if after is None or quantity > after.filled:
                return []
            return [after._replace(client_order_id=new_coid)]
        leaves = replaced_event.get("leaves_quantity")
        fills = _own_fills(events, order_id)
        if (
            not isinstance(leaves, int)
            or fills is None
            or replaced_event.get("quantity") != quantity
        ):
            return []
        filled = quantity - leaves + fills
        if quantity - leaves < state.filled or leaves <= 0 or filled > quantity:
            return []
        after = state._replace(
            order_id=order_id,
            client_order_id=new_coid,
            price=price,
            quantity=quantity,
            filled=filled,
        )
        if status in _LIVE_STATUS:
            if filled >= quantity or (status == "NEW") != (filled == 0):
                return []
            return [after]
        if status == "FILLED" and filled == quantity:
            return [after._replace(phase=FILLED, exact=True)]
        if status == "CANCELLED" and filled < quantity:
            return [after._replace(phase=CANCELLED, exact=True)]
        return []

    def _read(self, state: OrderState, op: OrderOp) -> list[OrderState]:
        if op.outcome == "fail":  # 404
            if state.phase in (ABSENT, REJECTED):
                return [state]
            by_coid = op.args.get("client_order_id")
            return [state] if by_coid is not None and by_coid != state.client_order_id else []
        if state.phase in (ABSENT, REJECTED) or not _ref_matches(state, op.args):
            return []
        view = op.answer
        filled = view.get("filled_quantity")
        leaves = view.get("leaves_quantity")
        status = view.get("status")
        if (
            not isinstance(status, str)
            or view.get("client_order_id") != state.client_order_id
            or view.get("price") != state.price
            or view.get("quantity") != state.quantity
            or not _same_id(state, view.get("order_id"))
            or not isinstance(filled, int)
            or not isinstance(leaves, int)
            or filled < state.filled
        ):
            return []
        seen = state._replace(order_id=view.get("order_id"), filled=filled)
        if status in _LIVE_STATUS:
            ok = (
                state.phase == LIVE
                and leaves == state.quantity - filled > 0
                and (status == "NEW") == (filled == 0)
            )
            return [seen] if ok else []
        phase = _TERMINAL_STATUS.get(status)
        if phase is None or leaves != 0:
            return []
        if phase == FILLED:
            ok = filled == state.quantity and state.phase in (LIVE, FILLED)
            return [seen._replace(phase=FILLED, exact=True)] if ok else []
        if filled >= state.quantity:  # cancelled or expired: something was left open
            return []
        if state.phase == phase and (filled == state.filled or not state.exact):
            return [seen._replace(exact=True)]
        if state.phase == LIVE and phase == CANCELLED and self.self_trade_cancels:
            return [seen._replace(phase=CANCELLED, exact=True)]
        return []

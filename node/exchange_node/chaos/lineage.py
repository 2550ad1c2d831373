"""Which operations of a history concern which order.

An order's *lineage* starts at a ``submit`` (the client's order id is its
key) and takes a new client order id with each ``replace``. Operations name
an order by client order id or by order id; order ids are learnt from every
answer and observation that pairs one with a client order id. What is learnt
is kept even when it contradicts itself (one key, two order ids): the
exactly-once check reports that. An acknowledged operation on an order that
no submit accounts for is kept aside as a phantom.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from exchange_node.chaos.history import History, Operation


@dataclass(slots=True)
class Lineage:
    client: str
    key: str
    """The submit's client order id."""
    symbol: str
    submits: list[Operation] = field(default_factory=list)
    client_order_ids: list[str] = field(default_factory=list)
    """The key, then each replace's new client order id, in invocation order."""
    order_ids: dict[int, str] = field(default_factory=dict)
    """Order ids learnt for this lineage -> where from (for reports)."""
    replaces: dict[str, list[Operation]] = field(default_factory=dict)
    """New client order id -> the attempts (retries) of that replace."""
    others: list[Operation] = field(default_factory=list)
    """Cancels and reads that name this order."""
    mass_cancels: list[Operation] = field(default_factory=list)

    @property
    def first_start(self) -> int:
        return min(op.start_ns for op in self.submits)

    def operations(self) -> list[Operation]:
        ops = list(self.submits) + [op for group in self.replaces.values() for op in group]
        ops += self.others + self.mass_cancels
        return sorted(ops, key=lambda op: op.start_ns)


@dataclass(slots=True)
class OrderIndex:
    lineages: list[Lineage] = field(default_factory=list)
    by_key: dict[tuple[str, str], Lineage] = field(default_factory=dict)
    """(client, client order id) -> lineage, for submit keys and replace ids."""
    by_order_id: dict[int, Lineage] = field(default_factory=dict)
    phantoms: list[tuple[Operation, str]] = field(default_factory=list)
    """Acknowledged operations about an order nobody submitted, with why."""
    order_id_clashes: list[tuple[int, Lineage, Lineage]] = field(default_factory=list)
    """One order id claimed by two lineages."""
    unattributed: dict[tuple[str, str], int] = field(default_factory=dict)
    """(client, new client order id) -> order id, of replaces by an order id that no answer
    tied to a submit (the submit's answer was lost): that order is one of the client's
    indeterminate submits, but which one the history cannot tell."""

    def explains(self, client: Any, client_order_id: Any, order_id: Any) -> bool:
        """Is an order with these ids accounted for by something the client invoked?"""
        if (client, client_order_id) in self.by_key:
            return True
        if self.unattributed.get((client, client_order_id)) != order_id:
            return False
        # Some submit of that client must still be free to have created it.
        return any(not other.order_ids for other in self.lineages if other.client == client)


def _pairs_in_answer(op: Operation) -> Iterator[tuple[int, str]]:
    """(order id, client order id) pairs an ok answer states for ``op.client``'s orders."""
    answer = op.answer or {}
    if op.op == "read_order":
        order_id, coid = answer.get("order_id"), answer.get("client_order_id")
        if isinstance(order_id, int) and isinstance(coid, str):
            yield order_id, coid
        return
    if op.op == "submit":
        order_id = answer.get("order_id")
        if isinstance(order_id, int):
            yield order_id, op.args["client_order_id"]
    if op.op == "replace":
        order_id = answer.get("order_id")
        if isinstance(order_id, int):
            yield order_id, op.args["new_client_order_id"]
    events = answer.get("events")
    for event in events if isinstance(events, list) else ():
        if not isinstance(event, dict):
            continue
        order_id = event.get("order_id")
        if not isinstance(order_id, int):
            continue
        for name in ("client_order_id", "old_client_order_id", "new_client_order_id"):
            coid = event.get(name)
            if isinstance(coid, str):
                yield order_id, coid


def build_index(history: History) -> OrderIndex:
    index = OrderIndex()
    ops = history.operations
    for op in ops:
        if op.op != "submit":
            continue
        key = (op.client, op.args["client_order_id"])
        lineage = index.by_key.get(key)
        if lineage is None:
            lineage = Lineage(op.client, key[1], op.args["symbol"])
            lineage.client_order_ids.append(key[1])
            index.by_key[key] = lineage
            index.lineages.append(lineage)
        lineage.submits.append(op)

    def learn(client: str, order_id: int, coid: str, source: str) -> None:
        lineage = index.by_key.get((client, coid))
        if lineage is None:
            return
        lineage.order_ids.setdefault(order_id, source)
        known = index.by_order_id.setdefault(order_id, lineage)
        if known is not lineage and not any(
            clash[0] == order_id for clash in index.order_id_clashes
        ):
            index.order_id_clashes.append((order_id, known, lineage))

    def target(op: Operation) -> Lineage | None:
        args = op.args
        if "client_order_id" in args:
            return index.by_key.get((op.client, args["client_order_id"]))
        if "order_id" in args:
            lineage = index.by_order_id.get(args["order_id"])
            if lineage is not None and lineage.client == op.client:
                return lineage
        return None

    # Replaces name their target by an id that earlier answers (or later reads) reveal:
    # resolve until nothing new is learnt.
    pending_replaces = [op for op in ops if op.op == "replace"]
    progress = True
    while progress:
        progress = False
        for op in ops:
            if op.outcome == "ok":
                for order_id, coid in _pairs_in_answer(op):
                    learn(op.client, order_id, coid, f"operation {op.id}")
        for observation in history.observations:
            for view in observation.orders or ():
                if isinstance(view, dict):
                    seen_id, seen_coid = view.get("order_id"), view.get("client_order_id")
                    client = view.get("client_id")
                    if (
                        isinstance(seen_id, int)
                        and isinstance(seen_coid, str)
                        and isinstance(client, str)
                    ):
                        learn(client, seen_id, seen_coid, f"observation of {observation.node}")
        unresolved = []
        for op in pending_replaces:
            lineage = target(op) or index.by_key.get((op.client, op.args["new_client_order_id"]))
            if lineage is None:
                unresolved.append(op)
                continue
            new = op.args["new_client_order_id"]
            if (op.client, new) not in index.by_key:
                index.by_key[(op.client, new)] = lineage
                lineage.client_order_ids.append(new)
            progress = True
        pending_replaces = unresolved
    for op in pending_replaces:  # in invocation order, so a chain of replaces follows
        named: int | None = op.args.get("order_id")
        if named is None:
            named = index.unattributed.get((op.client, op.args["client_order_id"]))
        if named is not None:
            index.unattributed[(op.client, op.args["new_client_order_id"])] = named

    for op in ops:
        if op.op == "replace":
            lineage = index.by_key.get((op.client, op.args["new_client_order_id"]))
            if lineage is not None:
                lineage.replaces.setdefault(op.args["new_client_order_id"], []).append(op)
            elif op.outcome == "ok" and not any(
                index.explains(op.client, coid, order_id) for order_id, coid in _pairs_in_answer(op)
            ):
                index.phantoms.append((op, "a replace acknowledged for an order never submitted"))
        elif op.op in ("cancel", "read_order"):
            lineage = target(op)
            if lineage is None and op.outcome == "ok":
                lineage = _by_answer(index, op)
                explained = any(
                    index.explains(op.client, coid, order_id)
                    for order_id, coid in _pairs_in_answer(op)
                )
                if lineage is None and not explained:
                    index.phantoms.append((op, f"{op.op} answered for an order never submitted"))
            if lineage is not None:
                lineage.others.append(op)
    for op in ops:
        if op.op != "mass_cancel":
            continue
        symbol = op.args.get("symbol")
        end = op.end_ns
        for lineage in index.lineages:
            if (
                lineage.client == op.client
                and (symbol is None or symbol == lineage.symbol)
                and (end is None or lineage.first_start < end)
            ):
                lineage.mass_cancels.append(op)
        if op.outcome == "ok":
            for order_id, coid in _pairs_in_answer(op):
                if not index.explains(op.client, coid, order_id):
                    index.phantoms.append(
                        (op, f"mass cancel cancelled order {order_id} ({coid!r}), never submitted")
                    )
    return index


def _by_answer(index: OrderIndex, op: Operation) -> Lineage | None:
    for order_id, coid in _pairs_in_answer(op):
        lineage = index.by_key.get((op.client, coid)) or index.by_order_id.get(order_id)
        if lineage is not None and lineage.client == op.client:
            return lineage
    return None


def answer_fills(op: Operation) -> list[dict[str, Any]]:
    """The fill events in an ok answer, each with the client that saw it."""
    if op.outcome != "ok" or op.op not in ("submit", "replace"):
        return []
    events = (op.answer or {}).get("events")
    return [
        {**event, "client_id": op.client}
        for event in (events if isinstance(events, list) else ())
        if isinstance(event, dict) and event.get("type") == "fill" and _well_formed_fill(event)
    ]


def _well_formed_fill(event: dict[str, Any]) -> bool:
    # A malformed fill in an answer is the model's business (it fits no state); here it
    # is left out so that it cannot be mistaken for, or break, the accounting.
    numbers = ("trade_id", "order_id", "price", "quantity")
    return (
        all(
            isinstance(event.get(name), int) and not isinstance(event.get(name), bool)
            for name in numbers
        )
        and isinstance(event.get("symbol"), str)
        and event.get("liquidity") in ("MAKER", "TAKER")
        and event.get("aggressor_side") in ("BUY", "SELL")
    )

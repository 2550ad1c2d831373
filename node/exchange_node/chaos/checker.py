"""Check a chaos history against the exchange's promises; say which held, and show why not.

Checks (each a verdict ``pass``, ``fail`` or ``unknown``, with figures and,
when it fails, the first offending operations):

* ``lost``: every acknowledged order, cancel and fill is in every replica's
  final observed state.
* ``phantom``: nothing appears that was never submitted (orders, fills,
  acknowledged operations on unknown orders).
* ``exactly_once``: every retry of a client order id was applied once: its
  answers agree, and it became at most one order.
* ``linearizability``: each order's lifecycle and every linearizable read
  is linearizable against the order model (``order_model``), per order;
  stale reads may show any earlier state. Linearizable position reads show
  at least the fills acknowledged before they began.
* ``conservation``: every fill has a buyer and a seller at one price and
  quantity; a client's position is the sum of its fills; every order's
  filled + resting + cancelled quantity is its quantity.
* ``convergence``: the replicas agree on applied index and state hash,
  within the time the run states.
* ``availability``: per fault, the time from injection to the first
  acknowledged write invoked after it, and the error rate while it lasted.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from exchange_node.chaos import linearizability
from exchange_node.chaos.history import WRITE_OPS, History, Observation, Operation
from exchange_node.chaos.lineage import Lineage, OrderIndex, answer_fills, build_index
from exchange_node.chaos.order_model import ABSENT, OrderModel, OrderOp, OrderState

MAX_ANOMALIES = 20
"""Anomalies kept per check (all are counted)."""
_STP_CANCELLING_RESTING = ("CANCEL_RESTING", "CANCEL_BOTH")
_TERMINAL = ("FILLED", "CANCELLED", "EXPIRED")


@dataclass(slots=True)
class Anomaly:
    kind: str
    message: str
    operations: list[dict[str, Any]] = field(default_factory=list)
    """The operations (and observed records) that prove it, earliest first."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "operations": self.operations}


@dataclass(slots=True)
class CheckResult:
    name: str
    verdict: str = "pass"
    summary: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    anomalies: list[Anomaly] = field(default_factory=list)
    anomaly_count: int = 0
    unknown_because: list[str] = field(default_factory=list)

    def add(self, kind: str, message: str, operations: Iterable[Any] = ()) -> None:
        self.verdict = "fail"
        self.anomaly_count += 1
        if len(self.anomalies) < MAX_ANOMALIES:
            ops = [op.to_dict() if isinstance(op, Operation) else op for op in operations]
            self.anomalies.append(Anomaly(kind, message, ops))

    def unknown(self, why: str) -> None:
        if self.verdict == "pass":
            self.verdict = "unknown"
        self.unknown_because.append(why)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "figures": self.figures,
            "anomaly_count": self.anomaly_count,
            "anomalies": [anomaly.to_dict() for anomaly in self.anomalies],
            "unknown_because": self.unknown_because,
        }


@dataclass(slots=True)
class Report:
    checks: list[CheckResult]
    stats: dict[str, Any]

    @property
    def verdict(self) -> str:
        verdicts = {check.verdict for check in self.checks}
        return "fail" if "fail" in verdicts else "unknown" if "unknown" in verdicts else "pass"

    def check(self, name: str) -> CheckResult:
        return next(check for check in self.checks if check.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "checks": {check.name: check.to_dict() for check in self.checks},
            "stats": self.stats,
        }


def check_history(history: History, budget: int = linearizability.DEFAULT_BUDGET) -> Report:
    """Run every check; ``budget`` bounds the linearizability search per order."""
    index = build_index(history)
    checks = [
        check_lost(history, index),
        check_phantom(history, index),
        check_exactly_once(history, index),
        check_linearizability(history, index, budget),
        check_conservation(history, index),
        check_convergence(history),
        check_availability(history),
    ]
    return Report(checks, operation_stats(history))


def operation_stats(history: History) -> dict[str, Any]:
    per_op: dict[str, Counter[str]] = defaultdict(Counter)
    for op in history.operations:
        per_op[op.op]["attempted"] += 1
        per_op[op.op][
            {"ok": "acknowledged", "fail": "failed", "info": "indeterminate"}[op.outcome]
        ] += 1
    total: Counter[str] = Counter()
    for counts in per_op.values():
        total.update(counts)
    keys = ("attempted", "acknowledged", "failed", "indeterminate")
    return {
        "operations": {k: total[k] for k in keys},
        "by_op": {op: {k: counts[k] for k in keys} for op, counts in sorted(per_op.items())},
        "faults": len(history.faults),
        "observations": len(history.observations),
    }


# --------------------------------------------------------------------------- helpers


def _observed_orders(observation: Observation) -> dict[int, dict[str, Any]]:
    return {
        view["order_id"]: view
        for view in observation.orders or ()
        if isinstance(view, dict) and isinstance(view.get("order_id"), int)
    }


def _observed(observation: Observation, what: Any) -> dict[str, Any]:
    return {"observation": observation.node, "time_ns": observation.time_ns, "observed": what}


def _fill_side(fill: dict[str, Any]) -> str | None:
    aggressor, liquidity = fill.get("aggressor_side"), fill.get("liquidity")
    if fill.get("side") in ("BUY", "SELL"):
        return str(fill["side"])
    if aggressor not in ("BUY", "SELL") or liquidity not in ("MAKER", "TAKER"):
        return None
    if liquidity == "TAKER":
        return str(aggressor)
    return "SELL" if aggressor == "BUY" else "BUY"


def _cancelled_quantities(op: Operation) -> Iterable[tuple[int, int]]:
    """(order id, quantity) of each cancelled or expired event in an ok answer."""
    events = (op.answer or {}).get("events") if op.outcome == "ok" else None
    for event in events if isinstance(events, list) else ():
        if isinstance(event, dict) and event.get("type") in ("cancelled", "expired"):
            order_id, quantity = event.get("order_id"), event.get("quantity")
            if isinstance(order_id, int) and isinstance(quantity, int):
                yield order_id, quantity


# --------------------------------------------------------------------------- lost


def check_lost(history: History, index: OrderIndex) -> CheckResult:
    result = CheckResult("lost")
    observations = [o for o in history.observations if o.orders is not None]
    if not observations:
        result.unknown("no observation read the orders")
    # (kind, what) -> (what was acknowledged, by which operation, [(replica, what it shows)])
    found: dict[tuple[str, Any], tuple[str, Operation, list[tuple[Observation, Any, str]]]] = {}

    def missing(
        kind: str, key: Any, acked: str, op: Operation, seen: tuple[Observation, Any, str]
    ) -> None:
        found.setdefault((kind, key), (acked, op, []))[2].append(seen)

    acked_fills: Counter[int] = Counter()
    fill_source: dict[int, Operation] = {}
    for op in history.operations:
        for fill in answer_fills(op):
            acked_fills[fill["order_id"]] += fill["quantity"]
            fill_source.setdefault(fill["order_id"], op)
    for observation in observations:
        orders = _observed_orders(observation)
        fills_seen = {(fill["trade_id"], fill["order_id"]) for fill in observation.fills or ()}
        for op in history.operations:
            if op.outcome != "ok":
                continue
            if op.op == "submit":
                order_id = op.answer.get("order_id") if op.answer else None
                if isinstance(order_id, int) and order_id not in orders:
                    acked = f"order {order_id} ({op.client}/{op.args['client_order_id']})"
                    missing("lost order", order_id, acked, op, (observation, None, "missing"))
            if op.op in ("cancel", "mass_cancel"):
                for order_id, _quantity in _cancelled_quantities(op):
                    view = orders.get(order_id)
                    if view is None or view.get("status") != "CANCELLED":
                        shows = "missing" if view is None else str(view.get("status"))
                        acked = f"the cancel of order {order_id}"
                        missing("lost cancel", order_id, acked, op, (observation, view, shows))
            if observation.fills is not None:
                for fill in answer_fills(op):
                    key = (fill["trade_id"], fill["order_id"])
                    if key not in fills_seen:
                        acked = f"fill {key[0]} of order {key[1]}"
                        missing(
                            "lost fill", key, acked, op, (observation, None, "not among its fills")
                        )
        # Acknowledged fills an order view must account for, even without the fills list.
        for order_id, quantity in acked_fills.items():
            view = orders.get(order_id)
            if view is not None and view["filled_quantity"] < quantity:
                acked = f"{quantity} filled of order {order_id}"
                shows = f"{view['filled_quantity']} filled"
                missing(
                    "lost fill",
                    ("filled", order_id),
                    acked,
                    fill_source[order_id],
                    (observation, view, shows),
                )
    for (kind, _key), (acked, op, where) in found.items():
        places = ", ".join(f"{o.node} ({shows})" for o, _view, shows in where)
        result.add(
            kind,
            f"{acked} was acknowledged, but not kept on {places}",
            [op, *(_observed(o, view) for o, view, _shows in where)],
        )
    kinds = Counter(kind for kind, _key in found)
    result.figures = {
        "lost_orders": kinds["lost order"],
        "lost_cancels": kinds["lost cancel"],
        "lost_fills": kinds["lost fill"],
        "observations_checked": len(observations),
    }
    result.summary = f"{result.anomaly_count} acknowledged orders, cancels or fills missing"
    return result


# --------------------------------------------------------------------------- phantom


def check_phantom(history: History, index: OrderIndex) -> CheckResult:
    result = CheckResult("phantom")
    unattributed: dict[str, set[int]] = defaultdict(set)
    for (client, coid), order_id in index.unattributed.items():
        if index.explains(client, coid, order_id):
            unattributed[client].add(order_id)
    for op, why in index.phantoms:
        result.add("phantom operation", why, [op])
    # (kind, what) -> (description, [(replica, record)]): one anomaly however many replicas.
    found: dict[tuple[str, Any], tuple[str, list[tuple[Observation, Any]]]] = {}
    clients = {lineage.client for lineage in index.lineages}
    for observation in history.observations:
        for view in observation.orders or ():
            client, coid, order_id = view["client_id"], view["client_order_id"], view["order_id"]
            if not index.explains(client, coid, order_id):
                what = f"order {order_id} ({client}/{coid})"
                found.setdefault(("phantom order", (client, coid, order_id)), (what, []))[1].append(
                    (observation, view)
                )
        for fill in observation.fills or ():
            order_id, client = fill["order_id"], fill["client_id"]
            lineage = index.by_order_id.get(order_id)
            explained = order_id in unattributed.get(client, ())
            if (lineage is None or lineage.client != client) and not explained:
                what = f"fill {fill['trade_id']} of order {order_id} for {client}"
                key = ("phantom fill", (fill["trade_id"], order_id, client))
                found.setdefault(key, (what, []))[1].append((observation, fill))
        for client, positions in (observation.positions or {}).items():
            if client in clients:
                continue
            for symbol, position in positions.items():
                if any(
                    position.get(name) for name in ("quantity", "bought_quantity", "sold_quantity")
                ):
                    what = f"a position of {client} in {symbol}"
                    key = ("phantom position", (client, symbol))
                    found.setdefault(key, (what, []))[1].append(
                        (observation, {client: {symbol: position}})
                    )
    for (kind, _key), (what, where) in found.items():
        nodes = ", ".join(o.node for o, _record in where)
        result.add(
            kind,
            f"{what}, which nothing submitted accounts for, is on {nodes}",
            [_observed(o, record) for o, record in where],
        )
    result.figures = {"orders_not_attributed": sum(len(ids) for ids in unattributed.values())}
    result.summary = f"{result.anomaly_count} things that were never submitted"
    return result


# --------------------------------------------------------------------------- exactly once


def check_exactly_once(history: History, index: OrderIndex) -> CheckResult:
    result = CheckResult("exactly_once")
    retried = 0

    def agree(ops: list[Operation], what: str) -> None:
        nonlocal retried
        if len(ops) > 1:
            retried += 1
        definite = [op for op in ops if op.outcome == "ok" or op.status in (404, 422)]
        outcomes = {
            (op.outcome, op.status, _answer_identity(op.answer)) for op in definite if op.answer
        }
        if len(outcomes) > 1:
            result.add(
                "duplicate",
                f"retries of {what} got different results: it was applied more than once",
                definite,
            )

    for lineage in index.lineages:
        agree(lineage.submits, f"{lineage.client}/{lineage.key}")
        for coid, attempts in lineage.replaces.items():
            agree(attempts, f"the replace to {lineage.client}/{coid}")
        if len(lineage.order_ids) > 1:
            result.add(
                "duplicate",
                f"{lineage.client}/{lineage.key} became orders "
                f"{sorted(lineage.order_ids)} (learnt from "
                f"{'; '.join(f'{k}: {v}' for k, v in sorted(lineage.order_ids.items()))})",
                lineage.submits,
            )
    for order_id, first, second in index.order_id_clashes:
        result.add(
            "duplicate",
            f"order {order_id} is claimed by {first.client}/{first.key} and "
            f"{second.client}/{second.key}",
            first.submits + second.submits,
        )
    for observation in history.observations:
        seen: dict[tuple[Any, Any], dict[str, Any]] = {}
        for view in observation.orders or ():
            if not isinstance(view, dict):
                continue
            key = (view.get("client_id"), view.get("client_order_id"))
            other = seen.setdefault(key, view)
            if other is not view and other.get("order_id") != view.get("order_id"):
                result.add(
                    "duplicate",
                    f"{observation.node} has two orders with client order id {key[0]}/{key[1]}",
                    [_observed(observation, other), _observed(observation, view)],
                )
    result.figures = {"keys_retried": retried, "duplicates": result.anomaly_count}
    result.summary = f"{retried} retried keys, {result.anomaly_count} applied more than once"
    return result


def _answer_identity(answer: dict[str, Any]) -> str:
    body = answer.get("result", answer)
    if not isinstance(body, dict):
        return repr(body)
    return repr((body.get("order_id"), body.get("log_index"), body.get("status")))


# --------------------------------------------------------------------------- linearizability


def lineage_ops(lineage: Lineage) -> list[linearizability.Op[OrderOp]]:
    """The model's operations for one order (retries collapsed, stale reads unanchored)."""
    ops: list[linearizability.Op[OrderOp]] = []
    keyed: list[tuple[str, list[Operation], tuple[int, ...]]] = [
        ("submit", lineage.submits, (422,))
    ]
    keyed += [("replace", attempts, (404, 422)) for attempts in lineage.replaces.values()]
    for kind, attempts, effective in keyed:
        collapsed = _collapse(kind, attempts, effective)
        if collapsed is not None:
            ops.append(collapsed)
    for op in lineage.others:
        kind = "read" if op.op == "read_order" else "cancel"
        if op.outcome == "fail" and op.status != 404:
            continue  # refused before it reached the order (400, 401, 403, 429)
        if kind == "read" and op.outcome == "info":
            continue  # a read that never answered constrains nothing
        start = 0 if kind == "read" and op.args["consistency"] == "stale" else op.start_ns
        model_op = OrderOp(kind, op.outcome, op.args, op.answer, op.status, (op.id,))
        ops.append(linearizability.Op(start, op.end_ns, model_op))
    # A mass cancel that does not name this order says "it was not live then"; that
    # matters only before an answer showed it finished, and before its last answer.
    horizon = min(_finished_by(ops), max((op.end for op in ops if op.end is not None), default=0))
    unanswered = [op for op in lineage.mass_cancels if op.outcome == "info"]
    if unanswered:
        # Indeterminate mass cancels all do the same to this order, and after one did, the
        # rest can do nothing: the earliest stands for them all (else each subset of them
        # would be searched).
        first = min(unanswered, key=lambda op: op.start_ns)
        ids = tuple(op.id for op in unanswered)
        model_op = OrderOp("mass_cancel", "info", first.args, source=ids)
        ops.append(linearizability.Op(first.start_ns, None, model_op))
    for op in lineage.mass_cancels:
        if op.outcome != "ok":
            continue
        quantity = cancelled_id = None
        for order_id, coid, cancelled in _mass_cancelled(op):
            if order_id in lineage.order_ids or coid in lineage.client_order_ids:
                quantity, cancelled_id = cancelled, order_id
        if quantity is None and op.start_ns > horizon:
            continue
        model_op = OrderOp(
            "mass_cancel",
            op.outcome,
            op.args,
            op.answer,
            op.status,
            (op.id,),
            quantity,
            cancelled_id,
        )
        ops.append(linearizability.Op(op.start_ns, op.end_ns, model_op))
    return ops


def _finished_by(ops: list[linearizability.Op[OrderOp]]) -> float:
    """When an answer had shown the order finished (inf: none did)."""
    ends = [
        op.end
        for op in ops
        if op.end is not None
        and op.input.outcome == "ok"
        and op.input.answer.get("status") in _TERMINAL
    ]
    return min(ends, default=float("inf"))


def _mass_cancelled(op: Operation) -> Iterable[tuple[Any, Any, int]]:
    events = (op.answer or {}).get("events") if op.outcome == "ok" else None
    for event in events if isinstance(events, list) else ():
        if isinstance(event, dict) and event.get("type") == "cancelled":
            quantity = event.get("quantity")
            if isinstance(quantity, int):
                yield event.get("order_id"), event.get("client_order_id"), quantity


def _collapse(
    kind: str, attempts: list[Operation], effective: tuple[int, ...]
) -> linearizability.Op[OrderOp] | None:
    """One model operation for all attempts of one keyed command (exactly-once: applied once)."""
    ok = [op for op in attempts if op.outcome == "ok"]
    failed = [op for op in attempts if op.outcome == "fail" and op.status in effective]
    unknown = [op for op in attempts if op.outcome == "info"]
    chosen = ok or failed
    if not chosen and not unknown:
        return None  # every attempt was refused before it reached the engine
    start = min(op.start_ns for op in (chosen + unknown))
    ids = tuple(op.id for op in attempts)
    if not chosen:
        return linearizability.Op(start, None, OrderOp(kind, "info", attempts[0].args, source=ids))
    first = min(chosen, key=lambda op: op.end_ns or 0)
    model_op = OrderOp(kind, first.outcome, first.args, first.answer, first.status, ids)
    return linearizability.Op(start, first.end_ns, model_op)


def check_linearizability(
    history: History, index: OrderIndex, budget: int = linearizability.DEFAULT_BUDGET
) -> CheckResult:
    result = CheckResult("linearizability")
    by_id = {op.id: op for op in history.operations}
    resting_cancellers = {
        op.client
        for op in history.operations
        if op.op == "submit" and op.args.get("stp") in _STP_CANCELLING_RESTING
    }
    final_views = _final_views(history, index)
    explored = checked_ops = unknown = 0
    for lineage in index.lineages:
        ops = lineage_ops(lineage) + final_views.get(id(lineage), [])
        first = lineage.submits[0].args
        initial = OrderState(ABSENT, None, lineage.key, first["price"], first["quantity"], 0, True)
        model = OrderModel(initial, lineage.client in resting_cancellers)
        verdict = linearizability.check(model, ops, budget)
        explored += verdict.explored
        checked_ops += len(ops)
        if verdict.result == "unknown":
            unknown += 1
            result.unknown(f"{lineage.client}/{lineage.key}: search budget of {budget} spent")
        elif verdict.result == "violation" and verdict.failed is not None:
            failed = ops[verdict.failed]
            before = [op for op in ops if op.end is not None and op.end < failed.start]
            proof = [*before[-6:], failed]
            states = "; ".join(
                s.describe() for s in verdict.states[:4] if isinstance(s, OrderState)
            )
            what = failed.input.kind
            if what == "read" and failed.input.args.get("consistency") == "stale":
                what = "stale read"
            if failed.input.observed_on is not None:
                what = f"final state observed on {failed.input.observed_on}"
            else:
                what = f"{what} answer of operation {failed.input.source[0]}"
            evidence: list[Any] = [by_id[i] for op in proof for i in op.input.source[:1]]
            if failed.input.observed_on is not None:
                evidence.append(
                    {"observation": failed.input.observed_on, "observed": failed.input.answer}
                )
            result.add(
                "not linearizable",
                f"order {lineage.client}/{lineage.key}: the {what} fits no order of "
                f"operations; the order could only be: {states or 'nothing'}",
                evidence,
            )
    position_reads = _check_position_reads(history, result)
    result.figures = {
        "orders": len(index.lineages),
        "operations": checked_ops,
        "configurations_explored": explored,
        "orders_unknown": unknown,
        "position_reads": position_reads,
    }
    result.summary = (
        f"{len(index.lineages)} orders, {result.anomaly_count} not linearizable, {unknown} unknown"
    )
    return result


def _final_views(
    history: History, index: OrderIndex
) -> dict[int, list[linearizability.Op[OrderOp]]]:
    """Each replica's final view of each order, as a linearizable read at the end."""
    out: dict[int, list[linearizability.Op[OrderOp]]] = defaultdict(list)
    for observation in history.observations:
        for view in observation.orders or ():
            lineage = index.by_key.get((view["client_id"], view["client_order_id"]))
            if lineage is None:
                lineage = index.by_order_id.get(view["order_id"])
            if lineage is None or lineage.client != view["client_id"]:
                continue  # the phantom check's business
            args = {"order_id": view["order_id"], "consistency": "linearizable"}
            read = OrderOp("read", "ok", args, view, 200, observed_on=observation.node)
            out[id(lineage)].append(
                linearizability.Op(observation.time_ns, observation.time_ns, read)
            )
    return out


def _check_position_reads(history: History, result: CheckResult) -> int:
    """A linearizable position read shows at least the fills acknowledged before it began."""
    acked: list[tuple[int, str, str, str, int, Operation]] = []
    for op in history.operations:
        end = op.end_ns
        for fill in answer_fills(op):
            side = _fill_side(fill)
            if end is not None and side and isinstance(fill.get("quantity"), int):
                acked.append((end, op.client, str(fill.get("symbol")), side, fill["quantity"], op))
    acked.sort(key=lambda item: item[0])
    reads = [
        op
        for op in history.operations
        if op.op == "read_position"
        and op.outcome == "ok"
        and op.args["consistency"] == "linearizable"
    ]
    for read in reads:
        need: Counter[tuple[str, str]] = Counter()
        witness: dict[tuple[str, str], Operation] = {}
        for end, client, symbol, side, quantity, op in acked:
            if end >= read.start_ns:
                break
            if client == read.client:
                need[(symbol, side)] += quantity
                witness[(symbol, side)] = op
        positions = (read.answer or {}).get("positions")
        positions = positions if isinstance(positions, dict) else {}
        for (symbol, side), quantity in need.items():
            position = positions.get(symbol) or {}
            field_name = "bought_quantity" if side == "BUY" else "sold_quantity"
            shown = position.get(field_name, 0) if isinstance(position, dict) else 0
            if not isinstance(shown, int) or shown < quantity:
                result.add(
                    "stale linearizable read",
                    f"{read.client}'s linearizable position read shows {field_name} {shown} in "
                    f"{symbol}, but {quantity} had been acknowledged before it began",
                    [witness[(symbol, side)], read],
                )
    # Any position read, stale too, shows an earlier state: never more bought or sold
    # than in the end (both only grow).
    finals = [o for o in history.observations if o.positions is not None]
    all_reads = [op for op in history.operations if op.op == "read_position" and op.outcome == "ok"]
    for read in all_reads if finals else ():
        positions = (read.answer or {}).get("positions")
        for symbol, position in (positions if isinstance(positions, dict) else {}).items():
            if not isinstance(position, dict):
                continue
            for field_name in ("bought_quantity", "sold_quantity"):
                shown = position.get(field_name, 0)
                final = min(
                    ((o.positions or {}).get(read.client) or {}).get(symbol, {}).get(field_name, 0)
                    for o in finals
                )
                if not isinstance(shown, int) or shown > final:
                    result.add(
                        "position read that never was",
                        f"{read.client}'s {read.args['consistency']} position read shows "
                        f"{field_name} {shown} in {symbol}, more than the {final} it ends with",
                        [
                            read,
                            *(_observed(o, (o.positions or {}).get(read.client)) for o in finals),
                        ],
                    )
    return len(all_reads)


# --------------------------------------------------------------------------- conservation


def check_conservation(history: History, index: OrderIndex) -> CheckResult:
    result = CheckResult("conservation")
    observations = history.observations
    with_fills = [o for o in observations if o.fills is not None]
    complete = bool(with_fills) and all(o.fills_complete for o in with_fills)
    fills: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    origin: dict[tuple[Any, Any, Any], Any] = {}

    def collect(fill: dict[str, Any], source: Any) -> None:
        key = (fill.get("trade_id"), fill.get("order_id"), fill.get("liquidity"))
        known = fills.setdefault(key, fill)
        origin.setdefault(key, source)
        same = ("symbol", "price", "quantity", "client_id", "aggressor_side")
        if known is not fill and any(known.get(f) != fill.get(f) for f in same):
            result.add(
                "conflicting fill",
                f"fill {key[0]} of order {key[1]} is reported twice, differently",
                [origin[key], source],
            )

    for op in history.operations:
        for fill in answer_fills(op):
            collect(fill, op)
    for observation in with_fills:
        for fill in observation.fills or ():
            if isinstance(fill, dict):
                collect(fill, _observed(observation, fill))

    # Every trade: one buyer and one seller, one symbol, price and quantity.
    trades: dict[Any, list[tuple[dict[str, Any], Any]]] = defaultdict(list)
    for key, fill in fills.items():
        trades[key[0]].append((fill, origin[key]))
    for trade_id, sides in sorted(trades.items(), key=lambda item: repr(item[0])):
        kinds = sorted(str(_fill_side(fill)) for fill, _ in sides)
        terms = {(f.get("symbol"), f.get("price"), f.get("quantity")) for f, _ in sides}
        if len(terms) > 1:
            result.add(
                "fill mismatch",
                f"trade {trade_id}: its sides disagree on symbol, price or quantity: {sorted(terms, key=repr)}",
                [source for _, source in sides],
            )
        elif kinds != ["BUY", "SELL"] and (complete or len(set(kinds)) < len(kinds)):
            result.add(
                "fill without counterparty" if len(sides) == 1 else "fill mismatch",
                f"trade {trade_id} has sides {kinds}, not one buyer and one seller",
                [source for _, source in sides],
            )
    if not complete:
        result.unknown("the fills are not complete: counterparties and positions not checked")

    # A client's position is the sum of its fills.
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for fill in fills.values():
        side, quantity = _fill_side(fill), fill.get("quantity")
        if side and isinstance(quantity, int):
            sums[(str(fill.get("client_id")), str(fill.get("symbol")))][side == "SELL"] += quantity
    for observation in observations:
        if observation.positions is None or not complete:
            continue
        keys = set(sums) | {
            (client, symbol)
            for client, symbols in observation.positions.items()
            for symbol in (symbols or {})
        }
        for client, symbol in sorted(keys):
            bought, sold = sums.get((client, symbol), [0, 0])
            position = (observation.positions.get(client) or {}).get(symbol) or {}
            shown = (
                position.get("bought_quantity", 0),
                position.get("sold_quantity", 0),
                position.get("quantity", 0),
            )
            if shown != (bought, sold, bought - sold):
                result.add(
                    "position is not the sum of fills",
                    f"{observation.node}: {client} in {symbol} shows bought/sold/net {shown}, "
                    f"its fills add up to {(bought, sold, bought - sold)}",
                    [_observed(observation, {client: {symbol: position}})],
                )

    # Every order: filled + resting + cancelled = quantity.
    filled_by_order: Counter[Any] = Counter()
    for fill in fills.values():
        if isinstance(fill.get("quantity"), int):
            filled_by_order[fill.get("order_id")] += fill["quantity"]
    closed: dict[int, tuple[int, Operation]] = {}
    for op in history.operations:
        if op.op in ("cancel", "mass_cancel", "submit", "replace"):
            for order_id, quantity in _cancelled_quantities(op):
                closed.setdefault(order_id, (quantity, op))
    orders_checked = 0
    for observation in observations:
        for order_id, view in _observed_orders(observation).items():
            orders_checked += 1
            problem = _order_arithmetic(view, filled_by_order.get(order_id) if complete else None)
            if (
                problem is None
                and order_id in closed
                and view.get("status") in ("CANCELLED", "EXPIRED")
            ):
                quantity, op = closed[order_id]
                left = view.get("quantity", 0) - view.get("filled_quantity", 0)
                if quantity != left:
                    problem = (
                        f"was acknowledged cancelled/expired with {quantity} open, shows {left}"
                    )
                    result.add(
                        "order quantities do not add up",
                        f"{observation.node}: order {order_id} {problem}",
                        [op, _observed(observation, view)],
                    )
                    continue
            if problem is not None:
                result.add(
                    "order quantities do not add up",
                    f"{observation.node}: order {order_id}: {problem}",
                    [_observed(observation, view)],
                )
    result.figures = {
        "trades": len(trades),
        "fills": len(fills),
        "fills_complete": complete,
        "orders_checked": orders_checked,
    }
    result.summary = (
        f"{len(trades)} trades, {orders_checked} order views, {result.anomaly_count} anomalies"
    )
    return result


def _order_arithmetic(view: dict[str, Any], fills: int | None) -> str | None:
    quantity, filled = view.get("quantity"), view.get("filled_quantity")
    leaves, status = view.get("leaves_quantity"), view.get("status")
    if not all(isinstance(v, int) for v in (quantity, filled, leaves)):
        return "quantity, filled_quantity or leaves_quantity missing"
    assert isinstance(quantity, int) and isinstance(filled, int) and isinstance(leaves, int)
    if filled < 0 or leaves < 0:
        return f"negative quantities: filled {filled}, leaves {leaves}"
    cancelled = quantity - filled - leaves if status in ("CANCELLED", "EXPIRED") else 0
    if filled + leaves + cancelled != quantity:
        return f"filled {filled} + resting {leaves} + cancelled {cancelled} != quantity {quantity}"
    if status in _TERMINAL and leaves:
        return f"{status} with {leaves} still resting"
    if status == "FILLED" and filled != quantity:
        return f"FILLED with only {filled} of {quantity} filled"
    if status in ("CANCELLED", "EXPIRED") and cancelled <= 0:
        return f"{status} with nothing left to cancel"
    if status in ("NEW", "PARTIALLY_FILLED") and (
        leaves <= 0 or (status == "NEW") != (filled == 0)
    ):
        return f"{status} with filled {filled}, resting {leaves}"
    if fills is not None and fills != filled:
        return f"filled_quantity {filled} but its fills add up to {fills}"
    return None


# --------------------------------------------------------------------------- convergence


def check_convergence(history: History) -> CheckResult:
    result = CheckResult("convergence")
    observations = history.observations
    if not observations:
        result.unknown("no observation records")
        result.summary = "no observations"
        return result
    states = {(o.applied_index, o.state_hash) for o in observations}
    if len(states) > 1:
        result.add(
            "divergence",
            f"replicas disagree: {len(states)} different (applied index, state hash) pairs",
            [
                {
                    "observation": o.node,
                    "time_ns": o.time_ns,
                    "applied_index": o.applied_index,
                    "state_hash": o.state_hash,
                }
                for o in observations
            ],
        )
    ends = [f.end_ns for f in history.faults if f.end_ns is not None]
    healed = max(ends) if ends else None
    converged_ns = max(o.time_ns for o in observations) - healed if healed is not None else None
    stated = [o.converge_within_ns for o in observations if o.converge_within_ns is not None]
    within = min(stated) if stated else history.meta.converge_within_ns if history.meta else None
    if converged_ns is not None and within is not None and converged_ns > within:
        result.add(
            "slow convergence",
            f"the replicas were observed {converged_ns / 1e9:.3f} s after the last fault ended, "
            f"promised within {within / 1e9:.3f} s",
            [],
        )
    if any(f.end_ns is None for f in history.faults):
        result.unknown("a fault never ended: no time to converge from")
    result.figures = {
        "replicas": len(observations),
        "agree": len(states) == 1,
        "applied_index": sorted({o.applied_index for o in observations}),
        "converged_after_heal_ns": converged_ns,
        "converge_within_ns": within,
    }
    result.summary = (
        f"{len(observations)} replicas, {'agree' if len(states) == 1 else 'DIVERGE'}"
        + (f", {converged_ns / 1e9:.3f} s after healing" if converged_ns is not None else "")
    )
    return result


# --------------------------------------------------------------------------- availability


def check_availability(history: History) -> CheckResult:
    result = CheckResult("availability")
    ops = history.operations
    last = max(
        [op.complete.time_ns for op in ops if op.complete] + [op.start_ns for op in ops] or [0]
    )
    figures: list[dict[str, Any]] = []
    for fault in history.faults:
        end = fault.end_ns if fault.end_ns is not None else last
        first_ack = min(
            (
                op.end_ns
                for op in ops
                if op.op in WRITE_OPS
                and op.outcome == "ok"
                and op.start_ns >= fault.start_ns
                and op.end_ns is not None
            ),
            default=None,
        )
        during = [
            op
            for op in ops
            if fault.start_ns <= (op.complete.time_ns if op.complete else last) <= end
        ]
        errors = sum(op.outcome == "info" for op in during)
        entry = {
            "fault": fault.name,
            "nodes": fault.nodes,
            "start_ns": fault.start_ns,
            "end_ns": fault.end_ns,
            "unavailable_ns": None if first_ack is None else first_ack - fault.start_ns,
            "operations": len(during),
            "errors": errors,
            "error_rate": errors / len(during) if during else 0.0,
        }
        figures.append(entry)
        attempted = any(op.op in WRITE_OPS and op.start_ns >= end for op in ops)
        if first_ack is None and not attempted:
            result.unknown(f"no write was attempted after fault {fault.name!r} ended")
        elif first_ack is None:
            result.add(
                "never recovered",
                f"no write was acknowledged after fault {fault.name!r} began, "
                "though writes were attempted after it ended",
                [{"fault": fault.name, "start_ns": fault.start_ns, "end_ns": fault.end_ns}],
            )
    gaps = [f["unavailable_ns"] for f in figures if f["unavailable_ns"] is not None]
    result.figures = {
        "faults": figures,
        "median_unavailable_ns": statistics.median(gaps) if gaps else None,
        "max_unavailable_ns": max(gaps) if gaps else None,
    }
    result.summary = f"{len(figures)} faults" + (
        f", unavailable median {statistics.median(gaps) / 1e6:.1f} ms, max {max(gaps) / 1e6:.1f} ms"
        if gaps
        else ""
    )
    return result

"""Valid histories made from the real engine, then "concurrentised".

A seeded random workload is applied one command at a time to a real
``Engine`` (the sequential model: what it answers is, by definition, right),
each answer shaped exactly as the API shapes it. Step ``k`` takes effect at
time ``10_000 * k``; its operation is then given a random window around that
instant (invoked before, completed after), so operations of different
processes overlap while the engine's order stays a valid linearization. Some
operations become indeterminate (the answer is dropped, or the request never
reached the engine), some are retried with the same client order id, stale
reads answer an earlier state. At the end, every replica is observed.

Whatever this produces must pass every check; ``plant`` then adds exactly one
anomaly of a named kind, which must be caught.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from exchange_node.api.present import own_fill, result_answer
from exchange_node.chaos.history import (
    Complete,
    Fault,
    Invoke,
    Observation,
    Record,
    record_to_dict,
)
from exchange_node.engine import AddSymbol, Engine
from exchange_node.engine.commands import (
    Cancel,
    CancelReplace,
    MassCancel,
    NewOrder,
    OrderType,
    SelfTradeMode,
    Side,
    TimeInForce,
)
from exchange_node.engine.events import Fill

SYMBOLS = ("AAA", "BBB")
STEP_NS = 10_000
NODES = ("n1", "n2", "n3")


@dataclass
class Generated:
    records: list[Record]
    seed: int
    trades: int = 0
    facts: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        import json

        return [json.dumps(record_to_dict(r)) for r in self.records]


class _Gen:
    def __init__(self, seed: int, clients: int, info_rate: float, stale_rate: float) -> None:
        self.rng = random.Random(seed)
        self.engine = Engine(
            [
                AddSymbol(s, tick_size=1, lot_size=1, price_band_bps=0, reference_price=100)
                for s in SYMBOLS
            ]
        )
        self.clients = [f"c{i}" for i in range(clients)]
        self.info_rate = info_rate
        self.stale_rate = stale_rate
        self.records: list[Record] = []
        self.next_id = 0
        self.log_index = 0
        self.step = 0
        self.free_at: dict[str, int] = {}
        """process -> when its last operation completed (None: still outstanding)."""
        self.processes: dict[str, list[str]] = {c: [] for c in self.clients}
        self.coids: dict[str, list[str]] = {c: [] for c in self.clients}
        self.live_coids: dict[str, list[str]] = {c: [] for c in self.clients}
        self.order_ids: dict[str, list[int]] = {c: [] for c in self.clients}
        self.views: dict[int, list[dict[str, Any]]] = {}
        """Every state each order has been in, in order (for stale reads)."""
        self.unanswered: list[tuple[str, str, dict[str, Any], Any]] = []
        """(client, op, args, command) of indeterminate keyed commands, to retry."""
        self.fills: list[dict[str, Any]] = []
        self.counter = 0

    # ---------------------------------------------------------------- plumbing

    def process_for(self, client: str, start: int) -> str:
        for process in self.processes[client]:
            if self.free_at[process] < start:
                return process
        process = f"{client}-p{len(self.processes[client])}"
        self.processes[client].append(process)
        self.free_at[process] = -1
        return process

    def record(
        self,
        client: str,
        op: str,
        args: dict[str, Any],
        outcome: str,
        status: int | None,
        answer: dict[str, Any] | None,
    ) -> None:
        point = STEP_NS * (self.step + 1)
        self.step += 1
        start = point - self.rng.randrange(1, 3 * STEP_NS)
        process = self.process_for(client, start)
        end = point + self.rng.randrange(1, 3 * STEP_NS)
        op_id = self.next_id
        self.next_id += 1
        node = self.rng.choice(NODES)
        self.records.append(Invoke(op_id, start, process, client, node, op, args))
        if outcome == "info":
            self.records.append(Complete(op_id, end, process, "info", 504, None, "timeout"))
        else:
            self.records.append(Complete(op_id, end, process, outcome, status, answer))
        self.free_at[process] = end

    def apply(self, command: Any) -> Any:
        self.log_index += 1
        result = self.engine.apply(command, self.log_index, 1_000 + self.log_index)
        touched: set[int] = set()
        for event in result.events:
            if isinstance(event, Fill):
                touched.update((event.maker_order_id, event.taker_order_id))
                self.fills.append(
                    own_fill(event, event.taker_order_id, "TAKER")
                    | {"client_id": event.taker_client_id}
                )
                self.fills.append(
                    own_fill(event, event.maker_order_id, "MAKER")
                    | {"client_id": event.maker_client_id}
                )
            elif getattr(event, "order_id", None) is not None:
                touched.add(event.order_id)
        for order_id in touched:
            view = self.engine.order(order_id)
            if view is not None:
                self.views.setdefault(order_id, []).append(view.to_dict())
        return result

    def write(self, client: str, op: str, args: dict[str, Any], command: Any, keyed: bool) -> None:
        roll = self.rng.random()
        if roll < self.info_rate / 2:
            # Lost on the way: never applied, and the client does not know.
            self.record(client, op, args, "info", None, None)
            if keyed:
                self.unanswered.append((client, op, args, command))
            return
        result = self.apply(command)
        status, body = result_answer(result, client)
        if roll < self.info_rate:
            self.record(client, op, args, "info", None, None)
            if keyed:
                self.unanswered.append((client, op, args, command))
        else:
            self.record(client, op, args, "ok" if status == 200 else "fail", status, body)
        if result.order_id is not None and result.order_id not in self.order_ids[client]:
            self.order_ids[client].append(result.order_id)

    # ---------------------------------------------------------------- operations

    def new_coid(self, client: str) -> str:
        self.counter += 1
        coid = f"{client}-{self.counter}"
        self.coids[client].append(coid)
        return coid

    def submit(self, client: str) -> None:
        rng = self.rng
        kind = rng.choices(["LIMIT-GTC", "LIMIT-IOC", "LIMIT-FOK", "MARKET-IOC"], [6, 1, 1, 1])[0]
        order_type, tif = kind.split("-")
        price = 0 if order_type == "MARKET" else rng.randint(97, 103)
        args: dict[str, Any] = {
            "symbol": rng.choice(SYMBOLS),
            "side": rng.choice(["BUY", "SELL"]),
            "quantity": rng.randint(1, 5),
            "price": price,
            "order_type": order_type,
            "time_in_force": tif,
            "client_order_id": self.new_coid(client),
        }
        stp = rng.choices(["CANCEL_INCOMING", "CANCEL_RESTING", "CANCEL_BOTH"], [8, 1, 1])[0]
        if stp != "CANCEL_INCOMING" or rng.random() < 0.1:
            args["stp"] = stp
        command = NewOrder(
            client,
            args["client_order_id"],
            args["symbol"],
            Side[args["side"]],
            OrderType[order_type],
            TimeInForce[tif],
            price,
            args["quantity"],
            False,
            SelfTradeMode[args.get("stp", "CANCEL_INCOMING")],
        )
        self.write(client, "submit", args, command, keyed=True)

    def ref(self, client: str) -> dict[str, Any] | None:
        if self.rng.random() < 0.5 and self.order_ids[client]:
            return {"order_id": self.rng.choice(self.order_ids[client])}
        if self.coids[client]:
            return {"client_order_id": self.rng.choice(self.coids[client])}
        return None

    def cancel(self, client: str) -> None:
        ref = self.ref(client)
        if ref is None:
            return self.submit(client)
        command = Cancel(client, ref.get("order_id"), ref.get("client_order_id"))
        self.write(client, "cancel", ref, command, keyed=False)

    def replace(self, client: str) -> None:
        ref = self.ref(client)
        if ref is None:
            return self.submit(client)
        args = ref | {
            "new_client_order_id": self.new_coid(client),
            "price": self.rng.randint(97, 103),
            "quantity": self.rng.randint(1, 6),
        }
        command = CancelReplace(
            client,
            ref.get("order_id"),
            ref.get("client_order_id"),
            args["new_client_order_id"],
            args["price"],
            args["quantity"],
        )
        self.write(client, "replace", args, command, keyed=True)

    def mass_cancel(self, client: str) -> None:
        symbol = self.rng.choice([None, *SYMBOLS])
        self.write(
            client, "mass_cancel", {"symbol": symbol}, MassCancel(client, symbol), keyed=False
        )

    def retry(self) -> None:
        client, op, args, command = self.unanswered.pop(self.rng.randrange(len(self.unanswered)))
        self.write(client, op, args, command, keyed=True)

    def read_order(self, client: str) -> None:
        ref = self.ref(client)
        if ref is None:
            return self.submit(client)
        stale = self.rng.random() < self.stale_rate
        args = ref | {"consistency": "stale" if stale else "linearizable"}
        if "order_id" in ref:
            view = self.engine.order(ref["order_id"])
        else:
            view = self.engine.order_by_client_id(client, ref["client_order_id"])
        answer = None if view is None else view.to_dict()
        if stale and answer is not None:
            # Any earlier state of this order, or not there yet.
            earlier = self.views.get(answer["order_id"], [])
            choice = self.rng.randrange(len(earlier) + 1)
            answer = earlier[choice] if choice < len(earlier) else None
            if (
                answer is not None
                and "client_order_id" in ref
                and answer["client_order_id"] != ref["client_order_id"]
            ):
                answer = None
        if self.rng.random() < self.info_rate / 2:
            self.record(client, "read_order", args, "info", None, None)
        elif answer is None:
            body = {"error": {"code": "not_found", "message": "no order", "field": "order_id"}}
            self.record(client, "read_order", args, "fail", 404, body)
        else:
            self.record(client, "read_order", args, "ok", 200, answer)

    def read_position(self, client: str) -> None:
        stale = self.rng.random() < self.stale_rate
        positions = {s: p.to_dict() for s, p in self.engine.positions(client).items()}
        answer = {"client_id": client, "positions": positions}
        args = {"consistency": "stale" if stale else "linearizable"}
        if stale:
            # Stale position reads are not checked beyond their shape; answer the current one.
            pass
        self.record(client, "read_position", args, "ok", 200, answer)

    # ---------------------------------------------------------------- run

    def run(self, steps: int) -> list[Record]:
        actions = [self.submit] * 5 + [self.cancel] * 2 + [self.replace] * 2 + [self.read_order] * 3
        actions += [self.mass_cancel, self.read_position]
        for _ in range(steps):
            if self.unanswered and self.rng.random() < 0.3:
                self.retry()
                continue
            self.rng.choice(actions)(self.rng.choice(self.clients))
        last = STEP_NS * (self.step + 4)
        # A fault window that some acknowledged write follows (else unavailability is real).
        ok_writes = [
            r.time_ns
            for r in self.records
            if isinstance(r, Invoke)
            and r.op in ("submit", "cancel", "replace", "mass_cancel")
            and any(
                isinstance(c, Complete) and c.id == r.id and c.outcome == "ok" for c in self.records
            )
        ]
        if ok_writes:
            fault_start = max(ok_writes) - self.rng.randrange(0, 10 * STEP_NS)
            self.records.append(
                Fault("partition", fault_start, fault_start + 5 * STEP_NS, ["n1"], {})
            )
        orders = []
        for order_id in range(1, self.engine.state.next_order_id):
            view = self.engine.order(order_id)
            if view is not None:
                orders.append(view.to_dict())
        positions = {
            client: {s: p.to_dict() for s, p in self.engine.positions(client).items()}
            for client in self.clients
        }
        for n, node in enumerate(NODES):
            self.records.append(
                Observation(
                    node,
                    last + n,
                    self.log_index,
                    self.engine.state_hash(),
                    positions,
                    orders,
                    list(self.fills),
                )
            )
        return self.records


def generate(
    seed: int, steps: int = 60, clients: int = 3, info_rate: float = 0.15, stale_rate: float = 0.3
) -> Generated:
    gen = _Gen(seed, clients, info_rate, stale_rate)
    records = gen.run(steps)
    return Generated(records, seed, trades=len(gen.fills) // 2)

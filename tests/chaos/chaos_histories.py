"""Hand-made histories: a builder and API-shaped answers, and one small valid story."""

from __future__ import annotations

import copy
import json
from typing import Any

from exchange_node.chaos.history import History, read_history

TRADE = (3 << 24) | 0


class Builder:
    """Records in file order; each new time is 10 ns after the last unless given."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.time = 0
        self.next_id = 0

    def tick(self, time_ns: int | None) -> int:
        self.time = self.time + 10 if time_ns is None else time_ns
        return self.time

    def invoke(
        self,
        client: str,
        op: str,
        args: dict[str, Any],
        *,
        process: str | None = None,
        node: str = "n1",
        at: int | None = None,
    ) -> int:
        op_id = self.next_id
        self.next_id += 1
        self.records.append(
            {
                "type": "invoke",
                "id": op_id,
                "time_ns": self.tick(at),
                "process": process or client,
                "client": client,
                "node": node,
                "op": op,
                "args": args,
            }
        )
        return op_id

    def complete(
        self,
        op_id: int,
        outcome: str,
        answer: dict[str, Any] | None = None,
        *,
        status: int | None = None,
        at: int | None = None,
    ) -> None:
        invoke = next(r for r in self.records if r["type"] == "invoke" and r["id"] == op_id)
        record: dict[str, Any] = {
            "type": "complete",
            "id": op_id,
            "time_ns": self.tick(at),
            "process": invoke["process"],
            "outcome": outcome,
        }
        if status is None and outcome != "info":
            status = 200 if outcome == "ok" else 404
        if status is not None:
            record["status"] = status
        if answer is not None:
            record["answer"] = answer
        if outcome == "info":
            record["error"] = "timeout"
        self.records.append(record)

    def op(
        self,
        client: str,
        op: str,
        args: dict[str, Any],
        outcome: str,
        answer: dict[str, Any] | None = None,
        *,
        status: int | None = None,
        process: str | None = None,
    ) -> int:
        op_id = self.invoke(client, op, args, process=process)
        self.complete(op_id, outcome, answer, status=status)
        return op_id

    def fault(self, name: str, start: int, end: int | None, nodes: list[str]) -> None:
        self.records.append(
            {"type": "fault", "name": name, "start_ns": start, "end_ns": end, "nodes": nodes}
        )

    def observe(self, node: str, applied: int, state_hash: str, **fields: Any) -> None:
        self.records.append(
            {
                "type": "observation",
                "node": node,
                "time_ns": self.tick(None),
                "applied_index": applied,
                "state_hash": state_hash,
                **fields,
            }
        )

    def observations(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == "observation"]

    def lines(self) -> list[str]:
        return [json.dumps(record) for record in self.records]

    def history(self) -> History:
        return read_history(self.lines())

    def copy(self) -> Builder:
        return copy.deepcopy(self)


def submit_args(
    coid: str, side: str, quantity: int, price: int, order_type: str = "LIMIT", tif: str = "GTC"
) -> dict[str, Any]:
    return {
        "symbol": "AAA",
        "side": side,
        "quantity": quantity,
        "price": price,
        "order_type": order_type,
        "time_in_force": tif,
        "client_order_id": coid,
    }


def accepted(order_id: int, client: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "accepted",
        "order_id": order_id,
        "client_id": client,
        "client_order_id": args["client_order_id"],
        "symbol": "AAA",
        "side": args["side"],
        "order_type": args["order_type"],
        "time_in_force": args["time_in_force"],
        "price": args["price"],
        "quantity": args["quantity"],
        "timestamp_ns": 1,
    }


def fill(
    trade_id: int, order_id: int, quantity: int, price: int, aggressor: str, liquidity: str
) -> dict[str, Any]:
    return {
        "type": "fill",
        "trade_id": trade_id,
        "order_id": order_id,
        "symbol": "AAA",
        "price": price,
        "quantity": quantity,
        "aggressor_side": aggressor,
        "liquidity": liquidity,
        "timestamp_ns": 1,
    }


def cancelled(order_id: int, client: str, coid: str, quantity: int) -> dict[str, Any]:
    return {
        "type": "cancelled",
        "order_id": order_id,
        "client_id": client,
        "client_order_id": coid,
        "symbol": "AAA",
        "quantity": quantity,
        "reason": "REQUESTED",
    }


def view(
    order_id: int, client: str, args: dict[str, Any], filled: int, leaves: int, status: str
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "client_id": client,
        "client_order_id": args["client_order_id"],
        "symbol": "AAA",
        "side": args["side"],
        "order_type": args["order_type"],
        "time_in_force": args["time_in_force"],
        "price": args["price"],
        "quantity": args["quantity"],
        "filled_quantity": filled,
        "leaves_quantity": leaves,
        "status": status,
        "post_only": False,
        "stp": "CANCEL_INCOMING",
    }


def position(quantity: int, bought: int, sold: int) -> dict[str, Any]:
    return {
        "quantity": quantity,
        "open_cost": 100 * quantity,
        "realised_pnl": 0,
        "bought_quantity": bought,
        "sold_quantity": sold,
        "open_buy_quantity": 0,
        "open_sell_quantity": 0,
    }


ALICE_SELL = submit_args("a-1", "SELL", 3, 100)
BOB_BUY = submit_args("b-1", "BUY", 2, 0, "MARKET", "IOC")


class Story:
    """Alice rests 3 @ 100, Bob's market buy takes 2, Alice cancels the last 1, all read back.

    ``ids`` names each operation; ``builder`` can be edited before ``finish`` adds the
    observations of three agreeing replicas.
    """

    def __init__(self) -> None:
        b = self.builder = Builder()
        self.ids: dict[str, int] = {}
        self.ids["alice_submit"] = b.op(
            "alice",
            "submit",
            ALICE_SELL,
            "ok",
            {
                "log_index": 2,
                "order_id": 1,
                "status": "NEW",
                "events": [accepted(1, "alice", ALICE_SELL)],
            },
        )
        self.ids["bob_submit"] = b.op(
            "bob",
            "submit",
            BOB_BUY,
            "ok",
            {
                "log_index": 3,
                "order_id": 2,
                "status": "FILLED",
                "events": [accepted(2, "bob", BOB_BUY), fill(TRADE, 2, 2, 100, "BUY", "TAKER")],
            },
        )
        self.ids["alice_read"] = b.op(
            "alice",
            "read_order",
            {"order_id": 1, "consistency": "linearizable"},
            "ok",
            view(1, "alice", ALICE_SELL, 2, 1, "PARTIALLY_FILLED"),
        )
        self.ids["alice_cancel"] = b.op(
            "alice",
            "cancel",
            {"client_order_id": "a-1"},
            "ok",
            {
                "log_index": 4,
                "order_id": 1,
                "status": "CANCELLED",
                "events": [cancelled(1, "alice", "a-1", 1)],
            },
        )
        self.ids["alice_read_after"] = b.op(
            "alice",
            "read_order",
            {"client_order_id": "a-1", "consistency": "linearizable"},
            "ok",
            view(1, "alice", ALICE_SELL, 2, 0, "CANCELLED"),
        )
        self.ids["bob_position"] = b.op(
            "bob",
            "read_position",
            {"consistency": "linearizable"},
            "ok",
            {"client_id": "bob", "positions": {"AAA": position(2, 2, 0)}},
        )
        self.orders = [
            view(1, "alice", ALICE_SELL, 2, 0, "CANCELLED"),
            view(2, "bob", BOB_BUY, 2, 0, "FILLED"),
        ]
        self.positions = {"alice": {"AAA": position(-2, 0, 2)}, "bob": {"AAA": position(2, 2, 0)}}
        self.fills = [
            fill(TRADE, 2, 2, 100, "BUY", "TAKER") | {"client_id": "bob"},
            fill(TRADE, 1, 2, 100, "BUY", "MAKER") | {"client_id": "alice"},
        ]

    def finish(self) -> Builder:
        for node in ("n1", "n2", "n3"):
            self.builder.observe(
                node,
                4,
                "h4",
                positions=copy.deepcopy(self.positions),
                orders=copy.deepcopy(self.orders),
                fills=copy.deepcopy(self.fills),
            )
        return self.builder

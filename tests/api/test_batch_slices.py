"""A full batch never holds the event loop for more than one slice of its orders.

Issue 12's fairness bound: a client at its limit must not push another's p99
beyond 2x. Each piece of a batch request that runs without giving the loop
back delays every other client's request by that much, so a batch checks,
converts, answers and encodes its orders ``API_BATCH_YIELD_EVERY`` at a time.
Counted in orders handled between two turns of a ticker task, not in time:
the bound holds on a loaded machine as on a quiet one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from api_fakes import ALICE, far_ioc_sell
from exchange_node.api import jsonio, orders, schema
from exchange_node.api.orders import OrderEntry
from exchange_node.limits import API_BATCH_YIELD_EVERY

JSON = {"Content-Type": "application/json"}


def order(k: int, **over: Any) -> dict[str, Any]:
    return far_ioc_sell(f"s-{k}", **over)


async def test_a_full_batch_gives_the_loop_back_every_slice(make_client, monkeypatch):
    client, _service = await make_client(max_batch=500)
    handled = {"schema": 0, "command": 0, "answer": 0, "encoded": 0}

    validate = schema.ObjectSchema.validate

    def counted_validate(self: Any, value: Any, prefix: str = "") -> Any:
        if prefix.startswith("orders["):
            handled["schema"] += 1
        return validate(self, value, prefix)

    command = OrderEntry.new_order_command

    def counted_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        handled["command"] += 1
        return command(self, *args, **kwargs)

    answer = orders.result_answer

    def counted_answer(*args: Any) -> Any:
        handled["answer"] += 1
        return answer(*args)

    dumps = jsonio.dumps

    def counted_dumps(value: Any) -> bytes:
        if isinstance(value, list):
            handled["encoded"] += len(value)
        elif isinstance(value, dict) and isinstance(value.get("results"), list):
            handled["encoded"] += len(value["results"])
        return dumps(value)

    monkeypatch.setattr(schema.ObjectSchema, "validate", counted_validate)
    monkeypatch.setattr(OrderEntry, "new_order_command", counted_command)
    monkeypatch.setattr(orders, "result_answer", counted_answer)
    monkeypatch.setattr(jsonio, "dumps", counted_dumps)

    # Orders handled between two turns of the ticker: one turn of the loop each.
    per_turn: list[int] = []
    done = False

    async def ticker() -> None:
        seen = 0
        while not done:
            now = sum(handled.values())
            per_turn.append(now - seen)
            seen = now
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        body = jsonio.dumps({"orders": [order(k) for k in range(500)]})
        resp = await client.post("/v1/orders/batch", data=body, headers={**ALICE, **JSON})
        answer_body = await resp.read()
    finally:
        done = True
        await task
    assert resp.status == 200, answer_body
    assert len(jsonio.loads(answer_body)["results"]) == 500
    # Every order was checked, converted, answered and encoded (the counts are live) ...
    assert handled == {"schema": 500, "command": 500, "answer": 500, "encoded": 500}
    # ... and never more than one slice of them in one turn of the loop.
    assert max(per_turn) <= API_BATCH_YIELD_EVERY, sorted(per_turn)[-5:]


@pytest.mark.parametrize("n", [1, 99, 100, 101, 250, 500])
async def test_the_sliced_answer_is_the_same_bytes(n):
    results: list[dict[str, Any]] = []
    for k in range(n):
        if k % 7 == 3:
            results.append(
                {
                    "status": 422,
                    "error": {"code": "x", "message": "ünïcode \u2028", "field": None},
                    "result": {"log_index": k, "order_id": None, "events": []},
                }
            )
        else:
            results.append({"log_index": k, "order_id": k, "status": "FILLED", "events": []})
    body = {"results": results}
    assert await OrderEntry.encode_batch_answer(body) == jsonio.dumps(body)


async def test_a_schema_error_late_in_a_batch_is_named_before_an_earlier_format_error(api):
    # The array's schema is checked for every order before any order's format: the
    # first problem named is the same as when the whole array was checked at once.
    client, service = api
    batch = [order(k) for k in range(300)]
    batch[3]["price"] = 59_001  # off tick: a format error (the command's check)
    batch[250]["side"] = "SIDEWAYS"  # a schema error
    resp = await client.post("/v1/orders/batch", json={"orders": batch}, headers=ALICE)
    body = await resp.json()
    assert resp.status == 400
    assert body["error"]["field"] == "orders[250].side"
    batch[250]["side"] = "SELL"
    resp = await client.post("/v1/orders/batch", json={"orders": batch}, headers=ALICE)
    body = await resp.json()
    assert resp.status == 400
    assert body["error"]["field"] == "orders[3].price"
    assert service.submitted == []  # nothing of a refused batch reached the log

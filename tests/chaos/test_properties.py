"""Property tests: histories made from the real engine pass; one planted anomaly is caught.

``chaos_generate`` runs a seeded workload through the real engine and gives
every operation an overlapping time window around the instant it took effect,
with indeterminate outcomes, retries and stale reads. Such a history is
correct by construction, so any failed check is a false alarm. ``plant`` then
adds exactly one anomaly; the check that owns it must fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chaos_generate import generate
from exchange_node.chaos.checker import check_history
from exchange_node.chaos.history import read_history
from hypothesis import assume, given, settings
from hypothesis import strategies as st

Records = list[dict[str, Any]]


def as_dicts(seed: int, **options: Any) -> Records:
    return [json.loads(line) for line in generate(seed, **options).lines()]


def check(records: Records):
    return check_history(read_history([json.dumps(r) for r in records]))


def _ops(records: Records) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    completes = {r["id"]: r for r in records if r["type"] == "complete"}
    return [
        (r, completes[r["id"]]) for r in records if r["type"] == "invoke" and r["id"] in completes
    ]


def _acked(records: Records, op: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(i, c) for i, c in _ops(records) if i["op"] == op and c["outcome"] == "ok"]


def _append_op(records: Records, client: str, op: str, args, outcome, answer, status=200) -> None:
    last = max(r.get("time_ns", 0) for r in records)
    op_id = max(r["id"] for r in records if r["type"] == "invoke") + 1
    process = f"planted-{op_id}"
    records.append(
        {
            "type": "invoke",
            "id": op_id,
            "time_ns": last + 10,
            "process": process,
            "client": client,
            "node": "n1",
            "op": op,
            "args": args,
        }
    )
    records.append(
        {
            "type": "complete",
            "id": op_id,
            "time_ns": last + 20,
            "process": process,
            "outcome": outcome,
            "status": status,
            "answer": answer,
        }
    )


def _observations(records: Records) -> Records:
    return [r for r in records if r["type"] == "observation"]


def plant_lost_order(records: Records, pick: int) -> bool:
    acked = _acked(records, "submit")
    if not acked:
        return False
    order_id = acked[pick % len(acked)][1]["answer"]["order_id"]
    for obs in _observations(records):
        obs["orders"] = [o for o in obs["orders"] if o["order_id"] != order_id]
    return True


def plant_lost_cancel(records: Records, pick: int) -> bool:
    acked = [(i, c) for i, c in _acked(records, "cancel")]
    if not acked:
        return False
    order_id = acked[pick % len(acked)][1]["answer"]["order_id"]
    for obs in _observations(records):
        for view in obs["orders"]:
            if view["order_id"] == order_id:
                view["status"] = "EXPIRED"
    return True


def plant_lost_fill(records: Records, pick: int) -> bool:
    taker = [
        (i["client"], e["trade_id"])
        for i, c in _acked(records, "submit")
        for e in c["answer"]["events"]
        if e["type"] == "fill"
    ]
    if not taker:
        return False
    client, trade_id = taker[pick % len(taker)]
    for obs in _observations(records):
        obs["fills"] = [
            f for f in obs["fills"] if (f["client_id"], f["trade_id"]) != (client, trade_id)
        ]
    return True


def plant_duplicate(records: Records, pick: int) -> bool:
    acked = _acked(records, "submit")
    if not acked:
        return False
    invoke, complete = acked[pick % len(acked)]
    answer = dict(complete["answer"], order_id=10_000, log_index=10_000)
    _append_op(records, invoke["client"], "submit", invoke["args"], "ok", answer)
    return True


def plant_phantom(records: Records, pick: int) -> bool:
    obs = _observations(records)[pick % 3]
    obs["orders"].append(
        {
            "order_id": 10_000,
            "client_id": "c0",
            "client_order_id": "ghost",
            "symbol": "AAA",
            "side": "BUY",
            "order_type": "LIMIT",
            "time_in_force": "GTC",
            "price": 100,
            "quantity": 1,
            "filled_quantity": 0,
            "leaves_quantity": 1,
            "status": "NEW",
            "post_only": False,
            "stp": "CANCEL_INCOMING",
        }
    )
    return True


def plant_stale_linearizable_read(records: Records, pick: int) -> bool:
    acked = _acked(records, "submit")
    if not acked:
        return False
    invoke, complete = acked[pick % len(acked)]
    args = {"order_id": complete["answer"]["order_id"], "consistency": "linearizable"}
    body = {"error": {"code": "not_found", "message": "no order", "field": "order_id"}}
    _append_op(records, invoke["client"], "read_order", args, "fail", body, status=404)
    return True


def plant_impossible_cancel(records: Records, pick: int) -> bool:
    filled = [(i, c) for i, c in _acked(records, "submit") if c["answer"]["status"] == "FILLED"]
    if not filled:
        return False
    invoke, complete = filled[pick % len(filled)]
    order_id = complete["answer"]["order_id"]
    event = {
        "type": "cancelled",
        "order_id": order_id,
        "client_id": invoke["client"],
        "client_order_id": invoke["args"]["client_order_id"],
        "symbol": invoke["args"]["symbol"],
        "quantity": 1,
        "reason": "REQUESTED",
    }
    answer = {"log_index": 10_000, "order_id": order_id, "status": "CANCELLED", "events": [event]}
    _append_op(records, invoke["client"], "cancel", {"order_id": order_id}, "ok", answer)
    return True


def plant_fill_without_counterparty(records: Records, pick: int) -> bool:
    makers = sorted(
        {f["trade_id"] for f in _observations(records)[0]["fills"] if f["liquidity"] == "MAKER"}
    )
    if not makers:
        return False
    trade_id = makers[pick % len(makers)]
    for obs in _observations(records):
        obs["fills"] = [
            f for f in obs["fills"] if (f["trade_id"], f["liquidity"]) != (trade_id, "MAKER")
        ]
    return True


def plant_position(records: Records, pick: int) -> bool:
    obs = _observations(records)[pick % 3]
    client = sorted(obs["positions"])[pick % len(obs["positions"])]
    symbols = obs["positions"][client]
    if not symbols:
        symbols["AAA"] = {"quantity": 0, "bought_quantity": 0, "sold_quantity": 0}
    symbol = sorted(symbols)[0]
    symbols[symbol]["bought_quantity"] += 1
    symbols[symbol]["quantity"] += 1
    return True


def plant_corrupted_final_state(records: Records, pick: int) -> bool:
    orders = _observations(records)[pick % 3]["orders"]
    if not orders:
        return False
    orders[pick % len(orders)]["price"] += 1
    return True


def plant_divergence(records: Records, pick: int) -> bool:
    _observations(records)[pick % 3]["state_hash"] += "-diverged"
    return True


PLANTS: dict[str, tuple[Callable[[Records, int], bool], str]] = {
    "lost order": (plant_lost_order, "lost"),
    "lost cancel": (plant_lost_cancel, "lost"),
    "lost fill": (plant_lost_fill, "lost"),
    "duplicate": (plant_duplicate, "exactly_once"),
    "phantom": (plant_phantom, "phantom"),
    "stale linearizable read": (plant_stale_linearizable_read, "linearizability"),
    "impossible cancel": (plant_impossible_cancel, "linearizability"),
    "fill without counterparty": (plant_fill_without_counterparty, "conservation"),
    "position": (plant_position, "conservation"),
    "divergence": (plant_divergence, "convergence"),
    "corrupted final state": (plant_corrupted_final_state, "linearizability"),
}

options = st.fixed_dictionaries(
    {
        "steps": st.integers(5, 120),
        "clients": st.integers(1, 5),
        "info_rate": st.sampled_from([0.0, 0.1, 0.3, 0.6]),
        "stale_rate": st.sampled_from([0.0, 0.3, 0.8]),
    }
)


@settings(max_examples=250, derandomize=True, deadline=None)
@given(st.integers(0, 2**32), options)
def test_valid_histories_pass(seed, opts):
    report = check(as_dicts(seed, **opts))
    assert report.verdict == "pass", json.dumps(
        {c.name: c.to_dict() for c in report.checks if c.verdict != "pass"}, indent=1
    )[:4000]


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.integers(0, 2**32), options, st.sampled_from(sorted(PLANTS)), st.integers(0, 1000))
def test_one_planted_anomaly_is_caught(seed, opts, kind, pick):
    records = as_dicts(seed, **opts)
    plant, owner = PLANTS[kind]
    assume(plant(records, pick))
    report = check(records)
    assert report.check(owner).verdict == "fail", (kind, report.check(owner).to_dict())
    assert report.check(owner).anomalies[0].operations


def test_every_plant_applies_somewhere():
    """Each planted kind finds a place in some small history (else the property is vacuous)."""
    for kind, (plant, _owner) in PLANTS.items():
        assert any(plant(as_dicts(seed, steps=80), seed) for seed in range(20)), kind

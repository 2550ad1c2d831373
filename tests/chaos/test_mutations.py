"""The checker fails when its own code is broken: each planted bug blinds it to an anomaly.

For each mutation of the checker, the hand-made anomaly it should catch goes
unseen (the check passes), so the matching test in ``test_anomalies`` turns
red; unmutated, the same history fails that check. This is the checker's
own "show that it fails", run on every test run.
"""

from __future__ import annotations

import pytest
from chaos_histories import ALICE_SELL, TRADE, Story, accepted, cancelled, fill, submit_args, view
from exchange_node.chaos import checker, order_model
from exchange_node.chaos.checker import check_history


def impossible_cancel():
    story = Story()
    b = story.builder
    buy = submit_args("c-1", "BUY", 1, 100)
    answer = {
        "log_index": 5,
        "order_id": 3,
        "status": "FILLED",
        "events": [accepted(3, "carol", buy), fill(TRADE + 1, 3, 1, 100, "BUY", "TAKER")],
    }
    b.op("carol", "submit", buy, "ok", answer)
    b.op(
        "carol",
        "cancel",
        {"order_id": 3},
        "ok",
        {
            "log_index": 6,
            "order_id": 3,
            "status": "CANCELLED",
            "events": [cancelled(3, "carol", "c-1", 1)],
        },
    )
    return story.finish()


def stale_linearizable_read():
    story = Story()
    story.builder.op(
        "alice",
        "read_order",
        {"order_id": 1, "consistency": "linearizable"},
        "ok",
        view(1, "alice", ALICE_SELL, 2, 1, "PARTIALLY_FILLED"),
    )
    return story.finish()


def divergence():
    builder = Story().finish()
    builder.observations()[2]["state_hash"] = "other"
    return builder


def cancel_from_any_phase(monkeypatch):
    def finished_by_cancel(self, state, quantity, order_id):
        return state._replace(phase=order_model.CANCELLED, exact=True)

    monkeypatch.setattr(order_model.OrderModel, "_finished_by_cancel", finished_by_cancel)


def every_read_stale(monkeypatch):
    original = checker.lineage_ops

    def lineage_ops(lineage):
        return [
            op if op.input.kind != "read" else type(op)(0, op.end, op.input)
            for op in original(lineage)
        ]

    monkeypatch.setattr(checker, "lineage_ops", lineage_ops)


def hash_ignored(monkeypatch):
    original = checker.check_convergence

    def check_convergence(history):
        for observation in history.observations:
            object.__setattr__(observation, "state_hash", "same")
        return original(history)

    monkeypatch.setattr(checker, "check_convergence", check_convergence)


@pytest.mark.parametrize(
    ("mutation", "history", "check"),
    [
        (cancel_from_any_phase, impossible_cancel, "linearizability"),
        (every_read_stale, stale_linearizable_read, "linearizability"),
        (hash_ignored, divergence, "convergence"),
    ],
)
def test_a_planted_bug_in_the_checker_hides_the_anomaly(monkeypatch, mutation, history, check):
    assert check_history(history().history()).check(check).verdict == "fail"
    mutation(monkeypatch)
    report = check_history(history().history())
    assert report.check(check).verdict == "pass"

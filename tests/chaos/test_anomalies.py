"""Hand-made histories: each anomaly is reported, with the operations that prove it.

The valid story (``chaos_histories.Story``) passes every check; each test
plants one anomaly in it and expects exactly the check that should see it to
fail, naming the operations involved.
"""

from __future__ import annotations

from chaos_histories import (
    ALICE_SELL,
    BOB_BUY,
    TRADE,
    Story,
    accepted,
    cancelled,
    fill,
    position,
    submit_args,
    view,
)
from exchange_node.chaos.checker import Report, check_history


def run(builder) -> Report:
    return check_history(builder.history())


def failed_checks(report: Report) -> set[str]:
    return {check.name for check in report.checks if check.verdict == "fail"}


def op_ids(report: Report, check: str) -> list[list[int]]:
    return [
        [op["id"] for op in anomaly.operations if "id" in op]
        for anomaly in report.check(check).anomalies
    ]


def test_the_story_passes_every_check():
    report = run(Story().finish())
    assert report.verdict == "pass", report.to_dict()
    assert report.stats["operations"] == {
        "attempted": 6,
        "acknowledged": 6,
        "failed": 0,
        "indeterminate": 0,
    }
    assert report.check("conservation").figures["trades"] == 1


def test_lost_acknowledged_order():
    story = Story()
    builder = story.finish()
    for observation in builder.observations():
        observation["orders"] = [o for o in observation["orders"] if o["order_id"] != 2]
    report = run(builder)
    assert failed_checks(report) == {"lost"}
    anomaly = report.check("lost").anomalies[0]
    assert anomaly.kind == "lost order"
    assert anomaly.message == (
        "order 2 (bob/b-1) was acknowledged, but not kept on n1 (missing), n2 (missing), "
        "n3 (missing)"
    )
    assert anomaly.operations[0]["id"] == story.ids["bob_submit"]
    assert [op["observation"] for op in anomaly.operations[1:]] == ["n1", "n2", "n3"]
    assert report.check("lost").figures["lost_orders"] == 1


def test_lost_acknowledged_cancel():
    story = Story()
    story.orders[0] = view(1, "alice", ALICE_SELL, 2, 1, "PARTIALLY_FILLED")
    report = run(story.finish())
    assert "lost" in failed_checks(report)
    kinds = {a.kind for a in report.check("lost").anomalies}
    assert kinds == {"lost cancel"}
    assert op_ids(report, "lost")[0] == [story.ids["alice_cancel"]]


def test_lost_acknowledged_fill():
    story = Story()
    story.orders[1] = view(2, "bob", BOB_BUY, 1, 0, "EXPIRED")
    report = run(story.finish())
    assert "lost" in failed_checks(report)
    assert any(
        a.kind == "lost fill"
        and a.message.startswith(
            "2 filled of order 2 was acknowledged, but not kept on n1 (1 filled)"
        )
        for a in report.check("lost").anomalies
    )


def test_retry_applied_twice_is_a_duplicate():
    story = Story()
    b = story.builder
    retry = b.op(
        "bob",
        "submit",
        BOB_BUY,
        "ok",
        {
            "log_index": 5,
            "order_id": 3,
            "status": "EXPIRED",
            "events": [accepted(3, "bob", BOB_BUY)],
        },
    )
    report = run(story.finish())
    assert "exactly_once" in failed_checks(report)
    check = report.check("exactly_once")
    assert check.figures["duplicates"] >= 1
    assert [story.ids["bob_submit"], retry] in op_ids(report, "exactly_once")
    assert any("became orders [2, 3]" in a.message for a in check.anomalies)


def test_observed_order_never_submitted_is_a_phantom():
    story = Story()
    ghost = submit_args("ghost-1", "BUY", 1, 99)
    story.orders.append(view(7, "carol", ghost, 0, 1, "NEW"))
    report = run(story.finish())
    assert failed_checks(report) == {"phantom"}
    anomaly = report.check("phantom").anomalies[0]
    assert anomaly.kind == "phantom order"
    assert anomaly.message == (
        "order 7 (carol/ghost-1), which nothing submitted accounts for, is on n1, n2, n3"
    )
    assert len(report.check("phantom").anomalies) == 1


def test_acknowledged_operation_on_an_order_never_submitted_is_a_phantom():
    story = Story()
    story.builder.op(
        "alice",
        "cancel",
        {"order_id": 9},
        "ok",
        {
            "log_index": 5,
            "order_id": 9,
            "status": "CANCELLED",
            "events": [cancelled(9, "alice", "zz", 1)],
        },
    )
    report = run(story.finish())
    assert "phantom" in failed_checks(report)
    assert report.check("phantom").anomalies[0].message.startswith("cancel answered for an order")


def test_stale_linearizable_read():
    story = Story()
    stale_view = view(1, "alice", ALICE_SELL, 2, 1, "PARTIALLY_FILLED")
    read = story.builder.op(
        "alice", "read_order", {"order_id": 1, "consistency": "linearizable"}, "ok", stale_view
    )
    report = run(story.finish())
    assert failed_checks(report) == {"linearizability"}
    anomaly = report.check("linearizability").anomalies[0]
    assert anomaly.kind == "not linearizable"
    assert f"read answer of operation {read}" in anomaly.message
    assert "CANCELLED" in anomaly.message  # what the order could only be
    ids = op_ids(report, "linearizability")[0]
    assert ids[-1] == read and story.ids["alice_cancel"] in ids


def test_the_same_read_marked_stale_is_allowed():
    story = Story()
    stale_view = view(1, "alice", ALICE_SELL, 2, 1, "PARTIALLY_FILLED")
    story.builder.op(
        "alice", "read_order", {"order_id": 1, "consistency": "stale"}, "ok", stale_view
    )
    story.builder.op(
        "alice",
        "read_order",
        {"order_id": 1, "consistency": "stale"},
        "fail",
        {"error": {"code": "not_found"}},
        status=404,
    )
    assert run(story.finish()).verdict == "pass"


def test_stale_read_of_a_state_that_never_was_is_caught():
    story = Story()
    # Alice's order was cancelled with 1 open: it was never filled in full.
    never = view(1, "alice", ALICE_SELL, 3, 0, "FILLED")
    read = story.builder.op(
        "alice", "read_order", {"order_id": 1, "consistency": "stale"}, "ok", never
    )
    report = run(story.finish())
    assert failed_checks(report) == {"linearizability"}
    assert "stale read answer of operation" in report.check("linearizability").anomalies[0].message
    assert op_ids(report, "linearizability")[0][-1] == read


def test_impossible_cancel_after_an_acknowledged_full_fill():
    story = Story()
    b = story.builder
    carol_buy = submit_args("c-1", "BUY", 1, 100)
    submit = b.op(
        "carol",
        "submit",
        carol_buy,
        "ok",
        {
            "log_index": 5,
            "order_id": 3,
            "status": "FILLED",
            "events": [accepted(3, "carol", carol_buy), fill(TRADE + 1, 3, 1, 100, "BUY", "TAKER")],
        },
    )
    cancel = b.op(
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
    report = run(story.finish())
    assert "linearizability" in failed_checks(report)
    anomaly = report.check("linearizability").anomalies[0]
    assert f"the cancel answer of operation {cancel}" in anomaly.message
    assert "FILLED" in anomaly.message
    assert op_ids(report, "linearizability")[0][-2:] == [submit, cancel]


def test_fill_without_counterparty():
    story = Story()
    story.fills = [f for f in story.fills if f["client_id"] != "alice"]
    story.positions["alice"] = {}
    story.orders[0] = view(1, "alice", ALICE_SELL, 0, 0, "CANCELLED")
    report = run(story.finish())
    assert "conservation" in failed_checks(report)
    anomaly = report.check("conservation").anomalies[0]
    assert anomaly.kind == "fill without counterparty"
    assert f"trade {TRADE} has sides ['BUY']" in anomaly.message
    assert anomaly.operations[0]["id"] == story.ids["bob_submit"]


def test_position_that_is_not_the_sum_of_fills():
    story = Story()
    builder = story.finish()
    builder.observations()[1]["positions"]["bob"]["AAA"] = position(3, 3, 0)
    report = run(builder)
    assert failed_checks(report) == {"conservation"}
    anomaly = report.check("conservation").anomalies[0]
    assert anomaly.kind == "position is not the sum of fills"
    assert "n2: bob in AAA shows bought/sold/net (3, 0, 3), its fills add up to (2, 0, 2)" in (
        anomaly.message
    )


def test_order_whose_quantities_do_not_add_up():
    story = Story()
    story.orders[1] = view(2, "bob", BOB_BUY, 2, 1, "FILLED")
    report = run(story.finish())
    assert "conservation" in failed_checks(report)
    assert any(
        "FILLED with 1 still resting" in a.message or "!= quantity" in a.message
        for a in report.check("conservation").anomalies
    )


def test_divergence():
    builder = Story().finish()
    builder.observations()[2]["state_hash"] = "h4-other"
    report = run(builder)
    assert failed_checks(report) == {"convergence"}
    anomaly = report.check("convergence").anomalies[0]
    assert anomaly.kind == "divergence"
    assert [o["state_hash"] for o in anomaly.operations] == ["h4", "h4", "h4-other"]


def test_slow_convergence_against_the_stated_time():
    story = Story()
    story.builder.records.insert(0, {"type": "meta", "converge_within_ns": 5})
    story.builder.fault("kill", 1, 20, ["n1"])
    report = run(story.finish())
    assert failed_checks(report) == {"convergence"}
    assert report.check("convergence").anomalies[0].kind == "slow convergence"
    # The observations may carry the stated time themselves.
    story = Story()
    story.builder.fault("kill", 1, 20, ["n1"])
    builder = story.finish()
    for observation in builder.observations():
        observation["converge_within_ns"] = 5
    report = run(builder)
    assert failed_checks(report) == {"convergence"}
    assert report.check("convergence").figures["converge_within_ns"] == 5


def test_concurrent_and_indeterminate_operations_pass():
    """Bob's buy times out and is retried; a cancel times out and did not happen; reads overlap."""
    story = Story()
    b = story.builder
    dave_buy = submit_args("d-1", "BUY", 1, 100)
    answer = {
        "log_index": 5,
        "order_id": 3,
        "status": "NEW",
        "events": [accepted(3, "dave", dave_buy)],
    }
    first = b.invoke("dave", "submit", dave_buy, process="d0")
    read = b.invoke(
        "dave",
        "read_order",
        {"client_order_id": "d-1", "consistency": "linearizable"},
        process="d1",
    )
    b.complete(first, "info")  # timed out; it did take effect
    b.complete(read, "ok", view(3, "dave", dave_buy, 0, 1, "NEW"))
    b.op("dave", "submit", dave_buy, "ok", answer, process="d0")  # the retry: same result
    cancel = b.invoke("dave", "cancel", {"order_id": 3}, process="d0")
    b.complete(cancel, "info")  # never reached the leader
    lost_cancel = b.invoke("dave", "cancel", {"client_order_id": "nope"}, process="d2")
    b.complete(lost_cancel, "info")
    b.op(
        "dave",
        "read_order",
        {"order_id": 3, "consistency": "linearizable"},
        "ok",
        view(3, "dave", dave_buy, 0, 1, "NEW"),
        process="d1",
    )
    story.orders.append(view(3, "dave", dave_buy, 0, 1, "NEW"))
    report = run(story.finish())
    assert report.verdict == "pass", [a.to_dict() for c in report.checks for a in c.anomalies]
    assert report.stats["operations"]["indeterminate"] == 3
    assert report.check("exactly_once").figures["keys_retried"] == 1


def test_indeterminate_cancel_may_have_taken_effect():
    story = Story()
    b = story.builder
    dave_buy = submit_args("d-1", "BUY", 1, 99)
    b.op(
        "dave",
        "submit",
        dave_buy,
        "ok",
        {"log_index": 5, "order_id": 3, "status": "NEW", "events": [accepted(3, "dave", dave_buy)]},
    )
    cancel = b.invoke("dave", "cancel", {"order_id": 3})
    b.complete(cancel, "info")
    b.op(
        "dave",
        "read_order",
        {"order_id": 3, "consistency": "linearizable"},
        "ok",
        view(3, "dave", dave_buy, 0, 0, "CANCELLED"),
    )
    story.orders.append(view(3, "dave", dave_buy, 0, 0, "CANCELLED"))
    assert run(story.finish()).verdict == "pass"


def test_availability_figures_per_fault():
    story = Story()
    b = story.builder
    b.fault("partition", 15, 45, ["n1"])
    report = run(story.finish())
    check = report.check("availability")
    assert check.verdict == "pass"
    [fault] = check.figures["faults"]
    # Bob's submit was invoked at 30 and acknowledged at 40: 25 ns after the fault began.
    assert fault["unavailable_ns"] == 40 - 15
    assert fault["operations"] == 2 and fault["errors"] == 0  # completed at 20 and 40
    assert check.figures["max_unavailable_ns"] == 25


def test_a_fault_after_which_no_write_was_acknowledged():
    story = Story()
    b = story.builder
    b.fault("kill-all", 100, 200, ["n1", "n2", "n3"])
    retry = b.invoke("bob", "submit", submit_args("b-2", "BUY", 1, 100), at=300)
    b.complete(retry, "info", at=5_300)  # attempted after the fault ended: timed out
    report = run(story.finish())
    assert failed_checks(report) == {"availability"}
    assert report.check("availability").anomalies[0].kind == "never recovered"
    [fault] = report.check("availability").figures["faults"]
    assert fault["unavailable_ns"] is None


def test_a_fault_with_no_write_after_it_is_unknown():
    story = Story()
    story.builder.fault("kill-all", 10_000, None, ["n1", "n2", "n3"])
    report = run(story.finish())
    assert report.check("availability").verdict == "unknown"
    assert report.check("convergence").verdict == "unknown"  # no heal to measure from


def test_an_order_known_only_by_a_replace_of_an_unanswered_submit_is_not_a_phantom():
    """Dave's submit times out; he replaces order 3 by id (he saw it on his stream); both lost."""
    story = Story()
    b = story.builder
    dave_buy = submit_args("d-1", "BUY", 1, 99)
    b.complete(b.invoke("dave", "submit", dave_buy), "info")
    replace = {"order_id": 3, "new_client_order_id": "d-2", "price": 98, "quantity": 1}
    b.complete(b.invoke("dave", "replace", replace), "info")
    replaced = dict(dave_buy, client_order_id="d-2", price=98)
    story.orders.append(view(3, "dave", replaced, 0, 1, "NEW"))
    report = run(story.finish())
    assert report.verdict == "pass", report.check("phantom").to_dict()
    assert report.check("phantom").figures["orders_not_attributed"] == 1
    # Without an unanswered submit to account for it, the same order is a phantom.
    story = Story()
    story.builder.complete(story.builder.invoke("dave", "replace", replace), "info")
    story.orders.append(view(3, "dave", replaced, 0, 1, "NEW"))
    assert failed_checks(run(story.finish())) == {"phantom"}


def test_filled_quantity_going_backwards_is_not_linearizable():
    story = Story()
    read = story.builder.op(
        "alice",
        "read_order",
        {"order_id": 1, "consistency": "linearizable"},
        "ok",
        view(1, "alice", ALICE_SELL, 1, 2, "PARTIALLY_FILLED"),
        process="alice-2",
    )
    # Move it before the cancel (right after the first read, which showed 2 filled).
    records = story.builder.records
    moved = records[-2:]
    del records[-2:]
    records[6:6] = moved
    for n, record in enumerate(records):
        record["time_ns"] = 10 * (n + 1)
    report = run(story.finish())
    assert failed_checks(report) == {"linearizability"}
    assert op_ids(report, "linearizability")[0][-2:] == [story.ids["alice_read"], read]


def test_a_retry_answered_differently_is_a_duplicate():
    """The retry was rejected as a duplicate client order id: the key was applied twice."""
    story = Story()
    rejected = {
        "error": {"code": "duplicate_client_order_id", "field": "client_order_id"},
        "result": {"log_index": 5, "order_id": None, "status": "REJECTED", "events": []},
    }
    retry = story.builder.op("bob", "submit", BOB_BUY, "fail", rejected, status=422)
    report = run(story.finish())
    assert "exactly_once" in failed_checks(report)
    assert op_ids(report, "exactly_once")[0] == [story.ids["bob_submit"], retry]


def test_a_stale_position_read_showing_more_than_ever_happened():
    story = Story()
    read = story.builder.op(
        "bob",
        "read_position",
        {"consistency": "stale"},
        "ok",
        {"client_id": "bob", "positions": {"AAA": position(3, 3, 0)}},
    )
    report = run(story.finish())
    assert failed_checks(report) == {"linearizability"}
    anomaly = report.check("linearizability").anomalies[0]
    assert anomaly.kind == "position read that never was"
    assert "bought_quantity 3 in AAA, more than the 2 it ends with" in anomaly.message
    assert anomaly.operations[0]["id"] == read


def test_a_linearizable_position_read_missing_an_acknowledged_fill():
    story = Story()
    read = story.builder.op(
        "bob",
        "read_position",
        {"consistency": "linearizable"},
        "ok",
        {"client_id": "bob", "positions": {}},
    )
    report = run(story.finish())
    assert failed_checks(report) == {"linearizability"}
    anomaly = report.check("linearizability").anomalies[0]
    assert anomaly.kind == "stale linearizable read"
    assert [op["id"] for op in anomaly.operations] == [story.ids["bob_submit"], read]


def test_a_final_state_that_contradicts_the_history():
    """One replica reports Alice's cancelled order at another price: arithmetic alone is fine."""
    builder = Story().finish()
    corrupted = builder.observations()[1]["orders"][0]
    corrupted["price"] = 101
    report = run(builder)
    assert failed_checks(report) == {"linearizability"}
    anomaly = report.check("linearizability").anomalies[0]
    assert "the final state observed on n2 fits no order of operations" in anomaly.message
    assert anomaly.operations[-1] == {"observation": "n2", "observed": corrupted}

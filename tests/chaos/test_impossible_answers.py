"""Answers that no state of the order could give, each found by planting a bug the suite missed."""

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


def kinds(report: Report, check: str) -> list[str]:
    return [a.kind for a in report.check(check).anomalies]


def not_linearizable(story: Story) -> list[int]:
    """The ids of the operations the linearizability anomaly names (it must be the only one)."""
    report = run(story.finish())
    assert kinds(report, "linearizability") == ["not linearizable"], report.to_dict()
    return [
        op["id"] for op in report.check("linearizability").anomalies[0].operations if "id" in op
    ]


def test_a_cancel_that_leaves_open_more_than_was_left():
    story = Story()
    # Alice's read showed 2 of 3 filled; a cancel cannot then find all 3 open.
    cancel_ok = story.builder.records[7]["answer"]
    cancel_ok["events"] = [cancelled(1, "alice", "a-1", 3)]
    story.builder.records[9]["answer"] = view(1, "alice", ALICE_SELL, 0, 0, "CANCELLED")
    story.orders[0] = view(1, "alice", ALICE_SELL, 0, 0, "CANCELLED")
    assert story.ids["alice_cancel"] in not_linearizable(story)


def test_an_ioc_order_answered_as_resting():
    story = Story()
    ioc = submit_args("c-1", "BUY", 1, 99, tif="IOC")
    story.builder.op(
        "carol",
        "submit",
        ioc,
        "ok",
        {"log_index": 5, "order_id": 3, "status": "NEW", "events": [accepted(3, "carol", ioc)]},
    )
    assert not_linearizable(story)[-1] == story.builder.next_id - 1


def test_a_fill_or_kill_order_partly_filled():
    story = Story()
    fok = submit_args("c-1", "BUY", 2, 100, tif="FOK")
    story.builder.op(
        "carol",
        "submit",
        fok,
        "ok",
        {
            "log_index": 5,
            "order_id": 3,
            "status": "EXPIRED",
            "events": [accepted(3, "carol", fok), fill(TRADE + 1, 3, 1, 100, "BUY", "TAKER")],
        },
    )
    assert not_linearizable(story)[-1] == story.builder.next_id - 1


def test_a_replace_of_a_cancelled_order_rejected_instead_of_unknown():
    story = Story()
    replace = {"client_order_id": "a-1", "new_client_order_id": "a-2", "price": 101, "quantity": 3}
    refused = {"error": {"code": "price_band"}, "result": {"log_index": 5, "status": "REJECTED"}}
    story.builder.op("alice", "replace", replace, "fail", refused, status=422)
    ids = not_linearizable(story)
    assert ids[-1] == story.builder.next_id - 1 and story.ids["alice_cancel"] in ids


def test_a_replace_that_unfills_an_order():
    story = Story()
    b = story.builder
    dave_buy = submit_args("d-1", "BUY", 3, 99)
    b.op(
        "dave",
        "submit",
        dave_buy,
        "ok",
        {"log_index": 5, "order_id": 3, "status": "NEW", "events": [accepted(3, "dave", dave_buy)]},
    )
    b.op(
        "dave",
        "read_order",
        {"order_id": 3, "consistency": "linearizable"},
        "ok",
        view(3, "dave", dave_buy, 1, 2, "PARTIALLY_FILLED"),
    )
    replace = {"order_id": 3, "new_client_order_id": "d-2", "price": 99, "quantity": 3}
    replaced = {
        "type": "replaced",
        "order_id": 3,
        "client_id": "dave",
        "old_client_order_id": "d-1",
        "new_client_order_id": "d-2",
        "symbol": "AAA",
        "price": 99,
        "quantity": 3,
        "leaves_quantity": 3,
        "kept_priority": True,
    }
    op = b.op(
        "dave",
        "replace",
        replace,
        "ok",
        {"log_index": 6, "order_id": 3, "status": "NEW", "events": [replaced]},
    )
    assert not_linearizable(story)[-1] == op


def test_a_finished_order_read_with_quantity_still_resting():
    story = Story()
    story.builder.op(
        "alice",
        "read_order",
        {"order_id": 1, "consistency": "linearizable"},
        "ok",
        view(1, "alice", ALICE_SELL, 2, 1, "CANCELLED"),
    )
    assert not_linearizable(story)[-1] == story.builder.next_id - 1


def test_a_cancel_answered_unknown_order_while_the_order_stays_live():
    """Unknown order (404) means it was not live; a read after it cannot show it resting."""
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
    cancel = b.op(
        "dave", "cancel", {"order_id": 3}, "fail", {"error": {"code": "unknown_order"}}, status=404
    )
    read = b.op(
        "dave",
        "read_order",
        {"order_id": 3, "consistency": "linearizable"},
        "ok",
        view(3, "dave", dave_buy, 0, 1, "NEW"),
    )
    story.orders.append(view(3, "dave", dave_buy, 0, 1, "NEW"))
    assert not_linearizable(story)[-2:] == [cancel, read]


def test_an_order_whose_filled_quantity_is_not_the_sum_of_its_fills():
    story = Story()
    # The fills say the trade was 1, consistently on both sides and in the positions;
    # the order views still say 2 were filled.
    for record in story.fills:
        record["quantity"] = 1
    story.positions = {"alice": {"AAA": position(-1, 0, 1)}, "bob": {"AAA": position(1, 1, 0)}}
    report = run(story.finish())
    messages = [a.message for a in report.check("conservation").anomalies]
    assert any("filled_quantity 2 but its fills add up to 1" in m for m in messages), messages


def test_a_trade_whose_sides_disagree_on_price():
    story = Story()
    story.fills[1]["price"] = 101  # Alice's side of the trade
    report = run(story.finish())
    assert "fill mismatch" in kinds(report, "conservation")
    assert any(
        f"trade {TRADE}: its sides disagree" in a.message
        for a in report.check("conservation").anomalies
    )


def test_one_order_id_claimed_by_two_client_order_ids():
    story = Story()
    story.builder.op(
        "bob",
        "read_order",
        {"client_order_id": "b-1", "consistency": "linearizable"},
        "ok",
        view(1, "bob", BOB_BUY, 2, 0, "FILLED"),
    )
    report = run(story.finish())
    assert any(
        "order 1 is claimed by alice/a-1 and bob/b-1" in a.message
        for a in report.check("exactly_once").anomalies
    )

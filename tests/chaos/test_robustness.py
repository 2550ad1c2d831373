"""Whatever a node answered, the checker gives verdicts: it never crashes on odd answers."""

from __future__ import annotations

import json

from chaos_histories import Story
from exchange_node.chaos.checker import check_history
from exchange_node.chaos.history import read_history
from hypothesis import given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from(["", "NEW", "FILLED", "fill", "BUY", "x"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "order_id",
                    "status",
                    "events",
                    "type",
                    "quantity",
                    "filled_quantity",
                    "leaves_quantity",
                    "client_order_id",
                    "trade_id",
                    "liquidity",
                    "aggressor_side",
                    "client_id",
                    "price",
                    "symbol",
                    "AAA",
                    "positions",
                    "bought_quantity",
                    "result",
                    "log_index",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.data())
def test_odd_answers_and_observations_give_verdicts_not_crashes(data):
    records = Story().finish().records
    for _ in range(data.draw(st.integers(1, 4))):
        record = data.draw(
            st.sampled_from([r for r in records if r["type"] in ("complete", "observation")])
        )
        field = (
            "answer"
            if record["type"] == "complete"
            else data.draw(st.sampled_from(["positions", "orders", "fills"]))
        )
        if record.get(field) is None:
            continue
        paths = [p for p in _paths(record[field]) if p]
        if not paths:
            continue
        path = data.draw(st.sampled_from(paths))
        target = record[field]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = data.draw(json_values)
    try:
        history = read_history([json.dumps(r) for r in records])
    except ValueError:
        return  # the reader refused it, naming the line: fine
    report = check_history(history)
    json.dumps(report.to_dict())
    assert report.verdict in ("pass", "fail", "unknown")

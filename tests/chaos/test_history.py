"""The history format: what the writer writes the reader reads back; bad lines are named."""

from __future__ import annotations

import io
import json

import pytest
from exchange_node.chaos.history import (
    Fault,
    HistoryError,
    HistoryWriter,
    Observation,
    read_history,
)

SUBMIT = {
    "symbol": "AAA",
    "side": "BUY",
    "quantity": 2,
    "price": 100,
    "order_type": "LIMIT",
    "time_in_force": "GTC",
    "client_order_id": "a-1",
}


def test_writer_and_reader_round_trip(tmp_path):
    path = tmp_path / "history.jsonl"
    with HistoryWriter(path) as writer:
        writer.meta({"scenario": "leader-kill", "seed": 7}, converge_within_ns=5_000_000_000)
        first = writer.invoke("p0", "alice", "n1", "submit", SUBMIT, time_ns=10)
        second = writer.invoke(
            "p1", "bob", "n2", "read_position", {"consistency": "stale"}, time_ns=11
        )
        writer.complete(first, "p0", "ok", status=200, answer={"order_id": 1}, time_ns=20)
        writer.complete(second, "p1", "info", error="timeout", time_ns=30)
        writer.fault(Fault("kill-leader", 15, 25, ["n1"], {"signal": "KILL"}))
        writer.observation(Observation("n1", 40, 9, "abc", {}, [], []))
        third = writer.invoke("p0", "alice", "n3", "cancel", {"order_id": 1}, time_ns=50)
    assert (first, second, third) == (0, 1, 2)
    history = read_history(path)
    assert history.meta is not None and history.meta.converge_within_ns == 5_000_000_000
    ops = history.operations
    assert [op.op for op in ops] == ["submit", "read_position", "cancel"]
    assert ops[0].outcome == "ok" and ops[0].end_ns == 20 and ops[0].answer == {"order_id": 1}
    assert ops[1].outcome == "info" and ops[1].end_ns is None
    assert ops[2].complete is None and ops[2].outcome == "info"  # never completed
    assert history.faults == [Fault("kill-leader", 15, 25, ["n1"], {"signal": "KILL"})]
    assert history.observations[0].applied_index == 9
    assert json.loads(path.read_text().splitlines()[1])["type"] == "invoke"


def test_writer_default_timestamps_are_monotonic():
    out = io.StringIO()
    writer = HistoryWriter(out)
    op = writer.invoke("p0", "alice", "n1", "read_position", {"consistency": "linearizable"})
    writer.complete(op, "p0", "ok", status=200, answer={"positions": {}})
    history = read_history(out.getvalue().splitlines())
    assert history.operations[0].end_ns >= history.operations[0].start_ns > 0


def _line(**fields):
    record = {
        "type": "invoke",
        "id": 0,
        "time_ns": 1,
        "process": "p0",
        "client": "alice",
        "node": "n1",
        "op": "submit",
        "args": dict(SUBMIT),
    }
    record.update(fields)
    return json.dumps(record)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["{not json"], "line 1: not JSON"),
        (["[1, 2]"], "line 1: a record must be a JSON object"),
        (['{"type": "invokes"}'], "line 1: unknown record type 'invokes'"),
        (["", _line(time_ns="soon")], "line 2: field 'time_ns' has the wrong type"),
        ([_line(op="delete")], "line 1: op must be one of"),
        ([_line(args={**SUBMIT, "side": "buy"})], "args.side must be one of BUY, SELL"),
        ([_line(args={**SUBMIT, "quantity": 0})], "args.quantity must be an integer >= 1"),
        ([_line(args={**SUBMIT, "quantity": True})], "args.quantity must be an integer >= 1"),
        ([_line(args={**SUBMIT, "client_id": "x"})], "unknown field 'client_id' in args of submit"),
        (
            [_line(op="cancel", args={"order_id": 1, "client_order_id": "a"})],
            "exactly one of order_id, client_order_id",
        ),
        (
            [_line(op="read_order", args={"order_id": 1, "consistency": "sometimes"})],
            "args.consistency must be one of linearizable, stale",
        ),
        ([_line(), _line(time_ns=5)], "line 2: operation id 0 is invoked twice"),
        ([_line(), _line(id=1)], "line 2: process 'p0' invokes while operation 0 is outstanding"),
        (
            [
                _line(),
                '{"type":"complete","id":0,"time_ns":0,"process":"p0","outcome":"ok","answer":{}}',
            ],
            "line 2: operation 0 completes before it was invoked",
        ),
        (
            ['{"type":"complete","id":3,"time_ns":1,"process":"p0","outcome":"ok","answer":{}}'],
            "line 1: completion of operation 3 never invoked",
        ),
        (
            [_line(), '{"type":"complete","id":0,"time_ns":2,"process":"p0","outcome":"ok"}'],
            "line 2: an ok completion needs its answer",
        ),
        (
            [_line(), '{"type":"complete","id":0,"time_ns":2,"process":"p0","outcome":"maybe"}'],
            "line 2: outcome must be one of ok, fail, info",
        ),
        (
            ['{"type":"fault","name":"x","start_ns":5,"end_ns":4}'],
            "line 1: fault end_ns is before its start_ns",
        ),
        (
            ['{"type":"observation","node":"n1","time_ns":1,"applied_index":3}'],
            "missing field 'state_hash'",
        ),
    ],
)
def test_reader_names_the_bad_line(lines, message):
    with pytest.raises(HistoryError) as caught:
        read_history(lines)
    assert message in str(caught.value)

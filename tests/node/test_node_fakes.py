"""The fake engine the shell's tests run on must itself be a faithful replica: a
replica restored from a snapshot and one that applied every entry agree."""

from __future__ import annotations

from exchange_node.engine.commands import NewOrder, OrderType, Side, TimeInForce, encode_batch
from node_fakes import RecordingEngine


def _entry(i: int) -> bytes:
    order = NewOrder(
        "alice", f"o{i}", "BTC-USD", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 100, 1
    )
    return encode_batch(1_000 * i, [order])


def test_a_replica_restored_from_a_snapshot_hashes_like_one_that_applied_every_entry():
    whole, early = RecordingEngine(), RecordingEngine()
    for i in range(1, 11):
        whole.apply_entry(i, _entry(i))
        if i <= 4:
            early.apply_entry(i, _entry(i))
    restored = RecordingEngine.restore(early.snapshot())
    for i in range(5, 11):
        restored.apply_entry(i, _entry(i))
    assert restored.state_hash() == whole.state_hash()
    assert restored.applied == whole.applied


def test_replicas_that_applied_different_entries_differ():
    a, b = RecordingEngine(), RecordingEngine()
    a.apply_entry(1, _entry(1))
    b.apply_entry(1, _entry(2))
    assert a.state_hash() != b.state_hash()

"""Snapshots of one real node (real WAL, real engine, a single-member cluster) taken by
a forked child when the log since the last one reaches ``--snapshot-bytes``; divergence
checkpoints at the fixed ``--checkpoint-entries`` indexes; the ``exchange_memory_*``
gauges."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import socket
from pathlib import Path

import pytest
from exchange_node.engine.commands import NewOrder, OrderType, Side, TimeInForce
from exchange_node.server import config as node_config
from exchange_node.server.divergence import state_digest
from exchange_node.server.envelope import unwrap_snapshot
from exchange_node.server.shell import Node
from exchange_node.storage import format as fmt

SNAPSHOT_BYTES = 16 * 1024
CHECKPOINT_ENTRIES = 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node(tmp: Path) -> Node:
    parser = argparse.ArgumentParser()
    node_config.add_arguments(parser)
    args = parser.parse_args(
        [
            "--node-id=1",
            "--name=n1",
            "--listen-host=127.0.0.1",
            f"--grpc-port={_free_port()}",
            f"--http-port={_free_port()}",
            f"--data-dir={tmp / 'n1'}",
            "--election-ms=200",
            "--heartbeat-ms=20",
            "--insecure-peers",
            f"--snapshot-bytes={SNAPSHOT_BYTES}",
            f"--checkpoint-entries={CHECKPOINT_ENTRIES}",
        ]
    )
    return Node(node_config.from_args(args, env={}))


def _order(n: int) -> NewOrder:
    buy = n % 2 == 0
    return NewOrder(
        f"c{n % 5}",
        f"o{n}",
        "BTC-USD",
        Side.BUY if buy else Side.SELL,
        OrderType.LIMIT,
        TimeInForce.GTC,
        50_000 - 1 - n % 300 if buy else 50_000 + 1 + n % 300,
        10,
    )


async def _leader(node: Node) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while node.role.name != "LEADER" or node.applied_index < node.commit_index:
        assert loop.time() < deadline, "no leader"
        await asyncio.sleep(0.02)


async def test_bytes_trigger_snapshots_compacts_and_reports_memory(tmp_path: Path) -> None:
    node = _node(tmp_path)
    await node.start()
    try:
        await _leader(node)
        idle_over_threshold = []
        # About 370 bytes of data per entry (10 orders), counted as ~520 with the
        # per-entry overhead: a snapshot every ~32 entries.
        for n in range(0, 2_000, 10):
            taken_before = node.metrics.snapshots._value.get()
            await node.submit([_order(k) for k in range(n, n + 10)])
            # Past the threshold a child is always at work: with none in flight (and
            # none finished meanwhile, which leaves what was applied during it), the
            # log since the snapshot is below the threshold. (What is applied while a
            # child runs depends on the machine's speed, so it is not bounded here.)
            finished = node.metrics.snapshots._value.get() != taken_before
            bytes_since = node.snapshot_policy.bytes_since
            if not node.snapshots.in_flight and not finished and bytes_since >= SNAPSHOT_BYTES:
                idle_over_threshold.append((n, bytes_since))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while node.snapshots.in_flight or node.metrics.snapshots._value.get() < 3:
            assert loop.time() < deadline, "no snapshots taken"
            await asyncio.sleep(0.05)
        taken = node.metrics.snapshots._value.get()
        # 200 entries of ~520 bytes against 16 KiB: several snapshots, not one per entry.
        assert 3 <= taken <= 15, taken
        assert idle_over_threshold == []
        await asyncio.sleep(0.1)  # the compaction runs in the next driver step
        raft_log = node.core.log
        assert raft_log.offset == node.snapshots.index > 0
        assert node.storage.first_index() == node.snapshots.index + 1
        path = node.latest_snapshot_path()
        assert path is not None
        assert fmt.decode_snapshot(path.read_bytes()).meta.index == node.snapshots.index

        # Checkpoints only at the shared indexes (busy: no idle hash yet).
        ring = dict(node.divergence.hash_ring)
        assert ring and all(index % CHECKPOINT_ENTRIES == 0 for index in ring), sorted(ring)

        # Idle now: an on-demand snapshot equals the engine's own serialisation here.
        index, _term = await node.snapshot_now()
        assert index == node.applied_index
        path = node.latest_snapshot_path()
        assert path is not None
        _members, engine_state = unwrap_snapshot(fmt.decode_snapshot(path.read_bytes()).data)
        assert engine_state == node.engine.snapshot()

        text = node.metrics.render().decode()
        for name in (
            "exchange_memory_log_bytes",
            "exchange_memory_log_entries",
            "exchange_memory_log_limit_bytes",
            "exchange_memory_exactly_once_keys",
            "exchange_memory_exactly_once_keys_limit",
            "exchange_memory_finished_orders",
            "exchange_memory_finished_orders_limit",
            "exchange_snapshot_in_progress",
            "exchange_snapshot_fork_seconds_count",
        ):
            assert re.search(rf"^{name} ", text, flags=re.M), name
        limit = re.search(r"^exchange_memory_log_limit_bytes (\S+)", text, flags=re.M)
        assert limit is not None and float(limit[1]) == SNAPSHOT_BYTES
        assert re.search(r"^exchange_snapshot_failures_total 0", text, flags=re.M)
    finally:
        await node.stop(grace_seconds=1.0)


async def test_an_idle_node_hashes_its_state_in_a_child(tmp_path: Path) -> None:
    node = _node(tmp_path)
    await node.start()
    try:
        await _leader(node)
        for n in range(0, 200, 10):
            await node.submit([_order(k) for k in range(n, n + 10)])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        # Idle after IDLE_HASH_SECONDS: a status call starts a child; a later one has it.
        while node.status_hash()[0] != node.applied_index:
            assert loop.time() < deadline, "no fresh hash of the idle state"
            await asyncio.sleep(0.1)
        index, digest = node.status_hash()
        assert bytes.fromhex(digest) == state_digest(node.engine.snapshot())
        # Recorded as a checkpoint at that index, for the peers' digests.
        assert node.divergence.hash_ring[index] == bytes.fromhex(digest)
    finally:
        await node.stop(grace_seconds=1.0)


# Status calls on a busy node start at most one hashing child at a time. Under load the
# applied index moves on before a hashing child finishes; a child per status call piled
# up: a 3-node soak at 350 orders/s had 37 forked children on its leader, each a full
# engine serialisation, and the host's load average went past 60.
async def test_a_busy_node_hashes_in_one_child_at_a_time(tmp_path: Path) -> None:
    node = _node(tmp_path)
    await node.start()
    try:
        await _leader(node)
        most_children = 0
        hashes: set[int] = set()
        # Orders keep the applied index moving while status is asked for again and
        # again, as the operator, `exchange top` and the soak's reporter do.
        for n in range(0, 3000, 10):
            await node.submit([_order(k) for k in range(n, n + 10)])
            index, _ = node.status_hash()
            hashes.add(index)
            most_children = max(most_children, len(node._children))
            await asyncio.sleep(0)
        # At most one snapshot and one hashing child (a fixed checkpoint's, every 25
        # entries here, or a status hash's).
        assert most_children <= 2, most_children
        # A busy node still learns hashes (each labelled with its own index).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while node.status_hash()[0] < 0:
            assert loop.time() < deadline, "no hash while busy"
            await asyncio.sleep(0.05)
        index, digest = node.status_hash()
        assert 0 < index <= node.applied_index
        # The newest hash is a checkpoint's (in the ring, at a shared index) or a
        # snapshot's (at this replica's own index, which the ring does not hold).
        if index in node.divergence.hash_ring:
            assert node.divergence.hash_ring[index] == bytes.fromhex(digest)
        # A hash for the current index, once idle, is the state's own, and recorded.
        while node.status_hash()[0] != node.applied_index:
            assert loop.time() < deadline + 20, "no fresh hash of the idle state"
            await asyncio.sleep(0.1)
        index, digest = node.status_hash()
        assert bytes.fromhex(digest) == state_digest(node.engine.snapshot())
        assert node.divergence.hash_ring[index] == bytes.fromhex(digest)
    finally:
        await node.stop(grace_seconds=1.0)


def _checkpoints(node: Node, outcome: str) -> float:
    return node.metrics.checkpoints.labels(outcome=outcome)._value.get()


async def test_a_checkpoint_skipped_while_a_hash_runs_is_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = _node(tmp_path)
    await node.start()
    try:
        await _leader(node)
        await node.submit([_order(k) for k in range(10)])
        children = len(node._children)
        node._hashing = 1  # as if the hash of index 1 were still running
        with caplog.at_level(logging.WARNING, logger="exchange"):
            node._take_snapshot(snapshot=False, checkpoint=True)
            node._take_snapshot(snapshot=False, checkpoint=True)
        assert _checkpoints(node, "skipped") == 2
        assert _checkpoints(node, "hashed") == 0
        assert len(node._children) == children, "a second hashing child was forked"
        warnings = [r for r in caplog.records if "checkpoint at" in r.getMessage()]
        # The second skip is within the log's interval: one line for both.
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "--checkpoint-entries" in warnings[0].getMessage()
        # Once no hash runs, the checkpoint is hashed in a child and counted.
        node._hashing = -1
        node._take_snapshot(snapshot=False, checkpoint=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while _checkpoints(node, "hashed") < 1:
            assert loop.time() < deadline, "the checkpoint was never hashed"
            await asyncio.sleep(0.05)
        index = node.applied_index
        assert node.divergence.hash_ring[index] == state_digest(node.engine.snapshot())
        assert _checkpoints(node, "skipped") == 2
    finally:
        await node.stop(grace_seconds=1.0)

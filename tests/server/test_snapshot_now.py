"""``Node.snapshot_now`` and ``Node.latest_snapshot_path``: one real node (real WAL,
real engine, real gRPC listener), a single-member cluster."""

from __future__ import annotations

import argparse
import asyncio
import socket
from pathlib import Path

from exchange_node.server import config as node_config
from exchange_node.server.shell import Node
from exchange_node.storage import format as fmt


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp: Path) -> node_config.NodeConfig:
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
        ]
    )
    return node_config.from_args(args, env={})


async def test_snapshot_now_returns_a_durable_snapshot_and_its_file(tmp_path):
    node = Node(_config(tmp_path))
    assert node.latest_snapshot_path() is None  # not even open
    await node.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while node.role.name != "LEADER" or node.applied_index < node.commit_index:
            assert loop.time() < deadline, "no leader"
            await asyncio.sleep(0.02)
        assert node.latest_snapshot_path() is None  # nothing snapshotted yet
        index, term = await node.snapshot_now()
        assert index == node.applied_index and index > 0 and term == node.term
        path = node.latest_snapshot_path()
        assert path is not None and path.parent == node.config.data_dir
        snapshot = fmt.decode_snapshot(path.read_bytes())
        assert (snapshot.meta.index, snapshot.meta.term) == (index, term)
        # Nothing applied since: the same snapshot again, not a second one.
        assert await node.snapshot_now() == (index, term)
    finally:
        await node.stop(0.5)
    # Durable: a restarted node recovers from exactly that snapshot.
    again = Node(_config(tmp_path))
    again.open()
    assert again.snapshots.index == index
    assert again.latest_snapshot_path() == path
    again.storage.close()

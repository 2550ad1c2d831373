"""Three real node processes snapshot on bytes, each at its own indexes (staggered by
voter rank), while the divergence checkpoints stay at shared indexes: every replica
converges to the same state hash and none reports a divergence."""

from __future__ import annotations

import json
import re
from pathlib import Path

from exchange_node.tools.local import LocalCluster
from node_load import OrderLoad, verify_acknowledged

SNAPSHOT_BYTES = 24 * 1024


def _snapshot_indexes(cluster: LocalCluster, node_id: int) -> list[int]:
    indexes = []
    for line in cluster.log_path(node_id).read_text().splitlines():
        if '"snapshot taken"' in line:
            indexes.append(int(json.loads(line)["index"]))
    return indexes


def test_replicas_snapshot_at_their_own_indexes_and_still_agree(tmp_path: Path) -> None:
    cluster = LocalCluster.create(
        tmp_path / "cluster",
        3,
        election_ms=400,
        heartbeat_ms=40,
        snapshot_threshold=0,
        extra_args=[
            "--request-timeout-ms=3000",
            "--log-level=info",
            f"--snapshot-bytes={SNAPSHOT_BYTES}",
            "--checkpoint-entries=50",
        ],
    )
    cluster.start_all()
    try:
        leader = cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
        load = OrderLoad(cluster, prefix="g", concurrency=4).start()
        try:
            load.wait_for_acks(900, timeout=120)
        finally:
            load.stop()
        converged = cluster.wait_converged([1, 2, 3], timeout=60)
        assert len({st["state_hash"] for st in converged.values()}) == 1
        assert not any(st.get("diverged") for st in converged.values())
        verify_acknowledged(cluster, load.acked, leader)

        taken = {i: _snapshot_indexes(cluster, i) for i in (1, 2, 3)}
        assert all(len(indexes) >= 2 for indexes in taken.values()), taken
        # Staggered: the first snapshots fall at three different indexes, and the
        # replicas never all snapshot at the same index.
        firsts = [indexes[0] for indexes in taken.values()]
        assert len(set(firsts)) == 3, taken
        assert not set(taken[1]) & set(taken[2]) & set(taken[3]), taken
        for i in (1, 2, 3):
            code, text = cluster.request(i, "GET", "/metrics")
            assert code == 200
            limit = re.search(r"^exchange_memory_log_limit_bytes (\S+)", text, flags=re.M)
            assert limit is not None and float(limit[1]) == SNAPSHOT_BYTES
            held = re.search(r"^exchange_memory_log_bytes (\S+)", text, flags=re.M)
            assert held is not None and float(held[1]) < 2 * SNAPSHOT_BYTES
    finally:
        cluster.stop_all(10)

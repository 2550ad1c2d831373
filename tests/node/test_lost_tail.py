"""Protocol-aware recovery on real processes: the lost-tail finding of issue 14.

A follower is frozen; orders are acknowledged by the leader and the other
follower. That follower's log is then cut back to before those orders (a lost,
acknowledged tail: the disk dropped what had been fsynced), every node is
killed, and the cut node restarts with the frozen one, which never had the
orders. Before protocol-aware recovery they elected a leader without the
orders and the acknowledged orders were gone. Now the cut node knows from its
promise file that it acknowledged more than its log holds: it reports it,
refuses to elect a leader whose log is shorter than what it promised, and
recovers from the old leader once that one is back; every acknowledged order
is there.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow

ORDERS = 20


def _newest_segment(data_dir: Path) -> Path:
    return max(data_dir.glob("wal-*.log"), key=lambda p: p.name)


def _place(cluster: LocalCluster, leader: int, coid: str, price: int) -> None:
    body = {"symbol": "BTC-USD", "side": "BUY", "price": price, "quantity": 1}
    body["client_order_id"] = coid
    status, doc = cluster.request(
        leader, "POST", "/v1/orders", body, token=cluster.key_for("alice"), timeout=10
    )
    assert status == 200, (status, doc)


def _found(cluster: LocalCluster, node: int, coid: str) -> bool:
    status, _ = cluster.request(
        node, "GET", f"/v1/orders/by-client-id/{coid}", token=cluster.key_for("alice")
    )
    return status == 200


def test_a_node_that_lost_an_acknowledged_tail_does_not_elect_a_leader_without_it(tmp_path):
    cluster = LocalCluster.create(
        tmp_path / "c", 3, election_ms=400, heartbeat_ms=40, extra_args=["--log-level=info"]
    )
    cluster.start_all()
    try:
        leader = cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
        cut, frozen = [m.node_id for m in cluster.spec.members if m.node_id != leader]
        _place(cluster, leader, "before", 40_000)
        cluster.wait_caught_up(frozen, slack=0, timeout=30)
        cluster.signal(frozen, signal.SIGSTOP)
        time.sleep(0.5)  # the cut node idle: its newest segment ends at a batch boundary
        cut_dir = Path(cluster.member(cut).data_dir)
        segment = _newest_segment(cut_dir)
        boundary = segment.stat().st_size
        for i in range(ORDERS):
            _place(cluster, leader, f"acked-{i}", 40_001 + i)  # acknowledged by leader + cut
        for node in (leader, cut, frozen):
            cluster.kill(node)  # SIGKILL: the frozen one too
        # The disk of the cut node loses the acknowledged tail (whole batches).
        assert _newest_segment(cut_dir) == segment, "a new segment: pick a larger one"
        with open(segment, "r+b") as f:
            f.truncate(boundary)

        cluster.start(cut)
        cluster.start(frozen)
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            status = cluster.status(cut)
            if status is not None:
                break
            time.sleep(0.2)
        assert status is not None, cluster.log_tail(cut)
        # No leader without the acknowledged orders, for many election timeouts.
        time.sleep(4.0)
        assert cluster.leader(among=[cut, frozen]) is None, (
            cluster.log_tail(cut),
            cluster.log_tail(frozen),
        )
        code, view = cluster.request(cut, "GET", "/v1/cluster", token=cluster.key_for("alice"))
        assert code == 200 and view["recovery_verdict"] == "lost_acknowledged_tail", view
        assert view["recovering"] > 0, view
        code, ready = cluster.request(cut, "GET", "/readyz")
        assert code == 503, ready
        assert "recovering" in cluster.log_tail(cut, 200)

        # The old leader comes back: a leader with the orders, and everything is there.
        cluster.start(leader)
        new_leader = cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
        for node in (new_leader, cut):
            missing = [i for i in range(ORDERS) if not _found(cluster, node, f"acked-{i}")]
            assert not missing, (node, missing)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            code, view = cluster.request(cut, "GET", "/v1/cluster", token=cluster.key_for("alice"))
            if code == 200 and view["recovering"] == 0:
                break
            time.sleep(0.2)
        assert view["recovering"] == 0, view
    finally:
        cluster.stop_all(10)

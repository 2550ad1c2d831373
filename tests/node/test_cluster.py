"""A local cluster of real node processes: real sockets, real disks, real faults.

Each test starts its own cluster on ephemeral loopback ports in a temporary
directory, drives orders through the public HTTP API, injects faults with
signals (kill -9, SIGSTOP/SIGCONT, SIGTERM) and checks the outcome, never
the timing.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from exchange_node.tools.local import LocalCluster
from node_load import OrderLoad, verify_acknowledged

pytestmark = pytest.mark.slow


def start_cluster(root: Path, nodes: int = 3, **kw) -> LocalCluster:
    kw.setdefault("election_ms", 400)
    kw.setdefault("heartbeat_ms", 40)
    kw.setdefault("extra_args", ["--request-timeout-ms=3000", "--log-level=info"])
    cluster = LocalCluster.create(root, nodes, **kw)
    cluster.start_all()
    try:
        cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
    except BaseException:
        cluster.stop_all(5)
        raise
    return cluster


@pytest.fixture
def cluster(tmp_path) -> Iterator[LocalCluster]:
    c = start_cluster(tmp_path / "cluster")
    yield c
    c.stop_all(10)


@pytest.fixture
def make_cluster(tmp_path) -> Iterator:
    made: list[LocalCluster] = []

    def make(**kw) -> LocalCluster:
        c = start_cluster(tmp_path / f"cluster{len(made)}", **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop_all(10)


def ids(cluster: LocalCluster) -> list[int]:
    return [m.node_id for m in cluster.spec.members if cluster.alive(m.node_id)]


CONTRACT_METRICS = {
    "exchange_raft_role": "gauge",
    "exchange_raft_is_leader": "gauge",
    "exchange_raft_term": "gauge",
    "exchange_raft_commit_index": "gauge",
    "exchange_raft_applied_index": "gauge",
    "exchange_raft_leader_changes_total": "counter",
    "exchange_raft_members": "gauge",
    "exchange_raft_proposals_total": "counter",
    "exchange_raft_commit_latency_seconds": "histogram",
    "exchange_raft_follower_lag_entries": "gauge",
    "exchange_wal_append_seconds": "histogram",
    "exchange_wal_fsync_seconds": "histogram",
    "exchange_snapshots_total": "counter",
    "exchange_snapshot_seconds": "histogram",
    "exchange_state_divergence_total": "counter",
    "exchange_http_request_seconds": "histogram",
    "exchange_orders_total": "counter",
    "exchange_fills_total": "counter",
    "exchange_rejects_total": "counter",
    "exchange_book_depth": "gauge",
    "exchange_ws_subscribers": "gauge",
}


def test_election_replication_probes_metrics_and_admin(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    statuses = {i: cluster.status(i) for i in ids(cluster)}
    assert [i for i, st in statuses.items() if st["role"] == "leader"] == [leader]
    assert {st["leader"] for st in statuses.values()} == {leader}

    load = OrderLoad(cluster, prefix="e", concurrency=4).start()
    load.wait_for_acks(150)
    load.stop()
    converged = cluster.wait_converged(ids(cluster))
    assert len({st["state_hash"] for st in converged.values()}) == 1
    assert not any(st["diverged"] for st in converged.values())
    verify_acknowledged(cluster, load.acked, leader)

    # Admin status per the contract.
    st = cluster.status(leader)
    assert {
        "node_id",
        "name",
        "role",
        "term",
        "leader",
        "commit_index",
        "applied_index",
        "state_hash",
        "members",
    } <= set(st)
    assert sorted(m["id"] for m in st["members"]) == [1, 2, 3]
    for m in st["members"]:
        assert {"id", "address", "voter", "match_index", "lag", "healthy"} <= set(m)
        assert m["voter"] is True and m["healthy"] is True
        assert m["address"] == cluster.member(m["id"]).grpc

    follower = next(i for i in ids(cluster) if i != leader)
    # 401 without the admin token.
    code, _ = cluster.request(follower, "GET", "/v1/admin/status", token="wrong")
    assert code == 401
    # Membership calls on a follower answer 421 with the leader.
    code, doc = cluster.request(
        follower, "POST", "/v1/admin/members", {"id": 9, "address": "127.0.0.1:1"}
    )
    assert code == 421
    assert doc["leader"] == leader and doc["leader_address"] == cluster.member(leader).http
    # Probes.
    for i in ids(cluster):
        assert cluster.request(i, "GET", "/healthz")[0] == 200
        assert cluster.request(i, "GET", "/readyz")[0] == 200

    # Every metric of the contract's table, with its type, on a live node.
    for i in (leader, follower):
        code, text = cluster.request(i, "GET", "/metrics")
        assert code == 200
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))
        for name, kind in CONTRACT_METRICS.items():
            assert types.get(name) == kind, (name, types.get(name))
    code, text = cluster.request(leader, "GET", "/metrics")
    assert "exchange_raft_is_leader 1.0" in text
    assert 'exchange_raft_role{role="leader"} 1.0' in text
    assert re.search(r'exchange_raft_follower_lag_entries\{peer="\d+"\}', text)
    assert re.search(r'exchange_orders_total\{side="buy",symbol="BTC-USD"\} [1-9]', text)
    assert re.search(r'exchange_raft_proposals_total\{outcome="committed"\} [1-9]', text)
    assert re.search(r"exchange_wal_fsync_seconds_count [1-9]", text)


def test_kill9_leader_then_follower_under_load(cluster: LocalCluster) -> None:
    load = OrderLoad(cluster, prefix="k", concurrency=6).start()
    try:
        load.wait_for_acks(100)
        old_leader = cluster.wait_for_leader()
        cluster.kill(old_leader)
        new_leader = cluster.wait_for_leader(30, among=[i for i in ids(cluster)])
        assert new_leader != old_leader
        load.wait_for_acks(100)
        cluster.start(old_leader)
        load.wait_for_acks(100)

        follower = next(i for i in ids(cluster) if i != cluster.wait_for_leader())
        cluster.kill(follower)
        load.wait_for_acks(100)
        cluster.start(follower)
        load.wait_for_acks(100)
    finally:
        load.stop()
    converged = cluster.wait_converged([1, 2, 3], timeout=60)
    assert len({st["state_hash"] for st in converged.values()}) == 1
    verify_acknowledged(cluster, load.acked, cluster.wait_for_leader())
    assert len(load.acked) >= 500


def test_restarted_node_catches_up_by_snapshot(make_cluster) -> None:
    cluster = make_cluster(snapshot_threshold=64)
    leader = cluster.wait_for_leader()
    lagging = next(i for i in ids(cluster) if i != leader)
    cluster.kill(lagging)
    load = OrderLoad(cluster, prefix="s", concurrency=4).start()
    load.wait_for_acks(400)
    load.stop()
    # The leader compacted its log well past where the stopped node is.
    log_text = (cluster.root / f"node-{leader}.log").read_text()
    assert '"msg": "snapshot taken"' in log_text
    cluster.start(lagging)
    converged = cluster.wait_converged([1, 2, 3], timeout=60)
    assert len({st["state_hash"] for st in converged.values()}) == 1
    lagging_log = (cluster.root / f"node-{lagging}.log").read_text()
    assert '"msg": "installed snapshot"' in lagging_log
    _code, text = cluster.request(lagging, "GET", "/metrics")
    assert re.search(r"^exchange_snapshots_total [1-9]", text, flags=re.M)
    verify_acknowledged(cluster, load.acked, leader)


def test_partitioned_minority_cannot_acknowledge_and_rejoins(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    followers = [i for i in ids(cluster) if i != leader]
    for f in followers:
        cluster.pause(f)  # SIGSTOP: the leader is now a minority of one
    try:
        token = cluster.key_for("alice")
        for n in range(3):
            code, doc = cluster.request(
                leader,
                "POST",
                "/v1/orders",
                {
                    "symbol": "BTC-USD",
                    "side": "BUY",
                    "price": 49_000,
                    "quantity": 1,
                    "client_order_id": f"minority-{n}",
                },
                token=token,
                timeout=10,
            )
            assert code in (421, 503, 504), (code, doc)
    finally:
        for f in followers:
            cluster.resume(f)
    leader = cluster.wait_for_leader(30)
    load = OrderLoad(cluster, prefix="p", concurrency=4).start()
    load.wait_for_acks(100)
    load.stop()
    converged = cluster.wait_converged([1, 2, 3], timeout=60)
    assert len({st["state_hash"] for st in converged.values()}) == 1
    verify_acknowledged(cluster, load.acked, cluster.wait_for_leader())

    # The other way round: a frozen leader is the minority; the rest go on without it.
    old = cluster.wait_for_leader()
    cluster.pause(old)
    try:
        others = [i for i in ids(cluster) if i != old]
        new = cluster.wait_for_leader(30, among=others)
        assert new != old
        load = OrderLoad(cluster, prefix="q", concurrency=4, avoid={old}).start()
        load.wait_for_acks(50)
        load.stop()
    finally:
        cluster.resume(old)
    converged = cluster.wait_converged([1, 2, 3], timeout=60)
    assert converged[old]["role"] == "follower"
    assert len({st["state_hash"] for st in converged.values()}) == 1


def test_add_and_remove_members_under_load(cluster: LocalCluster) -> None:
    new = cluster.add_member_spec()
    # The new member serves no orders while it catches up (it knows no symbols yet).
    load = OrderLoad(cluster, prefix="m", concurrency=4, pace_seconds=0.005, avoid={new.node_id})
    load.start()
    try:
        load.wait_for_acks(50)
        cluster.start(new.node_id)
        leader = cluster.wait_for_leader()
        code, doc = cluster.request(
            leader,
            "POST",
            "/v1/admin/members",
            {"id": new.node_id, "address": new.grpc, "http_address": new.http},
            timeout=10,
        )
        assert code == 201, doc
        # Wait until the learner has caught up, then promote it.
        deadline = time.monotonic() + 60
        while True:
            leader = cluster.wait_for_leader()
            code, doc = cluster.request(
                leader, "POST", f"/v1/admin/members/{new.node_id}/promote", timeout=10
            )
            if code == 200:
                break
            assert code in (400, 421, 503, 504), (code, doc)
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)
        load.wait_for_acks(50)
        st = cluster.status(cluster.wait_for_leader())
        voters = sorted(m["id"] for m in st["members"] if m["voter"])
        assert voters == [1, 2, 3, new.node_id]

        # Remove a follower (not the leader) and stop its process.
        leader = cluster.wait_for_leader()
        victim = next(i for i in (1, 2, 3) if i != leader)
        code, doc = cluster.request(leader, "DELETE", f"/v1/admin/members/{victim}", timeout=10)
        assert code == 200, doc
        cluster.stop(victim)
        load.wait_for_acks(50)
    finally:
        load.stop()
    remaining = [i for i in (1, 2, 3, new.node_id) if i != victim]
    converged = cluster.wait_converged(remaining, timeout=60)
    assert len({st["state_hash"] for st in converged.values()}) == 1
    leader_doc = next(st for st in converged.values() if st["role"] == "leader")
    assert sorted(m["id"] for m in leader_doc["members"]) == sorted(remaining)
    verify_acknowledged(cluster, load.acked, leader_doc["node_id"])


def test_sigterm_on_the_leader_hands_leadership_over(cluster: LocalCluster) -> None:
    load = OrderLoad(cluster, prefix="t", concurrency=2).start()
    load.wait_for_acks(30)
    leader = cluster.wait_for_leader()
    cluster.signal(leader, signal.SIGTERM)
    code = cluster.procs[leader].wait(30)
    assert code == 0
    load.wait_for_acks(30)
    load.stop()
    others = [i for i in (1, 2, 3) if i != leader]
    new = cluster.wait_for_leader(30, among=others)
    assert new != leader
    text = (cluster.root / f"node-{leader}.log").read_text()
    assert '"msg": "leadership handed over on shutdown"' in text
    assert f'"target": {new}' in text
    verify_acknowledged(cluster, load.acked, new)

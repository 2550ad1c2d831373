"""A stuck follower is reported, with real processes (issue 14).

A follower is frozen with SIGSTOP while the leader keeps acknowledging orders.
Nothing differs in any state hash (the frozen replica applies nothing), so hash
comparison alone never finds it. The leader must report it stuck behind within
``STUCK_S`` (plus a digest interval): in ``/v1/cluster`` (member field ``stuck``),
in ``exchange_member_stuck`` and in its log; the other follower is not reported;
and once the frozen one resumes and catches up the report clears.
"""

from __future__ import annotations

import signal
import time

import pytest
from exchange_node.server.divergence import DIGEST_INTERVAL_S, STUCK_S
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow

SLACK_S = 10.0
"""Beyond the bound: digest timer period, polling, a loaded 2-core machine."""


def _members(cluster: LocalCluster, node: int) -> dict[int, dict]:
    status, doc = cluster.request(
        node, "GET", "/v1/cluster", token=cluster.key_for("alice"), timeout=3
    )
    assert status == 200, (status, doc)
    return {m["id"]: m for m in doc["members"]}


def _place(cluster: LocalCluster, leader: int, coid: str) -> None:
    body = {"symbol": "BTC-USD", "side": "BUY", "price": 40_000, "quantity": 1}
    body["client_order_id"] = coid
    status, doc = cluster.request(
        leader, "POST", "/v1/orders", body, token=cluster.key_for("alice"), timeout=10
    )
    assert status == 200, (status, doc)


def test_a_frozen_follower_is_reported_stuck_within_the_bound_and_cleared_after(tmp_path):
    cluster = LocalCluster.create(tmp_path / "c", 3, election_ms=400, heartbeat_ms=40)
    cluster.start_all()
    frozen = None
    try:
        leader = cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
        frozen, other = [m.node_id for m in cluster.spec.members if m.node_id != leader]
        members = _members(cluster, leader)
        assert members[frozen]["stuck"] == "" and members[other]["stuck"] == ""

        cluster.signal(frozen, signal.SIGSTOP)
        stopped = time.monotonic()
        found_after = None
        seq = 0
        while time.monotonic() - stopped < STUCK_S + DIGEST_INTERVAL_S + SLACK_S:
            seq += 1
            _place(cluster, leader, f"while-frozen-{seq}")  # commit keeps moving
            members = _members(cluster, leader)
            assert members[other]["stuck"] == "", members[other]
            if members[frozen]["stuck"]:
                found_after = time.monotonic() - stopped
                break
            time.sleep(0.3)
        print(f"\nfrozen follower {frozen} reported stuck after {found_after} s (bound {STUCK_S})")
        assert found_after is not None, f"not reported stuck: {members[frozen]}"
        assert members[frozen]["stuck"] == "silent", members[frozen]
        assert found_after >= STUCK_S - DIGEST_INTERVAL_S, found_after  # not before the bound

        _, metrics = cluster.request(leader, "GET", "/metrics", timeout=3)
        assert f'exchange_member_stuck{{member="{frozen}"}} 1.0' in metrics
        log = cluster.log_path(leader).read_text(errors="replace")
        assert f"STUCK BEHIND: member {frozen} silent" in log

        cluster.signal(frozen, signal.SIGCONT)
        frozen = None
        cleared = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not cleared:
            time.sleep(0.5)
            cleared = all(m["stuck"] == "" for m in _members(cluster, leader).values())
        assert cleared, _members(cluster, leader)
    finally:
        if frozen is not None:
            cluster.signal(frozen, signal.SIGCONT)
        cluster.stop_all()

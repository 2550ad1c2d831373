"""A write forwarded to a leader that froze answers by the leader watch, not a timeout.

Three real node processes. A follower has already forwarded to the leader (its
keep-alive connection is open), then the leader is frozen with SIGSTOP: its
kernel still accepts the bytes, nothing answers. A write sent to the follower
now is forwarded into that silence. The forward timeout is set to an hour, so
the only way the follower answers is its leader watch (docs/api.md, "Followers
forward writes to the leader"): as soon as it sees leadership move it answers
504 "leadership moved" (or 503 when it already knew no leader). The client then
retries the same client_order_id through the same follower until the new
leader acknowledges it, and the order exists exactly once.

The time from the freeze to the answer is printed (the bound in the docs: two
election timeouts, one heartbeat and 50 ms); the test asserts what ended the wait,
never how fast (speed belongs to benchmarks).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow

ELECTION_MS, HEARTBEAT_MS = 500, 50
FORWARD_TIMEOUT_S = 3600  # without the watch the follower would hold the client this long
HANG_GUARD_S = 20  # the client's own limit, only so a broken watch fails instead of hanging


def _order(coid: str) -> dict[str, object]:
    return {"symbol": "BTC-USD", "side": "BUY", "price": 40_000, "quantity": 1,
            "client_order_id": coid}  # fmt: skip


def test_a_write_forwarded_to_a_frozen_leader_answers_when_leadership_moves(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster.create(
        tmp_path / "c",
        3,
        election_ms=ELECTION_MS,
        heartbeat_ms=HEARTBEAT_MS,
        extra_args=[f"--api-forward-timeout-seconds={FORWARD_TIMEOUT_S}"],
        peer_tls=False,  # what is tested is the client-facing forward, not the peer link
    )
    token = cluster.key_for("alice")
    cluster.start_all()
    leader = None
    try:
        leader = cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
        follower = next(m.node_id for m in cluster.spec.members if m.node_id != leader)
        status, doc = cluster.request(
            follower, "POST", "/v1/orders", _order("warm"), token=token, timeout=10
        )
        assert status == 200, (status, doc)  # forwarded: the follower's connection is open

        cluster.pause(leader)
        frozen_at = time.monotonic()
        status, doc = cluster.request(
            follower, "POST", "/v1/orders", _order("during"), token=token, timeout=HANG_GUARD_S
        )
        answered_after = time.monotonic() - frozen_at
        print(
            f"forwarded write answered {status} {answered_after:.2f} s after the leader froze "
            f"(election {ELECTION_MS} ms, heartbeat {HEARTBEAT_MS} ms, "
            f"documented bound {(2 * ELECTION_MS + HEARTBEAT_MS + 50) / 1000:.2f} s)"
        )
        assert status in (200, 503, 504), (status, doc)
        if status == 504:  # the watch ended it: the forward timeout is an hour
            assert "leadership moved" in doc["error"]["message"], doc
        if status == 503:
            assert doc["error"]["code"] in ("no_leader", "unavailable"), doc

        # Retrying the same client_order_id through the same follower reaches the new
        # leader; the order is there exactly once (exactly-once by client order id).
        acknowledged = None
        for _ in range(100):
            status, doc = cluster.request(
                follower, "POST", "/v1/orders", _order("during"), token=token, timeout=10
            )
            if status == 200:
                acknowledged = doc["order_id"]
                break
            time.sleep(0.2)
        assert acknowledged is not None, (status, doc, cluster.log_tail(follower))
        status, found = cluster.request(
            follower, "GET", "/v1/orders/by-client-id/during", token=token, timeout=10
        )
        assert status == 200 and found["order_id"] == acknowledged, (status, found)
    finally:
        if leader is not None:
            cluster.resume(leader)
        cluster.stop_all()

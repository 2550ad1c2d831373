"""Review findings on server/shell.py, shown on real node processes (LocalCluster).

Both bugs were found by this review and fixed in 3aab403; the tests stay as regression
tests (they failed on the code before that commit).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow

REQUEST_TIMEOUT_S = 30.0


def _post_order(cluster: LocalCluster, node_id: int, coid: str, out: dict[str, Any]) -> None:
    """POST one order and record (status, seconds) or the client-side error."""
    m = cluster.member(node_id)
    body = {
        "symbol": "BTC-USD",
        "side": "BUY",
        "price": 40_000,
        "quantity": 1,
        "client_order_id": coid,
    }
    req = urllib.request.Request(
        f"http://{m.http}/v1/orders",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {cluster.key_for('alice')}",
            "Content-Type": "application/json",
        },
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S + 40) as resp:
            out[coid] = (resp.status, time.monotonic() - started)
    except urllib.error.HTTPError as exc:
        out[coid] = (exc.code, time.monotonic() - started)
    except Exception as exc:
        out[coid] = (repr(exc), time.monotonic() - started)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def test_a_request_whose_entry_was_truncated_is_answered_when_its_index_is_reused(tmp_path: Path):
    """Before 3aab403 the waiter dict keyed by log index was overwritten by the new
    proposal at a reused index: the old request never got an answer (not even at its
    deadline) and its commands stayed counted in _pending_commands forever."""
    for attempt in range(4):
        if _truncated_waiter_scenario(tmp_path / f"try{attempt}"):
            return
    pytest.fail("the scenario's precondition never held")


def _leader_appended(cluster: LocalCluster, node_id: int, count: int) -> bool:
    """``node_id`` still leads and holds exactly ``count`` entries past its commit index."""
    st = cluster.status(node_id) or {}
    me = [m for m in st.get("members", []) if m["id"] == node_id]
    return (
        st.get("role") == "leader"
        and bool(me)
        and me[0]["match_index"] == st.get("commit_index", -9) + count
    )


def _truncated_waiter_scenario(root: Path) -> bool:
    """True once the scenario ran with its precondition met (and its assertions held)."""
    cluster = LocalCluster.create(
        root,
        3,
        election_ms=400,
        heartbeat_ms=40,
        extra_args=[f"--request-timeout-ms={int(REQUEST_TIMEOUT_S * 1000)}", "--log-level=info"],
    )
    cluster.start_all()
    try:
        old = cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
        others = [m.node_id for m in cluster.spec.members if m.node_id != old]

        # 1. The leader loses both followers (kill -9: nothing it sends now arrives) and,
        #    before check-quorum demotes it, appends three orders at i, i+1, i+2.
        for node_id in others:
            cluster.kill(node_id)
        answers: dict[str, Any] = {}
        threads = [
            threading.Thread(target=_post_order, args=(cluster, old, f"lost-{k}", answers))
            for k in range(3)
        ]
        sent_at = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.3)
        if not _leader_appended(cluster, old, 3):
            return False  # it stepped down first: this run proves nothing either way

        # 2. Frozen, it cannot run for re-election; the others elect a leader whose log
        #    ends before i and whose no-op takes index i.
        cluster.pause(old)
        for node_id in others:
            cluster.start(node_id)
        new = cluster.wait_for_leader(60, among=others)

        # 3. The old leader comes back as a follower: its i..i+2 are replaced by the new
        #    leader's shorter log; the waiter at i fails (term mismatch), i+1 and i+2 stay.
        cluster.resume(old)
        _wait(
            lambda: (
                (st := cluster.status(old)) is not None
                and st["leader"] == new
                and st["applied_index"] >= (cluster.status(new) or {}).get("commit_index", 1 << 60)
            ),
            30,
            "old leader did not catch up",
        )
        # The three threads race to the server, so any one of them may hold index i.
        _wait(lambda: len(answers) >= 1, 10, "the request at i was not failed")

        # 4. Leadership goes back to the old leader: its no-op takes i+1, and the next
        #    client request gets index i+2, the index of a still-waiting request.
        code, doc = cluster.request(
            new, "POST", "/v1/admin/transfer-leadership", {"target": old}, timeout=10
        )
        assert code == 200, doc
        _wait(lambda: cluster.leader([old]) == old, 10, "transfer did not happen")
        fresh: dict[str, Any] = {}
        _post_order(cluster, old, "fresh-0", fresh)
        assert fresh["fresh-0"][0] == 200, fresh
        assert time.monotonic() - sent_at < REQUEST_TIMEOUT_S - 5, "scenario too slow"

        # 5. Every one of the three lost requests must get an answer (503/504) no later
        #    than its own deadline (plus a margin), never hang.
        for t in threads:
            t.join(max(0.0, sent_at + REQUEST_TIMEOUT_S + 8 - time.monotonic()))
        hung = [f"lost-{k}" for k in range(3) if f"lost-{k}" not in answers]
        assert not hung, f"never answered: {hung}; answered: {answers}"
        return True
    finally:
        cluster.stop_all(10)


def _admin_post(
    cluster: LocalCluster, node_id: int, path: str, body: dict, out: dict, key: str
) -> None:
    started = time.monotonic()
    try:
        out[key] = (
            *cluster.request(node_id, "POST", path, body, timeout=REQUEST_TIMEOUT_S + 40),
            time.monotonic() - started,
        )
    except Exception as exc:
        out[key] = (repr(exc), None, time.monotonic() - started)


def test_add_member_is_not_acknowledged_when_its_entry_was_replaced(tmp_path: Path):
    """Before 3aab403 _pending_conf[index] was resolved by whatever configuration change
    applied at that index, whatever its term: add-member answered 201, member absent."""
    for attempt in range(4):
        if _add_member_scenario(tmp_path / f"try{attempt}"):
            return
    pytest.fail("the scenario's precondition never held")


def _add_member_scenario(root: Path) -> bool:
    """True once the scenario ran with its precondition met (and its assertion held)."""
    cluster = LocalCluster.create(
        root,
        3,
        election_ms=400,
        heartbeat_ms=40,
        extra_args=[f"--request-timeout-ms={int(REQUEST_TIMEOUT_S * 1000)}", "--log-level=info"],
    )
    cluster.start_all()
    try:
        old = cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
        others = [m.node_id for m in cluster.spec.members if m.node_id != old]

        # 1. The leader, cut off from both followers, appends an order at i and the
        #    configuration change "add learner 4" at i + 1.
        for node_id in others:
            cluster.kill(node_id)
        answers: dict[str, Any] = {}
        t_order = threading.Thread(target=_post_order, args=(cluster, old, "lost-0", answers))
        t_order.start()
        time.sleep(0.05)
        body4 = {"id": 4, "address": "127.0.0.1:1", "http_address": "127.0.0.1:2"}
        t_add = threading.Thread(
            target=_admin_post,
            args=(cluster, old, "/v1/admin/members", body4, answers, "add-4"),
        )
        t_add.start()
        time.sleep(0.3)
        if not _leader_appended(cluster, old, 2):
            # Precondition not met (the leader stepped down first, or a change was
            # refused): this run proves nothing either way.
            return False

        # 2. The others elect a leader (no-op at i) which adds learner 5 (at i + 1).
        cluster.pause(old)
        for node_id in others:
            cluster.start(node_id)
        new = cluster.wait_for_leader(60, among=others)
        body5 = {"id": 5, "address": "127.0.0.1:3", "http_address": "127.0.0.1:4"}
        for _ in range(100):
            code, doc = cluster.request(new, "POST", "/v1/admin/members", body5, timeout=10)
            if code == 201:
                break
            time.sleep(0.1)
        assert code == 201, doc

        # 3. The old leader rejoins and applies the new leader's log.
        cluster.resume(old)
        t_add.join(REQUEST_TIMEOUT_S + 10)
        members = {m["id"] for m in (cluster.status(new) or {}).get("members", [])}
        status, doc, _ = answers["add-4"]
        # Acknowledged (201) means member 4 is in the configuration.
        assert status != 201 or 4 in members, (
            f"add-member 4 answered {status} {doc}; members {members}"
        )
        return True
    finally:
        cluster.stop_all(10)

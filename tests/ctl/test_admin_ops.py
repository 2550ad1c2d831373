"""Ops controls of the admin API against a real 3-node cluster (issue 17).

Halt/resume and risk limits are replicated engine commands: proposed on the
leader, in force on every replica; a follower answers 421 naming the leader;
every action is audited with the caller's identity (the audit record and the
node's JSON log line); snapshots are taken on demand and downloaded as the
stored file; bad input is a 400 naming the field; the admin OpenAPI document
describes exactly the admin routes.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from exchange_node.server import admin
from exchange_node.server.app import build_admin_app
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow  # real node processes

ACTOR = "ops-tester@example"


def _admin(
    cluster: LocalCluster,
    node_id: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    actor: str | None = ACTOR,
) -> tuple[int, Any, dict[str, str]]:
    m = cluster.member(node_id)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{m.admin}{path}", data=data, method=method)
    if token != "":
        req.add_header("Authorization", f"Bearer {token or cluster.spec.admin_token}")
    if actor:
        req.add_header(admin.ACTOR_HEADER, actor)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw, status, headers = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, dict(exc.headers)
    if headers.get("Content-Type", "").startswith("application/json"):
        return status, json.loads(raw), headers
    return status, raw, headers


def _order(cluster: LocalCluster, node_id: int, client: str, order: dict[str, Any]):
    m = cluster.member(node_id)
    req = urllib.request.Request(
        f"http://{m.http}/v1/orders", data=json.dumps(order).encode(), method="POST"
    )
    req.add_header("Authorization", f"Bearer {cluster.key_for(client)}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _symbols(cluster: LocalCluster, node_id: int) -> dict[str, Any]:
    url = f"http://{cluster.member(node_id).http}/v1/symbols?consistency=stale"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return {s["symbol"]: s for s in json.loads(resp.read())["symbols"]}


def _eventually(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _roles(cluster: LocalCluster) -> tuple[int, int]:
    leader = cluster.wait_for_leader(30)
    follower = next(m.node_id for m in cluster.spec.members if m.node_id != leader)
    return leader, follower


def test_halt_and_resume_are_replicated_and_audited(cluster: LocalCluster) -> None:
    leader, follower = _roles(cluster)
    order = {"symbol": "ETH-USD", "side": "BUY", "price": 2_900, "quantity": 1}
    status, doc, _ = _admin(cluster, leader, "POST", "/v1/admin/symbols/ETH-USD/halt")
    assert status == 200 and doc["halted"] is True and doc["log_index"] > 0, doc
    halted_at = doc["log_index"]
    # In force on every replica: each one's own engine says halted.
    for m in cluster.spec.members:
        _eventually(lambda m=m: _symbols(cluster, m.node_id)["ETH-USD"]["halted"])
    status, body = _order(cluster, follower, "alice", {**order, "client_order_id": "h-1"})
    assert status == 422 and body["error"]["reason"] == "SYMBOL_HALTED", body

    status, doc, _ = _admin(cluster, leader, "POST", "/v1/admin/symbols/ETH-USD/resume")
    assert status == 200 and doc["halted"] is False
    status, body = _order(cluster, follower, "alice", {**order, "client_order_id": "h-2"})
    assert status == 200, body

    # Who did what, at which log index: the audit records and the node's JSON log.
    status, doc, _ = _admin(cluster, leader, "GET", "/v1/admin/audit")
    halts = [a for a in doc["actions"] if a["action"] == "halt"]
    assert halts and halts[-1]["actor"] == ACTOR and halts[-1]["auth"] == "admin-token"
    assert halts[-1]["args"] == {"symbol": "ETH-USD"}
    assert halts[-1]["outcome"] == {"log_index": halted_at}
    log_file = Path(cluster.root) / f"node-{leader}.log"

    def logged() -> bool:
        for line in log_file.read_text().splitlines():
            if line.startswith("{") and '"exchange.audit"' in line:
                rec = json.loads(line)["audit"]
                if rec["action"] == "halt" and rec["outcome"]["log_index"] == halted_at:
                    return rec["actor"] == ACTOR
        return False

    _eventually(logged)


def test_a_follower_names_the_leader(cluster: LocalCluster) -> None:
    leader, follower = _roles(cluster)
    status, doc, _ = _admin(cluster, follower, "POST", "/v1/admin/symbols/BTC-USD/halt")
    assert status == 421 and doc["leader"] == leader, doc
    assert doc["leader_address"] == cluster.member(leader).http
    assert not _symbols(cluster, leader)["BTC-USD"]["halted"]


def test_risk_limits_set_and_read_anywhere(cluster: LocalCluster) -> None:
    leader, follower = _roles(cluster)
    status, doc, _ = _admin(cluster, leader, "PUT", "/v1/admin/risk/bob", {"max_order_qty": 5})
    assert status == 200 and doc["max_order_qty"] == 5 and doc["client_id"] == "bob", doc
    # Read on a follower (after its ReadIndex barrier): the acknowledged change is there.
    status, doc, _ = _admin(cluster, follower, "GET", "/v1/admin/risk/bob")
    assert status == 200 and doc["max_order_qty"] == 5
    order = {"symbol": "BTC-USD", "side": "BUY", "price": 49_000, "quantity": 6}
    status, body = _order(cluster, follower, "bob", {**order, "client_order_id": "r-1"})
    assert status == 422 and body["error"]["reason"] == "RISK_MAX_ORDER_QTY", body
    # Fields left out keep their value; 0 lifts the limit.
    status, doc, _ = _admin(
        cluster, leader, "PUT", "/v1/admin/risk/bob", {"max_open_orders": 7, "max_order_qty": 0}
    )
    assert status == 200 and (doc["max_order_qty"], doc["max_open_orders"]) == (0, 7)
    status, body = _order(cluster, leader, "bob", {**order, "client_order_id": "r-2"})
    assert status == 200, body
    # The defaults: '*'.
    status, doc, _ = _admin(cluster, leader, "GET", "/v1/admin/risk/*")
    assert status == 200 and doc["client_id"] == "*"
    status, doc, _ = _admin(cluster, leader, "GET", "/v1/admin/audit")
    assert [a["args"] for a in doc["actions"] if a["action"] == "risk-set"][:1] == [
        {"client_id": "bob", "max_order_qty": 5}
    ]


def test_bad_input_names_the_field(cluster: LocalCluster) -> None:
    leader, _ = _roles(cluster)
    cases = [
        ("PUT", "/v1/admin/risk/bob", {"max_order_qty": -1}, "max_order_qty"),
        ("PUT", "/v1/admin/risk/bob", {"max_position": True}, "max_position"),
        ("PUT", "/v1/admin/risk/bob", {"max_qty": 1}, "max_qty"),
        ("PUT", "/v1/admin/risk/bob", {}, "body"),
    ]
    for method, path, body, field in cases:
        status, doc, _ = _admin(cluster, leader, method, path, body)
        assert status == 400 and doc["field"] == field, (body, doc)
    status, doc, _ = _admin(cluster, leader, "POST", "/v1/admin/symbols/NOPE/halt")
    assert status == 404 and doc["field"] == "symbol"
    status, doc, _ = _admin(
        cluster, leader, "POST", "/v1/admin/symbols/BTC-USD/halt", actor="bad\tname"
    )
    assert status == 400 and doc["field"] == admin.ACTOR_HEADER
    status, _, _ = _admin(cluster, leader, "POST", "/v1/admin/symbols/BTC-USD/halt", token="")
    assert status == 401
    status, _, _ = _admin(cluster, leader, "GET", "/v1/admin/risk/bob", token="wrong")
    assert status == 401
    assert not _symbols(cluster, leader)["BTC-USD"]["halted"]


def test_snapshot_on_demand_and_download(cluster: LocalCluster) -> None:
    _, follower = _roles(cluster)
    status, doc, _ = _admin(cluster, follower, "POST", "/v1/admin/snapshot")
    assert status == 200 and doc["index"] > 0 and doc["term"] > 0, doc
    # The agreed alias path serves the same file.
    for prefix in ("/v1/admin", "/admin/v1"):
        status, raw, headers = _admin(cluster, follower, "GET", f"{prefix}/snapshot")
        assert status == 200 and headers["Content-Type"] == "application/octet-stream"
        assert int(headers["X-Snapshot-Index"]) >= doc["index"]
        name = f"snap-{int(headers['X-Snapshot-Index']):016x}-{int(headers['X-Snapshot-Term']):016x}.snap"
        stored = Path(cluster.member(follower).data_dir) / name
        assert raw == stored.read_bytes()


def test_openapi_describes_exactly_the_admin_routes() -> None:
    class _Config:
        admin_token = "t"

    class _Node:
        config = _Config()

    app = build_admin_app(_Node())
    served = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method != "HEAD" and path.startswith("/v1/admin"):
            served.add((route.method.lower(), path))
    doc = admin.admin_openapi()
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == described
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["tags"] and op["description"], (method, path)

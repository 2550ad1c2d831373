"""Exactly-once retention as a replicated setting (issue 14): the admin API and
`exchange retention` set it through the log, every replica holds it at once, a
node's flags set it again at each new leader, and bad input names the field.

Real node processes: the package's 3-node cluster, and a 1-node cluster of its
own for the flags (restarted on the same data).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exchange_node.cli import main as exchange
from exchange_node.limits import (
    ENGINE_DEDUP_HORIZON_NS,
    ENGINE_DEDUP_MAX_KEYS,
    ENGINE_FINISHED_WINDOW,
)
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow  # real node processes

DEFAULTS = {
    "exactly_once_horizon_seconds": ENGINE_DEDUP_HORIZON_NS // 1_000_000_000,
    "exactly_once_max_keys": ENGINE_DEDUP_MAX_KEYS,
    "finished_orders": ENGINE_FINISHED_WINDOW,
}


def _admin(cluster: LocalCluster, node_id: int, method: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://{cluster.member(node_id).admin}/v1/admin/retention", data=data, method=method
    )
    req.add_header("Authorization", f"Bearer {cluster.spec.admin_token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _ioc(cluster: LocalCluster, node_id: int, key: str) -> dict[str, Any]:
    """An IOC buy far below the market: it expires at once, its result is remembered."""
    order = {
        "symbol": "BTC-USD",
        "side": "BUY",
        "price": 45_000,
        "quantity": 1,
        "time_in_force": "IOC",
        "client_order_id": key,
    }
    req = urllib.request.Request(
        f"http://{cluster.member(node_id).http}/v1/orders",
        data=json.dumps(order).encode(),
        method="POST",
    )
    req.add_header("Authorization", f"Bearer {cluster.key_for('carol')}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


def _settings(doc: dict[str, Any]) -> dict[str, int]:
    return {key: doc[key] for key in DEFAULTS}


@pytest.fixture
def retention_restored(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The package's cluster, its retention put back to the defaults afterwards."""
    yield cluster
    leader = cluster.wait_for_leader(30)
    assert _admin(cluster, leader, "PUT", DEFAULTS)[0] == 200


def test_a_lower_cap_is_in_force_on_every_replica_at_once(retention_restored: LocalCluster) -> None:
    cluster = retention_restored
    leader = cluster.wait_for_leader(30)
    placed = [_ioc(cluster, leader, f"ret-{k}") for k in range(4)]
    code, doc = _admin(cluster, leader, "PUT", {"exactly_once_max_keys": 3})
    assert code == 200 and doc["exactly_once_max_keys"] == 3 and doc["log_index"] > 0, doc
    assert doc["exactly_once_keys"] == 3  # the oldest forgotten at that entry
    # Inside the cap a retry is answered from the past; the key it dropped is new again.
    assert _ioc(cluster, leader, "ret-3")["log_index"] == placed[3]["log_index"]
    assert _ioc(cluster, leader, "ret-0")["log_index"] > doc["log_index"]
    # Every replica holds the same settings and the same table (read after a barrier).
    docs = [_admin(cluster, m.node_id, "GET")[1] for m in cluster.spec.members]
    assert all(_settings(d) == {**DEFAULTS, "exactly_once_max_keys": 3} for d in docs), docs
    assert {d["exactly_once_keys"] for d in docs} == {3}
    assert len({d["exactly_once_evicted_by_cap"] for d in docs}) == 1


def test_bad_input_names_the_field_and_changes_nothing(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader(30)
    before = _settings(_admin(cluster, leader, "GET")[1])
    for body, field in (
        ({"exactly_once_max_keys": 0}, "exactly_once_max_keys"),
        ({"exactly_once_horizon_seconds": True}, "exactly_once_horizon_seconds"),
        ({"exactly_once_horizon_seconds": 400 * 86_400}, "exactly_once_horizon_seconds"),
        ({"finished_orders": 1 << 32}, "finished_orders"),
        ({"horizon": 60}, "horizon"),
        ({}, "body"),
    ):
        code, doc = _admin(cluster, leader, "PUT", body)
        assert code == 400 and doc["field"] == field, (body, doc)
    assert _settings(_admin(cluster, leader, "GET")[1]) == before
    follower = next(m.node_id for m in cluster.spec.members if m.node_id != leader)
    code, doc = _admin(cluster, follower, "PUT", {"finished_orders": 10})
    assert code == 421 and doc["leader"] == leader


def test_the_cli_reads_and_sets_it(
    retention_restored: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = retention_restored
    token = tmp_path / "admin-token"
    token.write_text(cluster.spec.admin_token + "\n")
    flags = [
        *("--endpoints", ",".join(f"http://{m.admin}" for m in cluster.spec.members)),
        *("--admin-token-file", str(token), "-o", "json"),
    ]
    assert exchange([*flags, "retention", "set", "--horizon", "90m"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["exactly_once_horizon_seconds"] == 5_400
    assert exchange([*flags, "retention", "get"]) == 0
    assert json.loads(capsys.readouterr().out)["exactly_once_horizon_seconds"] == 5_400
    with pytest.raises(SystemExit) as exc:
        exchange([*flags, "retention", "set", "--horizon", "soon"])
    assert exc.value.code == 2 and "--horizon" in capsys.readouterr().err
    assert exchange([*flags, "retention", "set"]) != 0
    assert "give at least one of --horizon" in capsys.readouterr().err


def test_flags_are_set_by_the_leader_and_unset_ones_keep_the_clusters_value(
    tmp_path: Path,
) -> None:
    one = LocalCluster.create(
        tmp_path / "one",
        1,
        election_ms=400,
        heartbeat_ms=40,
        extra_args=["--exactly-once-horizon=2h", "--finished-orders=1000"],
    )
    one.start_all()
    try:
        one.wait_for_leader(60)
        code, doc = _admin(one, 1, "GET")
        assert code == 200, doc
        assert _settings(doc) == {
            **DEFAULTS,
            "exactly_once_horizon_seconds": 7_200,
            "finished_orders": 1_000,
        }
        # A setting no flag names, changed through the API, survives a restart;
        # the flagged ones are set again by the new term's leader.
        assert _admin(one, 1, "PUT", {"exactly_once_max_keys": 50, "finished_orders": 7})[0] == 200
        one.stop(1)
        one.start(1)
        one.wait_for_leader(60)

        def settled() -> dict[str, int] | None:
            code, doc = _admin(one, 1, "GET")
            return _settings(doc) if code == 200 and doc["finished_orders"] == 1_000 else None

        deadline = time.monotonic() + 30
        while (now := settled()) is None:
            assert time.monotonic() < deadline, "the leader did not set --finished-orders again"
            time.sleep(0.1)
        assert now == {
            "exactly_once_horizon_seconds": 7_200,
            "exactly_once_max_keys": 50,
            "finished_orders": 1_000,
        }
        # The first leader set its flags over the engine's defaults (expected, no
        # warning); the second replaced what PUT had set, and says so by name.
        log = one.log_path(1).read_text()
        assert "setting the retention from this member's flags" in log
        warnings = [line for line in log.splitlines() if "retention flags replace" in line]
        assert len(warnings) == 1, warnings
        assert "finished_orders 7 -> 1000" in warnings[0]
        assert "exactly_once_max_keys" not in warnings[0]  # not flagged: PUT's 50 stays
    finally:
        one.stop_all(10)

"""Backup and restore with real parts: a 3-node cluster of real processes, its admin
API, a directory store and moto's S3 server started by the test, and a new 3-node
cluster restored from the backup with the same orders, positions and state hash.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exchange_node import backup
from exchange_node.server.envelope import MemberInfo
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """moto's S3-compatible server as its own process on a loopback port."""
    pytest.importorskip("boto3", reason="boto3 is not installed (test extra)")
    pytest.importorskip("moto.server", reason="moto[server] is not installed (test extra)")
    port = _free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 - owned by the process
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise AssertionError((tmp_path / "moto.log").read_text()) from None
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    try:
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        process.terminate()
        process.wait(10)
        log.close()


def start(root: Path) -> LocalCluster:
    cluster = LocalCluster.create(
        root, 3, election_ms=400, heartbeat_ms=40, extra_args=["--log-level=info"]
    )
    cluster.start_all()
    try:
        cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
    except BaseException:
        cluster.stop_all(5)
        raise
    return cluster


def trade(cluster: LocalCluster) -> list[tuple[str, str]]:
    """alice rests sells, bob takes some; (client, client_order_id) of every order."""
    leader = cluster.wait_for_leader()
    placed = []
    for i in range(6):
        for client, side in (("alice", "SELL"), ("bob", "BUY")):
            if client == "bob" and i % 2:
                continue  # leave some of alice's orders resting
            order_id = f"{client}-{i}"
            body = {"symbol": "BTC-USD", "side": side, "price": 50000, "quantity": 1,
                    "client_order_id": order_id}  # fmt: skip
            status, answer = cluster.request(
                leader, "POST", "/v1/orders", body, token=cluster.key_for(client)
            )
            assert status == 200, answer
            placed.append((client, order_id))
    return placed


def view(cluster: LocalCluster, placed: list[tuple[str, str]]) -> dict[str, Any]:
    """Orders (by client order id) and positions, as the API shows them, plus the hash."""
    leader = cluster.wait_for_leader()
    orders = {}
    for client, order_id in placed:
        status, doc = cluster.request(
            leader, "GET", f"/v1/orders/by-client-id/{order_id}", token=cluster.key_for(client)
        )
        assert status == 200, doc
        orders[order_id] = {k: doc.get(k) for k in ("order_id", "status", "filled_quantity")}
    positions = {}
    for client in ("alice", "bob"):
        status, doc = cluster.request(leader, "GET", "/v1/positions", token=cluster.key_for(client))
        assert status == 200, doc
        doc.pop("read")  # the applied index the answer reflects: each cluster its own
        positions[client] = doc
    return {"orders": orders, "positions": positions}


def state_hash_at(cluster: LocalCluster, index: int) -> str:
    """The leader's state hash once it reports one at or after `index` with nothing newer
    applied to the engine (its applied entries past `index` are Raft no-ops)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = cluster.status(cluster.wait_for_leader()) or {}
        if int(status.get("state_hash_index") or -1) >= index and status.get("state_hash"):
            return str(status["state_hash"])
        time.sleep(0.2)
    raise AssertionError(f"no state hash at {index}: {status}")


def test_backup_to_a_directory_and_s3_then_restore_a_new_cluster(
    tmp_path: Path, s3_endpoint: str
) -> None:
    import boto3

    source = start(tmp_path / "source")
    try:
        placed = trade(source)
        before = view(source, placed)
        leader = source.member(source.wait_for_leader())
        # What the CronJob does: every member's admin URL; the leader is found and used.
        admin = backup.find_leader(
            [f"http://{m.admin}" for m in source.spec.members], source.spec.admin_token
        )
        assert admin in {f"http://{m.admin}" for m in source.spec.members}
        del leader
        directory = backup.DirectoryStore(tmp_path / "backups")
        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
            Bucket="backups"
        )
        s3 = backup.store_from_url("s3://backups/exchange", endpoint_url=s3_endpoint)
        taken = [
            backup.take_backup(admin, source.spec.admin_token, store, "prod")
            for store in (directory, s3)
        ]
        source_hash = state_hash_at(source, taken[0].index)
    finally:
        source.stop_all(10)

    assert taken[0].state_hash == source_hash  # the snapshot is the state the nodes hash
    for store, manifest in ((directory, taken[0]), (s3, taken[1])):
        (listed,) = [m for m in backup.list_backups(store, "prod") if m.name == manifest.name]
        assert listed == manifest
        assert backup.fetch_backup(store, manifest)  # checked against its SHA-256

    # A new cluster (other ports, other data dirs, other keys) from the S3 copy.
    target = LocalCluster.create(tmp_path / "target", 3, election_ms=400, heartbeat_ms=40)
    target.spec.api_keys = {
        token: client for token, client in source.spec.api_keys.items()
    }  # the same clients
    target.spec.save(target.root)
    members = {
        m.node_id: MemberInfo(name=f"local-{m.node_id - 1}", grpc=m.grpc, http=m.http)
        for m in target.spec.members
    }
    raw = backup.fetch_backup(s3, taken[1])
    # Members 1 and 2 as the init container of spec.restoreFrom does it (the CLI, by pod
    # name, --if-empty), from the directory copy; member 3 by the function, from S3.
    member_args = [f"--member={i}={m.name},{m.grpc},{m.http}" for i, m in members.items()]
    for m in target.spec.members[:2]:
        argv = ["restore", "--cluster=prod", f"--store={tmp_path / 'backups'}",
                f"--data-dir={m.data_dir}", f"--pod-name=local-{m.node_id - 1}", "--if-empty",
                *member_args]  # fmt: skip
        assert backup.main(argv) == 0
        assert backup.main(argv) == 0  # a restarted pod: its data is kept, nothing written
    third = target.spec.members[2]
    backup.restore_data_dir(raw, third.data_dir, third.node_id, members)
    with pytest.raises(backup.BackupError, match="not empty"):
        backup.restore_data_dir(raw, target.spec.members[0].data_dir, 1, members)
    later = tmp_path / "added-later"  # a pod added by scaling joins empty
    argv = ["restore", "--cluster=prod", f"--store={tmp_path / 'backups'}",
            f"--data-dir={later}", "--pod-name=local-3", "--if-empty", *member_args]  # fmt: skip
    assert backup.main(argv) == 0 and not later.exists()
    target.start_all()
    try:
        target.wait_for_leader(60)
        target.wait_ready(timeout=60)
        assert view(target, placed) == before
        assert state_hash_at(target, taken[1].index) == source_hash
        # The restored cluster takes new orders.
        status, answer = target.request(
            target.wait_for_leader(), "POST", "/v1/orders",
            {"symbol": "BTC-USD", "side": "BUY", "price": 50000, "quantity": 1},
            token=target.key_for("bob"),
        )  # fmt: skip
        assert status == 200, answer
    finally:
        target.stop_all(10)


def test_a_damaged_backup_is_refused(tmp_path: Path) -> None:
    with pytest.raises(backup.BackupError, match="not a usable snapshot"):
        backup.inspect_snapshot(b"\x00" * 64)
    store = backup.DirectoryStore(tmp_path)
    manifest = backup.Manifest("c", "c/1-1", 1, 1, "0" * 64, "", 0, {})
    store.put("c/1-1.snap", b"bytes")
    with pytest.raises(backup.BackupError, match="does not match"):
        backup.fetch_backup(store, manifest)

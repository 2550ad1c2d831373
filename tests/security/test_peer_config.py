"""Peer security configuration: secure by default, clear refusals, real node processes."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from exchange_node.security import generate_ca, issue_member_cert, write_pair
from exchange_node.server import config as node_config
from exchange_node.tools.local import LocalCluster


def parse(argv: list[str], env: dict[str, str] | None = None) -> node_config.NodeConfig:
    parser = argparse.ArgumentParser()
    node_config.add_arguments(parser)
    return node_config.from_args(parser.parse_args(argv), env=env or {})


@pytest.fixture
def member_files(tmp_path: Path):
    ca = generate_ca("ca")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)

    def files(node_id: int, cluster: str = "prod") -> list[str]:
        cert, key = tmp_path / f"m{node_id}-{cluster}.crt", tmp_path / f"m{node_id}-{cluster}.key"
        write_pair(issue_member_cert(ca, cluster, node_id), cert, key)
        return [f"--peer-tls-cert={cert}", f"--peer-tls-key={key}", f"--peer-tls-ca={ca_file}"]

    return files


def test_no_peer_tls_and_no_insecure_flag_refuses_to_start() -> None:
    with pytest.raises(node_config.ConfigError) as info:
        parse([])
    message = str(info.value)
    for flag in ("--peer-tls-cert", "--peer-tls-key", "--peer-tls-ca", "--insecure-peers"):
        assert flag in message


def test_insecure_peers_is_a_flag_or_a_variable() -> None:
    cfg = parse(["--insecure-peers"])
    assert cfg.insecure_peers and cfg.peer_tls is None
    assert cfg.cluster_id == "exchange" and cfg.max_snapshot_bytes == 1 << 30
    assert parse([], {"EXCHANGE_INSECURE_PEERS": "true"}).insecure_peers
    with pytest.raises(node_config.ConfigError, match="--insecure-peers"):
        parse(["--insecure-peers=maybe"])


def test_tls_files_are_all_or_none(member_files, tmp_path: Path) -> None:
    cert, key, ca = member_files(1)
    with pytest.raises(node_config.ConfigError, match="missing: --peer-tls-ca"):
        parse(["--cluster-id=prod", cert, key])
    with pytest.raises(node_config.ConfigError, match="missing: --peer-tls-key, --peer-tls-ca"):
        parse(["--cluster-id=prod", cert])
    with pytest.raises(node_config.ConfigError, match="--insecure-peers contradicts"):
        parse(["--cluster-id=prod", "--insecure-peers", cert, key, ca])
    with pytest.raises(node_config.ConfigError, match="--peer-tls-ca: cannot read"):
        parse(["--cluster-id=prod", cert, key, f"--peer-tls-ca={tmp_path / 'nope'}"])
    cfg = parse(["--cluster-id=prod", "--node-id=1", cert, key, ca])
    assert cfg.peer_tls is not None and not cfg.insecure_peers


def test_certificate_of_another_member_or_cluster_refuses_to_start(member_files) -> None:
    with pytest.raises(
        node_config.ConfigError, match="certificate is for member 2, but this node's id is 1"
    ):
        parse(["--cluster-id=prod", "--node-id=1", *member_files(2)])
    with pytest.raises(
        node_config.ConfigError,
        match="certificate is for cluster 'prod', but --cluster-id is 'exchange'",
    ):
        parse(["--node-id=1", *member_files(1)])


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--cluster-id=Prod"], "--cluster-id"),
        (["--cluster-id=a_b"], "--cluster-id"),
        (["--max-snapshot-bytes=lots"], "--max-snapshot-bytes"),
        (["--max-snapshot-bytes=0"], "--max-snapshot-bytes"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], named: str) -> None:
    with pytest.raises(node_config.ConfigError, match=named):
        parse(["--insecure-peers", *argv])


def test_max_snapshot_bytes_units() -> None:
    assert (
        parse(["--insecure-peers", "--max-snapshot-bytes=512MiB"]).max_snapshot_bytes == 512 << 20
    )
    assert parse(["--insecure-peers", "--max-snapshot-bytes=2GiB"]).max_snapshot_bytes == 2 << 30
    assert parse(["--insecure-peers", "--max-snapshot-bytes=4096"]).max_snapshot_bytes == 4096


def test_node_process_refuses_a_certificate_of_another_member(member_files, tmp_path: Path) -> None:
    """No --node-id: the id comes from the name's ordinal (1), the certificate says 3."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange_node.cli",
            "node",
            "--name=exchange-0",
            "--cluster-id=prod",
            "--peers=1=127.0.0.1:1",
            f"--data-dir={tmp_path / 'data'}",
            "--listen-host=127.0.0.1",
            "--http-port=0",
            "--grpc-port=0",
            "--admin-port=0",
            *member_files(3),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "the certificate is for member 3, but this node's id is 1" in proc.stderr


def _metric(cluster: LocalCluster, name: str) -> float:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{cluster.member(1).http}/metrics", timeout=2) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith(name + " "):
                        return float(line.split()[1])
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never appeared")
        time.sleep(0.2)


@pytest.mark.parametrize("peer_tls", [True, False])
def test_local_cluster_runs_mtls_by_default_and_says_when_it_does_not(
    tmp_path: Path, peer_tls: bool
) -> None:
    root = tmp_path / "c"
    cluster = LocalCluster.create(root, 2, election_ms=400, heartbeat_ms=40, peer_tls=peer_tls)
    cluster.start_all()
    try:
        cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
        assert _metric(cluster, "exchange_peer_tls_enabled") == (1.0 if peer_tls else 0.0)
        log = (root / "node-1.log").read_text()
        assert ("INSECURE PEERS" in log) is not peer_tls
        assert stat.S_IMODE(os.stat(root / "cluster.json").st_mode) == 0o600
        if peer_tls:
            keys = sorted((root / "pki").glob("*.key"))
            assert [k.name for k in keys] == ["ca.key", "member-1.key", "member-2.key"]
            assert all(stat.S_IMODE(os.stat(k).st_mode) == 0o600 for k in keys)
            assert "--peer-tls-cert=" in " ".join(cluster.command(cluster.member(1)))
    finally:
        cluster.stop_all(10)

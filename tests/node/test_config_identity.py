"""Flags, environment and YAML per docs/node-contract.md; node id rules; envelopes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from exchange_node.server import config as node_config
from exchange_node.server.envelope import (
    EnvelopeError,
    MemberInfo,
    unwrap_entry,
    unwrap_snapshot,
    wrap_entry,
    wrap_snapshot,
)
from exchange_node.server.identity import IDENTITY_FILE, IdentityError, resolve_node_id


def parse(argv: list[str], env: dict[str, str] | None = None) -> node_config.NodeConfig:
    parser = argparse.ArgumentParser()
    node_config.add_arguments(parser)
    # Peer TLS and its refusals are tested in tests/security/test_peer_config.py.
    env = {"EXCHANGE_INSECURE_PEERS": "true", **(env or {})}
    return node_config.from_args(parser.parse_args(argv), env=env)


def test_defaults_follow_the_contract() -> None:
    cfg = parse([])
    assert (cfg.http_port, cfg.grpc_port, cfg.listen_host) == (8080, 7070, "0.0.0.0")
    assert cfg.cluster_state == "new" and cfg.data_dir == Path("./data")
    assert cfg.shutdown_grace_seconds == 20.0
    assert cfg.peers == []
    assert cfg.commit_hold_ms == 2.0
    assert parse(["--commit-hold-ms=0"]).commit_hold_ms == 0.0


def test_every_flag_has_its_environment_variable_and_flags_win() -> None:
    env = {
        "EXCHANGE_HTTP_PORT": "9000",
        "EXCHANGE_GRPC_PORT": "9001",
        "EXCHANGE_PEERS": "1=a:7070,2=b:7070",
        "EXCHANGE_CLUSTER_STATE": "existing",
        "EXCHANGE_SNAPSHOT_THRESHOLD": "77",
        "EXCHANGE_ADMIN_TOKEN": "sekrit",
        "EXCHANGE_API_KEYS": "tok1=alice,tok2=bob",
    }
    cfg = parse(["--http-port=9100"], env)
    assert cfg.http_port == 9100  # the flag wins
    assert cfg.grpc_port == 9001
    assert [(p.node_id, p.grpc_address, p.http_address) for p in cfg.peers] == [
        (1, "a:7070", "a:9100"),
        (2, "b:7070", "b:9100"),
    ]
    assert cfg.cluster_state == "existing" and cfg.snapshot_threshold == 77
    assert cfg.admin_token == "sekrit"
    assert cfg.api_keys == {"tok1": "alice", "tok2": "bob"}


def test_peer_http_addresses() -> None:
    cfg = parse(["--peers=1=h:1,2=h:2", "--peer-http=1=h:11,2=h:12"])
    assert [p.http_address for p in cfg.peers] == ["h:11", "h:12"]
    with pytest.raises(node_config.ConfigError, match="--peer-http"):
        parse(["--peers=1=h:1", "--peer-http=3=h:13"])


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--http-port=http"], {}, "--http-port"),
        (["--grpc-port=70000"], {}, "--grpc-port"),
        (["--peers=1=nohost"], {}, "--peers"),
        (["--peers=0=h:1"], {}, "--peers"),
        (["--cluster-state=old"], {}, "--cluster-state"),
        (["--node-id=0"], {}, "--node-id"),
        ([], {"EXCHANGE_SNAPSHOT_THRESHOLD": "-1"}, "EXCHANGE_SNAPSHOT_THRESHOLD"),
        (["--election-ms=100", "--heartbeat-ms=80"], {}, "--election-ms"),
        (["--shutdown-grace-seconds=nan"], {}, "--shutdown-grace-seconds"),
        (["--log-level=loud"], {}, "--log-level"),
        (["--commit-hold-ms=-1"], {}, "--commit-hold-ms"),
        (["--commit-hold-ms=200", "--heartbeat-ms=100"], {}, "--commit-hold-ms"),
        ([], {"EXCHANGE_COMMIT_HOLD_MS": "inf"}, "EXCHANGE_COMMIT_HOLD_MS"),
        (["--config=/nonexistent.yaml"], {}, "--config"),
    ],
)
def test_bad_values_name_the_flag(argv, env, named) -> None:
    with pytest.raises(node_config.ConfigError, match=named.replace("-", r"\-")):
        parse(argv, env)


def test_cli_prints_the_flag_and_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "exchange_node.cli", "node", "--http-port=abc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--http-port" in proc.stderr and "abc" in proc.stderr


def test_yaml_symbols_and_risk(tmp_path) -> None:
    path = tmp_path / "exchange.yaml"
    path.write_text(
        "symbols:\n"
        "  - {name: AAPL, tick_size: 5, lot_size: 10, price_band_bps: 500, reference_price: 18000}\n"
        "risk: {max_order_qty: 100, max_notional: 1000000, max_position: 500}\n"
    )
    cfg = parse([f"--config={path}"])
    assert [s.name for s in cfg.symbols] == ["AAPL"]
    assert cfg.symbols[0].tick_size == 5 and cfg.risk.max_position == 500
    path.write_text("symbols:\n  - {name: X, tick_size: 1.5}\n")
    with pytest.raises(node_config.ConfigError, match="tick_size"):
        parse([f"--config={path}"])
    path.write_text("risk: {max_leverage: 3}\n")
    with pytest.raises(node_config.ConfigError, match="max_leverage"):
        parse([f"--config={path}"])


def test_node_id_rules(tmp_path) -> None:
    # Explicit id wins and is stored.
    d1 = tmp_path / "a"
    assert (
        resolve_node_id(data_dir=d1, name="x", explicit=5, cluster_state="new", initial_size=3) == 5
    )
    assert json.loads((d1 / IDENTITY_FILE).read_text())["node_id"] == 5
    # The stored id is kept on restart (the name no longer matters).
    assert (
        resolve_node_id(
            data_dir=d1, name="ex-0", explicit=None, cluster_state="new", initial_size=3
        )
        == 5
    )
    # A stored id that contradicts --node-id is refused.
    with pytest.raises(IdentityError):
        resolve_node_id(data_dir=d1, name="x", explicit=6, cluster_state="new", initial_size=3)
    # Ordinal of a new cluster's member: ordinal + 1.
    d2 = tmp_path / "b"
    assert (
        resolve_node_id(
            data_dir=d2, name="ex-2", explicit=None, cluster_state="new", initial_size=3
        )
        == 3
    )
    # Beyond the initial size, or joining an existing cluster: a fresh random id.
    d3 = tmp_path / "c"
    fresh = resolve_node_id(
        data_dir=d3, name="ex-3", explicit=None, cluster_state="new", initial_size=3
    )
    assert fresh >= 1000
    d4 = tmp_path / "d"
    joined = resolve_node_id(
        data_dir=d4, name="ex-0", explicit=None, cluster_state="existing", initial_size=3
    )
    assert joined >= 1000


def test_entry_and_snapshot_envelopes_round_trip() -> None:
    data = wrap_entry(b"engine-batch", b"00-abc-def-01")
    assert unwrap_entry(data) == (1, b"00-abc-def-01", b"engine-batch")
    with pytest.raises(EnvelopeError):
        unwrap_entry(b"\x01\x02")
    with pytest.raises(EnvelopeError):
        unwrap_entry(b"\x00" + data[1:])
    members = {1: MemberInfo("n1", "h:1", "h:2"), 7: MemberInfo("n7", "h:3", "h:4")}
    assert unwrap_snapshot(wrap_snapshot(members, b"state")) == (members, b"state")
    info = MemberInfo.from_context(members[7].to_context(), 7)
    assert info == members[7]

"""`exchange` admin commands (etcdctl style) against a real 3-node cluster.

In-process through ``exchange_node.cli.main`` (the real parser and code paths),
and as a real process for ``--version`` and bad flags.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from exchange_node.cli import main as exchange
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow  # real node processes


def _flags(cluster: LocalCluster, tmp_path: Path) -> list[str]:
    token = tmp_path / "admin-token"
    token.write_text(cluster.spec.admin_token + "\n")
    endpoints = ",".join(f"http://{m.admin}" for m in cluster.spec.members)
    return ["--endpoints", endpoints, "--admin-token-file", str(token)]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = exchange(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cluster_status_in_every_output(
    cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = _flags(cluster, tmp_path)
    leader = cluster.wait_for_leader(30)
    code, out, _ = _run(capsys, *flags, "cluster", "status")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["ENDPOINT", "ID", "NAME", "ROLE"]
    assert sorted(r.split()[3] for r in rows) == ["follower", "follower", "leader"]
    code, out, _ = _run(capsys, *flags, "-o", "json", "cluster", "status")
    doc = json.loads(out)
    assert code == 0 and doc["leader"] == leader and len(doc["endpoints"]) == 3
    # Flags after the command work too, and yaml.
    code, out, _ = _run(capsys, "member", "list", *flags, "-o", "yaml")
    doc = yaml.safe_load(out)
    assert code == 0 and sorted(m["id"] for m in doc["members"]) == [1, 2, 3]
    code, out, _ = _run(
        capsys, *flags, "cluster", "status", "--watch", "--interval", "0.1", "--count", "2"
    )
    assert code == 0 and out.count("ENDPOINT") == 2


def test_env_variables_stand_for_the_flags(
    cluster: LocalCluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flags = _flags(cluster, tmp_path)
    monkeypatch.setenv("EXCHANGE_ENDPOINTS", flags[1])
    monkeypatch.setenv("EXCHANGE_ADMIN_TOKEN_FILE", flags[3])
    code, out, _ = _run(capsys, "-o", "json", "risk", "get", "*")
    assert code == 0 and json.loads(out)["client_id"] == "*"


def test_symbol_risk_leader_and_snapshot(
    cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = _flags(cluster, tmp_path)
    # Only a follower's endpoint first: the client follows the 421 to the leader.
    leader = cluster.wait_for_leader(30)
    code, out, _ = _run(capsys, *flags, "-o", "json", "symbol", "halt", "BTC-USD")
    assert code == 0 and json.loads(out)["halted"] is True
    code, out, _ = _run(capsys, *flags, "-o", "json", "symbol", "resume", "BTC-USD")
    assert code == 0 and json.loads(out)["halted"] is False
    code, out, _ = _run(
        capsys,
        *flags,
        "-o",
        "json",
        "risk",
        "set",
        "alice",
        "--max-order-qty",
        "9",
        "--max-open-orders",
        "3",
    )
    doc = json.loads(out)
    assert code == 0 and (doc["max_order_qty"], doc["max_open_orders"]) == (9, 3)
    code, out, _ = _run(capsys, *flags, "risk", "get", "alice")
    assert code == 0 and out.splitlines()[1].split()[:2] == ["alice", "9"]

    # Who did what: every endpoint's audit, oldest first, naming this user@host.
    code, out, _ = _run(capsys, *flags, "-o", "json", "audit", "list")
    records = json.loads(out)
    mine = [r for r in records if r["action"] in ("halt", "resume", "risk-set")][-3:]
    assert code == 0 and [r["action"] for r in mine] == ["halt", "resume", "risk-set"]
    assert all("@" in r["actor"] and r["node_id"] == leader for r in mine)
    assert [r["at"] for r in records] == sorted(r["at"] for r in records)
    code, out, _ = _run(capsys, *flags, "audit", "list")
    assert code == 0 and out.splitlines()[0].split()[:4] == ["AT", "NODE", "ACTION", "ARGS"]
    target = next(m.node_id for m in cluster.spec.members if m.node_id != leader)
    code, out, _ = _run(capsys, *flags, "-o", "json", "leader", "transfer", "--to", str(target))
    assert code == 0 and json.loads(out)["leader"] == target
    assert cluster.wait_for_leader(30) == target

    file = tmp_path / "backup.snap"
    code, out, _ = _run(capsys, *flags, "-o", "json", "snapshot", "save", str(file))
    doc = json.loads(out)
    assert code == 0 and doc["bytes"] == file.stat().st_size > 0 and doc["index"] > 0
    # The file the first endpoint's node stored, byte for byte.
    first = cluster.spec.members[0]
    stored = Path(first.data_dir) / f"snap-{doc['index']:016x}-{doc['term']:016x}.snap"
    assert file.read_bytes() == stored.read_bytes()


def test_member_add_and_remove(
    cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = _flags(cluster, tmp_path)
    code, out, _ = _run(
        capsys,
        *flags,
        "-o",
        "json",
        "member",
        "add",
        "9",
        "127.0.0.1:1",
        "--http-address",
        "127.0.0.1:2",
    )
    assert code == 0 and json.loads(out)["added"] == 9
    code, out, _ = _run(capsys, *flags, "-o", "json", "member", "list")
    assert 9 in [m["id"] for m in json.loads(out)["members"]]
    code, out, _ = _run(capsys, *flags, "-o", "json", "member", "remove", "9")
    assert code == 0 and json.loads(out)["removed"] == 9


def test_errors_name_the_flag(
    cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = _flags(cluster, tmp_path)
    code, _, err = _run(
        capsys, "--endpoints", "nope", "--admin-token-file", flags[3], "cluster", "status"
    )
    assert code == 2 and "--endpoints" in err
    code, _, err = _run(
        capsys, *flags[:2], "--admin-token-file", str(tmp_path / "missing"), "cluster", "status"
    )
    assert code == 2 and "--admin-token-file" in err
    code, _, err = _run(capsys, *flags, "risk", "set", "alice")
    assert code == 2 and "--max-order-qty" in err
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    code, _, err = _run(capsys, *flags[:2], "--admin-token-file", str(wrong), "risk", "get", "x")
    assert code == 1 and "401" in err
    code, _, err = _run(capsys, *flags, "symbol", "halt", "NOPE")
    assert code == 1 and "symbol" in err
    for argv, flag in (
        (["-o", "xml", "cluster", "status"], "-o"),
        (["member", "remove", "zero"], "ID"),
        (["risk", "set", "a", "--max-notional", "-5"], "--max-notional"),
        (["cluster", "status", "--bogus"], "--bogus"),
        (["cluster", "status", "--watch", "--interval", "0"], "--interval"),
        (["top", "--refresh", "soon"], "--refresh"),
    ):
        with pytest.raises(SystemExit) as exc:
            exchange([*flags, *argv])
        assert exc.value.code == 2 and flag in capsys.readouterr().err, argv


def test_version_as_a_real_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exchange_node.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.startswith("exchange ") and "Python" in done.stdout


def test_a_local_cluster_is_found_without_flags(
    cluster: LocalCluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EXCHANGE_ENDPOINTS", raising=False)
    monkeypatch.delenv("EXCHANGE_ADMIN_TOKEN_FILE", raising=False)
    code, out, _ = _run(capsys, "--data-root", str(cluster.root), "-o", "json", "cluster", "status")
    assert code == 0 and json.loads(out)["leader"] in (1, 2, 3)
    # `make demo` keeps its cluster in ./.demo: found from the working directory.
    (tmp_path / ".demo").symlink_to(cluster.root)
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, "-o", "json", "member", "list")
    assert code == 0 and len(json.loads(out)["members"]) == 3
    # And `exchange local status` finds it there too.
    code, out, _ = _run(capsys, "local", "status")
    assert code == 0 and "leader" in out and str(cluster.root.resolve()) not in out


def test_top_is_wired_to_the_public_endpoints(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        exchange(["top", "--help"])
    assert exc.value.code == 0 and "--symbol" in capsys.readouterr().out
    from exchange_node import ctl

    args = argparse.Namespace(endpoints=None, admin_token_file=None, data_root=cluster.root)
    target = ctl.resolve(args, env={})
    assert target.api_endpoints == [f"http://{m.http}" for m in cluster.spec.members]
    assert target.admin_endpoints == [f"http://{m.admin}" for m in cluster.spec.members]
    assert target.token == cluster.spec.admin_token

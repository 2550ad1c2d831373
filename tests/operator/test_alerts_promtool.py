"""The PrometheusRule's alerts with the real promtool (level 4 of proof, offline part).

`promtool check rules` on the generated rule file, then `promtool test rules`
with series fixtures: each alert fires on a fixture made to fire it (with its
exact labels and annotations) and stays silent on a healthy one and on another
cluster's series. Skipped, with the reason printed, only when promtool is
missing (`apt-get install -y prometheus` provides it; make test installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from exchange_operator import monitoring

NS, CLUSTER = "trading", "xc"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: apt-get install -y prometheus (make test installs it)",
)


def series(metric: str, values: str, cluster: str = CLUSTER, **labels: str) -> dict[str, str]:
    all_labels = {"namespace": NS, "exchangecluster": cluster, **labels}
    text = ",".join(f'{k}="{v}"' for k, v in all_labels.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


def pods(metric: str, values: list[str], **labels: str) -> list[dict[str, str]]:
    return [series(metric, v, pod=f"xc-{i}", **labels) for i, v in enumerate(values)]


def histogram(metric: str, buckets: dict[str, str], **labels: str) -> list[dict[str, str]]:
    return [series(f"{metric}_bucket", v, le=le, **labels) for le, v in buckets.items()]


CHECKPOINTS = "exchange_divergence_checkpoints_total"

# alert -> (firing fixture, healthy fixture, eval time, labels of the firing alert)
CASES: dict[str, tuple[list[dict[str, str]], list[dict[str, str]], str, dict[str, str]]] = {
    "ExchangeNoLeader": (
        pods("exchange_raft_is_leader", ["0x20", "0x20", "0x20"]),
        pods("exchange_raft_is_leader", ["1x20", "0x20", "0x20"]),
        "2m",
        {},
    ),
    # absent(): fires when no series of this cluster exists, whoever else reports.
    "ExchangeMembersAbsent": (
        [series("exchange_raft_term", "5x20", cluster="other", pod="other-0")],
        pods("exchange_raft_term", ["5x20"]),
        "3m",
        {"namespace": NS, "exchangecluster": CLUSTER},
    ),
    "ExchangeQuorumAtRisk": (
        pods("exchange_raft_term", ["5x20", "5x20"])
        + pods("exchange_raft_members", ["3x20", "3x20"], kind="voter"),
        pods("exchange_raft_term", ["5x20", "5x20", "5x20"])
        + pods("exchange_raft_members", ["3x20", "3x20", "3x20"], kind="voter"),
        "3m",
        {},
    ),
    "ExchangeFollowerLagging": (
        [series("exchange_raft_follower_lag_entries", "5000x20", pod="xc-0", peer="3")],
        [series("exchange_raft_follower_lag_entries", "10x20", pod="xc-0", peer="3")],
        "4m",
        {"peer": "3"},
    ),
    "ExchangeFollowerLostTail": (
        [
            series("exchange_raft_follower_healthy", "1 1 0x20", pod="xc-0", peer="3"),
            series("exchange_raft_follower_regressions", "0 0 1x20", pod="xc-0", peer="3"),
        ],
        [
            series("exchange_raft_follower_healthy", "1x20", pod="xc-0", peer="3"),
            series("exchange_raft_follower_regressions", "0x20", pod="xc-0", peer="3"),
        ],
        "5m",
        {"peer": "3"},
    ),
    "ExchangeMemberRecovering": (
        [series("exchange_raft_recovering_index", "500x20", pod="xc-1")],
        [series("exchange_raft_recovering_index", "0x20", pod="xc-1")],
        "8m",
        {"pod": "xc-1"},
    ),
    "ExchangeMemberStuck": (
        [series("exchange_member_stuck", "0 1x20", pod="xc-0", member="3")],
        [series("exchange_member_stuck", "0x20", pod="xc-0", member="3")],
        "5m",
        {"pod": "xc-0", "member": "3"},
    ),
    "ExchangeCommitLatencyHigh": (
        histogram(
            "exchange_raft_commit_latency_seconds",
            {"0.1": "0+0x60", "0.5": "0+0x60", "+Inf": "0+10x60"},
            pod="xc-0",
        ),
        histogram(
            "exchange_raft_commit_latency_seconds",
            {"0.1": "0+10x60", "0.5": "0+10x60", "+Inf": "0+10x60"},
            pod="xc-0",
        ),
        "14m",
        {},
    ),
    "ExchangeWalFsyncSlow": (
        histogram(
            "exchange_wal_fsync_seconds",
            {"0.01": "0+0x60", "0.1": "0+10x60", "+Inf": "0+10x60"},
            pod="xc-1",
        ),
        histogram(
            "exchange_wal_fsync_seconds",
            {"0.01": "0+10x60", "0.1": "0+10x60", "+Inf": "0+10x60"},
            pod="xc-1",
        ),
        "14m",
        {"pod": "xc-1"},
    ),
    "ExchangeLeaderChangesFrequent": (
        pods("exchange_raft_leader_changes_total", ["0+1x40"]),
        pods("exchange_raft_leader_changes_total", ["3x40"]),
        "5m",
        {},
    ),
    "ExchangePeerFramesRejected": (
        [
            series(
                "exchange_peer_frames_rejected_total", "0 0 0 0 2x20", pod="xc-2", reason="checksum"
            )
        ],
        [series("exchange_peer_frames_rejected_total", "0x24", pod="xc-2", reason="checksum")],
        "3m",
        {"pod": "xc-2", "reason": "checksum"},
    ),
    "ExchangePeerMessagesRefused": (
        [
            series(
                "exchange_peer_messages_rejected_total",
                "0 0 0 0 5x20",
                pod="xc-0",
                reason="not_member",
            )
        ],
        [series("exchange_peer_messages_rejected_total", "0x24", pod="xc-0", reason="not_member")],
        "3m",
        {"pod": "xc-0", "reason": "not_member"},
    ),
    "ExchangePeerTLSDisabled": (
        pods("exchange_peer_tls_enabled", ["1x20", "0x20", "1x20"]),
        pods("exchange_peer_tls_enabled", ["1x20", "1x20", "1x20"]),
        "2m",
        {"pod": "xc-1"},
    ),
    "ExchangeStateDivergence": (
        pods("exchange_state_divergence_total", ["0 0 0 0 1x20"]),
        pods("exchange_state_divergence_total", ["0x24"]),
        "3m",
        {},
    ),
    "ExchangeDivergenceCheckBlind": (
        # xc-1 skipped every checkpoint for 35 minutes; xc-0 hashed its own.
        [
            series(CHECKPOINTS, "0+1x140", pod="xc-1", outcome="skipped"),
            series(CHECKPOINTS, "0x140", pod="xc-1", outcome="hashed"),
            series(CHECKPOINTS, "0+1x140", pod="xc-0", outcome="hashed"),
        ],
        # Some skipped, some hashed (a slow hash now and then), and an idle member.
        [
            series(CHECKPOINTS, "0+1x140", pod="xc-1", outcome="skipped"),
            series(CHECKPOINTS, "0x100 1x40", pod="xc-1", outcome="hashed"),
            series(CHECKPOINTS, "0x140", pod="xc-2", outcome="skipped"),
        ],
        "34m",
        {"pod": "xc-1"},
    ),
}


def _other_cluster(fixture: list[dict[str, str]]) -> list[dict[str, str]]:
    return [
        {
            **s,
            "series": s["series"].replace(
                f'exchangecluster="{CLUSTER}"', 'exchangecluster="other"'
            ),
        }
        for s in fixture
    ]


def _expected(alert: monitoring.Alert, labels: dict[str, str]) -> dict[str, Any]:
    def expand(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)

    return {
        "exp_labels": {**labels, "severity": alert.severity},
        "exp_annotations": {
            "summary": expand(alert.summary),
            "description": expand(alert.description),
            "runbook_url": f"{monitoring.RUNBOOK_BASE_URL}{alert.name}.md",
        },
    }


def _write_rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        yaml.safe_dump({"groups": monitoring.rule_groups(NS, CLUSTER)}, sort_keys=False)
    )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


def test_every_alert_has_a_case() -> None:
    assert {a.name for a in monitoring.alerts(NS, CLUSTER)} == set(CASES)


def test_promtool_check_rules(tmp_path: Path) -> None:
    result = _run("check", "rules", str(_write_rules(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(CASES)} rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    groups = monitoring.rule_groups(NS, CLUSTER)
    groups[0]["rules"][0]["expr"] = "max(exchange_raft_is_leader{) < 1"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    assert _run("check", "rules", str(path)).returncode != 0


def test_promtool_unit_tests(tmp_path: Path) -> None:
    rules = _write_rules(tmp_path)
    alerts = {a.name: a for a in monitoring.alerts(NS, CLUSTER)}
    tests = []
    for name, (firing, healthy, at, labels) in CASES.items():
        tests.append(
            {
                "name": f"{name} fires",
                "interval": "15s",
                "input_series": firing,
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": name,
                        "exp_alerts": [_expected(alerts[name], labels)],
                    }
                ],
            }
        )
        tests.append(
            {
                "name": f"{name} stays silent when healthy",
                "interval": "15s",
                "input_series": healthy,
                "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": []}],
            }
        )
        if name == "ExchangeMembersAbsent":
            continue  # its firing fixture is another cluster's series
        tests.append(
            {
                "name": f"{name} ignores another cluster",
                "interval": "15s",
                "input_series": _other_cluster(firing),
                "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": []}],
            }
        )
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [rules.name], "evaluation_interval": "15s", "tests": tests},
            sort_keys=False,
        )
    )
    result = _run("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_detect_a_wrong_expectation(tmp_path: Path) -> None:
    """The harness above can fail: a healthy fixture expected to fire does fail."""
    rules = _write_rules(tmp_path)
    alert = next(a for a in monitoring.alerts(NS, CLUSTER) if a.name == "ExchangeNoLeader")
    _firing, healthy, at, labels = CASES["ExchangeNoLeader"]
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [rules.name],
                "evaluation_interval": "15s",
                "tests": [
                    {
                        "interval": "15s",
                        "input_series": healthy,
                        "alert_rule_test": [
                            {
                                "eval_time": at,
                                "alertname": alert.name,
                                "exp_alerts": [_expected(alert, labels)],
                            }
                        ],
                    }
                ],
            }
        )
    )
    assert _run("test", "rules", str(test_file)).returncode != 0

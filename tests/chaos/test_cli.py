"""`exchange chaos check`: verdicts printed, exit 1 on a failed check, 2 on a malformed history."""

from __future__ import annotations

import json
import subprocess
import sys

from chaos_histories import ALICE_SELL, Story, view


def exchange(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange_node.cli", "chaos", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(tmp_path, builder) -> str:
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(builder.lines()) + "\n")
    return str(path)


def test_a_valid_history_exits_0(tmp_path):
    done = exchange("check", write(tmp_path, Story().finish()))
    assert done.returncode == 0, done.stderr
    assert "6 operations: 6 acknowledged, 0 failed, 0 indeterminate" in done.stdout
    assert "PASS    linearizability" in done.stdout
    assert done.stdout.rstrip().endswith("verdict: PASS")


def test_an_anomaly_exits_1_and_shows_the_operations(tmp_path):
    story = Story()
    story.builder.op(
        "alice",
        "read_order",
        {"order_id": 1, "consistency": "linearizable"},
        "ok",
        view(1, "alice", ALICE_SELL, 2, 1, "PARTIALLY_FILLED"),
    )
    path = write(tmp_path, story.finish())
    done = exchange("check", path)
    assert done.returncode == 1, done.stderr
    assert "FAIL    linearizability" in done.stdout
    assert "not linearizable: order alice/a-1" in done.stdout
    assert '#3 alice (alice -> n1) cancel {"client_order_id":"a-1"} -> ok 200' in done.stdout
    assert done.stdout.rstrip().endswith("verdict: FAIL")
    as_json = exchange("check", path, "--json")
    assert as_json.returncode == 1
    result = json.loads(as_json.stdout)
    assert result["verdict"] == "fail"
    check = result["checks"]["linearizability"]
    assert check["verdict"] == "fail"
    assert check["anomalies"][0]["operations"][-1]["id"] == 6
    assert result["checks"]["lost"]["verdict"] == "pass"


def test_a_malformed_history_exits_2_naming_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = Story().finish().lines()
    lines[3] = lines[3].replace('"outcome": "ok"', '"outcome": "great"')
    path.write_text("\n".join(lines))
    done = exchange("check", str(path))
    assert done.returncode == 2
    assert "line 4: outcome must be one of ok, fail, info: got 'great'" in done.stderr
    missing = exchange("check", str(tmp_path / "absent.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_a_spent_search_budget_is_unknown_not_a_failure(tmp_path):
    done = exchange("check", write(tmp_path, Story().finish()), "--budget", "1")
    assert done.returncode == 0, done.stderr
    assert "UNKNOWN linearizability" in done.stdout
    assert "unknown: alice/a-1: search budget of 1 spent" in done.stdout
    assert done.stdout.rstrip().endswith("verdict: UNKNOWN")
    bad = exchange("check", write(tmp_path, Story().finish()), "--budget", "0")
    assert bad.returncode == 2 and "--budget must be >= 1, got 0" in bad.stderr

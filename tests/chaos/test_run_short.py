"""The short chaos suite (part of `make test`): `exchange chaos run` end to end on real
local processes with real faults, every check green.

Each scenario runs ~15 s of workload (all seven together stay under 5 minutes on
2 cores); each test reads the run's own report.json. Tests whose faults need root
or a tool skip with one line naming what is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from exchange_node.chaos.runner import local_capabilities
from exchange_node.chaos.scenarios import SCENARIOS

DURATION = "15"


def run_chaos(
    scenario: str, report: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, str, dict[str, Any] | None]:
    cmd = [
        sys.executable,
        "-m",
        "exchange_node.cli",
        "chaos",
        "run",
        scenario,
        "--target",
        "local",
        "--duration",
        DURATION,
        "--seed",
        "7",
        "--report",
        str(report),
        *extra,
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )
    path = report / "report.json"
    doc = json.loads(path.read_text()) if path.exists() else None
    return done.returncode, done.stdout + done.stderr, doc


def skip_unless_local_can(scenario: str) -> None:
    needs = SCENARIOS[scenario].needs
    caps, why = local_capabilities(link_proxies=True, faultfs=bool({"disk", "power_cut"} & needs))
    missing = sorted(needs - caps)
    if missing:
        pytest.skip(f"{scenario} needs " + "; ".join(f"{k}: {why.get(k)}" for k in missing))


# make test runs four (a leader killed, a partition, a power cut, forged frames); the
# other three are marked chaos and run in make chaos (about 25 s each).
_IN_MAKE_CHAOS = pytest.mark.chaos
SHORT = [
    pytest.param("node-failure", "kill-leader", id="node-failure"),
    pytest.param("network-partition", None, id="network-partition"),
    pytest.param("latency-loss", "latency+loss", id="latency-loss", marks=_IN_MAKE_CHAOS),
    pytest.param("power-cut", "power-cut-majority", id="power-cut"),
    pytest.param("clock-skew", "clock-skew", id="clock-skew", marks=_IN_MAKE_CHAOS),
    pytest.param("byzantine", "corrupt-frames", id="byzantine"),
    pytest.param("disk-stall", "stall-fsync-leader", id="disk-stall", marks=_IN_MAKE_CHAOS),
]


@pytest.mark.parametrize(("scenario", "fault"), SHORT)
def test_short_chaos_run_is_green(scenario: str, fault: str | None, tmp_path: Path) -> None:
    skip_unless_local_can(scenario)
    code, output, doc = run_chaos(scenario, tmp_path / "report")
    assert doc is not None, output[-3000:]
    assert code == 0, output[-3000:]
    assert doc["verdict"] != "fail", output[-3000:]
    # The faults really happened, the cluster came back, nothing was lost or doubled.
    faults = doc["unavailability"]["faults"]
    assert faults, output[-3000:]
    if fault is not None:
        assert fault in {f["name"] for f in faults}, faults
    assert doc["lost_acks"] == 0 and doc["duplicates"] == 0 and doc["phantoms"] == 0
    assert doc["linearizability"] == "pass", doc["checks"]["linearizability"]
    assert doc["converged"] is True
    assert doc["verdicts"]["convergence"] == "pass"
    assert doc["verdicts"]["availability"] == "pass"
    assert doc["operations"]["acknowledged"] > 100
    # A corrupted replica is refused or fenced, never served silently.
    assert not any(f["outcome"].startswith("served") for f in faults), faults
    # Each fault was followed by an acknowledged write.
    assert all(f["unavailable_s"] is not None for f in faults), faults
    # The artefacts exist: history, a self-contained page, node logs.
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<svg" in html
    # Self-contained: nothing fetched (no script, stylesheet link, image or frame source).
    for fetch in ("<script", "<link", "src=", "<iframe", "@import", "url("):
        assert fetch not in html, fetch
    assert (tmp_path / "report" / "history.jsonl").stat().st_size > 0
    assert doc["roles"] and doc["metrics"]

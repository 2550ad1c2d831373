"""docker-compose.yaml and its configuration, checked without running it: three
nodes from the image, Prometheus with the project's rules (up to date with the
operator's, accepted by promtool), Grafana provisioned with the project's
dashboards (each dashboard round-trips through Grafana's own schema types from
grafana-foundation-sdk, so no key is unknown to Grafana)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
CONFIG = REPO / "compose"


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def test_three_nodes_prometheus_and_grafana_on_loopback_ports() -> None:
    services = compose()["services"]
    assert set(services) == {"node-0", "node-1", "node-2", "prometheus", "grafana"}
    ids = set()
    for i in range(3):
        node = services[f"node-{i}"]
        env = node["environment"]
        assert node["image"].startswith("${EXCHANGE_IMAGE:-")
        assert env["EXCHANGE_NAME"] == f"node-{i}"
        ids.add(env["EXCHANGE_NODE_ID"])
        assert env["EXCHANGE_PEERS"] == "1=node-0:7070,2=node-1:7070,3=node-2:7070"
        assert env["EXCHANGE_ADVERTISE_HTTP"] == f"node-{i}:8080"
        assert node["volumes"] == [f"node-{i}-data:/var/lib/exchange"]
    assert ids == {"1", "2", "3"}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # nothing on other interfaces


def test_prometheus_scrapes_every_node_with_the_operators_labels() -> None:
    config = yaml.safe_load((CONFIG / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "raft-exchange"]
    targets = {t["targets"][0]: t["labels"] for t in job["static_configs"]}
    assert set(targets) == {"node-0:8080", "node-1:8080", "node-2:8080"}
    for target, labels in targets.items():
        assert labels == {
            "namespace": "compose",
            "exchangecluster": "raft-exchange",
            "pod": target.split(":")[0],
        }


def test_the_rules_file_is_the_operators_rules_rendered() -> None:
    check = subprocess.run(
        [sys.executable, str(CONFIG / "render.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    rules = yaml.safe_load((CONFIG / "prometheus" / "rules" / "raft-exchange.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert "ExchangeNoLeader" in names
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    assert 'namespace="compose"' in exprs and 'exchangecluster="raft-exchange"' in exprs


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool is not installed")
def test_promtool_accepts_the_config_and_the_rules(tmp_path: Path) -> None:
    rules = CONFIG / "prometheus" / "rules" / "raft-exchange.yml"
    assert subprocess.run(["promtool", "check", "rules", str(rules)]).returncode == 0
    # the config names the rules by their path inside the container
    text = (CONFIG / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "rules").mkdir()
    shutil.copy(rules, tmp_path / "rules")
    (tmp_path / "prometheus.yml").write_text(
        text.replace("/etc/prometheus/rules/", f"{tmp_path}/rules/")
    )
    done = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_provisioning_points_at_the_mounted_dashboards_and_prometheus() -> None:
    services = compose()["services"]
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    provisioning = REPO / "compose" / "grafana" / "provisioning"
    assert mounts["./compose/grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "raft-exchange.yaml").read_text())[
        "providers"
    ]
    dashboards_host = next(h for h, c in mounts.items() if c == provider["options"]["path"])
    assert sorted(p.name for p in (REPO / dashboards_host).glob("*.json")) == [
        "cluster-health.json",
        "replication.json",
        "trading.json",
    ]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    assert re.fullmatch(r"prometheus:\d+", source["url"].split("//")[1])


def lost_keys(original: Any, parsed: Any, path: str = "") -> list[str]:
    """Keys of ``original`` that a round trip through the schema types dropped."""
    lost: list[str] = []
    if isinstance(original, dict):
        for key, value in original.items():
            if not isinstance(parsed, dict) or key not in parsed:
                lost.append(f"{path}/{key}")
            else:
                lost += lost_keys(value, parsed[key], f"{path}/{key}")
    elif isinstance(original, list):
        for i, (a, b) in enumerate(zip(original, parsed, strict=False)):
            lost += lost_keys(a, b, f"{path}[{i}]")
    return lost


def round_trip(raw: dict[str, Any]) -> dict[str, Any]:
    from grafana_foundation_sdk.cog import encoder
    from grafana_foundation_sdk.models import dashboard

    parsed = dashboard.Dashboard.from_json(raw)
    result: dict[str, Any] = json.loads(json.dumps(parsed, cls=encoder.JSONEncoder))
    return result


def test_dashboards_fit_grafanas_schema_types() -> None:
    pytest.importorskip("grafana_foundation_sdk", reason="grafana-foundation-sdk is not installed")
    from grafana_foundation_sdk import models

    panel_kinds = {p.stem for p in Path(models.__file__).parent.glob("*.py")}
    for path in sorted((REPO / "charts" / "raft-exchange" / "files" / "dashboards").glob("*.json")):
        raw = json.loads(path.read_text())
        assert lost_keys(raw, round_trip(raw)) == [], path.name
        for panel in raw["panels"]:
            assert panel["type"] in panel_kinds, (path.name, panel["type"])
            assert panel["datasource"]["type"] == "prometheus"
            assert all(t["expr"] for t in panel["targets"])


def test_the_schema_check_sees_an_unknown_key() -> None:
    pytest.importorskip("grafana_foundation_sdk", reason="grafana-foundation-sdk is not installed")
    raw = json.loads((REPO / "charts/raft-exchange/files/dashboards/trading.json").read_text())
    raw["panels"][0]["querys"] = []
    assert lost_keys(raw, round_trip(raw)) == ["/panels[0]/querys"]

"""Alerts, dashboards and their metadata as kube-prometheus-stack users need them.

- every alert has a runbook_url to a page in docs/runbooks/ that says what it
  means, how to check and what to do;
- the ServiceMonitor and PrometheusRule carry the operator's default labels
  (the chart: release: kube-prometheus-stack) and the spec's;
- dashboards: counters only under rate()/increase() (gauges from the node
  contract's table never), rate windows are $__rate_interval, every dashboard
  has a folder annotation, and uids are unique across the chart's dashboards
  and every cluster's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from exchange_operator import monitoring
from exchange_operator.spec import ClusterRef, parse_spec

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
CLUSTER = ClusterRef(name="xc", namespace="trading", uid="u1")


def metric_types() -> dict[str, str]:
    """name -> counter | gauge | histogram, from docs/node-contract.md's table."""
    types = {}
    for line in (ROOT / "docs" / "node-contract.md").read_text().splitlines():
        match = re.match(r"\|\s*`(exchange_[a-z0-9_]+)`\s*\|\s*(\w+)", line)
        if match:
            types[match.group(1)] = match.group(2)
    return types


COUNTER_FUNCTIONS = re.compile(r"\b(rate|irate|increase)\((exchange_[a-z0-9_]+)")


def gauges_under_counter_functions(exprs: list[str]) -> list[str]:
    types = metric_types()
    found = []
    for expr in exprs:
        for func, name in COUNTER_FUNCTIONS.findall(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if types.get(base, types.get(name)) == "gauge":
                found.append(f"{func}({name})")
    return found


def test_every_alert_links_its_runbook() -> None:
    for group in monitoring.rule_groups("trading", "xc"):
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            assert url == f"{monitoring.RUNBOOK_BASE_URL}{rule['alert']}.md"
            page = RUNBOOKS / f"{rule['alert']}.md"
            assert page.exists(), page
            text = page.read_text()
            for heading in ("## What it means", "## How to check", "## What to do"):
                assert heading in text, (page.name, heading)
            assert rule["alert"] in (RUNBOOKS / "README.md").read_text()


def test_an_alert_fires_when_no_member_reports() -> None:
    (absent,) = [a for a in monitoring.alerts("trading", "xc") if "absent(" in a.expr]
    assert absent.severity == "critical"
    assert 'namespace="trading"' in absent.expr and 'exchangecluster="xc"' in absent.expr


def test_monitoring_objects_carry_default_and_spec_labels() -> None:
    spec = parse_spec(
        {
            "monitoring": {
                "labels": {"team": "trading", "app.kubernetes.io/instance": "hijack"},
                "annotations": {"owner": "sre"},
                "dashboards": True,
            }
        }
    )
    defaults = {"release": "kube-prometheus-stack"}
    for obj in (
        monitoring.service_monitor(CLUSTER, spec.monitoring, defaults),
        monitoring.prometheus_rule(CLUSTER, spec.monitoring, defaults),
    ):
        labels = obj["metadata"]["labels"]
        assert labels["release"] == "kube-prometheus-stack" and labels["team"] == "trading"
        assert labels["app.kubernetes.io/instance"] == "xc"  # selector labels win
        assert obj["metadata"]["annotations"]["owner"] == "sre"
    spec_release = parse_spec({"monitoring": {"labels": {"release": "prom"}}})
    sm = monitoring.service_monitor(CLUSTER, spec_release.monitoring, defaults)
    assert sm["metadata"]["labels"]["release"] == "prom"  # the spec overrides the default
    cm = monitoring.dashboard_config_map(CLUSTER, "replication", spec.monitoring)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"][monitoring.FOLDER_ANNOTATION] == "Raft exchange"
    assert cm["metadata"]["labels"]["team"] == "trading"


def test_no_gauge_under_rate_and_rate_windows_are_the_rate_interval() -> None:
    exprs = []
    for key in monitoring.DASHBOARDS:
        board = monitoring.dashboard(key)
        exprs += [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert gauges_under_counter_functions(exprs + monitoring.expressions()) == []
    for expr in exprs:
        for window in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", expr):
            assert window in ("$__rate_interval", "1h"), expr
    # The checker catches a gauge under rate().
    planted = ['max(rate(exchange_raft_commit_index{namespace="x"}[5m]))']
    assert gauges_under_counter_functions(planted) == ["rate(exchange_raft_commit_index)"]


def test_dashboard_uids_are_unique_and_dashboards_have_a_folder() -> None:
    chart = [
        json.loads(p.read_text())
        for p in (ROOT / "charts" / "raft-exchange" / "files" / "dashboards").glob("*.json")
    ]
    other = ClusterRef(name="xc", namespace="staging", uid="u2")
    per_cluster = [
        json.loads(next(iter(monitoring.dashboard_config_map(c, key)["data"].values())))
        for c in (CLUSTER, other)
        for key in monitoring.DASHBOARDS
    ]
    uids = [d["uid"] for d in chart + per_cluster]
    assert len(uids) == len(set(uids)) == 3 * len(monitoring.DASHBOARDS)
    assert all(len(uid) <= 40 for uid in uids)  # Grafana's limit
    board = per_cluster[0]
    current = {v["name"]: v.get("current", {}).get("value") for v in board["templating"]["list"]}
    assert current["namespace"] == "trading" and current["cluster"] == "xc"
    template = (ROOT / "charts" / "raft-exchange" / "templates" / "dashboards.yaml").read_text()
    assert monitoring.FOLDER_ANNOTATION in template

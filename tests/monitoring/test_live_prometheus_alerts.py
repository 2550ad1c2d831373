"""A real Prometheus evaluates the operator's real alert rules against a live cluster.

Level 4 of the issue's "proof without a cluster", live part. A real 3-node
``LocalCluster`` runs on loopback with orders flowing through the public
API; a real Prometheus (Debian's 2.42 binary) runs on a free loopback port
with its config, rule file and TSDB in ``tmp_path``, scraping every node each
second and evaluating rules each second. The rule file is the ``groups`` of
the PrometheusRule the operator renders for ExchangeCluster ``trading/xc``:
the expressions, labels and annotations are the real ones, unchanged (the
test checks this). Only the ``for:`` durations (30 s to 5 min) are rewritten to
``FOR_IN_TEST`` so the alerts can reach ``firing`` within the test's bounded
waits; ``pending`` (which the real durations would also show at once) is
asserted first.

1. Healthy: every target is up, every rule is evaluated with health ``ok``
   and no error for several cycles, the series the rules select are really
   there (so "not firing" is not vacuous), ExchangeNoLeader and
   ExchangeQuorumAtRisk are inactive, and every dashboard panel query and
   template variable answers with data.
2. kill -9 of the leader and one follower: ExchangeNoLeader and
   ExchangeQuorumAtRisk go pending and then firing, with the rule's labels.

Skipped, with the reason printed, only when the ``prometheus`` binary is
missing (``apt-get install -y prometheus``; ``make test`` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from exchange_node.tools.local import LocalCluster, free_ports
from exchange_operator import monitoring, names
from exchange_operator.spec import ClusterRef
from monitoring_support import drive_orders, rendered_queries, start_cluster

PROMETHEUS = shutil.which("prometheus")
NS, CLUSTER = "trading", "xc"
FOR_IN_TEST = "2s"
QUORUM_ALERTS = ("ExchangeNoLeader", "ExchangeQuorumAtRisk")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus not found: apt-get install -y prometheus (make test installs it)",
    ),
]

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, last: list[Any]) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s; last seen: {last[-1:]!r}"[:4000])
        time.sleep(0.25)


# --- the rule file and the Prometheus config ------------------------------------------------


def rule_file(path: Path) -> list[dict[str, Any]]:
    """The operator's rendered groups, with only ``for:`` shortened."""
    rule = monitoring.prometheus_rule(ClusterRef(CLUSTER, NS, "uid"))
    groups = json.loads(json.dumps(rule["spec"]["groups"]))
    for group in groups:
        for r in group["rules"]:
            if "for" in r:
                r["for"] = FOR_IN_TEST
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return groups


def prometheus_config(cluster: LocalCluster, rules: Path) -> dict[str, Any]:
    # The rules and dashboards select series by `namespace` and `exchangecluster`
    # (monitoring.selector) and group by `pod`. In Kubernetes those are target labels:
    # the Prometheus Operator gives every ServiceMonitor target `namespace` and `pod`,
    # and the operator's ServiceMonitor relabels `exchangecluster` from the pod's
    # app.kubernetes.io/instance label. Here each node is a static loopback target and
    # the same three labels are attached with `labels:`, pod names as the StatefulSet
    # would name them (<cluster>-<ordinal>).
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "raft-exchange",
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [m.http],
                        "labels": {
                            "namespace": NS,
                            names.PROM_CLUSTER_LABEL: CLUSTER,
                            "pod": f"{CLUSTER}-{m.node_id - 1}",
                        },
                    }
                    for m in cluster.spec.members
                ],
            }
        ],
    }


class Prometheus:
    def __init__(self, root: Path, cluster: LocalCluster) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.rules_path = root / "rules.yaml"
        self.groups = rule_file(self.rules_path)
        config = root / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(cluster, self.rules_path)))
        (port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{port}"
        self.log = root / "prometheus.log"
        assert PROMETHEUS is not None
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[dict[str, Any]] = data["result"]
        return result

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited:\n{self.log_tail()}"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = start_cluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.stop_all(10)


@pytest.fixture
def prometheus(tmp_path: Path, cluster: LocalCluster) -> Iterator[Prometheus]:
    p = Prometheus(tmp_path / "prometheus", cluster)
    try:
        wait_for("prometheus ready", p.ready, 60, [])
        yield p
    finally:
        p.stop()


def _alerting_rules(p: Prometheus) -> dict[str, dict[str, Any]]:
    groups = p.get("/api/v1/rules")["groups"]
    return {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}


def _alerts(p: Prometheus) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for a in p.get("/api/v1/alerts")["alerts"]:
        out.setdefault(a["labels"]["alertname"], []).append(a)
    return out


def _dashboard_expr(expr: str) -> str:
    # Grafana fills $__rate_interval (at least four scrape intervals); 1m here.
    return (
        expr.replace("$namespace", NS)
        .replace("$cluster", CLUSTER)
        .replace("$__rate_interval", "1m")
    )


def test_real_rules_on_a_real_prometheus_scraping_a_live_cluster(
    cluster: LocalCluster, prometheus: Prometheus
) -> None:
    p = prometheus
    expected = {a.name: a for a in monitoring.alerts(NS, CLUSTER)}
    # The loaded file is the operator's rule group; only `for:` differs.
    loaded = {
        r["alert"]: r
        for g in yaml.safe_load(p.rules_path.read_text())["groups"]
        for r in g["rules"]
    }
    assert set(loaded) == set(expected)
    for name, alert in expected.items():
        assert loaded[name]["expr"] == alert.expr
        assert loaded[name]["labels"] == {"severity": alert.severity}
        assert loaded[name]["annotations"] == {
            "summary": alert.summary,
            "description": alert.description,
            "runbook_url": f"{monitoring.RUNBOOK_BASE_URL}{name}.md",
        }
        assert loaded[name].get("for", FOR_IN_TEST) == FOR_IN_TEST

    drive_orders(cluster)

    # --- (a) healthy ----------------------------------------------------------------------
    seen: list[Any] = []

    def all_targets_up() -> bool:
        targets = p.get("/api/v1/targets", state="active")["activeTargets"]
        seen.append([(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets])
        return len(targets) == 3 and all(t["health"] == "up" for t in targets)

    wait_for("all three nodes scraped", all_targets_up, 30, seen)
    up_at = time.time()

    def rules_evaluated_ok_after_scrapes() -> dict[str, dict[str, Any]] | None:
        rules = _alerting_rules(p)
        seen.append(
            {n: (r["health"], r.get("lastError"), r["lastEvaluation"]) for n, r in rules.items()}
        )
        if set(rules) != set(expected):
            return None
        groups = p.get("/api/v1/rules")["groups"]
        # A few evaluation cycles after every target was up.
        evaluated = all(_epoch(g["lastEvaluation"]) > up_at + 3 for g in groups)
        return rules if evaluated and all(r["health"] == "ok" for r in rules.values()) else None

    rules = wait_for(
        "every rule evaluated with health ok", rules_evaluated_ok_after_scrapes, 30, seen
    )
    for name, r in rules.items():
        assert r["health"] == "ok" and not r.get("lastError"), (name, r)

    # Healthy means: three members reporting, one leader, three voters, and the two
    # quorum alerts inactive. Awaited (bounded) rather than sampled once, so a spurious
    # election on a loaded machine cannot fail the test; a rule that stays active on a
    # healthy cluster, or selectors that match nothing, still do.
    sel = monitoring.selector(NS, CLUSTER)
    voters = monitoring.selector(NS, CLUSTER, 'kind="voter"')

    def healthy() -> bool:
        observed = {
            "members reporting": _value(p.query(f"count(exchange_raft_term{sel})")),
            "max is_leader": _value(p.query(f"max(exchange_raft_is_leader{sel})")),
            "leaders": _value(p.query(f"sum(exchange_raft_is_leader{sel})")),
            "voters": _value(p.query(f"max(exchange_raft_members{voters})")),
        }
        rules = _alerting_rules(p)
        states = {n: rules[n]["state"] for n in QUORUM_ALERTS}
        active = set(_alerts(p)) & set(QUORUM_ALERTS)
        seen.append((observed, states, active))
        return (
            observed == {"members reporting": 3, "max is_leader": 1, "leaders": 1, "voters": 3}
            and set(states.values()) == {"inactive"}
            and not active
        )

    wait_for("healthy cluster, quorum alerts inactive", healthy, 30, seen)
    # ... and the selector really selects: another cluster's name matches nothing.
    assert p.query(f"count(exchange_raft_term{monitoring.selector(NS, 'other')})") == []

    # Every dashboard panel query and template variable answers with data.
    empty = []
    for q in rendered_queries(NS, CLUSTER):
        if "/ variable" in q.source:
            metric, _, label = (
                q.expr.removeprefix("label_values(").removesuffix(")").rpartition(", ")
            )
            values = p.get(f"/api/v1/label/{label}/values", **{"match[]": _dashboard_expr(metric)})
            if not values:
                empty.append((q.source, q.expr))
            else:
                assert NS in values or CLUSTER in values, (q.source, values)
        elif "/ panel" in q.source and not p.query(_dashboard_expr(q.expr)):
            empty.append((q.source, q.expr))
    assert empty == [], f"dashboard queries with no data on a live cluster: {empty}"

    # --- (b) kill -9 two of three: the leader and one follower --------------------------
    leader = cluster.wait_for_leader(30)
    follower = next(m.node_id for m in cluster.spec.members if m.node_id != leader)
    cluster.kill(leader)
    cluster.kill(follower)
    survivor = next(m.node_id for m in cluster.spec.members if cluster.alive(m.node_id))

    def states(want: set[str]) -> Callable[[], dict[str, list[dict[str, Any]]] | None]:
        def probe() -> dict[str, list[dict[str, Any]]] | None:
            alerts = _alerts(p)
            seen.append({n: [a["state"] for a in alerts.get(n, [])] for n in QUORUM_ALERTS})
            ok = all(any(a["state"] in want for a in alerts.get(n, [])) for n in QUORUM_ALERTS)
            return alerts if ok else None

        return probe

    wait_for("quorum alerts pending or firing", states({"pending", "firing"}), 30, seen)
    alerts = wait_for(f"quorum alerts firing (for: {FOR_IN_TEST})", states({"firing"}), 30, seen)
    for name in QUORUM_ALERTS:
        (alert,) = alerts[name]
        assert alert["labels"] == {"alertname": name, "severity": expected[name].severity}
        assert alert["annotations"]["summary"] == expected[name].summary
    # What Prometheus now sees: one member reporting, no leader, three voters configured.
    assert _value(p.query(f"count(exchange_raft_term{sel})")) == 1
    assert _value(p.query(f"max(exchange_raft_is_leader{sel})")) == 0
    assert cluster.alive(survivor)


def _value(result: list[dict[str, Any]]) -> float | None:
    """The single sample of an aggregation, or None when it selected nothing."""
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def _epoch(rfc3339: str) -> float:
    """Prometheus prints RFC 3339 with nanoseconds; Python parses at most microseconds."""
    m = re.fullmatch(r"(.*?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert m, rfc3339
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{(m.group(2) or '0')[:6]}{zone}").timestamp()

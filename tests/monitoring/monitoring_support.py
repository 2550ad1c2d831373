"""Helpers for the live monitoring proofs.

- ``rendered_queries``: every PromQL query in the objects the operator really
  renders (the PrometheusRule's alerts and the three Grafana dashboard
  ConfigMaps, including the dashboards' template variables), with where each
  came from.
- ``uses``: which metric names a query reads and, per name, which labels the
  query filters on (matchers), groups or joins by (``by``/``without``/``on``/
  ``ignoring``/``group_*``) or prints (legend ``{{x}}``, ``$labels.x``).
- ``scrape`` / ``Exposition``: a node's /metrics parsed with prometheus_client's
  own parser, as sample names and the label names each carries.
- ``start_cluster`` / ``drive_orders``: a real 3-node ``LocalCluster`` on
  loopback with orders, fills and a reject pushed through the public API.

The PromQL reading is deliberately small (the queries here are simple), but it
is not trusted blindly: the tests check it against the operator's own
``metric_names_used()`` and show that it catches a made-up name and label.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange_node.tools.local import LocalCluster
from exchange_operator import monitoring, names
from exchange_operator.spec import ClusterRef
from prometheus_client.parser import text_string_to_metric_families

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# Labels a query may use that the node does not (and must not) export itself:
# Prometheus attaches them to every series of a target at scrape time. In
# Kubernetes the Prometheus Operator gives every ServiceMonitor target
# `namespace`, `pod`, `service`, `container` and `endpoint`, and the operator's
# ServiceMonitor relabels `exchangecluster` from the pod's
# app.kubernetes.io/instance label. The live Prometheus test attaches the same
# three on its static targets.
PROMETHEUS_OPERATOR_TARGET_LABELS = frozenset(
    {"namespace", "pod", "service", "container", "endpoint", "instance", "job"}
)
TARGET_LABELS = frozenset({"namespace", "pod", names.PROM_CLUSTER_LABEL})


# --- the queries the operator renders ----------------------------------------------


@dataclass(frozen=True)
class Query:
    source: str  # e.g. "PrometheusRule alert ExchangeNoLeader", "dashboard trading / Book depth"
    expr: str
    printed_labels: frozenset[str] = frozenset()  # {{x}} in legends, $labels.x in annotations


def rendered_queries(namespace: str, cluster: str) -> list[Query]:
    ref = ClusterRef(name=cluster, namespace=namespace, uid="00000000-0000-0000-0000-000000000000")
    queries: list[Query] = []
    rule = monitoring.prometheus_rule(ref)
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            text = " ".join(str(v) for v in r.get("annotations", {}).values())
            printed = frozenset(re.findall(r"\$labels\.(\w+)", text))
            queries.append(Query(f"PrometheusRule alert {r['alert']}", r["expr"], printed))
    for key in monitoring.DASHBOARDS:
        cm = monitoring.dashboard_config_map(ref, key)
        (board_json,) = cm["data"].values()
        board = json.loads(board_json)
        for panel in board["panels"]:
            for target in panel["targets"]:
                printed = frozenset(re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"]))
                queries.append(
                    Query(f"dashboard {key} / panel {panel['title']!r}", target["expr"], printed)
                )
        for var in board["templating"]["list"]:
            if var.get("type") == "query":
                queries.append(Query(f"dashboard {key} / variable ${var['name']}", var["query"]))
    return queries


# --- what a query reads ---------------------------------------------------------------

_METRIC = re.compile(r"\b(exchange_[a-z0-9_]+)\b(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without)\s*\(([^)]*)\)")
_JOIN = re.compile(r"\b(on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$")


def _labels(text: str) -> set[str]:
    return {x.strip() for x in text.split(",") if x.strip()}


def _matching(expr: str, open_at: int) -> int:
    """Index of the parenthesis closing the one at ``open_at``."""
    depth = 0
    for i in range(open_at, len(expr)):
        if expr[i] == "(":
            depth += 1
        elif expr[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in {expr!r}")


def _matching_back(expr: str, close_at: int) -> int:
    depth = 0
    for i in range(close_at, -1, -1):
        if expr[i] == ")":
            depth += 1
        elif expr[i] == "(":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in {expr!r}")


def uses(query: Query) -> dict[str, set[str]]:
    """Metric name (as written) -> the labels the query needs that series to carry."""
    expr = query.expr
    extra: set[str] = set(query.printed_labels)
    lv = _LABEL_VALUES.match(expr)
    if lv:  # Grafana's label_values(selector, label): the label must be on the selector's series
        expr = lv.group(1)
        extra.add(lv.group(2))
    found: list[tuple[int, str, set[str]]] = []
    for m in _METRIC.finditer(expr):
        matchers = _MATCHER.findall(m.group(2) or "")
        found.append((m.start(), m.group(1), set(matchers)))
    for g in _GROUPING.finditer(expr):
        labels = _labels(g.group(2))
        rest = expr[g.end() :].lstrip()
        if rest.startswith("("):  # sum by (x) (arg)
            start = g.end() + (len(expr[g.end() :]) - len(rest))
            end = _matching(expr, start)
        else:  # sum(arg) by (x)
            end = expr.rstrip().rfind(")", 0, g.start())
            start = _matching_back(expr, end)
        for pos, _name, need in found:
            if start <= pos <= end:
                need |= labels
    for j in _JOIN.finditer(expr):  # a join's labels must be on both sides
        for _pos, _name, need in found:
            need |= _labels(j.group(2))
    result: dict[str, set[str]] = defaultdict(set)
    for _pos, name, need in found:
        result[name] |= need | extra
    return dict(result)


def base_name(name: str, histograms: set[str]) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in histograms:
            return name[: -len(suffix)]
    return name


# --- what a node exports ---------------------------------------------------------------


@dataclass
class Exposition:
    """One /metrics page: family types and, per sample name, the label names seen."""

    types: dict[str, str] = field(default_factory=dict)
    labels: dict[str, set[str]] = field(default_factory=dict)
    is_leader: bool = False

    @classmethod
    def parse(cls, text: str) -> Exposition:
        out = cls()
        for family in text_string_to_metric_families(text):
            out.types[family.name] = family.type
            for sample in family.samples:
                out.labels.setdefault(sample.name, set()).update(sample.labels)
                if sample.name == "exchange_raft_is_leader" and sample.value == 1:
                    out.is_leader = True
        return out

    @property
    def histograms(self) -> set[str]:
        return {n for n, t in self.types.items() if t == "histogram"}


def scrape(cluster: LocalCluster, node_id: int) -> str:
    url = f"http://{cluster.member(node_id).http}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200, (url, resp.status)
        return resp.read().decode()


def scrape_all(cluster: LocalCluster, timeout: float = 30) -> tuple[dict[int, Exposition], int]:
    """Every node's page, taken when exactly one of them says it leads (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        pages = {
            m.node_id: Exposition.parse(scrape(cluster, m.node_id)) for m in cluster.spec.members
        }
        leaders = [i for i, page in pages.items() if page.is_leader]
        if len(leaders) == 1:
            return pages, leaders[0]
        assert time.monotonic() < deadline, f"no single leader in the scrapes: {leaders}"
        time.sleep(0.2)


def check(
    queries: list[Query], exported: Exposition, target_labels: frozenset[str] = TARGET_LABELS
) -> list[str]:
    """Every problem found: a name not exported, or a label not on that name's samples."""
    problems = []
    histograms = exported.histograms
    for q in queries:
        for name, need in uses(q).items():
            base = base_name(name, histograms)
            # A histogram read by any of its series must export all three.
            series = [base + s for s in HISTOGRAM_SUFFIXES] if base in histograms else [name]
            for s in series:
                if s not in exported.labels:
                    problems.append(
                        f"{q.source}: {q.expr!r} reads {s}, which the node does not export"
                    )
            if name not in exported.labels:
                continue
            for label in sorted(need - target_labels):
                if label not in exported.labels[name]:
                    problems.append(
                        f"{q.source}: {q.expr!r} uses label {label!r} on {name}, "
                        f"whose samples carry only {sorted(exported.labels[name])}"
                    )
    return problems


# --- a live cluster with traffic ---------------------------------------------------------


def start_cluster(root: Path, nodes: int = 3) -> LocalCluster:
    # Elections slower than the other cluster tests' (400 ms): these tests assert a
    # healthy cluster has exactly one leader, and CI machines run other suites beside.
    cluster = LocalCluster.create(
        root,
        nodes,
        election_ms=1000,
        heartbeat_ms=100,
        extra_args=["--request-timeout-ms=3000"],
    )
    cluster.start_all()
    try:
        cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
    except BaseException:
        cluster.stop_all(5)
        raise
    return cluster


RETRYABLE = {421, 429, 500, 502, 503, 504}


def submit(cluster: LocalCluster, node: int, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST /v1/orders; on a retryable answer or a dropped connection, the same
    client_order_id again (exactly once) on the next node, for at most 30 s."""
    ids = [m.node_id for m in cluster.spec.members if cluster.alive(m.node_id)]
    deadline = time.monotonic() + 30
    attempt = 0
    while True:
        target = ids[(ids.index(node) + attempt) % len(ids)] if node in ids else ids[0]
        try:
            code, doc = cluster.request(target, "POST", "/v1/orders", body, token=token, timeout=5)
        except OSError as exc:
            code, doc = 0, repr(exc)
        if code not in RETRYABLE and code != 0:
            return code, doc
        if time.monotonic() > deadline:
            return code, doc
        attempt += 1
        time.sleep(0.1)


def drive_orders(cluster: LocalCluster, rounds: int = 10) -> dict[str, Any]:
    """Orders on every node (followers forward), crossing so they fill, plus one reject."""
    alice, bob = cluster.key_for("alice"), cluster.key_for("bob")
    ids = [m.node_id for m in cluster.spec.members]
    seq = itertools.count()
    answers: dict[str, Any] = {"ok": 0, "rejected": None}

    def order(node: int, token: str, **fields: Any) -> tuple[int, Any]:
        body = {"quantity": 1, "client_order_id": f"mon-{next(seq)}", **fields}
        return submit(cluster, node, token, body)

    for i in range(rounds):
        node = ids[i % len(ids)]
        for token, side in ((alice, "BUY"), (bob, "SELL")):
            for symbol, price in (("BTC-USD", 50_000), ("ETH-USD", 3_000)):
                code, doc = order(node, token, symbol=symbol, side=side, price=price)
                assert code == 200, (code, doc)
                answers["ok"] += 1
    # A resting order so book depth is non-zero, and a price far outside the band: a reject.
    code, doc = order(ids[0], bob, symbol="BTC-USD", side="SELL", price=50_100)
    assert code == 200, (code, doc)
    code, doc = order(ids[-1], bob, symbol="BTC-USD", side="SELL", price=99_000)
    assert code == 422, (code, doc)
    answers["rejected"] = doc
    # Followers learn the last commit a moment after the leader answers: wait until every
    # replica applied everything, so each one's counters saw every order.
    cluster.wait_converged(ids)
    return answers

"""Every metric and label the dashboards and alerts use exists on a LIVE node.

The offline test (tests/operator/test_metric_names.py) holds the operator to
the contract's table; this one holds it to what a running node really
exports. A real 3-node ``LocalCluster`` runs on loopback, orders go through
the public API (``POST /v1/orders``, on every node, crossing so they fill,
plus one rejected by the price band) so counters and histograms have samples,
then each node's ``/metrics`` is scraped and every query of the rendered
PrometheusRule and Grafana dashboards (panels and template variables) is
checked: each name it reads is exported (a histogram read through any of its
series must export ``_bucket``, ``_sum`` and ``_count``), and each label it
filters, groups, joins by or prints is on that name's samples. The labels
Prometheus attaches at scrape time (``namespace``, ``pod``,
``exchangecluster``) are checked the other way round: the node must not export
them (they would collide and be renamed ``exported_*``), and the ServiceMonitor
or the Prometheus Operator must provide them.

Every name must be exported by the leader; followers export every name except
the per-follower gauges (``exchange_raft_follower_lag_entries``,
``exchange_raft_follower_healthy``, ``exchange_raft_follower_regressions``),
which only the leader can know.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from exchange_node.tools.local import LocalCluster
from exchange_operator import monitoring, names
from exchange_operator.spec import ClusterRef
from monitoring_support import (
    PROMETHEUS_OPERATOR_TARGET_LABELS,
    TARGET_LABELS,
    Exposition,
    Query,
    base_name,
    check,
    drive_orders,
    rendered_queries,
    scrape,
    scrape_all,
    start_cluster,
    uses,
)

NS, CLUSTER = "trading", "xc"
LEADER_ONLY = {
    "exchange_raft_follower_lag_entries",
    "exchange_raft_follower_healthy",
    "exchange_raft_follower_regressions",
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root: Path = tmp_path_factory.mktemp("live-metrics") / "cluster"
    cluster = start_cluster(root)
    try:
        drive_orders(cluster)
        yield cluster
    finally:
        cluster.stop_all(10)


# --- the reading of PromQL, fast -----------------------------------------------------------


def test_uses_reads_matchers_grouping_legends_and_label_values() -> None:
    q = Query(
        "x",
        'histogram_quantile(0.99, sum by (le, route) (rate(exchange_a_bucket{namespace="n",'
        'kind!="v"}[5m]))) > on() max(exchange_b{x=~"y"}) and sum(exchange_c) by (side)',
        frozenset({"route"}),
    )
    got = uses(q)
    assert got["exchange_a_bucket"] == {"le", "route", "namespace", "kind"}
    assert got["exchange_b"] == {"x", "route"}
    assert got["exchange_c"] == {"side", "route"}
    got = uses(Query("v", 'label_values(exchange_t{namespace="$namespace"}, exchangecluster)'))
    assert got == {"exchange_t": {"namespace", "exchangecluster"}}


def test_rendered_queries_cover_every_alert_and_panel() -> None:
    queries = rendered_queries(NS, CLUSTER)
    alerts = [q for q in queries if q.source.startswith("PrometheusRule")]
    assert {q.source.split()[-1] for q in alerts} == {
        a.name for a in monitoring.alerts(NS, CLUSTER)
    }
    panels = [q for q in queries if "/ panel" in q.source]
    assert len(panels) >= 20
    assert {q.source.split()[1] for q in panels} == set(monitoring.DASHBOARDS)


# --- the live check -------------------------------------------------------------------------


@pytest.mark.slow
def test_every_dashboard_and_alert_name_and_label_is_exported_by_a_live_node(
    live: LocalCluster,
) -> None:
    cluster = live
    queries = rendered_queries(NS, CLUSTER)
    pages, leader = scrape_all(cluster)
    assert sorted(pages) == [1, 2, 3]

    # My reading of the rendered objects agrees with the operator's own list of names.
    histograms = pages[leader].histograms
    read = {base_name(n, histograms) for q in queries for n in uses(q)}
    assert read == monitoring.metric_names_used()

    problems: list[str] = []
    for node_id, page in pages.items():
        if node_id == leader:
            mine = queries
        else:  # followers: everything but the leader-only gauge
            mine = [q for q in queries if not set(uses(q)) & LEADER_ONLY]
        problems += [f"node {node_id}: {p}" for p in check(mine, page)]
    assert problems == [], "\n".join(problems)

    # The traffic really reached the metrics the trading dashboard shows.
    lead = pages[leader].labels
    assert {"symbol", "side"} <= lead["exchange_orders_total"]
    assert "reason" in lead["exchange_rejects_total"]
    assert "peer" in lead["exchange_raft_follower_lag_entries"]
    assert {"route", "method", "status", "le"} <= lead["exchange_http_request_seconds_bucket"]


@pytest.mark.slow
def test_scrape_time_labels_come_from_prometheus_not_the_node(
    live: LocalCluster,
) -> None:
    cluster = live
    used_target_labels = {
        label
        for q in rendered_queries(NS, CLUSTER)
        for need in uses(q).values()
        for label in need
        if label in TARGET_LABELS
    }
    assert used_target_labels == set(TARGET_LABELS)
    for m in cluster.spec.members:
        page = Exposition.parse(scrape(cluster, m.node_id))
        clashes = {n: ls & TARGET_LABELS for n, ls in page.labels.items() if ls & TARGET_LABELS}
        assert clashes == {}, f"node {m.node_id} exports scrape-time labels itself: {clashes}"
    # `exchangecluster` is relabelled by the operator's ServiceMonitor; the rest are the
    # Prometheus Operator's standard target labels.
    sm = monitoring.service_monitor(ClusterRef(CLUSTER, NS, "uid"))
    relabelled = {
        r["targetLabel"] for e in sm["spec"]["endpoints"] for r in e.get("relabelings", [])
    }
    assert names.PROM_CLUSTER_LABEL in relabelled
    assert TARGET_LABELS.issubset(relabelled | PROMETHEUS_OPERATOR_TARGET_LABELS)


@pytest.mark.slow
def test_the_live_check_fails_on_a_name_or_label_the_node_does_not_export(
    live: LocalCluster,
) -> None:
    cluster = live
    pages, leader = scrape_all(cluster)
    page = pages[leader]
    made_up_name = Query("made-up panel", 'sum(rate(exchange_made_up_total{namespace="n"}[1m]))')
    assert any("exchange_made_up_total" in p for p in check([made_up_name], page))
    made_up_label = Query("made-up panel", "sum by (venue) (rate(exchange_orders_total[1m]))")
    assert any("'venue'" in p for p in check([made_up_label], page))
    legend_only = Query("made-up panel", "max(exchange_raft_term)", frozenset({"shard"}))
    assert any("'shard'" in p for p in check([legend_only], page))
    half_histogram = Exposition(types=dict(page.types), labels=dict(page.labels))
    del half_histogram.labels["exchange_wal_fsync_seconds_sum"]
    fsync = Query("p", "histogram_quantile(0.9, rate(exchange_wal_fsync_seconds_bucket[5m]))")
    assert any("exchange_wal_fsync_seconds_sum" in p for p in check([fsync], half_histogram))
    # A follower has no follower-lag series: checking the leader-only panel there fails.
    follower = next(i for i in pages if i != leader)
    lag = [q for q in rendered_queries(NS, CLUSTER) if set(uses(q)) & LEADER_ONLY]
    assert lag and check(lag, pages[follower])

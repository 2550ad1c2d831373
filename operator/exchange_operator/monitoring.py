"""ServiceMonitor, PrometheusRule and Grafana dashboards, all from one place.

Every query uses only metric names from docs/node-contract.md;
`metric_names_used()` lists them so a test can hold this module to the table.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from exchange_operator import names
from exchange_operator.render import _meta
from exchange_operator.spec import ClusterRef, Monitoring

# Where each alert's runbook_url points: docs/runbooks/<alert>.md in the repository.
RUNBOOK_BASE_URL = "https://github.com/raft-exchange/raft-exchange/blob/main/docs/runbooks/"
# The annotation kube-prometheus-stack's Grafana sidecar reads a dashboard's folder from
# (with sidecar.dashboards.folderAnnotation set to it).
FOLDER_ANNOTATION = "grafana_folder"

Obj = dict[str, Any]

# Alert thresholds, stated up front.
FOLLOWER_LAG_ENTRIES = 1000
COMMIT_LATENCY_P99_SECONDS = 0.25
FSYNC_P99_SECONDS = 0.05
LEADER_CHANGES_PER_15M = 3
CHECK_BLIND_WINDOW = "30m"
"""Skipped divergence checkpoints and none hashed for this long: the member is blind (at the
default 50,000 entries a checkpoint comes every 100 s at 500 entries/s)."""


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str


def selector(namespace: str, cluster: str, extra: str = "") -> str:
    parts = [f'namespace="{namespace}"', f'{names.PROM_CLUSTER_LABEL}="{cluster}"']
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


def alerts(namespace: str, cluster: str) -> list[Alert]:
    sel = selector(namespace, cluster)
    voters = selector(namespace, cluster, 'kind="voter"')
    where = f"ExchangeCluster {namespace}/{cluster}"
    skipped = "exchange_divergence_checkpoints_total" + selector(
        namespace, cluster, 'outcome="skipped"'
    )
    hashed = "exchange_divergence_checkpoints_total" + selector(
        namespace, cluster, 'outcome="hashed"'
    )
    return [
        Alert(
            "ExchangeNoLeader",
            f"max(exchange_raft_is_leader{sel}) < 1",
            "30s",
            "critical",
            f"{where} has no Raft leader",
            "No member reports itself leader: orders cannot commit. Check QuorumLost on the "
            "ExchangeCluster status and the pods' /readyz.",
        ),
        Alert(
            "ExchangeMembersAbsent",
            f"absent(exchange_raft_term{sel})",
            "2m",
            "critical",
            f"No member of {where} reports metrics",
            "Prometheus scrapes no member at all: every pod is gone, or nothing is scraped "
            "(ServiceMonitor, NetworkPolicy, TLS). ExchangeNoLeader cannot fire then: it has no "
            "series to compare.",
        ),
        Alert(
            "ExchangeQuorumAtRisk",
            f"count(exchange_raft_term{sel})"
            f" <= scalar(floor(max(exchange_raft_members{voters}) / 2) + 1)"
            f" and on() max(exchange_raft_members{voters}) > 1",
            "1m",
            "warning",
            f"{where} is one failure away from losing quorum",
            "Only a bare majority of voters is reporting; one more failure stops the exchange.",
        ),
        Alert(
            "ExchangeFollowerLagging",
            f"max by (peer) (exchange_raft_follower_lag_entries{sel}) > {FOLLOWER_LAG_ENTRIES}",
            "2m",
            "warning",
            f"A follower of {where} lags the leader",
            f"Follower {{{{ $labels.peer }}}} is more than {FOLLOWER_LAG_ENTRIES} entries behind.",
        ),
        Alert(
            "ExchangeFollowerLostTail",
            f"max by (peer) (exchange_raft_follower_healthy{sel} == bool 0) > 0"
            f" or max by (peer) (delta(exchange_raft_follower_regressions{sel}[10m])) > 0",
            "1m",
            "critical",
            f"A follower of {where} lost part of its log",
            "The leader found follower {{ $labels.peer }}'s log shorter than it had "
            "acknowledged (its disk lost a tail) and is repairing it: until it has caught up "
            "the cluster runs on fewer replicas than it believes.",
        ),
        Alert(
            "ExchangeMemberRecovering",
            f"max by (pod) (exchange_raft_recovering_index{sel}) > 0",
            "5m",
            "warning",
            f"A member of {where} is recovering a lost log tail",
            "Pod {{ $labels.pod }} started with less log than it had promised (a lost "
            "acknowledged tail or corruption); it does not help elect a leader until a "
            "leader has brought it back.",
        ),
        Alert(
            "ExchangeMemberStuck",
            f"max by (pod, member) (exchange_member_stuck{sel}) > 0",
            "1m",
            "warning",
            f"A member of {where} is stuck behind",
            "Member {{ $labels.member }} (judged by pod {{ $labels.pod }}) stayed short of "
            "an index committed 10 s earlier, with no state hash differing: the cluster runs "
            "on fewer replicas than it believes.",
        ),
        Alert(
            "ExchangeCommitLatencyHigh",
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(exchange_raft_commit_latency_seconds_bucket{sel}[5m])))"
            f" > {COMMIT_LATENCY_P99_SECONDS}",
            "5m",
            "warning",
            f"{where} commits slowly",
            f"p99 commit latency is above {COMMIT_LATENCY_P99_SECONDS}s.",
        ),
        Alert(
            "ExchangeWalFsyncSlow",
            "histogram_quantile(0.99, sum by (le, pod) "
            f"(rate(exchange_wal_fsync_seconds_bucket{sel}[5m]))) > {FSYNC_P99_SECONDS}",
            "5m",
            "warning",
            f"WAL fsync is slow on a member of {where}",
            f"p99 fsync on {{{{ $labels.pod }}}} is above {FSYNC_P99_SECONDS}s: check its disk.",
        ),
        Alert(
            "ExchangeLeaderChangesFrequent",
            f"max(increase(exchange_raft_leader_changes_total{sel}[15m]))"
            f" > {LEADER_CHANGES_PER_15M}",
            "0s",
            "warning",
            f"{where} changes leader often",
            f"More than {LEADER_CHANGES_PER_15M} leader changes in 15 minutes: check the network "
            "and electionMs.",
        ),
        Alert(
            "ExchangePeerFramesRejected",
            f"max by (pod, reason) (increase(exchange_peer_frames_rejected_total{sel}[10m])) > 0",
            "0s",
            "warning",
            f"A member of {where} received peer frames it could not use",
            "{{ $labels.pod }} dropped peer frames ({{ $labels.reason }}): a checksum failure "
            "means corruption between members (NIC, memory, a proxy); Raft resends, but find "
            "the cause.",
        ),
        Alert(
            "ExchangePeerMessagesRefused",
            f"max by (pod, reason) (increase(exchange_peer_messages_rejected_total{sel}[10m])) > 0",
            "0s",
            "warning",
            f"A member of {where} refused peer messages",
            "{{ $labels.pod }} refused peer messages ({{ $labels.reason }}): not_member or self "
            "means something that is no member (or a removed one still running) talks to its "
            "peer port; digest_not_voter or digest_conflict means state digests in names that "
            "cannot be theirs. Find who reaches the peer port; keep peer TLS on.",
        ),
        Alert(
            "ExchangePeerTLSDisabled",
            f"min by (pod) (exchange_peer_tls_enabled{sel}) == 0",
            "0s",
            "warning",
            f"A member of {where} runs its peer port without mutual TLS",
            "{{ $labels.pod }} was started with --insecure-peers: anyone who reaches its peer "
            "port can forge any member. Give it --peer-tls-cert/--peer-tls-key/--peer-tls-ca.",
        ),
        Alert(
            "ExchangeStateDivergence",
            f"max(increase(exchange_state_divergence_total{sel}[10m])) > 0",
            "0s",
            "critical",
            f"Replicas of {where} disagree on state",
            "A replica's state hash differs from the leader's: stop trading and investigate.",
        ),
        Alert(
            "ExchangeDivergenceCheckBlind",
            f"max by (pod) (increase({skipped}[{CHECK_BLIND_WINDOW}]))"
            f" > 0 unless on (pod) max by (pod) (increase({hashed}[{CHECK_BLIND_WINDOW}])) > 0",
            "0s",
            "warning",
            f"A member of {where} compares its state with no one's",
            "{{ $labels.pod }} skipped every divergence checkpoint for "
            f"{CHECK_BLIND_WINDOW} (the hash of the previous one was still running) and "
            "hashed none: a divergence of its state would go unseen. Raise "
            "spec.checkpointEntries (or find what slows its forked hashing child).",
        ),
    ]


def rule_groups(namespace: str, cluster: str) -> list[Obj]:
    """The `groups:` of a Prometheus rule file (also what promtool checks)."""
    rules = []
    for alert in alerts(namespace, cluster):
        rule: Obj = {
            "alert": alert.name,
            "expr": alert.expr,
            "labels": {"severity": alert.severity},
            "annotations": {
                "summary": alert.summary,
                "description": alert.description,
                "runbook_url": f"{RUNBOOK_BASE_URL}{alert.name}.md",
            },
        }
        if alert.for_ != "0s":
            rule["for"] = alert.for_
        rules.append(rule)
    return [{"name": f"raft-exchange.{namespace}.{cluster}", "rules": rules}]


def _monitoring_meta(
    cluster: ClusterRef,
    name: str,
    component: str,
    mon: Monitoring | None,
    default_labels: dict[str, str] | None,
) -> Obj:
    """The child's metadata plus the spec's (and the operator's default) labels and
    annotations; the app.kubernetes.io labels the operator selects by always win."""
    meta = _meta(cluster, name, component)
    extra = {**(default_labels or {}), **(dict(mon.labels) if mon is not None else {})}
    meta["labels"] = {**extra, **meta["labels"]}
    if mon is not None and mon.annotations:
        meta["annotations"] = {**dict(mon.annotations), **meta.get("annotations", {})}
    return meta


def service_monitor(
    cluster: ClusterRef,
    mon: Monitoring | None = None,
    default_labels: dict[str, str] | None = None,
) -> Obj:
    meta = _monitoring_meta(
        cluster, names.service_monitor(cluster.name), names.COMPONENT_MONITORING, mon,
        default_labels,
    )  # fmt: skip
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {
                "matchLabels": {
                    names.LABEL_INSTANCE: cluster.name,
                    names.LABEL_SERVICE: "peers",
                }
            },
            "namespaceSelector": {"matchNames": [cluster.namespace]},
            "endpoints": [
                {
                    "port": names.HTTP_PORT_NAME,
                    "path": "/metrics",
                    "interval": "15s",
                    # The HTTP listener speaks TLS with the cluster's server certificate.
                    "scheme": "https",
                    "tlsConfig": {
                        "ca": {
                            "secret": {
                                "name": names.http_tls_secret(cluster.name),
                                "key": names.CA_CERT_KEY,
                            }
                        },
                        "serverName": f"{names.client_service(cluster.name)}."
                        f"{cluster.namespace}.svc",
                    },
                    "relabelings": [
                        {
                            "sourceLabels": [
                                "__meta_kubernetes_pod_label_app_kubernetes_io_instance"
                            ],
                            "targetLabel": names.PROM_CLUSTER_LABEL,
                        }
                    ],
                }
            ],
        },
    }


def prometheus_rule(
    cluster: ClusterRef,
    mon: Monitoring | None = None,
    default_labels: dict[str, str] | None = None,
) -> Obj:
    meta = _monitoring_meta(
        cluster, names.prometheus_rule(cluster.name), names.COMPONENT_MONITORING, mon,
        default_labels,
    )  # fmt: skip
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta,
        "spec": {"groups": rule_groups(cluster.namespace, cluster.name)},
    }


# --- Grafana dashboards ---------------------------------------------------------

SEL = f'{{namespace="$namespace",{names.PROM_CLUSTER_LABEL}="$cluster"}}'


def _sel(extra: str = "") -> str:
    return SEL if not extra else SEL[:-1] + "," + extra + "}"


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]  # (expr, legend)
    unit: str = "short"
    kind: str = "timeseries"


def _dashboard_panels() -> dict[str, tuple[str, list[Panel]]]:
    s = _sel()
    return {
        "cluster-health": (
            "Raft exchange: cluster health",
            [
                Panel(
                    "Members reporting",
                    ((f"count(exchange_raft_term{s})", "members"),),
                    kind="stat",
                ),
                Panel(
                    "Members by version (a rolling upgrade in progress shows two)",
                    (
                        (
                            f"count by (version, git_sha) (exchange_build_info{s})",
                            "{{version}} {{git_sha}}",
                        ),
                    ),
                    kind="stat",
                ),
                Panel(
                    "Voters and learners",
                    ((f"max by (kind) (exchange_raft_members{s})", "{{kind}}"),),
                ),
                Panel(
                    "Role per pod",
                    ((f"max by (pod, role) (exchange_raft_role{s})", "{{pod}} {{role}}"),),
                ),
                Panel("Leader", ((f"max by (pod) (exchange_raft_is_leader{s})", "{{pod}}"),)),
                Panel("Term", ((f"max(exchange_raft_term{s})", "term"),)),
                Panel(
                    "Leader changes (15m)",
                    ((f"max(increase(exchange_raft_leader_changes_total{s}[15m]))", "changes"),),
                ),
                Panel(
                    "State divergence",
                    ((f"sum(exchange_state_divergence_total{s})", "divergences"),),
                    kind="stat",
                ),
                Panel(
                    "Event loop: late ticks p99 and GC pauses (a stall near the election"
                    " timeout costs a leader)",
                    (
                        (
                            f"histogram_quantile(0.99, sum by (pod, le) "
                            f"(rate(exchange_event_loop_lag_seconds_bucket{s}[$__rate_interval])))",
                            "tick lag p99 {{pod}}",
                        ),
                        (
                            f"max by (pod, generation) "
                            f"(rate(exchange_gc_pause_seconds_sum{s}[$__rate_interval]))",
                            "GC s/s {{pod}} gen {{generation}}",
                        ),
                    ),
                    unit="s",
                ),
            ],
        ),
        "replication": (
            "Raft exchange: replication",
            [
                Panel(
                    "Commit rate",
                    (
                        (
                            f"max(deriv(exchange_raft_commit_index{s}[$__rate_interval]))",
                            "entries/s",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Commit and applied index",
                    (
                        (f"max by (pod) (exchange_raft_commit_index{s})", "commit {{pod}}"),
                        (f"max by (pod) (exchange_raft_applied_index{s})", "applied {{pod}}"),
                    ),
                ),
                Panel(
                    "Follower lag",
                    ((f"max by (peer) (exchange_raft_follower_lag_entries{s})", "{{peer}}"),),
                ),
                Panel(
                    "Proposals by outcome",
                    (
                        (
                            f"sum by (outcome) (rate(exchange_raft_proposals_total{s}[$__rate_interval]))",
                            "{{outcome}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Commit latency p50/p99",
                    tuple(
                        (
                            f"histogram_quantile({q}, sum by (le) "
                            f"(rate(exchange_raft_commit_latency_seconds_bucket{s}[$__rate_interval])))",
                            f"p{int(q * 100)}",
                        )
                        for q in (0.5, 0.99)
                    ),
                    unit="s",
                ),
                Panel(
                    "WAL fsync p99 per pod",
                    (
                        (
                            "histogram_quantile(0.99, sum by (le, pod) "
                            f"(rate(exchange_wal_fsync_seconds_bucket{s}[$__rate_interval])))",
                            "{{pod}}",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "WAL append p99",
                    (
                        (
                            "histogram_quantile(0.99, sum by (le) "
                            f"(rate(exchange_wal_append_seconds_bucket{s}[$__rate_interval])))",
                            "p99",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "Peer messages sent per pod and peer",
                    (
                        (
                            f"sum by (pod, peer) (rate(exchange_peer_messages_sent_total{s}[$__rate_interval]))",
                            "{{pod}} -> {{peer}}",
                        ),
                        (
                            f"sum by (pod) (rate(exchange_peer_messages_received_total{s}[$__rate_interval]))",
                            "{{pod}} received",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Peer streams connected",
                    ((f"max by (pod, peer) (exchange_peer_connected{s})", "{{pod}} -> {{peer}}"),),
                ),
                Panel(
                    "Peer faults (15m)",
                    (
                        (
                            f"sum by (pod, peer) "
                            f"(increase(exchange_peer_messages_dropped_total{s}[15m]))",
                            "dropped {{pod}} -> {{peer}}",
                        ),
                        (
                            f"sum by (pod, peer) (increase(exchange_peer_reconnects_total{s}[15m]))",
                            "reconnects {{pod}} -> {{peer}}",
                        ),
                        (
                            f"sum by (pod) (increase(exchange_peer_gone_total{s}[15m]))",
                            "peer process gone, seen by {{pod}}",
                        ),
                        (
                            f"sum by (pod, reason) "
                            f"(increase(exchange_peer_frames_rejected_total{s}[15m]))",
                            "rejected {{pod}} {{reason}}",
                        ),
                        (
                            f"sum by (pod, reason) "
                            f"(increase(exchange_peer_messages_rejected_total{s}[15m]))",
                            "refused {{pod}} {{reason}}",
                        ),
                    ),
                ),
                Panel(
                    "Snapshots",
                    (
                        (f"sum(increase(exchange_snapshots_total{s}[1h]))", "per hour"),
                        (
                            f"sum(rate(exchange_snapshot_seconds_sum{s}[1h]))"
                            f" / sum(rate(exchange_snapshot_seconds_count{s}[1h]))",
                            "mean seconds",
                        ),
                    ),
                ),
            ],
        ),
        "trading": (
            "Raft exchange: trading",
            [
                Panel(
                    "Orders by symbol",
                    (
                        (
                            f"sum by (symbol, side) (rate(exchange_orders_total{s}[$__rate_interval]))",
                            "{{symbol}} {{side}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Fills by symbol",
                    (
                        (
                            f"sum by (symbol) (rate(exchange_fills_total{s}[$__rate_interval]))",
                            "{{symbol}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Rejects by reason",
                    (
                        (
                            f"sum by (reason) (rate(exchange_rejects_total{s}[$__rate_interval]))",
                            "{{reason}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Book depth",
                    ((f"max by (symbol, side) (exchange_book_depth{s})", "{{symbol}} {{side}}"),),
                ),
                Panel(
                    "Request latency p99 by route",
                    (
                        (
                            "histogram_quantile(0.99, sum by (le, route) "
                            f"(rate(exchange_http_request_seconds_bucket{s}[$__rate_interval])))",
                            "{{route}}",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "WebSocket subscribers",
                    ((f"sum(exchange_ws_subscribers{s})", "subscribers"),),
                ),
                Panel(
                    "Requests refused by per-client limits",
                    (
                        (
                            f"sum by (limit) (rate(exchange_api_refusals_total{s}[$__rate_interval]))",
                            "{{limit}}",
                        ),
                    ),
                    unit="ops",
                ),
            ],
        ),
    }


DASHBOARDS = ("cluster-health", "replication", "trading")


def dashboard(key: str, cluster: ClusterRef | None = None) -> Obj:
    """A Grafana dashboard; for one cluster (the operator's ConfigMaps) its uid and title
    name the cluster and its variables start on it, so many clusters' dashboards (and
    the chart's generic ones) never share a uid."""
    title, panels = _dashboard_panels()[key]
    grafana_panels = []
    for index, panel in enumerate(panels):
        grafana_panels.append(
            {
                "id": index + 1,
                "type": panel.kind,
                "title": panel.title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(panel.exprs)
                ],
            }
        )
    variables: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
        {
            "name": "namespace",
            "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": "label_values(exchange_raft_term, namespace)",
            "refresh": 2,
        },
        {
            "name": "cluster",
            "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": f'label_values(exchange_raft_term{{namespace="$namespace"}}, '
            f"{names.PROM_CLUSTER_LABEL})",
            "refresh": 2,
        },
    ]
    uid = f"raft-exchange-{key}"
    if cluster is not None:
        # Grafana uids are at most 40 characters.
        digest = hashlib.sha256(f"{cluster.namespace}/{cluster.name}".encode()).hexdigest()[:10]
        uid = f"rx-{key}-{digest}"
        title = f"{title} ({cluster.namespace}/{cluster.name})"
        for variable, value in (("namespace", cluster.namespace), ("cluster", cluster.name)):
            for entry in variables:
                if entry["name"] == variable:
                    entry["current"] = {"text": value, "value": value}
    return {
        "uid": uid,
        "title": title,
        "tags": ["raft-exchange"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "panels": grafana_panels,
    }


def dashboard_json(key: str, cluster: ClusterRef | None = None) -> str:
    return json.dumps(dashboard(key, cluster), indent=2, sort_keys=True) + "\n"


def dashboard_config_map(cluster: ClusterRef, key: str, mon: Monitoring | None = None) -> Obj:
    """Labelled grafana_dashboard: "1" (the sidecar's default label), in the folder of
    spec.monitoring.dashboardFolder (annotation grafana_folder)."""
    meta = _monitoring_meta(
        cluster, names.dashboard_config_map(cluster.name, key), names.COMPONENT_DASHBOARDS,
        mon, None,
    )  # fmt: skip
    meta["labels"]["grafana_dashboard"] = "1"
    folder = mon.dashboard_folder if mon is not None else Monitoring().dashboard_folder
    meta.setdefault("annotations", {})[FOLDER_ANNOTATION] = folder
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {f"raft-exchange-{key}.json": dashboard_json(key, cluster)},
    }


# --- the metric names in use -------------------------------------------------------

METRIC_NAME = re.compile(r"\bexchange_[a-z0-9_]+")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def expressions() -> list[str]:
    exprs = [a.expr for a in alerts("ns", "cluster")]
    for key in DASHBOARDS:
        board = dashboard(key)
        exprs.extend(t["expr"] for p in board["panels"] for t in p["targets"])
        exprs.extend(str(v.get("query", "")) for v in board["templating"]["list"])
    return exprs


def metric_names_used() -> set[str]:
    """Every node metric name used by the dashboards and alerts (histogram base names)."""
    used: set[str] = set()
    for expr in expressions():
        for name in METRIC_NAME.findall(expr):
            for suffix in _HISTOGRAM_SUFFIXES:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            used.add(name)
    return used

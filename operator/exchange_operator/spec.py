"""The ExchangeCluster spec as typed values, with the defaults the CRD declares.

The CRD (crd.py) takes its `default:` values from the constants here, so the
API server and the operator agree on what an omitted field means.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exchange_operator.quantity import parse_quantity

DEFAULT_REPLICAS = 3
MIN_REPLICAS = 1
MAX_REPLICAS = 7
DEFAULT_IMAGE = "ghcr.io/raft-exchange/exchange:0.1.0"
DEFAULT_PULL_POLICY = "IfNotPresent"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"memory": "512Mi"},
}
DEFAULT_STORAGE_SIZE = "1Gi"
RETENTION_POLICIES = ("Retain", "Delete")
DEFAULT_WHEN_DELETED = "Retain"
# A member removed by scale-down has left the Raft configuration; its data is
# of no use to a later member, so its claim goes by default.
DEFAULT_WHEN_SCALED = "Delete"
DEFAULT_SYMBOLS: tuple[dict[str, Any], ...] = (
    {"name": "BTC-USD", "tickSize": 1, "lotSize": 1, "priceBandBps": 1000, "referencePrice": 50000},
    {"name": "ETH-USD", "tickSize": 1, "lotSize": 1, "priceBandBps": 1000, "referencePrice": 3000},
)
DEFAULT_RISK: dict[str, int] = {
    "maxOrderQty": 1_000_000,
    "maxNotional": 1_000_000_000,
    "maxPosition": 10_000_000,
}
# Snapshots trigger on the log's size in bytes (the node's --snapshot-bytes): an entry
# count bounds memory badly, as one entry carries 1 to 500 orders (docs/snapshots.md).
DEFAULT_SNAPSHOT_BYTES = "64Mi"
DEFAULT_SNAPSHOT_THRESHOLD = 0
DEFAULT_ELECTION_MS = 1000
DEFAULT_HEARTBEAT_MS = 100
DEFAULT_API_KEYS_KEY = "api-keys"
ANTI_AFFINITY_MODES = ("none", "preferred", "required")
DEFAULT_ANTI_AFFINITY = "preferred"
DEFAULT_TOPOLOGY_KEY = "topology.kubernetes.io/zone"
WHEN_UNSATISFIABLE = ("DoNotSchedule", "ScheduleAnyway")
ISSUER_KINDS = ("Issuer", "ClusterIssuer")
DEFAULT_CERT_DAYS = 90
DEFAULT_CA_DAYS = 3650
# Where Prometheus runs, by default (kube-prometheus-stack's usual namespace).
DEFAULT_MONITORING_FROM: tuple[dict[str, Any], ...] = (
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
)


@dataclass(frozen=True)
class Symbol:
    name: str
    tick_size: int
    lot_size: int
    price_band_bps: int
    reference_price: int | None = None


@dataclass(frozen=True)
class Risk:
    max_order_qty: int
    max_notional: int
    max_position: int


@dataclass(frozen=True)
class ExactlyOnce:
    """``spec.exactlyOnce``: engine retention the nodes set through the log; a field
    left out leaves the cluster's own value (docs/api.md, "Exactly once")."""

    horizon: str | None = None
    """Whole seconds with s, m, h or d (``24h``): ``--exactly-once-horizon``."""
    max_keys: int | None = None
    finished_orders: int | None = None


HORIZON_PATTERN = r"^[1-9][0-9]*[smhd]?$"
HORIZON_MAX_SECONDS = 366 * 86_400
"""The node's own bound on the horizon (it refuses to start with a longer one)."""
_HORIZON_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def _horizon_seconds(text: str) -> int:
    unit = text[-1] if text[-1] in _HORIZON_UNITS else "s"
    digits = text[:-1] if text[-1] in _HORIZON_UNITS else text
    return int(digits) * _HORIZON_UNITS[unit]


RETENTION_MAX_ENTRIES = (1 << 32) - 1
"""The node's own bound on the cap and the window (its snapshot stores them as u32)."""


def _exactly_once(raw: Any) -> ExactlyOnce:
    if raw is None:
        return ExactlyOnce()
    if not isinstance(raw, Mapping):
        raise ValueError("spec.exactlyOnce must be a mapping")
    unknown = set(raw) - {"horizon", "maxKeys", "finishedOrders"}
    if unknown:
        raise ValueError(f"spec.exactlyOnce has unknown fields {sorted(unknown)}")
    horizon = raw.get("horizon")
    if horizon is not None and (
        not re.fullmatch(HORIZON_PATTERN, str(horizon))
        or _horizon_seconds(str(horizon)) > HORIZON_MAX_SECONDS
    ):
        raise ValueError(
            f"spec.exactlyOnce.horizon must be like 24h, 90m or 3600s, at most 366d: {horizon!r}"
        )
    counts: dict[str, int | None] = {}
    for name in ("maxKeys", "finishedOrders"):
        value = raw.get(name)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= RETENTION_MAX_ENTRIES
        ):
            raise ValueError(
                f"spec.exactlyOnce.{name} must be an integer in 1..{RETENTION_MAX_ENTRIES}"
            )
        counts[name] = value
    return ExactlyOnce(
        None if horizon is None else str(horizon), counts["maxKeys"], counts["finishedOrders"]
    )


@dataclass(frozen=True)
class Storage:
    size: str = DEFAULT_STORAGE_SIZE
    storage_class_name: str | None = None
    when_deleted: str = DEFAULT_WHEN_DELETED
    when_scaled: str = DEFAULT_WHEN_SCALED


@dataclass(frozen=True)
class TopologySpread:
    topology_key: str = DEFAULT_TOPOLOGY_KEY
    max_skew: int = 1
    when_unsatisfiable: str = "ScheduleAnyway"


@dataclass(frozen=True)
class Scheduling:
    anti_affinity: str = DEFAULT_ANTI_AFFINITY
    tolerations: tuple[dict[str, Any], ...] = ()
    node_selector: dict[str, str] = field(default_factory=dict)
    topology_spread: TopologySpread | None = None


DEFAULT_DASHBOARD_FOLDER = "Raft exchange"


@dataclass(frozen=True)
class Monitoring:
    service_monitor: bool = True
    prometheus_rule: bool = True
    dashboards: bool = False
    # Added to the ServiceMonitor, PrometheusRule and dashboard ConfigMaps (for example
    # kube-prometheus-stack's `release: <its release>` selector label).
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    dashboard_folder: str = DEFAULT_DASHBOARD_FOLDER


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str = DEFAULT_API_KEYS_KEY


@dataclass(frozen=True)
class IssuerRef:
    """A cert-manager Issuer or ClusterIssuer (spec.tls.issuerRef)."""

    name: str
    kind: str = "Issuer"
    group: str = "cert-manager.io"


@dataclass(frozen=True)
class Tls:
    """Certificates: cert-manager with ``issuer_ref`` (when its CRDs exist), else the
    operator's own CA. ``cert_days`` is the lifetime of member and server certificates."""

    issuer_ref: IssuerRef | None = None
    cert_days: int = DEFAULT_CERT_DAYS
    ca_days: int = DEFAULT_CA_DAYS


@dataclass(frozen=True)
class Network:
    """NetworkPolicy sources (NetworkPolicyPeer objects) for the HTTP API and /metrics.

    Empty ``client_from``: pods of the cluster's own namespace only."""

    policy: bool = True
    # Egress is left open by default: NetworkPolicies only ever add allows, so an
    # egress allow here would defeat partitions made with policies (chaos-experiments/).
    restrict_egress: bool = False
    client_from: tuple[dict[str, Any], ...] = ()
    monitoring_from: tuple[dict[str, Any], ...] = DEFAULT_MONITORING_FROM


@dataclass(frozen=True)
class ClusterSpec:
    replicas: int = DEFAULT_REPLICAS
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = DEFAULT_PULL_POLICY
    resources: dict[str, dict[str, str]] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    storage: Storage = field(default_factory=Storage)
    symbols: tuple[Symbol, ...] = ()
    risk: Risk = field(default_factory=lambda: _risk(DEFAULT_RISK))
    snapshot_bytes: str = DEFAULT_SNAPSHOT_BYTES
    snapshot_threshold: int = DEFAULT_SNAPSHOT_THRESHOLD
    checkpoint_entries: int | None = None
    """Divergence checkpoint interval in entries; None: the node's default (not rendered)."""
    exactly_once: ExactlyOnce = field(default_factory=ExactlyOnce)
    election_ms: int = DEFAULT_ELECTION_MS
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    api_keys_secret: SecretRef | None = None
    otlp_endpoint: str | None = None
    monitoring: Monitoring = field(default_factory=Monitoring)
    scheduling: Scheduling = field(default_factory=Scheduling)
    paused: bool = False
    cluster_id: str | None = None
    tls: Tls = field(default_factory=Tls)
    network: Network = field(default_factory=Network)
    expose: Expose = field(default_factory=lambda: Expose())
    backup: Backup | None = None
    restore_from: RestoreFrom | None = None


SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


@dataclass(frozen=True)
class RestoreFrom:
    """spec.restoreFrom: the initial members start from a backup of `cluster` (the newest,
    or `index`) in a PVC or an S3 bucket, restored into their empty volumes by an init
    container. Pods added later and restarted pods are left alone."""

    cluster: str
    index: int | None = None
    claim_name: str | None = None
    s3_url: str | None = None
    endpoint_url: str | None = None
    credentials_secret: str | None = None


@dataclass(frozen=True)
class Backup:
    """spec.backup: a CronJob takes a snapshot on the leader on `schedule` and stores it
    in a PVC (`claim_name`) or an S3-compatible bucket (`s3_url`, `endpoint_url`, the
    AWS_* keys of `credentials_secret`)."""

    schedule: str
    claim_name: str | None = None
    s3_url: str | None = None
    endpoint_url: str | None = None
    credentials_secret: str | None = None
    suspend: bool = False


@dataclass(frozen=True)
class Ingress:
    """An Ingress for the client API (spec.expose.ingress). The nodes serve HTTPS only,
    so the controller must speak HTTPS to them (ingress-nginx: the annotation
    nginx.ingress.kubernetes.io/backend-protocol: HTTPS)."""

    host: str
    class_name: str | None = None
    tls_secret: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Expose:
    """How the client API is reached from outside the cluster (spec.expose)."""

    service_type: str = "ClusterIP"
    service_annotations: dict[str, str] = field(default_factory=dict)
    load_balancer_source_ranges: tuple[str, ...] = ()
    ingress: Ingress | None = None


@dataclass(frozen=True)
class ClusterRef:
    """The identity of one ExchangeCluster object: what owner references need."""

    name: str
    namespace: str
    uid: str


CHECKPOINT_ENTRIES_MAX = 1 << 40


def _checkpoint_entries(raw: Any) -> int | None:
    """spec.checkpointEntries: absent (the node's default) or an integer >= 0."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= CHECKPOINT_ENTRIES_MAX:
        raise ValueError(
            f"spec.checkpointEntries must be an integer in 0..{CHECKPOINT_ENTRIES_MAX}: {raw!r}"
        )
    return raw


def _risk(raw: Mapping[str, Any]) -> Risk:
    merged = {**DEFAULT_RISK, **raw}
    return Risk(
        max_order_qty=int(merged["maxOrderQty"]),
        max_notional=int(merged["maxNotional"]),
        max_position=int(merged["maxPosition"]),
    )


def _symbol(raw: Mapping[str, Any]) -> Symbol:
    ref = raw.get("referencePrice")
    return Symbol(
        name=str(raw["name"]),
        tick_size=int(raw.get("tickSize", 1)),
        lot_size=int(raw.get("lotSize", 1)),
        price_band_bps=int(raw.get("priceBandBps", 1000)),
        reference_price=None if ref is None else int(ref),
    )


def _snapshot_bytes(raw: Any) -> str:
    """`snapshotBytes` as given, once it is known to be a whole number of bytes >= 1."""
    text = str(raw)
    try:
        size = parse_quantity(text)
    except ValueError:
        size = None
    if size is None or size < 1 or size != int(size):
        raise ValueError(
            f"spec.snapshotBytes must be a whole number of bytes >= 1, e.g. 64Mi: {raw!r}"
        )
    return text


def parse_spec(raw: Mapping[str, Any] | None) -> ClusterSpec:
    """Turn a (possibly partial) `spec` mapping into a ClusterSpec with defaults.

    The API server applies the same defaults from the CRD; applying them here
    too keeps the renderers correct for objects that bypass admission (tests,
    `kubectl --dry-run`, the emulator).
    """
    spec = dict(raw or {})
    storage_raw = dict(spec.get("storage") or {})
    retention = dict(storage_raw.get("retention") or {})
    storage = Storage(
        size=str(storage_raw.get("size", DEFAULT_STORAGE_SIZE)),
        storage_class_name=storage_raw.get("storageClassName"),
        when_deleted=str(retention.get("whenDeleted", DEFAULT_WHEN_DELETED)),
        when_scaled=str(retention.get("whenScaled", DEFAULT_WHEN_SCALED)),
    )
    sched_raw = dict(spec.get("scheduling") or {})
    spread_raw = sched_raw.get("topologySpread")
    spread = None
    if spread_raw is not None and spread_raw.get("enabled", True):
        spread = TopologySpread(
            topology_key=str(spread_raw.get("topologyKey", DEFAULT_TOPOLOGY_KEY)),
            max_skew=int(spread_raw.get("maxSkew", 1)),
            when_unsatisfiable=str(spread_raw.get("whenUnsatisfiable", "ScheduleAnyway")),
        )
    scheduling = Scheduling(
        anti_affinity=str(sched_raw.get("antiAffinity", DEFAULT_ANTI_AFFINITY)),
        tolerations=tuple(dict(t) for t in sched_raw.get("tolerations") or ()),
        node_selector={str(k): str(v) for k, v in (sched_raw.get("nodeSelector") or {}).items()},
        topology_spread=spread,
    )
    mon_raw = dict(spec.get("monitoring") or {})
    monitoring = Monitoring(
        service_monitor=bool(mon_raw.get("serviceMonitor", True)),
        prometheus_rule=bool(mon_raw.get("prometheusRule", True)),
        dashboards=bool(mon_raw.get("dashboards", False)),
        labels={str(k): str(v) for k, v in (mon_raw.get("labels") or {}).items()},
        annotations={str(k): str(v) for k, v in (mon_raw.get("annotations") or {}).items()},
        dashboard_folder=str(mon_raw.get("dashboardFolder") or DEFAULT_DASHBOARD_FOLDER),
    )
    keys_raw = spec.get("apiKeysSecretRef")
    api_keys = None
    if keys_raw and keys_raw.get("name"):
        api_keys = SecretRef(
            name=str(keys_raw["name"]), key=str(keys_raw.get("key", DEFAULT_API_KEYS_KEY))
        )
    tracing = dict(spec.get("tracing") or {})
    symbols_raw = spec.get("symbols")
    if symbols_raw is None:
        symbols_raw = DEFAULT_SYMBOLS
    resources = spec.get("resources")
    tls_raw = dict(spec.get("tls") or {})
    issuer_raw = tls_raw.get("issuerRef")
    issuer = None
    if issuer_raw and issuer_raw.get("name"):
        issuer = IssuerRef(
            name=str(issuer_raw["name"]),
            kind=str(issuer_raw.get("kind", "Issuer")),
            group=str(issuer_raw.get("group", "cert-manager.io")),
        )
    tls = Tls(
        issuer_ref=issuer,
        cert_days=int(tls_raw.get("certificateDays", DEFAULT_CERT_DAYS)),
        ca_days=int(tls_raw.get("caDays", DEFAULT_CA_DAYS)),
    )
    net_raw = dict(spec.get("network") or {})
    monitoring_from = net_raw.get("monitoringFrom")
    network = Network(
        policy=bool(net_raw.get("policy", True)),
        restrict_egress=bool(net_raw.get("restrictEgress", False)),
        client_from=tuple(dict(p) for p in net_raw.get("clientFrom") or ()),
        monitoring_from=(
            DEFAULT_MONITORING_FROM
            if monitoring_from is None
            else tuple(dict(p) for p in monitoring_from)
        ),
    )
    expose_raw = dict(spec.get("expose") or {})
    ingress_raw = expose_raw.get("ingress")
    expose = Expose(
        service_type=str(expose_raw.get("serviceType", "ClusterIP")),
        service_annotations={
            str(k): str(v) for k, v in (expose_raw.get("serviceAnnotations") or {}).items()
        },
        load_balancer_source_ranges=tuple(
            str(r) for r in expose_raw.get("loadBalancerSourceRanges") or ()
        ),
        ingress=(
            Ingress(
                host=str(ingress_raw["host"]),
                class_name=ingress_raw.get("className") or None,
                tls_secret=ingress_raw.get("tlsSecretName") or None,
                annotations={
                    str(k): str(v) for k, v in (ingress_raw.get("annotations") or {}).items()
                },
            )
            if ingress_raw and ingress_raw.get("host")
            else None
        ),
    )
    backup_raw = spec.get("backup")
    backup = None
    if backup_raw and backup_raw.get("schedule"):
        s3_raw = backup_raw.get("s3") or {}
        backup = Backup(
            schedule=str(backup_raw["schedule"]),
            claim_name=(backup_raw.get("pvc") or {}).get("claimName") or None,
            s3_url=s3_raw.get("url") or None,
            endpoint_url=s3_raw.get("endpointUrl") or None,
            credentials_secret=(s3_raw.get("credentialsSecretRef") or {}).get("name") or None,
            suspend=bool(backup_raw.get("suspend", False)),
        )
    restore_raw = spec.get("restoreFrom")
    restore_from = None
    if restore_raw and restore_raw.get("cluster"):
        s3_raw = restore_raw.get("s3") or {}
        restore_from = RestoreFrom(
            cluster=str(restore_raw["cluster"]),
            index=int(restore_raw["index"]) if restore_raw.get("index") is not None else None,
            claim_name=(restore_raw.get("pvc") or {}).get("claimName") or None,
            s3_url=s3_raw.get("url") or None,
            endpoint_url=s3_raw.get("endpointUrl") or None,
            credentials_secret=(s3_raw.get("credentialsSecretRef") or {}).get("name") or None,
        )
    return ClusterSpec(
        replicas=int(spec.get("replicas", DEFAULT_REPLICAS)),
        image=str(spec.get("image", DEFAULT_IMAGE)),
        image_pull_policy=str(spec.get("imagePullPolicy", DEFAULT_PULL_POLICY)),
        resources={k: dict(v) for k, v in (resources or DEFAULT_RESOURCES).items()},
        storage=storage,
        symbols=tuple(_symbol(s) for s in symbols_raw),
        risk=_risk(spec.get("risk") or {}),
        snapshot_bytes=_snapshot_bytes(spec.get("snapshotBytes", DEFAULT_SNAPSHOT_BYTES)),
        snapshot_threshold=int(spec.get("snapshotThreshold", DEFAULT_SNAPSHOT_THRESHOLD)),
        checkpoint_entries=_checkpoint_entries(spec.get("checkpointEntries")),
        exactly_once=_exactly_once(spec.get("exactlyOnce")),
        election_ms=int(spec.get("electionMs", DEFAULT_ELECTION_MS)),
        heartbeat_ms=int(spec.get("heartbeatMs", DEFAULT_HEARTBEAT_MS)),
        api_keys_secret=api_keys,
        otlp_endpoint=tracing.get("otlpEndpoint") or None,
        monitoring=monitoring,
        scheduling=scheduling,
        paused=bool(spec.get("paused", False)),
        cluster_id=spec.get("clusterId"),
        tls=tls,
        network=network,
        expose=expose,
        backup=backup,
        restore_from=restore_from,
    )


def majority(voters: int) -> int:
    """The smallest number of voters that forms a quorum."""
    return voters // 2 + 1


def tolerated_failures(voters: int) -> int:
    """How many voters may be down while a majority remains."""
    return voters - majority(voters) if voters > 0 else 0

"""Pure renderers: an ExchangeCluster (spec + a little observed state) -> child objects.

Nothing here talks to Kubernetes; handlers.py applies what these return.
Every child carries an owner reference to the ExchangeCluster (deletion
cascades) and the app.kubernetes.io/* labels.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from exchange_operator import names
from exchange_operator.quantity import parse_quantity
from exchange_operator.spec import ClusterRef, ClusterSpec, tolerated_failures

Obj = dict[str, Any]


@dataclass(frozen=True)
class RenderState:
    """What the renderers need beyond the spec, decided by the handlers.

    - statefulset_replicas: the pod count the membership decisions allow now
      (it trails spec.replicas while members are added or removed).
    - bootstrap_replicas: the size of the cluster when it was created; the
      initial voters listed in EXCHANGE_PEERS never change afterwards.
    - bootstrapped: once a leader has been seen, new pods start with
      EXCHANGE_CLUSTER_STATE=existing so an empty volume never bootstraps.
    - claim_size: the size in the existing StatefulSet's claim template
      (immutable); growth is applied to the claims themselves.
    """

    statefulset_replicas: int
    bootstrap_replicas: int
    bootstrapped: bool = False
    claim_size: str | None = None
    # The operator's namespace: the only source the admin port admits (NetworkPolicy).
    operator_namespace: str | None = None
    # A hash of the API keys file in spec.apiKeysSecretRef (None: no Secret, or not read).
    api_keys_hash: str | None = None

    @classmethod
    def initial(cls, spec: ClusterSpec) -> RenderState:
        return cls(statefulset_replicas=spec.replicas, bootstrap_replicas=spec.replicas)


def owner_reference(cluster: ClusterRef) -> Obj:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": cluster.name,
        "uid": cluster.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(
    cluster: ClusterRef, name: str, component: str, image: str | None = None, **extra: Any
) -> Obj:
    meta: Obj = {
        "name": name,
        "namespace": cluster.namespace,
        "labels": names.standard_labels(cluster.name, component, image),
        "ownerReferences": [owner_reference(cluster)],
    }
    meta.update(extra)
    return meta


def stable_hash(value: Any) -> str:
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


# --- ConfigMap -------------------------------------------------------------


def node_config(spec: ClusterSpec) -> Obj:
    """The --config YAML of the node contract: symbols and risk limits."""
    symbols = []
    for symbol in spec.symbols:
        entry: Obj = {
            "name": symbol.name,
            "tick_size": symbol.tick_size,
            "lot_size": symbol.lot_size,
            "price_band_bps": symbol.price_band_bps,
        }
        if symbol.reference_price is not None:
            entry["reference_price"] = symbol.reference_price
        symbols.append(entry)
    return {
        "symbols": symbols,
        "risk": {
            "max_order_qty": spec.risk.max_order_qty,
            "max_notional": spec.risk.max_notional,
            "max_position": spec.risk.max_position,
        },
    }


def config_map(cluster: ClusterRef, spec: ClusterSpec) -> Obj:
    text = yaml.safe_dump(node_config(spec), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(cluster, names.config_map(cluster.name), names.COMPONENT_NODE),
        "data": {names.CONFIG_FILE_NAME: text},
    }


# --- Secret ----------------------------------------------------------------


def admin_secret(cluster: ClusterRef, token: str) -> Obj:
    """Created once with a random token; never re-rendered over an existing one."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(cluster, names.admin_secret(cluster.name), names.COMPONENT_NODE),
        "stringData": {names.ADMIN_TOKEN_KEY: token},
    }


# --- Services --------------------------------------------------------------


def _service_meta(cluster: ClusterRef, name: str, service: str) -> Obj:
    meta = _meta(cluster, name, names.COMPONENT_NODE)
    meta["labels"][names.LABEL_SERVICE] = service
    return meta


def _ports() -> list[Obj]:
    return [
        {"name": names.HTTP_PORT_NAME, "port": names.HTTP_PORT, "targetPort": names.HTTP_PORT_NAME},
        {"name": names.GRPC_PORT_NAME, "port": names.GRPC_PORT, "targetPort": names.GRPC_PORT_NAME},
    ]


def peers_service(cluster: ClusterRef) -> Obj:
    """Headless; publishes not-ready pods so peers find each other before /readyz passes."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _service_meta(cluster, names.peers_service(cluster.name), "peers"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": names.selector_labels(cluster.name),
            "ports": _ports(),
        },
    }


def client_service(cluster: ClusterRef, spec: ClusterSpec | None = None) -> Obj:
    """The client API (HTTP port only); spec.expose picks its type (NodePort or
    LoadBalancer to reach it from outside), annotations and source ranges."""
    expose = spec.expose if spec is not None else None
    meta = _service_meta(cluster, names.client_service(cluster.name), "client")
    service_spec: Obj = {
        "type": expose.service_type if expose is not None else "ClusterIP",
        "selector": names.selector_labels(cluster.name),
        "ports": [
            {
                "name": names.HTTP_PORT_NAME,
                "port": names.HTTP_PORT,
                "targetPort": names.HTTP_PORT_NAME,
            }
        ],
    }
    if expose is not None:
        if expose.service_annotations:
            meta["annotations"] = dict(expose.service_annotations)
        if expose.load_balancer_source_ranges and expose.service_type == "LoadBalancer":
            service_spec["loadBalancerSourceRanges"] = list(expose.load_balancer_source_ranges)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": service_spec}


def ingress(cluster: ClusterRef, spec: ClusterSpec) -> Obj:
    """spec.expose.ingress -> an Ingress to the client Service (named like the cluster).
    Without one in the spec, the object the handlers delete (only its name matters)."""
    wanted = spec.expose.ingress
    meta = _meta(cluster, names.client_service(cluster.name), names.COMPONENT_NODE)
    if wanted is None:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta}
    if wanted.annotations:
        meta["annotations"] = dict(wanted.annotations)
    backend = {
        "service": {
            "name": names.client_service(cluster.name),
            "port": {"name": names.HTTP_PORT_NAME},
        }
    }
    ingress_spec: Obj = {
        "rules": [
            {
                "host": wanted.host,
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
            }
        ]
    }
    if wanted.class_name:
        ingress_spec["ingressClassName"] = wanted.class_name
    if wanted.tls_secret:
        ingress_spec["tls"] = [{"hosts": [wanted.host], "secretName": wanted.tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": ingress_spec,
    }


def leader_service(cluster: ClusterRef) -> Obj:
    """Selects only the pod labelled role=leader (moved by the operator)."""
    selector = {**names.selector_labels(cluster.name), names.LABEL_ROLE: names.ROLE_LEADER}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _service_meta(cluster, names.leader_service(cluster.name), "leader"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": names.HTTP_PORT_NAME,
                    "port": names.HTTP_PORT,
                    "targetPort": names.HTTP_PORT_NAME,
                }
            ],
        },
    }


# --- PodDisruptionBudget and NetworkPolicy ---------------------------------


def pdb_max_unavailable(replicas: int) -> int:
    """Voluntary disruptions that still leave a majority: 1->0, 3->1, 5->2, 7->3.

    A single-replica cluster has no redundancy, so its budget allows no
    voluntary disruption at all: a node drain waits until the user scales up
    or deletes the budget. That is the honest answer for a 1-node Raft group.
    """
    return tolerated_failures(replicas)


def pod_disruption_budget(cluster: ClusterRef, spec: ClusterSpec) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(cluster, names.pdb(cluster.name), names.COMPONENT_NODE),
        "spec": {
            "maxUnavailable": pdb_max_unavailable(spec.replicas),
            "selector": {"matchLabels": names.selector_labels(cluster.name)},
            # Unhealthy pods may always be evicted: they do not hold up quorum.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def default_deny_policy(cluster: ClusterRef, spec: ClusterSpec) -> Obj:
    """Nothing into the cluster's pods (and, with network.restrictEgress, nothing out)
    unless network_policy allows it."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(cluster, names.default_deny_policy(cluster.name), names.COMPONENT_NODE),
        "spec": {
            "podSelector": {"matchLabels": names.selector_labels(cluster.name)},
            "policyTypes": ["Ingress", "Egress"] if spec.network.restrict_egress else ["Ingress"],
        },
    }


def _tcp(port: int) -> Obj:
    return {"protocol": "TCP", "port": port}


def operator_peer(operator_namespace: str | None) -> Obj:
    """The operator's pods: in its own namespace when known, else any namespace."""
    peer: Obj = {"podSelector": {"matchLabels": names.operator_selector_labels()}}
    if operator_namespace:
        peer["namespaceSelector"] = {
            "matchLabels": {"kubernetes.io/metadata.name": operator_namespace}
        }
    else:
        peer["namespaceSelector"] = {}
    return peer


def otlp_port(endpoint: str | None) -> int | None:
    """The port of an OTLP endpoint URL (4317 when it names none)."""
    if not endpoint:
        return None
    from urllib.parse import urlsplit

    try:
        return urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").port or 4317
    except ValueError:
        return 4317


def network_policy(cluster: ClusterRef, spec: ClusterSpec, state: RenderState) -> Obj:
    """What default_deny_policy lets through, port by port.

    - gRPC (Raft peers): the cluster's own pods only;
    - HTTP (API, WebSocket, probes' port, /metrics): the cluster's pods (followers
      forward writes), spec.network.clientFrom (default: this namespace's pods)
      and spec.network.monitoringFrom (Prometheus; a policy sees ports, not paths);
    - admin: the operator's pods only;
    - egress (only with network.restrictEgress): DNS, the other members (gRPC,
      HTTP) and the OTLP collector's port.
    Kubelet probes come from the node itself, which CNIs admit regardless.
    """
    members = {"podSelector": {"matchLabels": names.selector_labels(cluster.name)}}
    # spec.backup: the backup Job's pods reach the admin port (snapshot, status) too.
    backup_peers = (
        [{"podSelector": {"matchLabels": backup_labels(cluster.name)}}] if spec.backup else []
    )
    clients = [dict(p) for p in spec.network.client_from] or [{"podSelector": {}}]
    http_from = [members, *clients, *(dict(p) for p in spec.network.monitoring_from)]
    egress: list[Obj] = [
        {
            "to": [
                {
                    "namespaceSelector": {},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, _tcp(53)],
        },
        {"to": [members], "ports": [_tcp(names.GRPC_PORT), _tcp(names.HTTP_PORT)]},
    ]
    otlp = otlp_port(spec.otlp_endpoint)
    if otlp is not None:
        egress.append({"ports": [_tcp(otlp)]})
    policy: Obj = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(cluster, names.network_policy(cluster.name), names.COMPONENT_NODE),
        "spec": {
            "podSelector": {"matchLabels": names.selector_labels(cluster.name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [members], "ports": [_tcp(names.GRPC_PORT)]},
                {"from": http_from, "ports": [_tcp(names.HTTP_PORT)]},
                {
                    "from": [operator_peer(state.operator_namespace), *backup_peers],
                    "ports": [_tcp(names.ADMIN_PORT)],
                },
            ],
        },
    }
    if spec.network.restrict_egress:
        policy["spec"]["policyTypes"].append("Egress")
        policy["spec"]["egress"] = egress
    return policy


# --- scheduled backups ---------------------------------------------------------


def backup_labels(cluster: str) -> dict[str, str]:
    return {
        names.LABEL_NAME: names.APP_NAME,
        names.LABEL_INSTANCE: cluster,
        names.LABEL_COMPONENT: names.COMPONENT_BACKUP,
    }


def backup_cronjob(cluster: ClusterRef, spec: ClusterSpec, state: RenderState) -> Obj:
    """spec.backup -> CronJob <name>-backup: `python -m exchange_node.backup take` with
    every member's admin URL (it finds the leader), the admin token and the cluster's
    CA, into the PVC or the S3 bucket. Without spec.backup: the object to delete."""
    name = f"{cluster.name}-backup"
    meta = _meta(cluster, name, names.COMPONENT_BACKUP)
    backup = spec.backup
    if backup is None:
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta}
    admin_urls = [
        f"--admin=https://{cluster.name}-{i}.{names.peers_service(cluster.name)}."
        f"{cluster.namespace}.svc:{names.ADMIN_PORT}"
        for i in range(state.statefulset_replicas)
    ]
    store = backup.s3_url if backup.s3_url else "/backup"
    args = [
        "-m", "exchange_node.backup", "take", f"--cluster={cluster.name}", *admin_urls,
        "--token-file=/etc/exchange/admin/token", "--ca=/etc/exchange/http-tls/ca.crt",
        f"--store={store}",
    ]  # fmt: skip
    if backup.endpoint_url:
        args.append(f"--endpoint-url={backup.endpoint_url}")
    mounts = [
        {"name": "admin", "mountPath": "/etc/exchange/admin", "readOnly": True},
        {"name": "http-tls", "mountPath": "/etc/exchange/http-tls", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[Obj] = [
        {
            "name": "admin",
            "secret": {
                "secretName": names.admin_secret(cluster.name),
                "items": [{"key": names.ADMIN_TOKEN_KEY, "path": "token"}],
                "defaultMode": 0o440,
            },
        },
        {
            "name": "http-tls",
            "secret": {
                "secretName": names.http_tls_secret(cluster.name),
                "items": [{"key": names.CA_CERT_KEY, "path": names.CA_CERT_KEY}],
                "defaultMode": 0o444,
            },
        },
        {"name": "tmp", "emptyDir": {}},
    ]
    if backup.claim_name:
        mounts.append({"name": "store", "mountPath": "/backup"})
        volumes.append({"name": "store", "persistentVolumeClaim": {"claimName": backup.claim_name}})
    container: Obj = {
        "name": "backup",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["python"],
        "args": args,
        "volumeMounts": mounts,
        "securityContext": restricted_container_security(),
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    }
    if backup.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": backup.credentials_secret}}]
    pod_labels = {**backup_labels(cluster.name), names.LABEL_PART_OF: names.APP_NAME}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta,
        "spec": {
            "schedule": backup.schedule,
            "suspend": backup.suspend,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 1800,
                    "template": {
                        "metadata": {"labels": pod_labels},
                        "spec": {
                            "restartPolicy": "Never",
                            "serviceAccountName": "default",
                            "automountServiceAccountToken": False,
                            "securityContext": restricted_pod_security(),
                            "containers": [container],
                            "volumes": volumes,
                        },
                    },
                },
            },
        },
    }


def restore_container(cluster: ClusterRef, spec: ClusterSpec, state: RenderState) -> Obj:
    """spec.restoreFrom: before the node starts, `python -m exchange_node.backup restore
    --if-empty --pod-name=$(POD_NAME)` fills an initial member's empty volume from the
    backup, with this cluster's membership (the initial voters, by their pod names)."""
    source = spec.restore_from
    assert source is not None
    members = [
        f"--member={names.initial_node_id(i)}={names.pod_name(cluster.name, i)},"
        f"{names.peer_address(cluster.name, i, cluster.namespace)},"
        f"{names.peer_http_address(cluster.name, i, cluster.namespace)}"
        for i in range(state.bootstrap_replicas)
    ]
    store = source.s3_url if source.s3_url else "/backup"
    args = [
        "-m", "exchange_node.backup", "restore", f"--cluster={source.cluster}",
        f"--store={store}", f"--data-dir={names.DATA_DIR}", "--pod-name=$(POD_NAME)",
        "--if-empty", *members,
    ]  # fmt: skip
    if source.endpoint_url:
        args.append(f"--endpoint-url={source.endpoint_url}")
    if source.index is not None:
        args.append(f"--index={source.index}")
    mounts: list[Obj] = [
        {"name": "data", "mountPath": names.DATA_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if source.claim_name:
        mounts.append({"name": "restore-store", "mountPath": "/backup", "readOnly": True})
    container: Obj = {
        "name": "restore",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["python"],
        "args": args,
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "volumeMounts": mounts,
        "securityContext": restricted_container_security(),
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
    }
    if source.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": source.credentials_secret}}]
    return container


# --- StatefulSet -------------------------------------------------------------


def peers_env(cluster: ClusterRef, bootstrap_replicas: int) -> str:
    """EXCHANGE_PEERS: the initial voters `<i+1>=<cluster>-<i>.<cluster>-peers.<ns>.svc:<grpc>`."""
    return ",".join(
        f"{names.initial_node_id(i)}={names.peer_address(cluster.name, i, cluster.namespace)}"
        for i in range(bootstrap_replicas)
    )


def _env(cluster: ClusterRef, spec: ClusterSpec, state: RenderState) -> list[Obj]:
    def value(name: str, text: str | int) -> Obj:
        return {"name": name, "value": str(text)}

    peers_svc = names.peers_service(cluster.name)
    env: list[Obj] = [
        {"name": "EXCHANGE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        value("EXCHANGE_LISTEN_HOST", "0.0.0.0"),
        value("EXCHANGE_HTTP_PORT", names.HTTP_PORT),
        value("EXCHANGE_GRPC_PORT", names.GRPC_PORT),
        value("EXCHANGE_ADMIN_PORT", names.ADMIN_PORT),
        {
            "name": "POD_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{names.POD_INDEX_LABEL}']"}},
        },
        value(
            "EXCHANGE_CLUSTER_ID",
            names.raft_cluster_id(cluster.name, cluster.namespace, spec.cluster_id),
        ),
        # The node makes its member key on its own volume and gets the certificate
        # through the admin API (the operator signs its CSR): no pod holds another's key.
        value("EXCHANGE_PEER_TLS_ENROLL", "true"),
        value("EXCHANGE_PEER_TLS_CA", f"{names.HTTP_TLS_DIR}/{names.CA_CERT_KEY}"),
        value("EXCHANGE_HTTP_TLS_CERT", f"{names.HTTP_TLS_DIR}/{names.TLS_CERT_KEY}"),
        value("EXCHANGE_HTTP_TLS_KEY", f"{names.HTTP_TLS_DIR}/{names.TLS_KEY_KEY}"),
        value(
            "EXCHANGE_ADVERTISE_ADDRESS",
            f"$(EXCHANGE_NAME).{peers_svc}.{cluster.namespace}.svc:{names.GRPC_PORT}",
        ),
        value(
            "EXCHANGE_ADVERTISE_HTTP",
            f"$(EXCHANGE_NAME).{peers_svc}.{cluster.namespace}.svc:{names.HTTP_PORT}",
        ),
        value("EXCHANGE_DATA_DIR", names.DATA_DIR),
        value("EXCHANGE_PEERS", peers_env(cluster, state.bootstrap_replicas)),
        value("EXCHANGE_CLUSTER_STATE", "existing" if state.bootstrapped else "new"),
        value("EXCHANGE_CONFIG", f"{names.CONFIG_DIR}/{names.CONFIG_FILE_NAME}"),
        value("EXCHANGE_SNAPSHOT_BYTES", int(parse_quantity(spec.snapshot_bytes))),
        value("EXCHANGE_SNAPSHOT_THRESHOLD", spec.snapshot_threshold),
        value("EXCHANGE_ELECTION_MS", spec.election_ms),
        value("EXCHANGE_HEARTBEAT_MS", spec.heartbeat_ms),
        value("EXCHANGE_SHUTDOWN_GRACE_SECONDS", names.SHUTDOWN_GRACE_SECONDS),
        {
            "name": "EXCHANGE_ADMIN_TOKEN",
            "valueFrom": {
                "secretKeyRef": {
                    "name": names.admin_secret(cluster.name),
                    "key": names.ADMIN_TOKEN_KEY,
                }
            },
        },
    ]
    if spec.api_keys_secret is not None:
        env.append(
            value("EXCHANGE_API_KEYS_FILE", f"{names.API_KEYS_DIR}/{spec.api_keys_secret.key}")
        )
    env.append(value("OTEL_SERVICE_NAME", names.APP_NAME))
    env.append(
        value(
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.pod.name=$(EXCHANGE_NAME),k8s.namespace.name=$(POD_NAMESPACE),"
            f"exchange.cluster={cluster.name}",
        )
    )
    if spec.otlp_endpoint:
        env.append(value("OTEL_EXPORTER_OTLP_ENDPOINT", spec.otlp_endpoint))
    retention = spec.exactly_once
    for name, setting in (
        ("EXCHANGE_EXACTLY_ONCE_HORIZON", retention.horizon),
        ("EXCHANGE_EXACTLY_ONCE_MAX_KEYS", retention.max_keys),
        ("EXCHANGE_FINISHED_ORDERS", retention.finished_orders),
    ):
        if setting is not None:  # unset: the cluster keeps its own value
            env.append(value(name, setting))
    if spec.checkpoint_entries is not None:  # unset: the node's default (and no roll)
        env.append(value("EXCHANGE_CHECKPOINT_ENTRIES", spec.checkpoint_entries))
    return env


def _affinity(cluster: ClusterRef, spec: ClusterSpec) -> Obj | None:
    mode = spec.scheduling.anti_affinity
    if mode == "none":
        return None
    term = {
        "labelSelector": {"matchLabels": names.selector_labels(cluster.name)},
        "topologyKey": "kubernetes.io/hostname",
    }
    if mode == "required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term}
            ]
        }
    }


def restricted_container_security() -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": names.NODE_UID,
        "runAsGroup": names.NODE_UID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_security() -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": names.NODE_UID,
        "runAsGroup": names.NODE_UID,
        "fsGroup": names.NODE_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container(cluster: ClusterRef, spec: ClusterSpec, state: RenderState) -> Obj:
    mounts: list[Obj] = [
        {"name": "data", "mountPath": names.DATA_DIR},
        {"name": "config", "mountPath": names.CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "http-tls", "mountPath": names.HTTP_TLS_DIR, "readOnly": True},
    ]
    if spec.api_keys_secret is not None:
        mounts.append({"name": "api-keys", "mountPath": names.API_KEYS_DIR, "readOnly": True})

    def probe(path: str, period: int, failures: int) -> Obj:
        return {
            "httpGet": {"path": path, "port": names.HTTP_PORT_NAME, "scheme": "HTTPS"},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    return {
        "name": "node",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["exchange", "node"],
        "ports": [
            {"name": names.HTTP_PORT_NAME, "containerPort": names.HTTP_PORT, "protocol": "TCP"},
            {"name": names.GRPC_PORT_NAME, "containerPort": names.GRPC_PORT, "protocol": "TCP"},
            {"name": names.ADMIN_PORT_NAME, "containerPort": names.ADMIN_PORT, "protocol": "TCP"},
        ],
        "env": _env(cluster, spec, state),
        "resources": copy.deepcopy(spec.resources),
        "volumeMounts": mounts,
        # Startup covers WAL replay after a crash; liveness only the loop.
        "startupProbe": probe("/healthz", 2, 60),
        "livenessProbe": probe("/healthz", 10, 3),
        "readinessProbe": probe("/readyz", 2, 3),
        "securityContext": restricted_container_security(),
    }


def _volumes(cluster: ClusterRef, spec: ClusterSpec) -> list[Obj]:
    volumes: list[Obj] = [
        {"name": "config", "configMap": {"name": names.config_map(cluster.name)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        {
            "name": "http-tls",
            "secret": {"secretName": names.http_tls_secret(cluster.name), "defaultMode": 0o440},
        },
    ]
    if spec.api_keys_secret is not None:
        volumes.append(
            {
                "name": "api-keys",
                "secret": {"secretName": spec.api_keys_secret.name, "defaultMode": 0o440},
            }
        )
    return volumes


def restart_hash(pod_template: Obj) -> str:
    """What must restart a pod: everything in its template except the cluster-state flag.

    EXCHANGE_CLUSTER_STATE flips from `new` to `existing` once the cluster has
    formed; that only matters for pods created later, so it must not restart
    the running ones.
    """
    template = copy.deepcopy(pod_template)
    template.get("metadata", {}).get("annotations", {}).pop(names.ANNOTATION_RESTART_HASH, None)
    for container in template["spec"]["containers"]:
        container["env"] = [e for e in container["env"] if e["name"] != "EXCHANGE_CLUSTER_STATE"]
    return stable_hash(template)


def pod_template(cluster: ClusterRef, spec: ClusterSpec, state: RenderState) -> Obj:
    pod_spec: Obj = {
        "serviceAccountName": "default",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": names.SHUTDOWN_GRACE_SECONDS + 10,
        "securityContext": restricted_pod_security(),
        "containers": [_container(cluster, spec, state)],
        "volumes": _volumes(cluster, spec),
    }
    if spec.restore_from is not None:
        pod_spec["initContainers"] = [restore_container(cluster, spec, state)]
        if spec.restore_from.claim_name:
            pod_spec["volumes"].append(
                {
                    "name": "restore-store",
                    "persistentVolumeClaim": {
                        "claimName": spec.restore_from.claim_name,
                        "readOnly": True,
                    },
                }
            )
    affinity = _affinity(cluster, spec)
    if affinity is not None:
        pod_spec["affinity"] = affinity
    if spec.scheduling.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.scheduling.tolerations]
    if spec.scheduling.node_selector:
        pod_spec["nodeSelector"] = dict(spec.scheduling.node_selector)
    spread = spec.scheduling.topology_spread
    if spread is not None:
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": spread.max_skew,
                "topologyKey": spread.topology_key,
                "whenUnsatisfiable": spread.when_unsatisfiable,
                "labelSelector": {"matchLabels": names.selector_labels(cluster.name)},
            }
        ]
    labels = names.standard_labels(cluster.name, names.COMPONENT_NODE, spec.image)
    if spec.cluster_id:
        labels[names.LABEL_CLUSTER_ID] = spec.cluster_id
    template: Obj = {
        "metadata": {
            "labels": labels,
            "annotations": {names.ANNOTATION_CONFIG_HASH: stable_hash(node_config(spec))},
        },
        "spec": pod_spec,
    }
    if state.api_keys_hash is not None:
        template["metadata"]["annotations"][names.ANNOTATION_API_KEYS_HASH] = state.api_keys_hash
    template["metadata"]["annotations"][names.ANNOTATION_RESTART_HASH] = restart_hash(template)
    return template


def stateful_set(cluster: ClusterRef, spec: ClusterSpec, state: RenderState) -> Obj:
    claim: Obj = {
        "metadata": {
            "name": "data",
            "labels": names.standard_labels(cluster.name, names.COMPONENT_NODE),
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": state.claim_size or spec.storage.size}},
        },
    }
    if spec.storage.storage_class_name:
        claim["spec"]["storageClassName"] = spec.storage.storage_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(cluster, cluster.name, names.COMPONENT_NODE, spec.image),
        "spec": {
            "replicas": state.statefulset_replicas,
            "serviceName": names.peers_service(cluster.name),
            # Parallel: a new cluster's pods must start together, since none is
            # ready (/readyz needs a leader) until a majority runs.
            "podManagementPolicy": "Parallel",
            # OnDelete: the operator restarts pods itself, one at a time, followers
            # first, after moving leadership away and waiting for catch-up; the
            # StatefulSet controller alone knows nothing of Raft roles.
            "updateStrategy": {"type": "OnDelete"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": spec.storage.when_deleted,
                "whenScaled": spec.storage.when_scaled,
            },
            "selector": {"matchLabels": names.selector_labels(cluster.name)},
            "template": pod_template(cluster, spec, state),
            "volumeClaimTemplates": [claim],
        },
    }


# --- everything -------------------------------------------------------------


def core_children(cluster: ClusterRef, spec: ClusterSpec, state: RenderState) -> list[Obj]:
    """The children that need only the core and apps APIs (the Secret is separate)."""
    return [
        config_map(cluster, spec),
        peers_service(cluster),
        client_service(cluster, spec),
        leader_service(cluster),
        pod_disruption_budget(cluster, spec),
        *network_policies(cluster, spec, state),
        stateful_set(cluster, spec, state),
    ]


def network_policies(cluster: ClusterRef, spec: ClusterSpec, state: RenderState) -> list[Obj]:
    if not spec.network.policy:
        return []
    return [default_deny_policy(cluster, spec), network_policy(cluster, spec, state)]

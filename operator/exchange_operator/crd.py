"""The ExchangeCluster CustomResourceDefinition, generated from this one source.

`python -m exchange_operator.crd` prints it as YAML; scripts/k8s/generate.py
writes it into the chart's crds/ folder and k8s/, and the tests validate
objects against the schema and evaluate its CEL rules.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from exchange_operator import names, spec

Schema = dict[str, Any]

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
# A whole number of bytes: no fractions or milli-units (a node needs at least one byte).
BYTES_PATTERN = r"^[1-9][0-9]*(k|M|G|Ki|Mi|Gi)?$"
SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9._-]{0,15}$"
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

PHASES = (
    "Pending",
    "Bootstrapping",
    "Running",
    "Scaling",
    "Upgrading",
    "Degraded",
    "QuorumLost",
    "Paused",
)
CONDITION_TYPES = ("Ready", "Available", "Progressing", "Degraded", "QuorumLost")
MEMBER_ROLES = ("leader", "follower", "candidate", "learner", "unknown")

# Every CEL rule, named so tests can find the one they evaluate.
RULE_ODD_REPLICAS = {
    "rule": "self.replicas % 2 == 1",
    "message": "replicas must be odd (1, 3, 5 or 7) so a majority is unambiguous",
    "fieldPath": ".replicas",
    "reason": "FieldValueInvalid",
}
RULE_TIMING = {
    "rule": "self.heartbeatMs * 3 <= self.electionMs",
    "message": "electionMs must be at least three heartbeats (heartbeatMs * 3)",
    "fieldPath": ".electionMs",
    "reason": "FieldValueInvalid",
}
RULE_CLUSTER_ID_IMMUTABLE = {
    "rule": "!has(oldSelf.clusterId) || (has(self.clusterId) && self.clusterId == oldSelf.clusterId)",
    "message": "clusterId is the Raft group's identity and cannot change or be removed once set",
    "fieldPath": ".clusterId",
    "reason": "FieldValueForbidden",
}
# Kubernetes >= 1.29 has the CEL quantity library; the tests evaluate this rule
# with a Python implementation of quantity() that follows resource.Quantity.
RULE_STORAGE_NO_SHRINK = {
    "rule": "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
    "message": "storage.size cannot shrink (volumes can only be expanded)",
    "fieldPath": ".size",
    "reason": "FieldValueForbidden",
}
RULE_BACKUP_ONE_STORE = {
    "rule": "has(self.pvc) != has(self.s3)",
    "message": "backup needs exactly one store: pvc or s3",
}
RULE_STORAGE_CLASS_IMMUTABLE = {
    "rule": "has(self.storageClassName) == has(oldSelf.storageClassName)"
    " && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
    "message": "storage.storageClassName cannot change: claims of a StatefulSet are fixed",
    "fieldPath": ".storageClassName",
    "reason": "FieldValueForbidden",
}


def _int(minimum: int | None = None, maximum: int | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "integer", "format": "int64"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    schema.update(extra)
    return schema


def _str(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def _quantity_map() -> Schema:
    return {
        "type": "object",
        "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
        },
    }


def _symbol_schema() -> Schema:
    return {
        "type": "object",
        "required": ["name", "tickSize", "lotSize"],
        "properties": {
            "name": _str(pattern=SYMBOL_PATTERN, maxLength=16, description="e.g. BTC-USD"),
            "tickSize": _int(1, description="smallest price increment, in integer price units"),
            "lotSize": _int(1, description="smallest quantity increment"),
            "priceBandBps": _int(
                0,
                10_000,
                default=1000,
                description="orders priced further than this from "
                "the reference price (basis points) are rejected",
            ),
            "referencePrice": _int(1, description="starting reference price, in price units"),
        },
    }


def _toleration_schema() -> Schema:
    return {
        "type": "object",
        "properties": {
            "key": _str(),
            "operator": _str(enum=["Exists", "Equal"]),
            "value": _str(),
            "effect": _str(enum=["NoSchedule", "PreferNoSchedule", "NoExecute"]),
            "tolerationSeconds": _int(),
        },
    }


def _store_pvc() -> Schema:
    return {
        "type": "object",
        "required": ["claimName"],
        "properties": {"claimName": _str(pattern=K8S_NAME_PATTERN, maxLength=253)},
    }


def _store_s3() -> Schema:
    return {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": _str(pattern="^s3://[a-z0-9][a-z0-9.-]{1,62}(/.*)?$", maxLength=1024),
            "endpointUrl": _str(maxLength=1024),
            "credentialsSecretRef": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": _str(pattern=K8S_NAME_PATTERN, maxLength=253)},
            },
        },
    }


def spec_schema() -> Schema:
    return {
        "type": "object",
        "description": "The desired Raft exchange cluster.",
        "x-kubernetes-validations": [RULE_ODD_REPLICAS, RULE_TIMING, RULE_CLUSTER_ID_IMMUTABLE],
        "properties": {
            "replicas": _int(
                spec.MIN_REPLICAS,
                spec.MAX_REPLICAS,
                default=spec.DEFAULT_REPLICAS,
                description="Raft voters: 1, 3, 5 or 7.",
            ),
            "image": _str(default=spec.DEFAULT_IMAGE, minLength=1, maxLength=512),
            "imagePullPolicy": _str(
                enum=list(spec.PULL_POLICIES), default=spec.DEFAULT_PULL_POLICY
            ),
            "resources": {
                "type": "object",
                "description": "Container resources of every node.",
                "default": spec.DEFAULT_RESOURCES,
                "properties": {"requests": _quantity_map(), "limits": _quantity_map()},
            },
            "storage": {
                "type": "object",
                "default": {},
                "x-kubernetes-validations": [RULE_STORAGE_NO_SHRINK, RULE_STORAGE_CLASS_IMMUTABLE],
                "properties": {
                    "size": _str(
                        pattern=QUANTITY_PATTERN,
                        maxLength=32,
                        default=spec.DEFAULT_STORAGE_SIZE,
                        description="Per-node volume for the WAL and snapshots; can grow, "
                        "never shrink.",
                    ),
                    "storageClassName": _str(maxLength=253),
                    "retention": {
                        "type": "object",
                        "default": {},
                        "description": "What happens to the claims (persistentVolumeClaim"
                        "RetentionPolicy of the StatefulSet).",
                        "properties": {
                            "whenDeleted": _str(
                                enum=list(spec.RETENTION_POLICIES),
                                default=spec.DEFAULT_WHEN_DELETED,
                            ),
                            "whenScaled": _str(
                                enum=list(spec.RETENTION_POLICIES), default=spec.DEFAULT_WHEN_SCALED
                            ),
                        },
                    },
                },
            },
            "symbols": {
                "type": "array",
                "maxItems": 64,
                "default": list(spec.DEFAULT_SYMBOLS),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": _symbol_schema(),
            },
            "risk": {
                "type": "object",
                "default": {},
                "properties": {
                    "maxOrderQty": _int(1, default=spec.DEFAULT_RISK["maxOrderQty"]),
                    "maxNotional": _int(1, default=spec.DEFAULT_RISK["maxNotional"]),
                    "maxPosition": _int(1, default=spec.DEFAULT_RISK["maxPosition"]),
                },
            },
            "snapshotBytes": {
                "anyOf": [{"type": "integer"}, {"type": "string"}],
                "x-kubernetes-int-or-string": True,
                "pattern": BYTES_PATTERN,
                "default": spec.DEFAULT_SNAPSHOT_BYTES,
                "description": "take a snapshot once the log since the last one reaches "
                "this size (a quantity, e.g. 64Mi): the bound on each node's in-memory log. "
                "The pod's memory limit needs room for it and for one copy-on-write copy of "
                "the engine while a snapshot is written (docs/snapshots.md).",
            },
            "exactlyOnce": {
                "type": "object",
                "additionalProperties": False,
                "description": "exactly-once retention, replicated: every new leader puts "
                "these in force through the log; a field left out keeps the cluster's own "
                "value (24h, 262144 keys, 65536 finished orders unless changed)",
                "properties": {
                    "horizon": {
                        "type": "string",
                        "pattern": spec.HORIZON_PATTERN,
                        "description": "how long a client_order_id's result is remembered "
                        "for retries, e.g. 24h, 90m, 3600s (at most 366d)",
                    },
                    "maxKeys": _int(
                        1,
                        spec.RETENTION_MAX_ENTRIES,
                        description="the most results remembered (about 0.7 KB each); the "
                        "oldest go first beyond it",
                    ),
                    "finishedOrders": _int(
                        1,
                        spec.RETENTION_MAX_ENTRIES,
                        description="finished orders kept for queries",
                    ),
                },
            },
            "snapshotThreshold": _int(
                0,
                default=spec.DEFAULT_SNAPSHOT_THRESHOLD,
                description="also take a snapshot after this many log entries (0: bytes only)",
            ),
            "checkpointEntries": _int(
                0,
                spec.CHECKPOINT_ENTRIES_MAX,
                description="hash the state every this many applied entries to compare the "
                "replicas (the node's --checkpoint-entries; absent: its default, 50,000; "
                "0: only when idle). Raise it when ExchangeDivergenceCheckBlind fires",
            ),
            "electionMs": _int(50, 60_000, default=spec.DEFAULT_ELECTION_MS),
            "heartbeatMs": _int(10, 10_000, default=spec.DEFAULT_HEARTBEAT_MS),
            "apiKeysSecretRef": {
                "type": "object",
                "description": "A Secret whose key holds the client API keys file "
                "(token=client_id lines).",
                "required": ["name"],
                "properties": {
                    "name": _str(pattern=K8S_NAME_PATTERN, maxLength=253),
                    "key": _str(default=spec.DEFAULT_API_KEYS_KEY, maxLength=253),
                },
            },
            "tracing": {
                "type": "object",
                "properties": {
                    "otlpEndpoint": _str(
                        maxLength=512, description="OTLP gRPC endpoint, e.g. http://otel:4317"
                    ),
                },
            },
            "monitoring": {
                "type": "object",
                "default": {},
                "properties": {
                    "serviceMonitor": {"type": "boolean", "default": True},
                    "prometheusRule": {"type": "boolean", "default": True},
                    "dashboards": {"type": "boolean", "default": False},
                    "labels": {
                        "type": "object",
                        "additionalProperties": {"type": "string", "maxLength": 63},
                        "description": "Added to the ServiceMonitor, PrometheusRule and "
                        "dashboard ConfigMaps, e.g. release: kube-prometheus-stack",
                    },
                    "annotations": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "Added to the same objects",
                    },
                    "dashboardFolder": _str(
                        maxLength=128,
                        default=spec.DEFAULT_DASHBOARD_FOLDER,
                        description="Grafana folder (annotation grafana_folder)",
                    ),
                },
            },
            "scheduling": {
                "type": "object",
                "default": {},
                "properties": {
                    "antiAffinity": _str(
                        enum=list(spec.ANTI_AFFINITY_MODES), default=spec.DEFAULT_ANTI_AFFINITY
                    ),
                    "tolerations": {"type": "array", "items": _toleration_schema()},
                    "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
                    "topologySpread": {
                        "type": "object",
                        "properties": {
                            "enabled": {"type": "boolean", "default": True},
                            "topologyKey": _str(default=spec.DEFAULT_TOPOLOGY_KEY),
                            "maxSkew": _int(1, default=1),
                            "whenUnsatisfiable": _str(
                                enum=list(spec.WHEN_UNSATISFIABLE), default="ScheduleAnyway"
                            ),
                        },
                    },
                },
            },
            "paused": {
                "type": "boolean",
                "default": False,
                "description": "Stop membership changes and restarts; objects are still kept.",
            },
            "clusterId": _str(
                pattern=DNS_LABEL_PATTERN,
                maxLength=63,
                description="The Raft group's identity (a DNS label, in every member "
                "certificate); immutable once set. Default: <name>-<namespace>.",
            ),
            "tls": {
                "type": "object",
                "default": {},
                "description": "Member and server certificates: cert-manager with issuerRef "
                "(when its CRDs exist), else the operator's own CA.",
                "properties": {
                    "issuerRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": _str(pattern=K8S_NAME_PATTERN, maxLength=253),
                            "kind": _str(enum=list(spec.ISSUER_KINDS), default="Issuer"),
                            "group": _str(default="cert-manager.io"),
                        },
                    },
                    "certificateDays": _int(
                        1,
                        3650,
                        default=spec.DEFAULT_CERT_DAYS,
                        description="lifetime of member and server certificates; "
                        "renewed with a third of it left",
                    ),
                    "caDays": _int(
                        30, 36500, default=spec.DEFAULT_CA_DAYS, description="the operator's CA"
                    ),
                },
            },
            "backup": {
                "type": "object",
                "description": "Scheduled backups: a CronJob <name>-backup snapshots the leader "
                "(python -m exchange_node.backup take) into a PVC or an S3-compatible bucket. "
                "On demand: kubectl create job --from=cronjob/<name>-backup <job name>.",
                "required": ["schedule"],
                "x-kubernetes-validations": [RULE_BACKUP_ONE_STORE],
                "properties": {
                    "schedule": _str(maxLength=128, description="cron, e.g. '0 */6 * * *'"),
                    "suspend": {"type": "boolean", "default": False},
                    "pvc": _store_pvc(),
                    "s3": _store_s3(),
                },
            },
            "restoreFrom": {
                "type": "object",
                "description": "Start a new cluster from a backup of another (python -m "
                "exchange_node.backup): an init container restores it into the initial members' "
                "empty volumes; restarted pods and pods added later are left alone.",
                "required": ["cluster"],
                "x-kubernetes-validations": [RULE_BACKUP_ONE_STORE],
                "properties": {
                    "cluster": _str(
                        pattern=K8S_NAME_PATTERN,
                        maxLength=253,
                        description="the backed-up cluster's name in the store",
                    ),
                    "index": _int(1, description="a backup's log index (default: the newest)"),
                    "pvc": _store_pvc(),
                    "s3": _store_s3(),
                },
            },
            "expose": {
                "type": "object",
                "description": "Reaching the client API from outside the cluster: the client "
                "Service's type, and an optional Ingress (the nodes serve HTTPS: the controller "
                "must speak HTTPS to them). Admit the controller with network.clientFrom.",
                "properties": {
                    "serviceType": _str(enum=list(spec.SERVICE_TYPES), default="ClusterIP"),
                    "serviceAnnotations": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                    },
                    "loadBalancerSourceRanges": {
                        "type": "array",
                        "maxItems": 64,
                        "items": _str(maxLength=64),
                    },
                    "ingress": {
                        "type": "object",
                        "required": ["host"],
                        "properties": {
                            "host": _str(
                                maxLength=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
                            ),
                            "className": _str(maxLength=253),
                            "tlsSecretName": _str(pattern=K8S_NAME_PATTERN, maxLength=253),
                            "annotations": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
            "network": {
                "type": "object",
                "default": {},
                "description": "NetworkPolicy: default deny; peers only from members, admin "
                "only from the operator, HTTP from clientFrom and monitoringFrom.",
                "properties": {
                    "policy": {"type": "boolean", "default": True},
                    "restrictEgress": {
                        "type": "boolean",
                        "default": False,
                        "description": "also deny egress but DNS, members and the OTLP "
                        "collector (breaks partitions made with NetworkPolicies)",
                    },
                    "clientFrom": _peer_list(
                        "NetworkPolicyPeers allowed to the HTTP API (default: this namespace)"
                    ),
                    "monitoringFrom": _peer_list(
                        "NetworkPolicyPeers allowed to the HTTP port for /metrics "
                        "(default: the namespace named monitoring)"
                    ),
                },
            },
        },
    }


def _peer_list(description: str) -> Schema:
    selector = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "type": "array",
        "description": description,
        "items": {
            "type": "object",
            "properties": {
                "podSelector": selector,
                "namespaceSelector": selector,
                "ipBlock": {
                    "type": "object",
                    "required": ["cidr"],
                    "properties": {
                        "cidr": _str(),
                        "except": {"type": "array", "items": _str()},
                    },
                },
            },
        },
    }


def status_schema() -> Schema:
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": _str(enum=list(CONDITION_TYPES)),
            "status": _str(enum=["True", "False", "Unknown"]),
            "reason": _str(),
            "message": _str(),
            "lastTransitionTime": _str(format="date-time"),
            "observedGeneration": _int(0),
        },
    }
    member = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": _str(),
            "id": _int(0),
            "role": _str(enum=list(MEMBER_ROLES)),
            "voter": {"type": "boolean"},
            "healthy": {"type": "boolean"},
            "ready": {"type": "boolean"},
            "matchIndex": _int(0),
            "appliedIndex": _int(0),
            "lag": _int(0),
            "image": _str(),
        },
    }
    return {
        "type": "object",
        "properties": {
            "observedGeneration": _int(0),
            "phase": _str(enum=list(PHASES)),
            "message": _str(),
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": condition,
            },
            "replicas": _int(0),
            "readyReplicas": _int(0),
            "selector": _str(),
            "leader": _str(),
            "leaderId": _int(0),
            "term": _int(0),
            "commitIndex": _int(0),
            "members": {"type": "array", "items": member},
            "bootstrapReplicas": _int(0),
            "bootstrapped": {"type": "boolean"},
            "clusterId": _str(),
            "lastAction": _str(),
            "certificates": {
                "type": "object",
                "properties": {
                    "source": _str(enum=["operator", "cert-manager"]),
                    "notAfter": _str(format="date-time"),
                    "members": _int(0),
                },
            },
        },
    }


def printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Leader", "type": "string", "jsonPath": ".status.leader"},
        {"name": "Term", "type": "integer", "jsonPath": ".status.term"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Certs-Expire", "type": "string", "jsonPath": ".status.certificates.notAfter"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def open_api_schema() -> Schema:
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
    }


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": names.CRD_NAME,
            "labels": {
                names.LABEL_NAME: names.APP_NAME,
                names.LABEL_PART_OF: names.APP_NAME,
                names.LABEL_COMPONENT: "crd",
            },
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
                "categories": list(names.CATEGORIES),
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": open_api_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": printer_columns(),
                }
            ],
        },
    }


def crd_yaml() -> str:
    return str(yaml.safe_dump(build_crd(), sort_keys=False, width=100))


def main() -> int:
    sys.stdout.write(crd_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())

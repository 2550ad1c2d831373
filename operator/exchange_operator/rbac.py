"""The operator's RBAC rules: exactly what handlers.py and kopf call, nothing more.

Three sets, each a different grant in the chart (scripts/k8s/generate.py writes
them to files/rbac-rules.yaml; a test checks them against the operator's calls):

- NAMESPACED_RULES: a Role + RoleBinding in every watched namespace (default
  install: the namespaces it is given, else its own). With
  ``operator.clusterWide: true`` these go into a ClusterRole instead, except
  ``secrets``, which stay in per-namespace Roles: never cluster-wide.
- CLUSTER_SCOPED_RULES: the only ClusterRole of a default install, for kopf
  itself: it watches CustomResourceDefinitions to notice CRDs installed later
  (the Prometheus Operator's, cert-manager's) and lists namespaces to resolve
  namespace globs. Both are cluster-scoped resources, which no Role can grant,
  and both are read-only metadata.
"""

from __future__ import annotations

from typing import Any

from exchange_operator import names

Rule = tuple[str, str, tuple[str, ...], str]  # (apiGroup, resource, verbs, why)

NAMESPACED_RULES: tuple[Rule, ...] = (
    (names.GROUP, names.PLURAL, ("list", "watch", "patch"), "kopf watches and annotates"),
    (names.GROUP, f"{names.PLURAL}/status", ("patch",), "status, conditions, members"),
    (
        names.GROUP,
        f"{names.PLURAL}/finalizers",
        ("update",),
        "children's ownerReferences set blockOwnerDeletion (OwnerReferencesPermissionEnforcement)",
    ),
    ("", "events", ("create",), "kopf posts an event per action"),
    (
        "",
        "secrets",
        ("get", "list", "create", "patch", "delete"),
        "admin token; the API keys Secret (its hash rolls the pods); CA and server "
        "certificates (issued, rotated by apply); "
        "delete: the member Secrets of clusters made before nodes enrolled",
    ),
    ("", "configmaps", ("create", "patch", "delete"), "node config and dashboards (apply)"),
    ("", "services", ("create", "patch"), "peer, client and leader Services (apply)"),
    ("", "pods", ("list", "patch", "delete"), "observe, move role=leader, restart one by one"),
    ("", "persistentvolumeclaims", ("list", "patch"), "grow claims when storage.size grows"),
    ("apps", "statefulsets", ("get", "create", "patch"), "the nodes (apply)"),
    ("policy", "poddisruptionbudgets", ("create", "patch"), "quorum-safe budget (apply)"),
    ("networking.k8s.io", "networkpolicies", ("create", "patch"), "default deny + allows (apply)"),
    (
        "networking.k8s.io",
        "ingresses",
        ("create", "patch", "delete"),
        "spec.expose.ingress (apply; delete when it leaves the spec)",
    ),
    (
        "batch",
        "cronjobs",
        ("create", "patch", "delete"),
        "spec.backup: the backup CronJob (apply; delete when it leaves the spec)",
    ),
    ("monitoring.coreos.com", "servicemonitors", ("create", "patch", "delete"), "if installed"),
    ("monitoring.coreos.com", "prometheusrules", ("create", "patch", "delete"), "if installed"),
    (
        "cert-manager.io",
        "certificates",
        ("create", "patch", "delete"),
        "with spec.tls.issuerRef: the listeners' (apply); delete: pre-enrollment members'",
    ),
    (
        "cert-manager.io",
        "certificaterequests",
        ("get", "create", "delete"),
        "with spec.tls.issuerRef: a node's CSR, signed by the Issuer",
    ),
)

CLUSTER_SCOPED_RULES: tuple[Rule, ...] = (
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf notices CRDs installed later (e.g. the Prometheus Operator's)",
    ),
    ("", "namespaces", ("list", "watch"), "kopf, when watching namespaces by glob"),
)

# Granted only per namespace, whatever the install mode.
NEVER_CLUSTER_WIDE: frozenset[tuple[str, str]] = frozenset({("", "secrets")})

RULES: tuple[Rule, ...] = NAMESPACED_RULES + CLUSTER_SCOPED_RULES


def _as_yaml(rules: tuple[Rule, ...]) -> list[dict[str, Any]]:
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}
        for group, resource, verbs, _why in rules
    ]


def role_rules() -> list[dict[str, Any]]:
    """A watched namespace's Role (default install)."""
    return _as_yaml(NAMESPACED_RULES)


def cluster_wide_rules() -> list[dict[str, Any]]:
    """The ClusterRole of ``operator.clusterWide: true``: the Role's rules but secrets."""
    return _as_yaml(tuple(r for r in NAMESPACED_RULES if (r[0], r[1]) not in NEVER_CLUSTER_WIDE))


def namespace_only_rules() -> list[dict[str, Any]]:
    """What stays in per-namespace Roles with ``operator.clusterWide: true``."""
    return _as_yaml(tuple(r for r in NAMESPACED_RULES if (r[0], r[1]) in NEVER_CLUSTER_WIDE))


def cluster_scoped_rules() -> list[dict[str, Any]]:
    return _as_yaml(CLUSTER_SCOPED_RULES)


def rules_file() -> dict[str, list[dict[str, Any]]]:
    """files/rbac-rules.yaml: every set, by the name the chart's template uses."""
    return {
        "namespaced": role_rules(),
        "clusterWide": cluster_wide_rules(),
        "namespaceOnly": namespace_only_rules(),
        "clusterScoped": cluster_scoped_rules(),
    }


def cluster_role_rules() -> list[dict[str, Any]]:
    """Every rule (both sets), as one list."""
    return _as_yaml(RULES)


def verbs_for(resource: str) -> set[str]:
    return {v for _, r, verbs, _ in RULES if r == resource for v in verbs}

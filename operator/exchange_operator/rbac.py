"""The operator's RBAC rules: exactly what handlers.py and kopf call, nothing more.

The chart's ClusterRole is generated from RULES (scripts/k8s/generate.py) and
a test checks RULES against the calls in the operator's code.
"""

from __future__ import annotations

from typing import Any

from exchange_operator import names

# (apiGroup, resource, verbs, why)
RULES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    (names.GROUP, names.PLURAL, ("list", "watch", "patch"), "kopf watches and annotates"),
    (names.GROUP, f"{names.PLURAL}/status", ("patch",), "status, conditions, members"),
    (
        names.GROUP,
        f"{names.PLURAL}/finalizers",
        ("update",),
        "children's ownerReferences set blockOwnerDeletion (OwnerReferencesPermissionEnforcement)",
    ),
    ("", "events", ("create",), "kopf posts an event per action"),
    ("", "secrets", ("get", "create"), "the admin token Secret, created once"),
    ("", "configmaps", ("create", "patch", "delete"), "node config and dashboards (apply)"),
    ("", "services", ("create", "patch"), "peer, client and leader Services (apply)"),
    ("", "pods", ("list", "patch", "delete"), "observe, move role=leader, restart one by one"),
    ("", "persistentvolumeclaims", ("list", "patch"), "grow claims when storage.size grows"),
    ("apps", "statefulsets", ("get", "create", "patch"), "the nodes (apply)"),
    ("policy", "poddisruptionbudgets", ("create", "patch"), "quorum-safe budget (apply)"),
    ("networking.k8s.io", "networkpolicies", ("create", "patch"), "peer port policy (apply)"),
    ("monitoring.coreos.com", "servicemonitors", ("create", "patch", "delete"), "if installed"),
    ("monitoring.coreos.com", "prometheusrules", ("create", "patch", "delete"), "if installed"),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf notices CRDs installed later (e.g. the Prometheus Operator's)",
    ),
    ("", "namespaces", ("list", "watch"), "kopf, when watching a list of namespaces"),
)


def cluster_role_rules() -> list[dict[str, Any]]:
    """Rules merged per API group, in a stable order, as a Role's `rules:`."""
    rules = []
    for group, resource, verbs, _why in RULES:
        rules.append({"apiGroups": [group], "resources": [resource], "verbs": list(verbs)})
    return rules


def verbs_for(resource: str) -> set[str]:
    return {v for _, r, verbs, _ in RULES if r == resource for v in verbs}

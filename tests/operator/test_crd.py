"""The CRD itself: structure, defaults, OpenAPI validation and CEL rules."""

from __future__ import annotations

import copy
from typing import Any

import crd_tools
import kubernetes_validate
import pytest
from exchange_operator import crd, names, spec

KUBE_VERSION = "1.31"
SCHEMA = crd.open_api_schema()
SPEC_SCHEMA = SCHEMA["properties"]["spec"]


def cluster(spec_: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "xc", "namespace": "trading"},
        "spec": spec_ if spec_ is not None else {},
    }


def admitted(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """What admission would say: defaults, then schema, then CEL (with oldSelf on update)."""
    obj = crd_tools.apply_defaults(SCHEMA, obj)
    errors = crd_tools.schema_errors(SCHEMA, obj)
    if errors:
        return errors
    old_defaulted = crd_tools.apply_defaults(SCHEMA, old) if old is not None else None
    return crd_tools.cel_errors(SCHEMA, obj, old_defaulted)


def test_crd_is_a_valid_kubernetes_object() -> None:
    assert kubernetes_validate.validate(crd.build_crd(), KUBE_VERSION, strict=True)


def test_crd_names_scale_and_columns() -> None:
    body = crd.build_crd()
    assert body["metadata"]["name"] == "exchangeclusters.exchange.raft-exchange.dev"
    assert body["spec"]["names"]["shortNames"] == ["xc"]
    assert body["spec"]["scope"] == "Namespaced"
    (version,) = body["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Replicas", "Ready", "Leader", "Term", "Phase", "Certs-Expire", "Age"]


def test_structural_schema_every_node_typed() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{key}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(SCHEMA, "")


def test_defaults_fill_an_empty_spec() -> None:
    obj = crd_tools.apply_defaults(SCHEMA, cluster())
    s = obj["spec"]
    assert s["replicas"] == 3
    assert s["image"] == spec.DEFAULT_IMAGE
    assert s["storage"] == {
        "size": "1Gi",
        "retention": {"whenDeleted": "Retain", "whenScaled": "Delete"},
    }
    assert s["monitoring"] == {
        "serviceMonitor": True,
        "prometheusRule": True,
        "dashboards": False,
        "dashboardFolder": "Raft exchange",
    }
    assert s["scheduling"]["antiAffinity"] == "preferred"
    assert s["electionMs"] == 1000 and s["heartbeatMs"] == 100
    assert [x["name"] for x in s["symbols"]] == ["BTC-USD", "ETH-USD"]
    # The operator's parser agrees with the schema's defaults.
    parsed = spec.parse_spec(s)
    assert parsed == spec.parse_spec({})


@pytest.mark.parametrize("replicas", [1, 3, 5, 7])
def test_odd_replicas_admitted(replicas: int) -> None:
    assert admitted(cluster({"replicas": replicas})) == []


@pytest.mark.parametrize("replicas", [2, 4, 6])
def test_even_replicas_rejected_by_cel(replicas: int) -> None:
    errors = admitted(cluster({"replicas": replicas}))
    assert errors == [f".spec: {crd.RULE_ODD_REPLICAS['message']}"]


@pytest.mark.parametrize("replicas", [0, 9, -1])
def test_out_of_range_replicas_rejected_by_schema(replicas: int) -> None:
    errors = admitted(cluster({"replicas": replicas}))
    assert errors and errors[0].startswith("spec.replicas")


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
        ({"storage": {"size": "lots"}}, "spec.storage.size"),
        ({"storage": {"retention": {"whenScaled": "Keep"}}}, "spec.storage.retention.whenScaled"),
        ({"symbols": [{"name": "btc", "tickSize": 1, "lotSize": 1}]}, "spec.symbols.0.name"),
        ({"symbols": [{"name": "BTC", "tickSize": 0, "lotSize": 1}]}, "spec.symbols.0.tickSize"),
        ({"symbols": [{"name": "BTC", "tickSize": 1}]}, "spec.symbols.0"),
        ({"scheduling": {"antiAffinity": "sometimes"}}, "spec.scheduling.antiAffinity"),
        ({"apiKeysSecretRef": {"key": "k"}}, "spec.apiKeysSecretRef"),
        ({"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory"),
    ],
)
def test_schema_rejects(bad: dict[str, Any], where: str) -> None:
    errors = admitted(cluster(bad))
    assert errors and errors[0].startswith(where), errors


def test_timing_rule() -> None:
    assert admitted(cluster({"electionMs": 300, "heartbeatMs": 100})) == []
    errors = admitted(cluster({"electionMs": 200, "heartbeatMs": 100}))
    assert errors == [f".spec: {crd.RULE_TIMING['message']}"]


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        ("1Gi", "1Gi", True),
        ("1Gi", "2Gi", True),
        ("1Gi", "1024Mi", True),
        ("1Gi", "1500M", True),
        ("10Gi", "9Gi", False),
        ("1Gi", "1000Mi", False),
        ("1G", "1000M", True),
        ("2Gi", "2G", False),
    ],
)
def test_storage_cannot_shrink(old: str, new: str, ok: bool) -> None:
    before = cluster({"storage": {"size": old}})
    after = cluster({"storage": {"size": new}})
    assert admitted(after) == []  # a create with either size is fine
    errors = admitted(after, old=before)
    assert (errors == []) is ok, errors
    if not ok:
        assert errors == [f".spec.storage: {crd.RULE_STORAGE_NO_SHRINK['message']}"]


def test_storage_class_is_immutable() -> None:
    before = cluster({"storage": {"storageClassName": "fast"}})
    assert admitted(cluster({"storage": {"storageClassName": "fast"}}), old=before) == []
    assert admitted(cluster({"storage": {"storageClassName": "slow"}}), old=before)
    assert admitted(cluster({"storage": {}}), old=before)
    assert admitted(cluster({"storage": {"storageClassName": "fast"}}), old=cluster({}))


def test_cluster_identity_is_immutable() -> None:
    before = cluster({"clusterId": "alpha"})
    assert admitted(cluster({"clusterId": "alpha", "replicas": 5}), old=before) == []
    msg = f".spec: {crd.RULE_CLUSTER_ID_IMMUTABLE['message']}"
    assert admitted(cluster({"clusterId": "beta"}), old=before) == [msg]
    assert admitted(cluster({}), old=before) == [msg]
    # Setting it the first time is allowed.
    assert admitted(cluster({"clusterId": "alpha"}), old=cluster({})) == []


def test_every_cel_rule_compiles_and_is_exercised() -> None:
    rules = crd_tools.cel_rules(SCHEMA)
    assert {r["rule"] for r in rules} == {
        r["rule"]
        for r in (
            crd.RULE_ODD_REPLICAS,
            crd.RULE_TIMING,
            crd.RULE_CLUSTER_ID_IMMUTABLE,
            crd.RULE_STORAGE_NO_SHRINK,
            crd.RULE_STORAGE_CLASS_IMMUTABLE,
            crd.RULE_BACKUP_ONE_STORE,
        )
    }


def test_quantity_parsing() -> None:
    assert crd_tools.parse_quantity("1Gi") == 1024**3
    assert crd_tools.parse_quantity("500m") * 2 == 1
    assert crd_tools.parse_quantity("1e3") == 1000
    with pytest.raises(ValueError):
        crd_tools.parse_quantity("1 GiB")


def test_status_schema_accepts_what_the_operator_writes() -> None:
    obj = cluster()
    obj["status"] = {
        "observedGeneration": 2,
        "phase": "Running",
        "replicas": 3,
        "readyReplicas": 3,
        "selector": "app.kubernetes.io/instance=xc",
        "leader": "xc-0",
        "leaderId": 1,
        "term": 4,
        "commitIndex": 1234,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "LeaderElected",
                "message": "3/3",
                "lastTransitionTime": "2026-11-24T05:00:00+00:00",
                "observedGeneration": 2,
            }
        ],
        "members": [
            {
                "name": "xc-0",
                "id": 1,
                "role": "leader",
                "voter": True,
                "healthy": True,
                "matchIndex": 1234,
                "appliedIndex": 1234,
                "lag": 0,
            },
        ],
    }
    assert admitted(obj) == []
    bad = copy.deepcopy(obj)
    bad["status"]["phase"] = "Happy"
    assert admitted(bad)


def test_backup_needs_exactly_one_store() -> None:
    schema = crd.open_api_schema()
    for backup, ok in (
        ({"schedule": "@daily", "pvc": {"claimName": "b"}}, True),
        ({"schedule": "@daily", "s3": {"url": "s3://bucket/p"}}, True),
        ({"schedule": "@daily"}, False),
        ({"schedule": "@daily", "pvc": {"claimName": "b"}, "s3": {"url": "s3://b"}}, False),
    ):
        obj = crd_tools.apply_defaults(schema, {"spec": {"backup": backup}})
        errors = crd_tools.schema_errors(schema, obj) or crd_tools.cel_errors(schema, obj)
        assert (errors == []) == ok, (backup, errors)

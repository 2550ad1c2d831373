"""The emulated API server refuses what a real one refuses: one test per rule, over HTTP.

CRD schema, defaults and CEL rules (with oldSelf) are in test_kmock_harness.py.
The operator itself runs with every rule on (and RBAC from the chart) in
test_operator_kmock.py, whose fixture fails if any of its requests was refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import api_rules
import kmock
import pytest
from exchange_operator import crd, names
from kmock_harness import ClusterEmulator

NS = "trading"
CM = f"/api/v1/namespaces/{NS}/configmaps"
SVC = f"/api/v1/namespaces/{NS}/services"
PVC = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets"
CR = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NS}/{names.PLURAL}"
MERGE = "application/merge-patch+json"
OPERATOR = "Bearer " + api_rules.OPERATOR_TOKEN


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, emulator: ClusterEmulator) -> None:
        self.http, self.base, self.emulator = http, base, emulator

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        ctype: str = "application/json",
        token: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"Content-Type": ctype} if body is not None else {}
        if token is not None:
            headers["Authorization"] = token
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    emulator = ClusterEmulator()
    async with emulator, kmock.Server(emulator) as server, aiohttp.ClientSession() as http:
        for ns in (NS, "other"):
            emulator.add_namespace(ns)
        emulator.install_crd(crd.build_crd())
        rbac, user = api_rules.chart_rbac({"operator": {"watchNamespaces": [NS]}})
        emulator.authorize(rbac, {api_rules.OPERATOR_TOKEN: user})
        yield Api(http, str(server.url).rstrip("/"), emulator)


def statefulset(name: str = "db") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }


# --- OpenAPI validation of built-in kinds ---------------------------------------------------


async def test_builtin_writes_are_validated_against_the_openapi_schemas(api: Api) -> None:
    status, body = await api.call("POST", CM, {"metadata": {"name": "a"}, "data": {"k": 1}})
    assert status == 422 and body["reason"] == "Invalid", body
    bad = statefulset()
    bad["spec"]["replica"] = 2  # a typo: strict validation refuses unknown fields
    status, body = await api.call("POST", STS, bad)
    assert status == 422 and "replica" in body["message"]
    status, body = await api.call("POST", STS, statefulset())
    assert status == 200 and body["kind"] == "StatefulSet"  # kind and apiVersion kept
    status, body = await api.call(
        "PATCH", f"{STS}/db", {"spec": {"replicas": "three"}}, MERGE
    )  # the merged object is validated too
    assert status == 422


# --- immutable fields ---------------------------------------------------------------------


async def test_statefulset_spec_is_immutable_but_for_the_documented_fields(api: Api) -> None:
    assert (await api.call("POST", STS, statefulset()))[0] == 200
    for allowed in (
        {"replicas": 3},
        {"minReadySeconds": 5},
        {"updateStrategy": {"type": "OnDelete"}},
        {"persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}},
        {"template": {"metadata": {"annotations": {"a": "b"}}}},
    ):
        status, body = await api.call("PATCH", f"{STS}/db", {"spec": allowed}, MERGE)
        assert status == 200, (allowed, body)
    for refused in (
        {"serviceName": "other"},
        {"podManagementPolicy": "Parallel"},
        {"selector": {"matchLabels": {"app": "db", "x": "y"}}},
        {"volumeClaimTemplates": [{"metadata": {"name": "data"}}]},
    ):
        status, body = await api.call("PATCH", f"{STS}/db", {"spec": refused}, MERGE)
        assert status == 422 and "Forbidden" in body["message"], refused


async def test_claims_change_only_their_storage_request_and_never_shrink(api: Api) -> None:
    claim = {
        "metadata": {"name": "data-db-0"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    assert (await api.call("POST", PVC, claim))[0] == 200
    grow = {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}
    assert (await api.call("PATCH", f"{PVC}/data-db-0", grow, MERGE))[0] == 200
    shrink = {"spec": {"resources": {"requests": {"storage": "1500Mi"}}}}
    assert (await api.call("PATCH", f"{PVC}/data-db-0", shrink, MERGE))[0] == 422
    modes = {"spec": {"accessModes": ["ReadWriteMany"]}}
    assert (await api.call("PATCH", f"{PVC}/data-db-0", modes, MERGE))[0] == 422


async def test_a_service_gets_a_cluster_ip_that_never_changes(api: Api) -> None:
    service = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}
    status, body = await api.call("POST", SVC, service)
    assert status == 200 and body["spec"]["clusterIP"].startswith("10.96.")
    move = {"spec": {"clusterIP": "10.96.99.99"}}
    assert (await api.call("PATCH", f"{SVC}/s", move, MERGE))[0] == 422
    headless = {"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}
    status, body = await api.call("POST", SVC, headless)
    assert status == 200 and body["spec"]["clusterIP"] == "None"
    assert (await api.call("PATCH", f"{SVC}/h", move, MERGE))[0] == 422


async def test_immutable_configmaps_keep_their_data(api: Api) -> None:
    body = {"metadata": {"name": "frozen"}, "data": {"k": "v"}, "immutable": True}
    assert (await api.call("POST", CM, body))[0] == 200
    status, _ = await api.call("PATCH", f"{CM}/frozen", {"data": {"k": "w"}}, MERGE)
    assert status == 422


# --- resourceVersion --------------------------------------------------------------------------


async def test_a_stale_resource_version_is_a_conflict(api: Api) -> None:
    _, created = await api.call("POST", CM, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    first = created["metadata"]["resourceVersion"]
    update = {"metadata": {"resourceVersion": first}, "data": {"k": "w"}}
    status, updated = await api.call("PATCH", f"{CM}/c", update, MERGE)
    assert status == 200 and updated["metadata"]["resourceVersion"] != first
    # KMock routes no PUT; a patch carrying metadata.resourceVersion is the same precondition.
    status, body = await api.call("PATCH", f"{CM}/c", update, MERGE)
    assert status == 409 and body["reason"] == "Conflict"
    status, _ = await api.call("PATCH", f"{CM}/c", {"data": {"k": "x"}}, MERGE)
    assert status == 200  # no precondition: last write wins


# --- RBAC -------------------------------------------------------------------------------------


async def test_rbac_is_evaluated_from_the_rendered_roles(api: Api) -> None:
    ok = await api.call("GET", f"/api/v1/namespaces/{NS}/pods", token=OPERATOR)
    assert ok[0] == 200
    # The Role is for the watched namespace only.
    status, body = await api.call("GET", "/api/v1/namespaces/other/pods", token=OPERATOR)
    assert status == 403 and body["reason"] == "Forbidden"
    assert 'cannot list resource "pods"' in body["message"]
    # Secrets are never granted cluster-wide.
    assert (await api.call("GET", "/api/v1/secrets", token=OPERATOR))[0] == 403
    # Verbs are exact: the operator may list pods but not create them, and may
    # list/watch namespaces but not get one.
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    status, _ = await api.call("POST", f"/api/v1/namespaces/{NS}/pods", pod, token=OPERATOR)
    assert status == 403
    assert (await api.call("GET", "/api/v1/namespaces", token=OPERATOR))[0] == 200
    assert (await api.call("GET", f"/api/v1/namespaces/{NS}", token=OPERATOR))[0] == 403
    # Subresources are their own resources: status may be patched, scale may not.
    assert (await api.call("POST", CR, {"metadata": {"name": "x"}, "spec": {}}))[0] == 200
    patch = {"status": {"phase": "Running"}}
    assert (await api.call("PATCH", f"{CR}/x/status", patch, MERGE, OPERATOR))[0] == 200
    scale = {"spec": {"replicas": 5}}
    assert (await api.call("PATCH", f"{CR}/x/scale", scale, MERGE, OPERATOR))[0] == 403
    # An unknown token is not a user at all.
    assert (await api.call("GET", "/api/v1/pods", token="Bearer nobody"))[0] == 401
    assert [r for r in api.emulator.refusals if " 403 " in r]


async def test_block_owner_deletion_needs_update_on_the_owners_finalizers(api: Api) -> None:
    _, owner = await api.call("POST", CR, {"metadata": {"name": "x"}, "spec": {}})
    ref = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": "x",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    child = {"metadata": {"name": "child", "ownerReferences": [ref]}, "data": {}}
    assert (await api.call("POST", CM, child, token=OPERATOR))[0] == 200
    # The same request from a user whose Role lacks <plural>/finalizers: update.
    rbac, user = api_rules.chart_rbac({"operator": {"watchNamespaces": [NS]}})
    for obj in rbac:
        if obj["kind"] == "Role":
            obj["rules"] = [r for r in obj["rules"] if not r["resources"][0].endswith("finalizers")]
    api.emulator.authorize(rbac, {"weaker": user})
    child["metadata"]["name"] = "child2"
    status, body = await api.call("POST", CM, child, token="Bearer weaker")
    assert status == 422 and "blockOwnerDeletion" in body["message"]


def test_the_charts_roles_name_no_cluster_scoped_resource() -> None:
    cluster_scoped = {"namespaces", "customresourcedefinitions", "nodes", "persistentvolumes"}
    for values in (
        {"operator": {"watchNamespaces": ["a", "b"]}},
        {"operator": {"clusterWide": True, "watchNamespaces": ["a"]}},
        {},
    ):
        rbac, _ = api_rules.chart_rbac(values)
        assert api_rules.role_scope_errors(rbac, cluster_scoped) == [], values
    planted = [{"kind": "Role", "metadata": {"name": "r"}, "rules": [{"resources": ["nodes"]}]}]
    assert api_rules.role_scope_errors(planted, cluster_scoped) == ["Role r: nodes"]


# --- finalizers, garbage collection, namespace deletion -------------------------------------


async def test_finalizers_hold_a_deletion_until_removed(api: Api) -> None:
    body = {"metadata": {"name": "held", "finalizers": ["example.com/x"]}, "data": {}}
    assert (await api.call("POST", CM, body))[0] == 200
    status, held = await api.call("DELETE", f"{CM}/held")
    assert status == 200 and held["metadata"]["deletionTimestamp"]
    assert (await api.call("GET", f"{CM}/held"))[0] == 200
    assert api.emulator.terminating() == [f"ConfigMap/{NS}/held"]
    await api.call("PATCH", f"{CM}/held", {"metadata": {"finalizers": []}}, MERGE)
    assert (await api.call("GET", f"{CM}/held"))[0] == 404


async def test_garbage_collection_follows_owner_references_and_honours_finalizers(
    api: Api,
) -> None:
    _, owner = await api.call("POST", CM, {"metadata": {"name": "owner"}, "data": {}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    for name, finalizers in (("free", []), ("held", ["example.com/x"])):
        meta = {"name": name, "ownerReferences": [ref], "finalizers": finalizers}
        assert (await api.call("POST", CM, {"metadata": meta, "data": {}}))[0] == 200
    assert (await api.call("DELETE", f"{CM}/owner"))[0] == 200
    assert (await api.call("GET", f"{CM}/free"))[0] == 404
    status, held = await api.call("GET", f"{CM}/held")
    assert status == 200 and held["metadata"]["deletionTimestamp"]
    await api.call("PATCH", f"{CM}/held", {"metadata": {"finalizers": []}}, MERGE)
    assert (await api.call("GET", f"{CM}/held"))[0] == 404


async def test_a_namespace_terminates_until_its_last_object_is_gone(api: Api) -> None:
    body = {"metadata": {"name": "held", "finalizers": ["example.com/x"]}, "data": {}}
    assert (await api.call("POST", CM, body))[0] == 200
    assert (await api.call("POST", CM, {"metadata": {"name": "free"}, "data": {}}))[0] == 200
    assert (await api.call("DELETE", f"/api/v1/namespaces/{NS}"))[0] == 200
    await api.emulator.settle()
    status, ns = await api.call("GET", f"/api/v1/namespaces/{NS}")
    assert status == 200 and ns["metadata"]["deletionTimestamp"]
    assert (await api.call("GET", f"{CM}/free"))[0] == 404
    assert api.emulator.terminating() == [f"ConfigMap/{NS}/held", f"Namespace//{NS}"]
    status, body = await api.call("POST", CM, {"metadata": {"name": "new"}, "data": {}})
    assert status == 403 and "being terminated" in body["message"]
    await api.call("PATCH", f"{CM}/held", {"metadata": {"finalizers": []}}, MERGE)
    await api.emulator.settle()
    assert (await api.call("GET", f"/api/v1/namespaces/{NS}"))[0] == 404
    assert api.emulator.terminating() == []
    status, _ = await api.call("POST", "/api/v1/namespaces/missing/configmaps", {
        "metadata": {"name": "x"}})  # fmt: skip
    assert status == 404

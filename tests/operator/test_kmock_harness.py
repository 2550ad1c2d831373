"""The KMock harness itself: each gap it closes, checked over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest
from exchange_operator import crd, names
from kmock_harness import ClusterEmulator

NS = "ns1"
CR = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NS}/{names.PLURAL}"
CM = f"/api/v1/namespaces/{NS}/configmaps"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets"


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, emulator: ClusterEmulator) -> None:
        self.http, self.base, self.emulator = http, base, emulator

    async def call(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> tuple[int, Any]:
        headers = {"Content-Type": ctype} if body is not None else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    emulator = ClusterEmulator()
    async with emulator, kmock.Server(emulator) as server, aiohttp.ClientSession() as http:
        emulator.add_namespace(NS)
        emulator.install_crd(crd.build_crd())
        yield Api(http, str(server.url).rstrip("/"), emulator)


async def test_namespaces_are_listed_and_fetched(api: Api) -> None:
    status, listing = await api.call("GET", "/api/v1/namespaces")
    assert status == 200 and [n["metadata"]["name"] for n in listing["items"]] == [NS]
    status, ns = await api.call("GET", f"/api/v1/namespaces/{NS}")
    assert status == 200 and ns["metadata"]["uid"]


async def test_create_fills_metadata(api: Api) -> None:
    status, obj = await api.call("POST", CM, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    assert status == 200
    meta = obj["metadata"]
    assert meta["namespace"] == NS and meta["generation"] == 1
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"].endswith("Z")


async def test_updates_bump_versions_and_respect_subresources(api: Api) -> None:
    _, obj = await api.call("POST", CR, {"metadata": {"name": "x"}, "spec": {"replicas": 3}})
    rv = int(obj["metadata"]["resourceVersion"])
    merge = "application/merge-patch+json"
    _, obj = await api.call("PATCH", f"{CR}/x", {"metadata": {"labels": {"a": "b"}}}, merge)
    assert obj["metadata"]["generation"] == 1 and int(obj["metadata"]["resourceVersion"]) > rv
    _, obj = await api.call(
        "PATCH", f"{CR}/x", {"spec": {"replicas": 5}, "status": {"phase": "Running"}}, merge
    )
    assert obj["metadata"]["generation"] == 2 and "status" not in obj  # status only via /status
    _, obj = await api.call(
        "PATCH", f"{CR}/x/status", {"status": {"phase": "Running"}, "spec": {"replicas": 7}}, merge
    )
    assert obj["status"]["phase"] == "Running" and obj["spec"]["replicas"] == 5
    assert obj["metadata"]["generation"] == 2
    _, obj = await api.call("PATCH", f"{CR}/x/scale", {"spec": {"replicas": 1}}, merge)
    assert obj["spec"]["replicas"] == 1 and obj["metadata"]["generation"] == 3


async def test_admission_defaults_and_validates_custom_resources(api: Api) -> None:
    status, obj = await api.call("POST", CR, {"metadata": {"name": "x"}, "spec": {}})
    assert (
        status == 200 and obj["spec"]["replicas"] == 3 and obj["spec"]["storage"]["size"] == "1Gi"
    )
    status, body = await api.call("POST", CR, {"metadata": {"name": "y"}, "spec": {"replicas": 2}})
    assert status == 422 and "odd" in body["message"]
    merge = "application/merge-patch+json"
    status, body = await api.call(
        "PATCH", f"{CR}/x", {"spec": {"storage": {"size": "512Mi"}}}, merge
    )
    assert status == 422 and "shrink" in body["message"]
    status, _ = await api.call("PATCH", f"{CR}/x", {"spec": {"storage": {"size": "2Gi"}}}, merge)
    assert status == 200


async def test_server_side_apply_creates_then_updates(api: Api) -> None:
    apply = "application/apply-patch+yaml"
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}}
    status, obj = await api.call("PATCH", f"{CM}/a?fieldManager=t&force=true", body, apply)
    assert status == 200 and obj["metadata"]["uid"]
    body["data"]["k"] = "2"
    status, obj2 = await api.call("PATCH", f"{CM}/a?fieldManager=t&force=true", body, apply)
    assert obj2["data"]["k"] == "2" and obj2["metadata"]["uid"] == obj["metadata"]["uid"]
    status, _ = await api.call(
        "PATCH", f"{CM}/missing", {"data": {}}, "application/merge-patch+json"
    )
    assert status == 404


async def test_secret_string_data_is_stored_as_data(api: Api) -> None:
    _, obj = await api.call(
        "POST",
        f"/api/v1/namespaces/{NS}/secrets",
        {"metadata": {"name": "s"}, "stringData": {"t": "abc"}},
    )
    assert obj["data"] == {"t": "YWJj"} and "stringData" not in obj


async def test_list_honours_label_selectors(api: Api) -> None:
    await api.call("POST", CM, {"metadata": {"name": "a", "labels": {"app": "x"}}})
    await api.call("POST", CM, {"metadata": {"name": "b", "labels": {"app": "y"}}})
    _, listing = await api.call("GET", f"{CM}?labelSelector=app%3Dx")
    assert [i["metadata"]["name"] for i in listing["items"]] == ["a"]


async def test_garbage_collection_cascades(api: Api) -> None:
    _, owner = await api.call("POST", CM, {"metadata": {"name": "owner"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    _, child = await api.call("POST", CM, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    ref2 = {**ref, "name": "child", "uid": child["metadata"]["uid"]}
    await api.call("POST", CM, {"metadata": {"name": "grandchild", "ownerReferences": [ref2]}})
    await api.call("POST", CM, {"metadata": {"name": "bystander"}})
    await api.call("DELETE", f"{CM}/owner")
    left = sorted(o["metadata"]["name"] for _, o in api.emulator.live("v1/configmaps"))
    assert left == ["bystander"]


def _sts(replicas: int, when_scaled: str = "Delete") -> dict[str, Any]:
    return {
        "metadata": {"name": "db"},
        "spec": {
            "replicas": replicas,
            "serviceName": "db-peers",
            "selector": {"matchLabels": {"app": "db"}},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": when_scaled,
            },
            "template": {
                "metadata": {"labels": {"app": "db"}, "annotations": {"h": "1"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }


async def test_statefulset_controller(api: Api) -> None:
    def pods() -> list[str]:
        return sorted(o["metadata"]["name"] for _, o in api.emulator.live("v1/pods"))

    def claims() -> list[str]:
        return sorted(
            o["metadata"]["name"] for _, o in api.emulator.live("v1/persistentvolumeclaims")
        )

    await api.call("POST", STS, _sts(3))
    assert pods() == ["db-0", "db-1", "db-2"] and claims() == [
        "data-db-0",
        "data-db-1",
        "data-db-2",
    ]
    pod = api.emulator.get("v1/pods", NS, "db-1")
    assert pod is not None and pod["metadata"]["annotations"] == {"h": "1"}
    assert pod["spec"]["hostname"] == "db-1" and pod["spec"]["subdomain"] == "db-peers"
    uid = pod["metadata"]["uid"]
    await api.call("DELETE", f"/api/v1/namespaces/{NS}/pods/db-1")
    recreated = api.emulator.get("v1/pods", NS, "db-1")
    assert recreated is not None and recreated["metadata"]["uid"] != uid
    await api.call("PATCH", f"{STS}/db", {"spec": {"replicas": 1}}, "application/merge-patch+json")
    assert pods() == ["db-0"] and claims() == ["data-db-0"]
    await api.call("DELETE", f"{STS}/db")
    assert pods() == [] and claims() == ["data-db-0"]  # whenDeleted: Retain


async def test_a_merge_patch_null_deletes_a_custom_resources_field(api: Api) -> None:
    spec = {"replicas": 3, "expose": {"ingress": {"host": "a.example.com"}}}
    assert (await api.call("POST", CR, {"metadata": {"name": "x"}, "spec": spec}))[0] == 200
    merge = "application/merge-patch+json"
    patch = {"spec": {"expose": {"ingress": None}}}
    status, obj = await api.call("PATCH", f"{CR}/x", patch, merge)
    assert status == 200 and "ingress" not in obj["spec"]["expose"]
    assert obj["spec"]["replicas"] == 3

"""KMock's Kubernetes emulator with the gaps closed, plus a StatefulSet controller.

`ClusterEmulator` is a `kmock.KubernetesEmulator` that behaves enough like a
real API server for the real kopf operator to run against it:

- resources are declared up front (including v1/namespaces, without which kopf
  never starts watching), with kinds, verbs and subresources for discovery;
- creates get metadata.namespace from the URL, a uid, resourceVersion,
  generation 1 and creationTimestamp; updates bump resourceVersion, and
  generation when the spec changes; status and scale subresources touch only
  their part of the object;
- server-side apply (PATCH application/apply-patch+yaml) of a missing object
  creates it;
- custom resources whose CRD is installed are defaulted and validated at
  admission: OpenAPI schema and CEL rules (with oldSelf on update); failures
  answer 422 Invalid like the real API server;
- LIST honours labelSelector (equality terms);
- what a real API server enforces (api_rules.py), each with a test in
  test_api_rules.py: every write of a built-in kind validated against the real
  OpenAPI schemas (422); immutable fields (422); resourceVersion preconditions
  (409 Conflict); RBAC from the rendered Roles/ClusterRoles and their bindings
  for a bearer token (`authorize()`; 401 unknown token, 403 not granted),
  including OwnerReferencesPermissionEnforcement (blockOwnerDeletion needs
  `update` on the owner's `finalizers`); writes into a missing namespace (404)
  or a terminating one (403); Services get a clusterIP;
- deletion honours finalizers everywhere (a DELETE, the garbage collector and
  the namespace controller only set deletionTimestamp while any is left);
  deleting a Namespace deletes everything in it and the Namespace goes when
  the last object has gone (until then it is Terminating);
- /api/v1/namespaces is parsed as the Namespace resource (KMock 0.8 misreads it);
- KMock's request log is trimmed so long runs stay fast;
- garbage collection: an object whose owner is gone is deleted (cascading);
- a StatefulSet controller creates pods (and claims) from the template up to
  `replicas`, deletes pods above it, recreates deleted pods from the current
  template (OnDelete semantics), and applies the claim retention policy.

Pods are "run" by a `Kubelet`: a model of a Raft cluster (`WorldKubelet`,
here) or real node processes on loopback (`process_kubelet.ProcessKubelet`),
through the same three calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import itertools
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import api_rules
import attrs
import crd_tools
import kmock
from aiohttp import web
from exchange_node.security.enrollment import EnrollmentError, MemberEnrollment
from exchange_operator import names
from kmock._internal import dicts as kmock_dicts
from kmock._internal import enums as kmock_enums
from kmock._internal import parsing as kmock_parsing
from raft_world import MemberModel, PodModel, RaftWorld

Obj = dict[str, Any]

# kind -> (resource, namespaced, subresources)
BUILTIN_RESOURCES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "Namespace": ("v1/namespaces", False, ("status",)),
    "Event": ("v1/events", True, ()),
    "ConfigMap": ("v1/configmaps", True, ()),
    "Secret": ("v1/secrets", True, ()),
    "Service": ("v1/services", True, ("status",)),
    "Pod": ("v1/pods", True, ("status",)),
    "PersistentVolumeClaim": ("v1/persistentvolumeclaims", True, ("status",)),
    "StatefulSet": ("apps/v1/statefulsets", True, ("status", "scale")),
    "PodDisruptionBudget": ("policy/v1/poddisruptionbudgets", True, ("status",)),
    "NetworkPolicy": ("networking.k8s.io/v1/networkpolicies", True, ()),
    "Ingress": ("networking.k8s.io/v1/ingresses", True, ("status",)),
    "CronJob": ("batch/v1/cronjobs", True, ("status",)),
    "CustomResourceDefinition": (
        "apiextensions.k8s.io/v1/customresourcedefinitions",
        False,
        ("status",),
    ),
}
PROMETHEUS_RESOURCES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "ServiceMonitor": ("monitoring.coreos.com/v1/servicemonitors", True, ()),
    "PrometheusRule": ("monitoring.coreos.com/v1/prometheusrules", True, ()),
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
APPLY_PATCH = "application/apply-patch+yaml"


class Kubelet(Protocol):
    """What runs behind the emulated pods."""

    def pod_created(self, pod: Obj, ordinal: int, fresh_volume: bool) -> None: ...

    def pod_deleted(self, pod: Obj, ordinal: int) -> None: ...

    def is_ready(self, pod_name: str) -> bool: ...


_original_parse_path = kmock_parsing.parse_path


def _parse_path(path: str) -> kmock_parsing.ParsedPath:
    """KMock 0.8 reads /api/v1/namespaces[/NAME] as a namespace prefix and fails.

    The namespaced form always has a plural after the namespace's name, so a
    path with at most a name (and a status/finalize subresource) after
    `namespaces` is the cluster-scoped Namespace resource itself.
    """
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
    ):
        name = parts[3] if len(parts) > 3 else None
        sub = parts[4] if len(parts) > 4 else None
        return kmock_parsing.ParsedPath("", "v1", "namespaces", None, name, sub)
    return _original_parse_path(path)


kmock_parsing.parse_path = _parse_path


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AdmissionError(kmock.KubernetesError):
    pass


class ClusterEmulator(kmock.KubernetesEmulator):
    """See the module docstring."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv = itertools.count(1)
        self._schemas: dict[str, dict[str, Any]] = {}  # "group/version/plural" -> schema
        self._status_sub: set[str] = set()
        self._kinds: dict[str, str] = {}  # "group/version/plural" -> kind
        self.kubelet: Kubelet | None = None
        self.authorizer: api_rules.Authorizer | None = None
        # Every request refused (401/403/404/409/422 from the rules above), as text.
        self.refusals: list[str] = []
        self._admitted: dict[int, kmock.Request] = {}
        self._cluster_ips = itertools.count(10)
        for kind, (res, namespaced, subs) in BUILTIN_RESOURCES.items():
            self.declare(kind, res, namespaced, subs)

    # --- declarations -----------------------------------------------------------
    def declare(self, kind: str, res: str, namespaced: bool, subresources: Iterable[str]) -> None:
        subs = set(subresources)
        self.resources[res] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs=VERBS,
            subresources=subs,
            singular=kind.lower(),
        )
        self._kinds[res] = kind
        if "status" in subs:
            self._status_sub.add(res)

    def declare_prometheus_operator(self) -> None:
        for kind, (res, namespaced, subs) in PROMETHEUS_RESOURCES.items():
            self.declare(kind, res, namespaced, subs)

    def install_crd(self, crd: Obj) -> None:
        spec = crd["spec"]
        names_ = spec["names"]
        for version in spec["versions"]:
            res = f"{spec['group']}/{version['name']}/{names_['plural']}"
            self.declare(
                names_["kind"],
                res,
                spec["scope"] == "Namespaced",
                version.get("subresources", {}).keys(),
            )
            self.resources[res].shortnames = set(names_.get("shortNames", ()))
            self._schemas[res] = version["schema"]["openAPIV3Schema"]
        self.objects[
            "apiextensions.k8s.io/v1/customresourcedefinitions", None, crd["metadata"]["name"]
        ] = self._filled(crd, None)

    def add_namespace(self, name: str) -> None:
        self.objects["v1/namespaces", None, name] = self._filled(_namespace(name), None)

    def authorize(self, objects: Iterable[Obj], users: dict[str, str]) -> None:
        """Turn RBAC on: `objects` as rendered (Roles, ClusterRoles and bindings), `users`
        bearer token -> user name. Requests without a token stay cluster-admin (the
        tests' own calls); a request with an unknown token gets 401."""
        self.authorizer = api_rules.Authorizer(list(objects), dict(users))

    # --- helpers over the emulator's store -------------------------------------------
    @staticmethod
    def _key(resource: Any) -> str:
        return f"{resource.group}/{resource.version}/{resource.plural}".lstrip("/")

    def _filled(self, obj: Obj, namespace: str | None) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if namespace is not None:
            meta.setdefault("namespace", namespace)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", _now())
        return obj

    def live(self, res: str | None = None) -> list[tuple[Any, Obj]]:
        """(resource, raw object) of every live object, optionally of one resource."""
        found = []
        for (resource, _ns, _name), obj in list(self._objects.items()):
            if obj.deleted or obj.empty:
                continue
            if res is not None and self._key(resource) != res:
                continue
            found.append((resource, obj.raw))
        return found

    def get(self, res: str, namespace: str | None, name: str) -> Obj | None:
        for _resource, raw in self.live(res):
            meta = raw.get("metadata", {})
            if meta.get("name") == name and meta.get("namespace") == namespace:
                return raw
        return None

    async def _emit(self, resource: Any, kind: str, raw: Obj) -> None:
        await self._buses[resource].put({"type": kind, "object": raw})

    async def _store(self, res: str, obj: Obj) -> None:
        resource = kmock.resource(res)
        meta = obj["metadata"]
        key = (resource, meta.get("namespace"), meta["name"])
        async with self._lock:
            if key in self._objects and not self._objects[key].deleted:
                self._objects[key].patch(obj)
                await self._emit(resource, "MODIFIED", self._objects[key].raw)
            else:
                if key in self._objects:
                    self._objects[key].create(obj)
                else:
                    self._objects[key] = obj
                await self._emit(resource, "ADDED", self._objects[key].raw)

    async def _remove(self, res: str, namespace: str | None, name: str) -> None:
        """Delete as the API server does: while finalizers remain, only mark it."""
        resource = kmock.resource(res)
        key = (resource, namespace, name)
        async with self._lock:
            if key in self._objects and not self._objects[key].deleted:
                meta = self._objects[key].raw.get("metadata") or {}
                if meta.get("finalizers"):
                    if not meta.get("deletionTimestamp"):
                        self._objects[key].patch(
                            {
                                "metadata": {
                                    "deletionTimestamp": _now(),
                                    "resourceVersion": str(next(self._rv)),
                                }
                            }
                        )
                        await self._emit(resource, "MODIFIED", self._objects[key].raw)
                    return
                raw = self._objects[key].raw
                self._objects[key].delete()
                await self._emit(resource, "DELETED", raw)

    # --- request handling ----------------------------------------------------------
    async def _handle(self, request: kmock.Request) -> web.StreamResponse:
        try:
            self._authorize(request)
            if request.resource is not None:
                self._admit_logged(request)
        except AdmissionError as error:
            caller = "token" if request.headers.get("Authorization") else "admin"
            self.refusals.append(
                f"{caller} {request.method} {request.url.path}: {error.status} {error.message}"
            )
            raise
        return await self._handle_admitted(self._admitted.pop(id(request), request))

    def _admit_logged(self, request: kmock.Request) -> None:
        admitted = self._admit(request)
        if admitted is not request:
            # KMock matches reactions by the identity of the logged request.
            index = next(i for i, r in enumerate(self._requests) if r is request)
            self._requests[index] = admitted
            self._admitted[id(request)] = admitted

    async def _handle_admitted(self, request: kmock.Request) -> web.StreamResponse:
        try:
            return await super()._handle(request)
        finally:
            if (
                request.action == kmock_enums.action.DELETE
                and request.resource is not None
                and self._key(request.resource) == "v1/pods"
                and request.name is not None
                and self.kubelet is not None
            ):
                deleted: Obj = {"metadata": {"name": request.name}}
                grace = _grace_period(request)
                if grace is not None:
                    deleted["metadata"]["deletionGracePeriodSeconds"] = grace
                self.kubelet.pod_deleted(deleted, int(request.name.rsplit("-", 1)[1]))
            if request.resource is not None and request.action in (
                kmock_enums.action.CREATE,
                kmock_enums.action.UPDATE,
                kmock_enums.action.DELETE,
            ):
                await self.settle()

    def _authorize(self, request: kmock.Request) -> None:
        """RBAC as the real authorizer does it, from the rendered objects."""
        if self.authorizer is None:
            return
        header = request.headers.get("Authorization")
        if header is None:
            return  # the tests' own calls: cluster-admin
        user = self.authorizer.user(header)
        if user is None:
            raise AdmissionError(status=401, reason="Unauthorized", message="Unauthorized")
        if request.resource is None or not request.resource.plural:
            return  # discovery (/api, /apis/<group>/<version>): system:discovery, every user
        res = self._key(request.resource)
        info = self.resources[res] if res in self._kinds else None
        namespace = request.namespace if (info is None or info.namespaced) else None
        resource = request.resource.plural or ""
        if request.subresource:
            resource += f"/{request.subresource}"
        verb = api_rules.request_verb(
            str(getattr(request.method, "value", request.method)),
            request.name is not None,
            request.action == kmock_enums.action.WATCH,
        )
        wanted = api_rules.Attributes(
            user, verb, request.resource.group or "", resource, namespace, request.name
        )
        if not self.authorizer.allowed(wanted):
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            group = f' in API group "{wanted.group}"'
            raise AdmissionError(
                status=403,
                reason="Forbidden",
                message=f'{resource} is forbidden: User "{user}" cannot {verb} resource '
                f'"{resource}"{group}{where}',
            )
        # OwnerReferencesPermissionEnforcement: blocking an owner's deletion needs
        # `update` on the owner's finalizers subresource.
        if request.action in (kmock_enums.action.CREATE, kmock_enums.action.UPDATE):
            body = request.data if isinstance(request.data, dict) else {}
            for ref in (body.get("metadata") or {}).get("ownerReferences") or ():
                if not ref.get("blockOwnerDeletion"):
                    continue
                owner = self._resource_of(ref.get("apiVersion", ""), ref.get("kind", ""))
                if owner is None:
                    continue
                group, plural = owner
                needed = api_rules.Attributes(
                    user, "update", group, f"{plural}/finalizers", namespace, ref.get("name")
                )
                if not self.authorizer.allowed(needed):
                    raise AdmissionError(
                        status=422,
                        reason="Invalid",
                        message="metadata.ownerReferences: cannot set blockOwnerDeletion if an "
                        "ownerReference refers to a resource you can't set finalizers on: "
                        f'User "{user}" cannot update resource "{plural}/finalizers"',
                    )

    def _resource_of(self, api_version: str, kind: str) -> tuple[str, str] | None:
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        for res, known in self._kinds.items():
            parts = res.split("/")
            res_group = "/".join(parts[:-2]) if len(parts) > 2 else ""
            if known == kind and res_group == group:
                return group, parts[-1]
        return None

    def _check_namespace(self, res: str, namespace: str | None) -> None:
        if namespace is None or res == "v1/namespaces":
            return
        ns = self.get("v1/namespaces", None, namespace)
        if ns is None:
            raise AdmissionError(
                status=404, reason="NotFound", message=f'namespaces "{namespace}" not found'
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise AdmissionError(
                status=403,
                reason="Forbidden",
                message=f"unable to create new content in namespace {namespace} because it "
                "is being terminated",
            )

    def _admit(self, request: kmock.Request) -> kmock.Request:
        res = self._key(request.resource)
        info = self.resources[res] if res in self._kinds else None
        namespace = request.namespace if (info is None or info.namespaced) else None
        if request.action == kmock_enums.action.CREATE:
            self._check_namespace(res, namespace)
            obj = self._filled(_secret_data(res, request.data or {}), namespace)
            obj = self._validate(res, self._allocated(res, obj), None)
            return attrs.evolve(request, data=obj)
        if request.action == kmock_enums.action.DELETE and res == "v1/namespaces":
            ns = self.get(res, None, request.name or "")
            if ns is not None and "kubernetes" not in (ns["metadata"].get("finalizers") or ()):
                # Made by a plain POST: the namespace controller's finalizer, as on create.
                self.objects[res, None, request.name] = _namespace_finalized(ns)
            return request
        if request.action != kmock_enums.action.UPDATE or request.name is None:
            return request
        current = self.get(res, namespace, request.name)
        body = _secret_data(res, copy.deepcopy(request.data or {}))
        content_type = request.headers.get("Content-Type", "")
        if current is None:
            if content_type.startswith(APPLY_PATCH):
                self._check_namespace(res, namespace)
                body.setdefault("metadata", {})["name"] = request.name
                obj = self._validate(res, self._allocated(res, self._filled(body, namespace)), None)
                return attrs.evolve(request, action=kmock_enums.action.CREATE, data=obj)
            return request  # the emulator answers 404
        if isinstance(body, list):
            return request  # JSON patch: left to the emulator as is
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and str(wanted_rv) != current["metadata"]["resourceVersion"]:
            raise AdmissionError(
                status=409,
                reason="Conflict",
                message=f"Operation cannot be fulfilled on {res.rsplit('/', 1)[-1]} "
                f'"{request.name}": the object has been modified; please apply your changes '
                "to the latest version and try again",
            )
        if request.subresource == "status":
            body = {"status": body.get("status")}
        elif request.subresource == "scale":
            body = {"spec": {"replicas": (body.get("spec") or {}).get("replicas")}}
        elif res in self._status_sub:
            body.pop("status", None)
        merged = kmock_dicts.merge_patch_dict(current, body)
        merged = self._validate(res, dict(merged), current)
        meta = body.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._rv))
        if merged.get("spec") != current.get("spec"):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
            if res in self._schemas:
                # With the defaults applied; keys the patch deleted (null) stay deleted.
                body["spec"] = _with_deletions(current.get("spec") or {}, merged["spec"])
        return attrs.evolve(request, data=body)

    def _allocated(self, res: str, obj: Obj) -> Obj:
        """apiVersion and kind from the URL, as the server decodes a body; a Service of
        type ClusterIP gets its address on creation, as from the allocator."""
        group_version = res.rsplit("/", 1)[0]
        obj.setdefault("apiVersion", group_version)
        if res in self._kinds:
            obj.setdefault("kind", self._kinds[res])
        spec = obj.get("spec")
        if (
            res == "v1/services"
            and isinstance(spec, dict)
            and not spec.get("clusterIP")
            and spec.get("type", "ClusterIP") in ("ClusterIP", "NodePort", "LoadBalancer")
        ):
            ip = next(self._cluster_ips)
            spec["clusterIP"] = f"10.96.{ip // 250}.{ip % 250 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
        return obj

    def _validate(self, res: str, obj: Obj, old: Obj | None) -> Obj:
        schema = self._schemas.get(res)
        if schema is None:
            kind = self._kinds.get(res, "")
            errors = api_rules.immutable_errors(kind, old, obj) if old is not None else []
            errors += api_rules.schema_errors(obj)
            if errors:
                raise AdmissionError(status=422, reason="Invalid", message="; ".join(errors))
            return obj
        obj = crd_tools.apply_defaults(schema, obj)
        errors = crd_tools.schema_errors(schema, obj)
        if not errors:
            old_defaulted = crd_tools.apply_defaults(schema, old) if old is not None else None
            errors = crd_tools.cel_errors(schema, obj, old_defaulted)
        if errors:
            raise AdmissionError(status=422, reason="Invalid", message="; ".join(errors))
        return obj

    async def _serve_list(self, request: kmock.Request) -> Any:
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            terms = dict(term.split("=", 1) for term in selector.split(",") if "=" in term)
            result["items"] = [
                item
                for item in result["items"]
                if terms.items() <= (item.get("metadata", {}).get("labels") or {}).items()
            ]
        result["metadata"] = {"resourceVersion": str(next(self._rv))}
        return result

    # --- controllers -------------------------------------------------------------
    async def settle(self) -> None:
        """Run the garbage collector and the StatefulSet controller to a fixpoint."""
        for _ in range(10):
            changed = await self._collect_garbage()
            changed |= await self._sync_namespaces()
            changed |= await self._sync_statefulsets()
            if not changed:
                return

    async def _collect_garbage(self) -> bool:
        changed = False
        while True:
            objects = self.live()
            uids = {raw["metadata"].get("uid") for _, raw in objects}
            orphans = [
                (resource, raw)
                for resource, raw in objects
                if raw["metadata"].get("ownerReferences")
                and not raw["metadata"].get("deletionTimestamp")
                and not any(o.get("uid") in uids for o in raw["metadata"]["ownerReferences"])
            ]
            if not orphans:
                return changed
            for resource, raw in orphans:
                meta = raw["metadata"]
                await self._remove(self._key(resource), meta.get("namespace"), meta["name"])
                if self._key(resource) == "v1/pods" and self.kubelet is not None:
                    self.kubelet.pod_deleted(raw, int(meta["name"].rsplit("-", 1)[1]))
            changed = True

    async def _sync_namespaces(self) -> bool:
        """The namespace controller: a terminating namespace's objects are deleted
        (finalizers still hold each one); the namespace goes when it is empty."""
        changed = False
        for _, ns in self.live("v1/namespaces"):
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            name = ns["metadata"]["name"]
            left = [
                (resource, raw)
                for resource, raw in self.live()
                if raw["metadata"].get("namespace") == name
                and self._key(resource) != "v1/namespaces"
            ]
            for resource, raw in left:
                if raw["metadata"].get("deletionTimestamp"):
                    continue
                await self._remove(self._key(resource), name, raw["metadata"]["name"])
                if self._key(resource) == "v1/pods" and self.kubelet is not None:
                    self.kubelet.pod_deleted(raw, int(raw["metadata"]["name"].rsplit("-", 1)[1]))
                changed = True
            if not [r for r in self.live() if r[1]["metadata"].get("namespace") == name]:
                finalized = copy.deepcopy(ns)
                finalized["metadata"]["finalizers"] = []
                finalized["status"] = {"phase": "Terminating"}
                await self._store("v1/namespaces", finalized)
                await self._remove("v1/namespaces", None, name)
                changed = True
        return changed

    def terminating(self) -> list[str]:
        """Every object held in deletion by a finalizer (kind/namespace/name)."""
        return sorted(
            f"{self._kinds.get(self._key(resource), self._key(resource))}/"
            f"{raw['metadata'].get('namespace') or ''}/{raw['metadata']['name']}"
            for resource, raw in self.live()
            if raw["metadata"].get("deletionTimestamp")
        )

    async def _sync_statefulsets(self) -> bool:
        changed = False
        for _, sts in self.live("apps/v1/statefulsets"):
            changed |= await self._sync_one(sts)
        return changed

    async def _sync_one(self, sts: Obj) -> bool:
        meta, spec = sts["metadata"], sts["spec"]
        namespace, name = meta["namespace"], meta["name"]
        replicas = int(spec.get("replicas", 1))
        retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        owner = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": name,
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        pods = {
            raw["metadata"]["name"]: raw
            for _, raw in self.live("v1/pods")
            if raw["metadata"].get("namespace") == namespace
            and any(o.get("uid") == meta["uid"] for o in raw["metadata"].get("ownerReferences", ()))
        }
        changed = False
        for pod_name, pod in pods.items():
            ordinal = int(pod_name.rsplit("-", 1)[1])
            if ordinal >= replicas:
                await self._remove("v1/pods", namespace, pod_name)
                if retention.get("whenScaled") == "Delete":
                    for claim in spec.get("volumeClaimTemplates") or ():
                        claim_name = f"{claim['metadata']['name']}-{pod_name}"
                        await self._remove("v1/persistentvolumeclaims", namespace, claim_name)
                if self.kubelet is not None:
                    self.kubelet.pod_deleted(pod, ordinal)
                changed = True
        for ordinal in range(replicas):
            pod_name = f"{name}-{ordinal}"
            if pod_name in pods:
                continue
            fresh = False
            for claim in spec.get("volumeClaimTemplates") or ():
                claim_name = f"{claim['metadata']['name']}-{pod_name}"
                if self.get("v1/persistentvolumeclaims", namespace, claim_name) is None:
                    fresh = True
                    pvc = {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": {
                            "name": claim_name,
                            "labels": dict(claim["metadata"].get("labels") or {}),
                        },
                        "spec": copy.deepcopy(claim["spec"]),
                    }
                    if retention.get("whenDeleted") == "Delete":
                        pvc["metadata"]["ownerReferences"] = [dict(owner, controller=False)]
                    await self._store("v1/persistentvolumeclaims", self._filled(pvc, namespace))
            template = copy.deepcopy(spec["template"])
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "labels": {
                        **template["metadata"].get("labels", {}),
                        "statefulset.kubernetes.io/pod-name": pod_name,
                    },
                    "annotations": dict(template["metadata"].get("annotations") or {}),
                    "ownerReferences": [owner],
                },
                "spec": {
                    **template["spec"],
                    "hostname": pod_name,
                    "subdomain": spec["serviceName"],
                },
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "False"}],
                },
            }
            pod = self._filled(pod, namespace)
            if self.kubelet is not None:
                self.kubelet.pod_created(pod, ordinal, fresh)
            await self._store("v1/pods", pod)
            changed = True
        ready = sum(1 for p in pods.values() if _ready(p))
        status = {"replicas": len(pods), "readyReplicas": ready}
        if sts.get("status") != status and changed is False:
            await self._store("apps/v1/statefulsets", {**sts, "status": status})
        return changed

    def trim_requests(self, keep: int = 300) -> None:
        """KMock keeps every request and matches each new one against all of them.

        Long runs slow down quadratically; old requests (long since answered,
        or long-lived watch streams already dispatched) are dropped.
        """
        if len(self._requests) > 4 * keep:
            del self._requests[:-keep]

    async def refresh_pods(self) -> None:
        """Copy the kubelet's readiness into the pods' Ready conditions."""
        if self.kubelet is None:
            return
        for _, pod in self.live("v1/pods"):
            ready = self.kubelet.is_ready(pod["metadata"]["name"])
            if _ready(pod) != ready:
                status = {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                }
                updated = copy.deepcopy(pod)
                updated["status"] = status
                updated["metadata"]["resourceVersion"] = str(next(self._rv))
                await self._store("v1/pods", updated)


def _with_deletions(old: Obj, new: Obj) -> Obj:
    """`new` as a merge patch over `old`: keys of `old` missing from `new` become None."""
    patch: Obj = {}
    for key in set(old) | set(new):
        if key not in new:
            patch[key] = None
        elif isinstance(old.get(key), dict) and isinstance(new[key], dict):
            patch[key] = _with_deletions(old[key], new[key])
        else:
            patch[key] = new[key]
    return patch


def _namespace(name: str) -> Obj:
    return _namespace_finalized(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )


def _namespace_finalized(ns: Obj) -> Obj:
    """The namespace controller's finalizer. A real server keeps it in spec.finalizers;
    KMock's delete looks at metadata.finalizers, so it is there too."""
    ns = copy.deepcopy(ns)
    ns["metadata"]["finalizers"] = ["kubernetes"]
    ns["spec"] = {"finalizers": ["kubernetes"]}
    ns["status"] = {"phase": "Active"}
    return ns


def _secret_data(res: str, obj: Any) -> Any:
    """The API server stores a Secret's stringData base64-encoded under data."""
    if res != "v1/secrets" or not isinstance(obj, dict) or "stringData" not in obj:
        return obj
    obj = dict(obj)
    encoded = {
        k: base64.b64encode(str(v).encode()).decode() for k, v in obj.pop("stringData").items()
    }
    obj["data"] = {**(obj.get("data") or {}), **encoded}
    return obj


def _grace_period(request: kmock.Request) -> int | None:
    """A DELETE's grace period: the query parameter, else the DeleteOptions body."""
    value = request.params.get("gracePeriodSeconds")
    if value is None and isinstance(request.data, dict):
        value = request.data.get("gracePeriodSeconds")
    return None if value is None else int(value)


def _ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or ()
    )


# --- a kubelet backed by the Raft model, and its admin API ------------------------------


def _env(pod: Obj) -> dict[str, str]:
    container = pod["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", ()) if "value" in e}


class WorldKubelet:
    """Runs emulated pods as members of a RaftWorld and serves its admin API over HTTP.

    Node identity follows the node contract: the id stored on the volume; else,
    with EXCHANGE_CLUSTER_STATE=new and an ordinal below the initial size,
    ordinal + 1; else a fresh id. A new cluster's configuration comes from
    EXCHANGE_PEERS.
    """

    def __init__(
        self,
        world: RaftWorld,
        token: Callable[[], str | None] | None = None,
        ca: Callable[[], str | None] | None = None,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.world = world
        world.manage_pods = False
        self.token = token  # where the node would read EXCHANGE_ADMIN_TOKEN from
        # Pods with EXCHANGE_PEER_TLS_ENROLL run the node's real enrollment code: a key
        # per volume, the CA from where the pod mounts it (ca), the node's clock (now).
        self.ca = ca
        self.now = now or (lambda: datetime.datetime.now(datetime.UTC))
        self.enrolling: set[int] = set()
        # ordinal -> the CSR a compromised pod serves instead of its own
        self.forged_csr: dict[int, bytes] = {}
        self._volumes = Path(tempfile.mkdtemp(prefix="world-volumes-"))
        self.port = 0
        self._runner: web.AppRunner | None = None

    def enrollment(self, ordinal: int) -> MemberEnrollment | None:
        pod = self.world.pods.get(ordinal)
        if ordinal not in self.enrolling or pod is None or self.ca is None:
            return None
        ca_file = self._volumes / f"ca-{ordinal}.crt"
        ca_file.write_text(self.ca() or "")
        return MemberEnrollment.for_data_dir(
            self._volumes / str(ordinal), ca_file,
            names.raft_cluster_id(self.world.cluster, self.world.namespace), pod.node_id,
        )  # fmt: skip

    # Kubelet protocol
    def pod_created(self, pod: Obj, ordinal: int, fresh_volume: bool) -> None:
        env = _env(pod)
        peers = [p for p in env.get("EXCHANGE_PEERS", "").split(",") if p]
        if fresh_volume:
            self.world.volumes.pop(ordinal, None)
            shutil.rmtree(self._volumes / str(ordinal), ignore_errors=True)
        if env.get("EXCHANGE_PEER_TLS_ENROLL") == "true":
            self.enrolling.add(ordinal)
        node_id = self.world.volumes.get(ordinal)
        if node_id is None:
            if env.get("EXCHANGE_CLUSTER_STATE") == "new" and ordinal < len(peers):
                node_id = names.initial_node_id(ordinal)
            else:
                node_id = next(self.world._ids)
        self.world.volumes[ordinal] = node_id
        annotations = pod["metadata"].get("annotations") or {}
        self.world.pods[ordinal] = PodModel(
            ordinal, node_id, annotations.get(names.ANNOTATION_RESTART_HASH, ""), ready=False
        )
        if not self.world.members and env.get("EXCHANGE_CLUSTER_STATE") == "new":
            for peer in peers:
                peer_id, address = peer.split("=", 1)
                peer_ordinal = names.ordinal_of_address(self.world.cluster, address)
                assert peer_ordinal is not None
                self.world.members[int(peer_id)] = MemberModel(int(peer_id), peer_ordinal, True)

    def pod_deleted(self, pod: Obj, ordinal: int) -> None:
        if ordinal in self.world.pods:
            self.world.delete_pod(ordinal)

    def is_ready(self, pod_name: str) -> bool:
        ordinal = int(pod_name.rsplit("-", 1)[1])
        pod = self.world.pods.get(ordinal)
        return bool(pod and pod.ready)

    # admin API
    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{pod}/v1/admin/status", self._status)
        app.router.add_post("/{pod}/v1/admin/members", self._add)
        app.router.add_post("/{pod}/v1/admin/members/{id}/promote", self._promote)
        app.router.add_delete("/{pod}/v1/admin/members/{id}", self._remove)
        app.router.add_post("/{pod}/v1/admin/transfer-leadership", self._transfer)
        app.router.add_get("/{pod}/v1/admin/certificate-request", self._csr)
        app.router.add_put("/{pod}/v1/admin/certificate", self._certificate)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        shutil.rmtree(self._volumes, ignore_errors=True)

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/{{pod}}"

    def _authorized(self, request: web.Request) -> bool:
        expected = self.token() if self.token is not None else None
        return expected is None or request.headers.get("Authorization") == f"Bearer {expected}"

    def _ordinal(self, request: web.Request) -> int:
        return int(request.match_info["pod"].rsplit("-", 1)[1])

    async def _status(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        status = self.world.admin_status(self._ordinal(request))
        if status is None:
            raise web.HTTPServiceUnavailable()
        member = self.enrollment(self._ordinal(request))
        if member is not None:
            status["member_certificate"] = member.status(self.now())
        return web.json_response(status)

    async def _csr(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        member = self.enrollment(self._ordinal(request))
        if member is None:
            raise web.HTTPNotFound()
        csr = member.certificate_request(self.now()).decode()
        csr = self.forged_csr.get(self._ordinal(request), csr.encode()).decode()
        return web.json_response({"csr": csr, "member_id": member.node_id})

    async def _certificate(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        member = self.enrollment(self._ordinal(request))
        if member is None:
            raise web.HTTPNotFound()
        body = await request.json()
        try:
            which = member.install(str(body["certificate"]).encode(), self.now())
        except EnrollmentError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"installed": which})

    def _leader_only(self, request: web.Request) -> web.Response | None:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        pod = self.world.pods.get(self._ordinal(request))
        if pod is None or not pod.alive:
            raise web.HTTPServiceUnavailable()
        if pod.node_id != self.world.leader_id:
            return web.json_response({"leader": self.world.leader_id}, status=421)
        return None

    async def _add(self, request: web.Request) -> web.Response:
        if (refusal := self._leader_only(request)) is not None:
            return refusal
        body = await request.json()
        node_id, address = int(body["id"]), str(body["address"])
        http = body.get("http_address")
        assert http is None or http.rsplit(":", 1)[0] == address.rsplit(":", 1)[0], body
        self.world.add_member(node_id, address)
        return web.json_response({"ok": True})

    async def _promote(self, request: web.Request) -> web.Response:
        if (refusal := self._leader_only(request)) is not None:
            return refusal
        self.world.promote(int(request.match_info["id"]))
        return web.json_response({"ok": True})

    async def _remove(self, request: web.Request) -> web.Response:
        if (refusal := self._leader_only(request)) is not None:
            return refusal
        self.world.remove(int(request.match_info["id"]))
        return web.json_response({"ok": True})

    async def _transfer(self, request: web.Request) -> web.Response:
        if (refusal := self._leader_only(request)) is not None:
            return refusal
        body = await request.json()
        target = body.get("target")
        self.world.transfer(None if target is None else int(target))
        return web.json_response({"ok": True})


async def drive(emulator: ClusterEmulator, world: RaftWorld, stop: asyncio.Event) -> None:
    """The clock of the model: tick the Raft world and publish pod readiness."""
    while not stop.is_set():
        world.tick()
        await emulator.refresh_pods()
        emulator.trim_requests()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


def secret_value(emulator: ClusterEmulator, namespace: str, name: str, key: str) -> str | None:
    secret = emulator.get("v1/secrets", namespace, name)
    if secret is None or key not in (secret.get("data") or {}):
        return None
    return base64.b64decode(secret["data"][key]).decode()


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)

"""What a real API server refuses, as pure functions the emulator (kmock_harness) calls.

- `schema_errors`: built-in kinds against the real OpenAPI schemas
  (kubernetes-validate, strict: unknown fields are errors), the Prometheus
  Operator's kinds against their structural schemas;
- `immutable_errors`: the fields a real server refuses to change on update
  (apiserver validation: StatefulSet, PVC, Service, workload selectors,
  immutable Secrets and ConfigMaps, metadata identity);
- `Authorizer`: RBAC evaluated from Role/ClusterRole/RoleBinding/
  ClusterRoleBinding objects exactly as rendered (the chart, k8s/), with the
  same matching rules as the RBAC authorizer (apiGroups, resources with
  subresources, verbs, resourceNames; `*` wildcards; a Role only grants in
  its namespace; a RoleBinding may reference a ClusterRole).
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate
import prometheus_operator_schemas
from kubernetes.utils.quantity import parse_quantity

Obj = dict[str, Any]
KUBE_VERSION = "1.31"

# apps/v1 StatefulSet: "updates to statefulset spec for fields other than 'replicas',
# 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and
# 'minReadySeconds' are forbidden" (k8s.io/kubernetes pkg/apis/apps/validation).
STATEFULSET_MUTABLE = frozenset(
    {
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    }
)


# --- schemas ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _validate_cached(text: str) -> str | None:
    obj = json.loads(text)
    kind = obj.get("kind", "")
    if kind in prometheus_operator_schemas.SCHEMAS:
        import crd_tools

        problems = crd_tools.schema_errors(prometheus_operator_schemas.SCHEMAS[kind], obj)
        return "; ".join(problems) or None
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        return f"{kind}.{path}: {error.message}"
    except kubernetes_validate.SchemaNotFoundError:
        return None  # a kind without a published schema (none of the operator's)
    return None


def schema_errors(obj: Obj) -> list[str]:
    """[] when a real API server's OpenAPI validation accepts `obj` (strict)."""
    problem = _validate_cached(json.dumps(obj, sort_keys=True, default=str))
    return [] if problem is None else [problem]


# --- immutable fields ---------------------------------------------------------------------


def _without(spec: Obj | None, keys: frozenset[str]) -> Obj:
    return {k: v for k, v in (spec or {}).items() if k not in keys}


def immutable_errors(kind: str, old: Obj, new: Obj) -> list[str]:
    """What a real server refuses when `old` is updated to `new` (merged) object."""
    errors: list[str] = []
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    for key in ("name", "namespace", "uid"):
        if key in new_meta and old_meta.get(key) != new_meta.get(key):
            errors.append(f"metadata.{key}: Invalid value: field is immutable")
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    if kind == "StatefulSet":
        if _without(old_spec, STATEFULSET_MUTABLE) != _without(new_spec, STATEFULSET_MUTABLE):
            changed = sorted(
                k
                for k in set(old_spec) | set(new_spec)
                if k not in STATEFULSET_MUTABLE and old_spec.get(k) != new_spec.get(k)
            )
            errors.append(
                "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', "
                "'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' "
                f"and 'minReadySeconds' are forbidden (changed: {', '.join(changed)})"
            )
    elif kind == "PersistentVolumeClaim":
        old_rest, new_rest = copy.deepcopy(old_spec), copy.deepcopy(new_spec)
        sizes = []
        for spec in (old_rest, new_rest):
            spec.pop("volumeAttributesClassName", None)
            requests = (spec.get("resources") or {}).get("requests") or {}
            sizes.append(requests.pop("storage", None))
        if old_rest != new_rest:
            errors.append(
                "spec: Forbidden: spec is immutable after creation except resources.requests "
                "and volumeAttributesClassName for bound claims"
            )
        elif sizes[0] and sizes[1] and parse_quantity(sizes[1]) < parse_quantity(sizes[0]):
            errors.append(
                "spec.resources.requests.storage: Forbidden: field can not be less than "
                "status.capacity"
            )
    elif kind == "Service":
        for key in ("clusterIP", "clusterIPs"):
            if old_spec.get(key) and new_spec.get(key) != old_spec.get(key):
                errors.append(f"spec.{key}: Invalid value: field is immutable")
    elif kind in ("Deployment", "ReplicaSet", "DaemonSet", "Job"):
        if old_spec.get("selector") != new_spec.get("selector"):
            errors.append("spec.selector: Invalid value: field is immutable")
    elif kind in ("Secret", "ConfigMap") and old.get("immutable"):
        for key in ("data", "binaryData", "stringData", "immutable"):
            if old.get(key) != new.get(key):
                errors.append(f"{key}: Forbidden: field is immutable when `immutable` is set")
    return errors


# --- RBAC ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attributes:
    """A resource request as the RBAC authorizer sees it."""

    user: str
    verb: str
    group: str
    resource: str  # plural, or plural/subresource
    namespace: str | None
    name: str | None


def request_verb(method: str, has_name: bool, watch: bool) -> str:
    method = method.upper()
    if method == "GET":
        return "watch" if watch else ("get" if has_name else "list")
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if has_name else "deletecollection",
    }.get(method, method.lower())


def _matches(values: list[str] | None, wanted: str) -> bool:
    return any(v == "*" or v == wanted for v in values or ())


def _resource_matches(resources: list[str] | None, wanted: str) -> bool:
    base, _, sub = wanted.partition("/")
    for r in resources or ():
        if r == "*" or r == wanted:
            return True
        if sub and r == f"{base}/*":
            return True
        if sub and r == f"*/{sub}":
            return True
    return False


def rule_allows(rule: Obj, attrs: Attributes) -> bool:
    if rule.get("nonResourceURLs"):
        return False
    if not _matches(rule.get("verbs"), attrs.verb):
        return False
    if not _matches(rule.get("apiGroups"), attrs.group):
        return False
    if not _resource_matches(rule.get("resources"), attrs.resource):
        return False
    names_ = rule.get("resourceNames")
    return not names_ or (attrs.name is not None and attrs.name in names_)


@dataclass
class Authorizer:
    """RBAC from rendered objects; `users` maps bearer tokens to user names."""

    objects: list[Obj]
    users: dict[str, str] = field(default_factory=dict)

    def _roles(self, kind: str, namespace: str | None, name: str) -> list[Obj]:
        return [
            o
            for o in self.objects
            if o.get("kind") == kind
            and o["metadata"]["name"] == name
            and (kind == "ClusterRole" or o["metadata"].get("namespace") == namespace)
        ]

    @staticmethod
    def _subject_is(subject: Obj, user: str, binding_ns: str | None) -> bool:
        if subject.get("kind") == "ServiceAccount":
            ns = subject.get("namespace") or binding_ns
            return user == f"system:serviceaccount:{ns}:{subject.get('name')}"
        if subject.get("kind") == "User":
            return user == subject.get("name")
        if subject.get("kind") == "Group":
            group = subject.get("name")
            return group in ("system:authenticated",) or (
                group == "system:serviceaccounts" and user.startswith("system:serviceaccount:")
            )
        return False

    def rules_for(self, user: str, namespace: str | None) -> list[Obj]:
        """Every rule that applies to `user` for a request in `namespace` (None: cluster)."""
        rules: list[Obj] = []
        for binding in self.objects:
            kind = binding.get("kind")
            if kind not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            binding_ns = binding["metadata"].get("namespace")
            if kind == "RoleBinding" and (namespace is None or binding_ns != namespace):
                continue
            if not any(self._subject_is(s, user, binding_ns) for s in binding.get("subjects", ())):
                continue
            ref = binding["roleRef"]
            for role in self._roles(ref["kind"], binding_ns, ref["name"]):
                rules.extend(role.get("rules") or ())
        return rules

    def allowed(self, attrs: Attributes) -> bool:
        return any(rule_allows(r, attrs) for r in self.rules_for(attrs.user, attrs.namespace))

    def user(self, authorization: str | None) -> str | None:
        """The user of a bearer token; None for an unknown token (401)."""
        if authorization is None or not authorization.startswith("Bearer "):
            return None
        return self.users.get(authorization.removeprefix("Bearer ").strip())


def role_scope_errors(objects: list[Obj], cluster_scoped: set[str]) -> list[str]:
    """Rules of a namespaced Role naming a cluster-scoped resource: a real server stores
    them, but they can never grant anything (a Role's rules apply in its namespace)."""
    problems = []
    for obj in objects:
        if obj.get("kind") != "Role":
            continue
        for rule in obj.get("rules") or ():
            for resource in rule.get("resources") or ():
                if resource.split("/")[0] in cluster_scoped:
                    problems.append(f"Role {obj['metadata']['name']}: {resource}")
    return problems


# --- the operator's RBAC as the chart renders it ------------------------------------------

OPERATOR_TOKEN = "operator-service-account-token"


@functools.lru_cache(maxsize=8)
def _chart_rbac(values_json: str, namespace: str) -> tuple[tuple[str, ...], str]:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "k8s" / "generate.py"
    spec = importlib.util.spec_from_file_location("k8s_generate", path)
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    objects = generate.render_chart(json.loads(values_json), namespace=namespace)
    kinds = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    rbac = tuple(json.dumps(o) for o in objects if o.get("kind") in kinds)
    (deployment,) = [o for o in objects if o.get("kind") == "Deployment"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    return rbac, f"system:serviceaccount:{namespace}:{account}"


def chart_rbac(values: Obj, namespace: str = "exchange-system") -> tuple[list[Obj], str]:
    """(the chart's Roles, ClusterRoles and bindings for `values`, the operator's user)."""
    rbac, user = _chart_rbac(json.dumps(values, sort_keys=True), namespace)
    return [json.loads(o) for o in rbac], user

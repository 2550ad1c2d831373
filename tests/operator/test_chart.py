"""The Helm chart with the real Helm library: lint, render, values schema, and no drift.

Also: the plain manifests in k8s/ are exactly the chart rendered by
scripts/k8s/generate.py, and the RBAC the chart grants is exactly what the
operator calls.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import helm_python
import manifest_validation as validation
import pytest
import yaml
from exchange_operator import monitoring, names, rbac, render
from exchange_operator.spec import ClusterRef, parse_spec

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "raft-exchange"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "k8s_generate", ROOT / "scripts" / "k8s" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _generator()

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"operator": {"watchNamespaces": ["trading", "staging"], "logLevel": "debug"}},
    "example": {
        "exampleCluster": {
            "enabled": True,
            "name": "prod",
            "spec": {"replicas": 5, "storage": {"size": "10Gi"}, "paused": False},
        },
        "dashboards": {"enabled": False},
    },
    "no-rbac": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}},
    "cluster-wide": {"operator": {"clusterWide": True, "watchNamespaces": ["trading"]}},
}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_is_clean(name: str) -> None:
    report = helm_python.lint(
        str(CHART), values=VALUE_SETS[name], kube_version="v1.31.0", strict=True
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == []


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_chart_is_valid(name: str) -> None:
    objects = generate.render_chart(VALUE_SETS[name], namespace="exchange-system")
    assert objects
    for obj in objects:
        assert validation.errors(obj) == [], (obj["kind"], obj["metadata"]["name"])


def _args(objects: list[dict[str, Any]]) -> list[str]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_namespaced_install_uses_roles_per_namespace() -> None:
    objects = generate.render_chart(VALUE_SETS["namespaced"])
    roles = sorted(o["metadata"]["namespace"] for o in objects if o["kind"] == "Role")
    assert roles == ["staging", "trading"]
    for role in (o for o in objects if o["kind"] == "Role"):
        assert role["rules"] == rbac.role_rules()
    # The one ClusterRole: what kopf reads cluster-wide (no Role can grant it).
    (cluster_role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    assert cluster_role["rules"] == rbac.cluster_scoped_rules()
    args = _args(objects)
    assert "--namespace=trading" in args and "--namespace=staging" in args
    assert "--all-namespaces" not in args and "--verbose" in args


def test_default_install_watches_only_its_own_namespace() -> None:
    objects = generate.render_chart({}, namespace="exchange-system")
    roles = [o for o in objects if o["kind"] == "Role"]
    assert [r["metadata"]["namespace"] for r in roles] == ["exchange-system"]
    assert roles[0]["rules"] == rbac.role_rules()
    assert _args(objects)[0] == "--namespace=exchange-system"
    assert "--all-namespaces" not in _args(objects)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "ClusterRole"] == [
        "raft-exchange-operator-discovery"
    ]


def test_cluster_wide_only_when_asked_and_secrets_stay_namespaced() -> None:
    objects = generate.render_chart(VALUE_SETS["cluster-wide"], namespace="exchange-system")
    assert "--all-namespaces" in _args(objects)
    cluster_roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}
    assert cluster_roles["raft-exchange-operator"]["rules"] == rbac.cluster_wide_rules()
    (role,) = [o for o in objects if o["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "trading"
    assert role["rules"] == rbac.namespace_only_rules()
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"secrets"}


def _cluster_wide_grants(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules of every ClusterRole bound by a ClusterRoleBinding."""
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}
    return [
        rule
        for binding in objects
        if binding["kind"] == "ClusterRoleBinding"
        for rule in roles[binding["roleRef"]["name"]]["rules"]
    ]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_no_rendering_grants_secrets_cluster_wide(name: str) -> None:
    grants = _cluster_wide_grants(generate.render_chart(VALUE_SETS[name]))
    for rule in grants:
        assert "secrets" not in rule["resources"] and "*" not in rule["resources"], rule
        assert "*" not in rule["apiGroups"] and "*" not in rule["verbs"], rule
    manifests = [o for o in generate.render_chart(generate.K8S_VALUES)]
    assert all("secrets" not in r["resources"] for r in _cluster_wide_grants(manifests))


# Cluster-scoped resources of Kubernetes 1.31 a Role could be mistakenly given (it
# cannot grant them: a Role's rules apply inside its namespace only).
CLUSTER_SCOPED = {
    "namespaces", "nodes", "persistentvolumes", "customresourcedefinitions", "clusterroles",
    "clusterrolebindings", "storageclasses", "priorityclasses", "certificatesigningrequests",
    "validatingwebhookconfigurations", "mutatingwebhookconfigurations", "apiservices",
    "csidrivers", "csinodes", "ingressclasses", "runtimeclasses", "volumeattachments",
    "clusterissuers", "tokenreviews", "subjectaccessreviews", "selfsubjectaccessreviews",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_roles_carry_no_cluster_scoped_resources(name: str) -> None:
    assert {r for _, r, _, _ in rbac.CLUSTER_SCOPED_RULES} <= CLUSTER_SCOPED
    for obj in generate.render_chart(VALUE_SETS[name]):
        if obj["kind"] == "Role":
            resources = {r.split("/")[0] for rule in obj["rules"] for r in rule["resources"]}
            assert not resources & CLUSTER_SCOPED, (name, resources & CLUSTER_SCOPED)


def test_operator_deployment_is_restricted() -> None:
    import pss_restricted

    (deployment,) = [o for o in generate.render_chart({}) if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pss_restricted.violations(pod) == []
    assert pod["containers"][0]["command"] == ["exchange", "operator"]


@pytest.mark.parametrize(
    "bad",
    [
        {"bogus": True},
        {"operator": {"logLevel": "trace"}},
        {"operator": {"watchNamespaces": ["Not_A_Namespace"]}},
        {"operator": {"interval": 0}},
        {"exampleCluster": {"spec": {"replicas": "three"}}},
        {"exampleCluster": {"spec": {"replicas": 9}}},
        {"exampleCluster": {"spec": {"storage": {"size": "lots"}}}},
        {"dashboards": {"enabled": "yes"}},
    ],
)
def test_values_schema_rejects(bad: dict[str, Any]) -> None:
    with helm_python.Chart.load(str(CHART)) as chart, pytest.raises(helm_python.HelmValuesError):
        chart.render(bad, name="x", namespace="y")


def test_notes_tell_the_user_what_to_run_next() -> None:
    with helm_python.Chart.load(str(CHART)) as chart:
        notes = chart.render({}, name="rx", namespace="ops")["raft-exchange/templates/NOTES.txt"]
    assert "kubectl -n ops rollout status deployment/rx-operator" in notes
    assert "kubectl -n ops scale exchangecluster/" in notes
    assert "port-forward svc/" in notes
    assert "and watches: ops." in notes  # the default install: its own namespace only


def test_chart_installs_the_crd_and_dashboards() -> None:
    objects = generate.render_chart({})
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    assert [c["metadata"]["name"] for c in crds] == [names.CRD_NAME]
    boards = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(boards) == len(monitoring.DASHBOARDS)


# --- one source, no drift ---------------------------------------------------------


def test_generated_chart_files_match_their_python_source() -> None:
    stale = [str(p.relative_to(ROOT)) for p in generate.drift(generate.chart_sources())]
    assert stale == [], "run: python scripts/k8s/generate.py"


def test_k8s_manifests_are_the_rendered_chart() -> None:
    files = generate.k8s_manifests(generate.render_chart(generate.K8S_VALUES))
    assert {p.name for p in files} == {p.name for p in (ROOT / "k8s").glob("*.yaml")}
    stale = [str(p.relative_to(ROOT)) for p in generate.drift(files)]
    assert stale == [], "run: python scripts/k8s/generate.py"


# --- RBAC: exactly what the operator calls -------------------------------------------

_KIND_TO_RESOURCE = {
    "ConfigMap": ("", "configmaps"),
    "Secret": ("", "secrets"),
    "Service": ("", "services"),
    "Pod": ("", "pods"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "StatefulSet": ("apps", "statefulsets"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "Ingress": ("networking.k8s.io", "ingresses"),
    "CronJob": ("batch", "cronjobs"),
    "ServiceMonitor": ("monitoring.coreos.com", "servicemonitors"),
    "PrometheusRule": ("monitoring.coreos.com", "prometheusrules"),
    "Certificate": ("cert-manager.io", "certificates"),
    "CertificateRequest": ("cert-manager.io", "certificaterequests"),
}
_METHOD_VERBS = {
    "get": {"get"},
    "list": {"list"},
    "create": {"create"},
    "patch": {"patch"},
    "delete": {"delete"},
}


def _used_permissions() -> dict[tuple[str, str], set[str]]:
    used: dict[tuple[str, str], set[str]] = {}

    def add(kind: str, verbs: set[str]) -> None:
        used.setdefault(_KIND_TO_RESOURCE[kind], set()).update(verbs)

    source = (ROOT / "operator" / "exchange_operator" / "handlers.py").read_text()
    for method, kind in re.findall(r"kube\.(get|list|create|patch|delete)\(\s*\"(\w+)\"", source):
        add(kind, _METHOD_VERBS[method])
    # The admin token Secret is created once, from its renderer.
    assert "kube.create(render.admin_secret(" in source
    add("Secret", {"create"})
    # Certificates: the CA and server Secrets are written by apply.
    for renderer in ("ca_secret", "server_secret"):
        assert f"certificates.{renderer}(" in source
    assert source.count("await kube.apply(") >= 2
    add("Secret", {"create", "patch"})
    # cert-manager: the listeners' Certificate is applied (spec.tls.issuerRef), a node's
    # CSR becomes a CertificateRequest (get above, created from its renderer here).
    assert "await rt.apply(kube, certificates.server_certificate(" in source
    add("Certificate", {"create", "patch"})
    assert "new = certificates.certificate_request(" in source
    assert "await kube.create(new)" in source
    add("CertificateRequest", {"create"})
    # Server-side apply of every rendered child needs create + patch.
    cluster = ClusterRef("xc", "ns", "uid")
    spec = parse_spec({})
    applied = render.core_children(cluster, spec, render.RenderState.initial(spec))
    applied += [monitoring.service_monitor(cluster), monitoring.prometheus_rule(cluster)]
    applied.append(render.ingress(cluster, spec))  # with spec.expose.ingress
    applied.append(render.backup_cronjob(cluster, spec, render.RenderState.initial(spec)))
    for obj in applied:
        add(obj["kind"], {"create", "patch"})
    # Switched-off optional children are deleted (handlers._apply_children).
    assert "await kube.delete(kind, cluster.namespace, name)" in source
    for kind in ("ServiceMonitor", "PrometheusRule", "ConfigMap", "Ingress", "CronJob"):
        add(kind, {"delete"})
    # kopf itself: watch and annotate the custom resource, patch its status,
    # post events, notice CRDs and namespaces.
    used[(names.GROUP, names.PLURAL)] = {"list", "watch", "patch"}
    used[(names.GROUP, f"{names.PLURAL}/status")] = {"patch"}
    # Owner references with blockOwnerDeletion need update on the owner's finalizers.
    owner = render.owner_reference(cluster)
    assert owner["blockOwnerDeletion"] is True
    used[(names.GROUP, f"{names.PLURAL}/finalizers")] = {"update"}
    used[("", "events")] = {"create"}
    used[("apiextensions.k8s.io", "customresourcedefinitions")] = {"list", "watch"}
    used[("", "namespaces")] = {"list", "watch"}
    return used


def test_rbac_rules_are_exactly_what_the_operator_uses() -> None:
    granted = {(group, resource): set(verbs) for group, resource, verbs, _ in rbac.RULES}
    assert granted == _used_permissions()


def test_chart_grants_the_rbac_rules() -> None:
    objects = generate.render_chart({})
    (role,) = [o for o in objects if o["kind"] == "Role"]
    (cluster_role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    assert role["rules"] + cluster_role["rules"] == rbac.cluster_role_rules()
    for rules in (role["rules"], cluster_role["rules"]):
        assert not any("*" in r["verbs"] or "*" in r["resources"] for r in rules)
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        (binding,) = [o for o in objects if o["kind"] == kind]
        assert binding["subjects"][0]["name"] == account["metadata"]["name"]


def test_rbac_rules_file_is_yaml_of_the_rules() -> None:
    text = (CHART / "files" / "rbac-rules.yaml").read_text()
    assert yaml.safe_load(text) == rbac.rules_file()


def test_operator_pods_match_the_admin_ports_network_policy() -> None:
    """The nodes admit the admin port from pods labelled as the chart labels the
    operator, in the namespace the operator reads from OPERATOR_NAMESPACE."""
    (deployment,) = [o for o in generate.render_chart({}) if o["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    assert names.operator_selector_labels().items() <= template["metadata"]["labels"].items()
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert env["OPERATOR_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    peer = render.operator_peer("raft-exchange")
    assert peer["podSelector"]["matchLabels"] == names.operator_selector_labels()


def test_the_example_cluster_gets_random_api_keys_from_a_secret() -> None:
    import base64

    values = {"exampleCluster": {"enabled": True, "name": "demo"}}
    objects = generate.render_chart(values, namespace="trading")
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    (cluster,) = [o for o in objects if o["kind"] == names.KIND]
    assert cluster["spec"]["apiKeysSecretRef"] == {"name": secret["metadata"]["name"]}
    lines = base64.b64decode(secret["data"]["api-keys"]).decode().splitlines()
    assert [line.split("=", 1)[1] for line in lines] == ["trader-1", "trader-2"]
    assert all(len(line.split("=", 1)[0]) == 40 for line in lines)
    again = [o for o in generate.render_chart(values, namespace="trading") if o["kind"] == "Secret"]
    assert again[0]["data"] != secret["data"]  # random on install, never from the repository
    assert validation.errors(secret) == []
    # k8s/ names the Secret and ships none.
    k8s_objects = generate.render_chart(generate.K8S_VALUES)
    assert not [o for o in k8s_objects if o["kind"] == "Secret"]

"""Every object the project produces, validated offline (level 3 of proof).

Built-in kinds against the real Kubernetes 1.31 OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail); ExchangeClusters against
the CRD's own schema and CEL rules; ServiceMonitor and PrometheusRule against
their API's schema.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import manifest_validation as validation
import pytest
import yaml
from exchange_node.security import certs
from exchange_operator import certificates, crd, monitoring, render
from exchange_operator.spec import ClusterRef, parse_spec

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ClusterRef(name="xc", namespace="trading", uid="6f1d3a8e-0c55-4c8e-8a57-0b1c1e5b4b0a")

SPECS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "single": {"replicas": 1, "scheduling": {"antiAffinity": "none"}},
    "five-full": {
        "replicas": 5,
        "image": "registry.example.com/exchange@sha256:0123456789abcdef",
        "imagePullPolicy": "Always",
        "resources": {"requests": {"cpu": 1, "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "storage": {
            "size": "20Gi",
            "storageClassName": "fast-ssd",
            "retention": {"whenDeleted": "Delete", "whenScaled": "Retain"},
        },
        "symbols": [
            {"name": "AAPL", "tickSize": 1, "lotSize": 1, "priceBandBps": 500, "referencePrice": 19000},
            {"name": "MSFT", "tickSize": 1, "lotSize": 10},
        ],
        "risk": {"maxOrderQty": 1000, "maxNotional": 10_000_000, "maxPosition": 50_000},
        "snapshotThreshold": 50_000,
        "electionMs": 1500,
        "heartbeatMs": 150,
        "apiKeysSecretRef": {"name": "exchange-keys", "key": "keys.txt"},
        "tracing": {"otlpEndpoint": "http://otel-collector.observability:4317"},
        "monitoring": {"serviceMonitor": True, "prometheusRule": True, "dashboards": True},
        "scheduling": {
            "antiAffinity": "required",
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "exchange", "effect": "NoSchedule"}],
            "nodeSelector": {"node.kubernetes.io/instance-type": "m6i.large"},
            "topologySpread": {"topologyKey": "topology.kubernetes.io/zone", "maxSkew": 1},
        },
        "clusterId": "prod-eu-1",
    },
    "seven-paused": {"replicas": 7, "paused": True, "scheduling": {"topologySpread": {"whenUnsatisfiable": "DoNotSchedule"}}},
    "secured": {
        "tls": {"issuerRef": {"name": "exchange-ca", "kind": "ClusterIssuer"}, "certificateDays": 30, "caDays": 365},
        "network": {
            "clientFrom": [
                {"namespaceSelector": {"matchLabels": {"team": "desk"}}, "podSelector": {"matchLabels": {"app": "gw"}}},
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
            ],
            "monitoringFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "obs"}}}],
            "restrictEgress": True,
        },
        "tracing": {"otlpEndpoint": "otel-collector.obs:4317"},
    },
}  # fmt: skip


def rendered(raw: dict[str, Any], bootstrapped: bool) -> list[dict[str, Any]]:
    spec = parse_spec(raw)
    state = render.RenderState(
        statefulset_replicas=spec.replicas,
        bootstrap_replicas=3,
        bootstrapped=bootstrapped,
        claim_size="5Gi" if bootstrapped else None,
    )
    objs = render.core_children(CLUSTER, spec, state)
    objs.append(render.admin_secret(CLUSTER, "s3cret"))
    objs += [monitoring.service_monitor(CLUSTER), monitoring.prometheus_rule(CLUSTER)]
    objs += [monitoring.dashboard_config_map(CLUSTER, d) for d in monitoring.DASHBOARDS]
    objs += [
        certificates.ca_secret(CLUSTER, _CA),
        certificates.server_secret(CLUSTER, _CA, spec.tls.cert_days),
    ]
    return objs


_CA = certs.generate_ca("manifest test CA", valid_days=30)


def test_kube_version_is_pinned() -> None:
    assert validation.KUBE_VERSION == "1.31"


@pytest.mark.parametrize("bootstrapped", [False, True])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_operator_renderings_are_valid(name: str, bootstrapped: bool) -> None:
    # The spec itself is a valid ExchangeCluster...
    cr = {"apiVersion": "exchange.raft-exchange.dev/v1alpha1", "kind": "ExchangeCluster",
          "metadata": {"name": "xc", "namespace": "trading"}, "spec": SPECS[name]}  # fmt: skip
    assert validation.errors(cr) == []
    # ... and so is everything rendered from it.
    for obj in rendered(SPECS[name], bootstrapped):
        assert validation.errors(obj) == [], obj["kind"]


def test_validation_catches_a_broken_rendering() -> None:
    (sts,) = [o for o in rendered({}, False) if o["kind"] == "StatefulSet"]
    assert sts["kind"] == "StatefulSet"
    broken = copy.deepcopy(sts)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {
        "x": 1
    }
    assert validation.errors(broken)
    typo = copy.deepcopy(sts)
    typo["spec"]["updateStrategy"]["typ"] = "OnDelete"
    assert validation.errors(typo)
    rule = copy.deepcopy(monitoring.prometheus_rule(CLUSTER))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "soon"
    assert validation.errors(rule)
    bad_cr = {"apiVersion": "exchange.raft-exchange.dev/v1alpha1", "kind": "ExchangeCluster",
              "metadata": {"name": "xc"}, "spec": {"replicas": 4}}  # fmt: skip
    assert validation.errors(bad_cr)


def test_crd_is_valid() -> None:
    assert validation.errors(crd.build_crd()) == []


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


K8S_FILES = sorted((ROOT / "k8s").glob("*.yaml"))
CHAOS_FILES = sorted((ROOT / "chaos-experiments").glob("**/*.yaml"))


@pytest.mark.parametrize("path", K8S_FILES + CHAOS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_manifests_are_valid(path: Path) -> None:
    docs = _yaml_docs(path)
    assert docs, path
    for doc in docs:
        assert validation.errors(doc) == [], (path.name, doc["kind"])


def test_manifest_sets_are_complete() -> None:
    kinds = {d["kind"] for p in K8S_FILES for d in _yaml_docs(p)}
    assert {
        "Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
        "ClusterRoleBinding", "Deployment", "ConfigMap", "ExchangeCluster",
    } <= kinds  # fmt: skip
    chaos = {(p.name, d["kind"]) for p in CHAOS_FILES for d in _yaml_docs(p)}
    for experiment in ("pod-delete-leader", "network-partition-leader"):
        for form in ("", ".chaos-mesh"):
            for kind in ("ServiceAccount", "Role", "RoleBinding", "Job"):
                assert (f"{experiment}{form}.yaml", kind) in chaos
    assert ("pod-kill-leader.yaml", "PodChaos") in chaos
    assert ("partition-leader.yaml", "NetworkChaos") in chaos


# Each experiment Job: (scenario, via, the Role's rules as (group, resource) -> verbs).
XC_GET = {("exchange.raft-exchange.dev", "exchangeclusters"): {"get"}}
EXPERIMENTS = {
    "pod-delete-leader.yaml": (
        "node-failure", "kubernetes", {("", "pods"): {"get", "list", "delete"}, **XC_GET}),
    "pod-delete-leader.chaos-mesh.yaml": (
        "node-failure", "chaos-mesh", {("chaos-mesh.org", "podchaos"): {"create", "get", "delete"},
                                       ("", "pods"): {"get", "list"}, **XC_GET}),
    "network-partition-leader.yaml": (
        "network-partition", "kubernetes",
        {("networking.k8s.io", "networkpolicies"): {"list", "create", "delete"},
         ("", "pods"): {"get", "list"}, **XC_GET}),
    "network-partition-leader.chaos-mesh.yaml": (
        "network-partition", "chaos-mesh",
        {("chaos-mesh.org", "networkchaos"): {"create", "get", "delete"},
         ("", "pods"): {"get", "list"}, **XC_GET}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_jobs_run_the_project_image_with_least_privilege(name: str) -> None:
    scenario, via, expected_rules = EXPERIMENTS[name]
    docs = {d["kind"]: d for d in _yaml_docs(ROOT / "chaos-experiments" / name)}
    job, role, binding = docs["Job"], docs["Role"], docs["RoleBinding"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The project's own image (as in k8s/), never a third-party one that may vanish.
    assert container["image"] == "ghcr.io/raft-exchange/exchange:0.1.0"
    script = " ".join(container["command"] + container["args"])
    assert f"exchange chaos run {scenario} --target kubernetes" in script
    for option in ("namespace=raft-exchange", "cluster_name=demo", f"via={via}"):
        assert f"--target-option {option}" in script
    assert "exit $status" in script  # the Job fails when a check fails
    rules = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules == expected_rules
    assert pod["serviceAccountName"] == role["metadata"]["name"] == binding["roleRef"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "raft-exchange"}
    ]
    # Only the CA of the HTTP server Secret is mounted, not its key.
    (tls,) = [v for v in pod["volumes"] if v["name"] == "http-tls"]
    assert tls["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


def test_no_chaos_manifest_names_another_image() -> None:
    images = {
        c["image"]
        for p in CHAOS_FILES
        for d in _yaml_docs(p)
        if d["kind"] == "Job"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"ghcr.io/raft-exchange/exchange:0.1.0"}


def test_chaos_mesh_validation_catches_a_broken_resource() -> None:
    (chaos,) = _yaml_docs(ROOT / "chaos-experiments" / "chaos-mesh" / "partition-leader.yaml")
    assert validation.errors(chaos) == []
    for path, bad in [
        (("spec", "direction"), "bidirectional"),
        (("spec", "action"), "cut"),
        (("spec", "duration"), "30 seconds"),
        (("spec", "mode"), "every"),
        (("spec", "targets"), {}),
    ]:
        broken = copy.deepcopy(chaos)
        broken[path[0]][path[1]] = bad
        assert validation.errors(broken), path
    unknown = copy.deepcopy(chaos)
    unknown["kind"] = "KernelChaos"
    assert validation.errors(unknown)

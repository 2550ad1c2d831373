"""Unit tests of the pure renderers: every child, labels, owners, security, quorum."""

from __future__ import annotations

from typing import Any

import pss_restricted
import pytest
import yaml
from exchange_operator import monitoring, names, render
from exchange_operator.spec import ClusterRef, parse_spec

CLUSTER = ClusterRef(name="xc1", namespace="trading", uid="0b7e6c1e-4c1d-4f0e-9a43-7f6f1c2d9e10")


def children(raw: dict[str, Any] | None = None, **state: Any) -> list[dict[str, Any]]:
    spec = parse_spec(raw)
    rs = render.RenderState(
        statefulset_replicas=state.get("replicas", spec.replicas),
        bootstrap_replicas=state.get("bootstrap", spec.replicas),
        bootstrapped=state.get("bootstrapped", False),
    )
    objs = render.core_children(CLUSTER, spec, rs)
    objs.append(render.admin_secret(CLUSTER, "t0ken"))
    objs.append(monitoring.service_monitor(CLUSTER))
    objs.append(monitoring.prometheus_rule(CLUSTER))
    objs.extend(monitoring.dashboard_config_map(CLUSTER, d) for d in monitoring.DASHBOARDS)
    return objs


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def sts_of(raw: dict[str, Any] | None = None, **state: Any) -> dict[str, Any]:
    return by_kind(children(raw, **state), "StatefulSet")[0]


def env_of(sts: dict[str, Any]) -> dict[str, Any]:
    container = sts["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_child_has_owner_reference_and_standard_labels() -> None:
    objs = children()
    kinds = {o["kind"] for o in objs}
    assert kinds == {
        "ConfigMap", "Service", "PodDisruptionBudget", "NetworkPolicy", "StatefulSet",
        "Secret", "ServiceMonitor", "PrometheusRule",
    }  # fmt: skip
    for obj in objs:
        meta = obj["metadata"]
        assert meta["namespace"] == "trading"
        (owner,) = meta["ownerReferences"]
        assert owner == {
            "apiVersion": "exchange.raft-exchange.dev/v1alpha1",
            "kind": "ExchangeCluster",
            "name": "xc1",
            "uid": CLUSTER.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        labels = meta["labels"]
        for key in (
            names.LABEL_NAME,
            names.LABEL_INSTANCE,
            names.LABEL_COMPONENT,
            names.LABEL_PART_OF,
            names.LABEL_MANAGED_BY,
        ):
            assert labels[key], (obj["kind"], key)
        assert labels[names.LABEL_INSTANCE] == "xc1"


def test_names_are_unique_per_kind() -> None:
    objs = children()
    keys = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(("replicas", "allowed"), [(1, 0), (3, 1), (5, 2), (7, 3)])
def test_pdb_keeps_quorum(replicas: int, allowed: int) -> None:
    (pdb,) = by_kind(children({"replicas": replicas}), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == allowed
    # The members left after the allowed disruptions still form a majority.
    assert replicas - allowed >= replicas // 2 + 1
    # One more disruption would not.
    if allowed < replicas:
        assert replicas - allowed - 1 < replicas // 2 + 1
    assert pdb["spec"]["selector"]["matchLabels"] == names.selector_labels("xc1")


def test_peers_env_lists_initial_voters_with_headless_names() -> None:
    env = env_of(sts_of({"replicas": 3}))
    assert env["EXCHANGE_PEERS"] == (
        "1=xc1-0.xc1-peers.trading.svc:7070,"
        "2=xc1-1.xc1-peers.trading.svc:7070,"
        "3=xc1-2.xc1-peers.trading.svc:7070"
    )
    assert env["EXCHANGE_ADVERTISE_ADDRESS"] == "$(EXCHANGE_NAME).xc1-peers.trading.svc:7070"
    assert env["EXCHANGE_ADVERTISE_HTTP"] == "$(EXCHANGE_NAME).xc1-peers.trading.svc:8080"
    assert env["EXCHANGE_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["EXCHANGE_CLUSTER_STATE"] == "new"
    assert env["EXCHANGE_HTTP_PORT"] == "8080"
    assert env["EXCHANGE_GRPC_PORT"] == "7070"
    assert env["EXCHANGE_DATA_DIR"] == "/var/lib/exchange"
    assert env["EXCHANGE_CONFIG"] == "/etc/exchange/config/exchange.yaml"
    assert env["EXCHANGE_ADMIN_TOKEN"]["secretKeyRef"] == {"name": "xc1-admin", "key": "token"}
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    assert env["OTEL_SERVICE_NAME"] == "raft-exchange"


def test_peers_stay_the_bootstrap_set_and_state_flips_after_bootstrap() -> None:
    env = env_of(sts_of({"replicas": 5}, replicas=4, bootstrap=3, bootstrapped=True))
    assert env["EXCHANGE_PEERS"].count("=") == 3
    assert env["EXCHANGE_CLUSTER_STATE"] == "existing"


def test_cluster_state_flip_does_not_change_restart_hash() -> None:
    new = sts_of(bootstrapped=False)["spec"]["template"]
    existing = sts_of(bootstrapped=True)["spec"]["template"]
    key = names.ANNOTATION_RESTART_HASH
    assert new["metadata"]["annotations"][key] == existing["metadata"]["annotations"][key]
    upgraded = sts_of({"image": "ghcr.io/raft-exchange/exchange:0.2.0"})["spec"]["template"]
    assert upgraded["metadata"]["annotations"][key] != new["metadata"]["annotations"][key]
    symbols = sts_of({"symbols": [{"name": "SOL-USD", "tickSize": 1, "lotSize": 1}]})
    assert (
        symbols["spec"]["template"]["metadata"]["annotations"][key]
        != (new["metadata"]["annotations"][key])
    )


def test_tracing_and_api_keys() -> None:
    sts = sts_of(
        {
            "tracing": {"otlpEndpoint": "http://otel:4317"},
            "apiKeysSecretRef": {"name": "keys", "key": "k"},
        }
    )
    env = env_of(sts)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4317"
    assert env["EXCHANGE_API_KEYS_FILE"] == "/etc/exchange/api-keys/k"
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "keys"


def test_statefulset_shape() -> None:
    sts = sts_of({"storage": {"size": "5Gi", "storageClassName": "fast"}}, replicas=3)
    spec = sts["spec"]
    assert spec["serviceName"] == "xc1-peers"
    assert spec["updateStrategy"] == {"type": "OnDelete"}
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Delete",
    }
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert spec["selector"]["matchLabels"] == names.selector_labels("xc1")
    template_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= template_labels.items()
    container = spec["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {
        "/var/lib/exchange": "data",
        "/etc/exchange/config": "config",
        "/tmp": "tmp",
        "/etc/exchange/http-tls": "http-tls",
    }
    assert {p["containerPort"] for p in container["ports"]} == {8080, 8081, 7070}


def test_claim_template_keeps_existing_size() -> None:
    spec = parse_spec({"storage": {"size": "10Gi"}})
    state = render.RenderState(statefulset_replicas=3, bootstrap_replicas=3, claim_size="5Gi")
    sts = render.stateful_set(CLUSTER, spec, state)
    size = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert size == "5Gi"


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {"replicas": 7, "apiKeysSecretRef": {"name": "k"}},
        {"scheduling": {"antiAffinity": "required", "topologySpread": {}}},
        {"scheduling": {"antiAffinity": "none", "tolerations": [{"operator": "Exists"}]}},
    ],
)
def test_pod_meets_restricted_pod_security_standard(raw: dict[str, Any] | None) -> None:
    pod_spec = sts_of(raw)["spec"]["template"]["spec"]
    assert pss_restricted.violations(pod_spec) == []
    container = pod_spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_restricted_checks_catch_violations() -> None:
    pod_spec = sts_of()["spec"]["template"]["spec"]
    bad = yaml.safe_load(yaml.safe_dump(pod_spec))
    ctx = bad["containers"][0]["securityContext"]
    ctx["allowPrivilegeEscalation"] = True
    ctx["capabilities"] = {"add": ["NET_ADMIN"]}
    ctx["runAsNonRoot"] = False
    del ctx["seccompProfile"]
    del bad["securityContext"]["seccompProfile"]
    bad["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    bad["hostNetwork"] = True
    found = " | ".join(pss_restricted.violations(bad))
    for fragment in (
        "allowPrivilegeEscalation",
        "drop ALL",
        "NET_BIND_SERVICE",
        "runAsNonRoot",
        "seccompProfile",
        "hostPath",
        "hostNetwork",
    ):
        assert fragment in found


def test_anti_affinity_modes() -> None:
    preferred = sts_of()["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in preferred
    required = sts_of({"scheduling": {"antiAffinity": "required"}})["spec"]["template"]["spec"]
    assert (
        "requiredDuringSchedulingIgnoredDuringExecution" in required["affinity"]["podAntiAffinity"]
    )
    none = sts_of({"scheduling": {"antiAffinity": "none"}})["spec"]["template"]["spec"]
    assert "affinity" not in none


def test_services() -> None:
    objs = {o["metadata"]["name"]: o for o in by_kind(children(), "Service")}
    peers = objs["xc1-peers"]["spec"]
    assert peers["clusterIP"] == "None"
    assert peers["publishNotReadyAddresses"] is True
    assert {p["port"] for p in peers["ports"]} == {8080, 7070}
    client = objs["xc1"]["spec"]
    assert [p["port"] for p in client["ports"]] == [8080]
    leader = objs["xc1-leader"]["spec"]
    assert leader["selector"]["role"] == "leader"


def test_network_policy_admits_peer_port_only_from_members() -> None:
    policies = {p["metadata"]["name"]: p for p in by_kind(children(), "NetworkPolicy")}
    policy = policies["xc1-peers"]["spec"]
    rules = policy["ingress"]
    grpc = [r for r in rules if {"protocol": "TCP", "port": 7070} in r["ports"]]
    assert len(grpc) == 1
    assert grpc[0]["from"] == [{"podSelector": {"matchLabels": names.selector_labels("xc1")}}]
    assert policy["podSelector"]["matchLabels"] == names.selector_labels("xc1")
    # Every rule names its sources (tests/operator/test_security_render.py: the rest).
    assert all(r.get("from") for r in rules)


def test_config_map_follows_node_contract() -> None:
    (cm,) = [o for o in by_kind(children(), "ConfigMap") if o["metadata"]["name"] == "xc1-config"]
    config = yaml.safe_load(cm["data"]["exchange.yaml"])
    assert config["symbols"][0] == {
        "name": "BTC-USD",
        "tick_size": 1,
        "lot_size": 1,
        "price_band_bps": 1000,
        "reference_price": 50000,
    }
    assert set(config["risk"]) == {"max_order_qty", "max_notional", "max_position"}


def test_dashboards_are_labelled_for_grafana() -> None:
    dashboards = [
        o for o in by_kind(children(), "ConfigMap") if "dashboard" in o["metadata"]["name"]
    ]
    assert len(dashboards) == 3
    for cm in dashboards:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_service_monitor_selects_only_the_peers_service() -> None:
    objs = children()
    (sm,) = by_kind(objs, "ServiceMonitor")
    match = sm["spec"]["selector"]["matchLabels"]
    selected = [
        s["metadata"]["name"]
        for s in by_kind(objs, "Service")
        if match.items() <= s["metadata"]["labels"].items()
    ]
    assert selected == ["xc1-peers"]


def test_version_label_from_image() -> None:
    assert names.image_version("ghcr.io/raft-exchange/exchange:0.2.0") == "0.2.0"
    assert names.image_version("localhost:5000/exchange") == "latest"
    assert names.image_version("exchange@sha256:abcdef0123456789") == "abcdef012345"


def test_a_changed_api_keys_secret_changes_the_restart_hash() -> None:
    from exchange_operator import names as n

    cluster = ClusterRef(name="xc", namespace="ns", uid="u")
    spec = parse_spec({"apiKeysSecretRef": {"name": "keys"}})
    hashes = []
    for keys_hash in ("aaaa", "bbbb"):
        state = render.RenderState(
            statefulset_replicas=3, bootstrap_replicas=3, api_keys_hash=keys_hash
        )
        annotations = render.pod_template(cluster, spec, state)["metadata"]["annotations"]
        assert annotations[n.ANNOTATION_API_KEYS_HASH] == keys_hash
        hashes.append(annotations[n.ANNOTATION_RESTART_HASH])
    assert hashes[0] != hashes[1]  # the operator rolls the pods, one at a time


def test_expose_renders_the_service_type_and_an_ingress() -> None:
    import manifest_validation

    cluster = ClusterRef(name="xc", namespace="ns", uid="u")
    spec = parse_spec(
        {
            "expose": {
                "serviceType": "LoadBalancer",
                "serviceAnnotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
                "loadBalancerSourceRanges": ["10.0.0.0/8"],
                "ingress": {
                    "host": "exchange.example.com",
                    "className": "nginx",
                    "tlsSecretName": "exchange-tls",
                    "annotations": {"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"},
                },
            }
        }
    )
    service = render.client_service(cluster, spec)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    ingress = render.ingress(cluster, spec)
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "exchange.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "xc"
    assert ingress["spec"]["tls"][0]["secretName"] == "exchange-tls"
    for obj in (service, ingress):
        assert manifest_validation.errors(obj) == [], obj
    plain = render.client_service(cluster, parse_spec({}))
    assert plain["spec"]["type"] == "ClusterIP" and "annotations" not in plain["metadata"]


def test_a_scheduled_backup_is_a_restricted_cronjob_the_admin_port_admits() -> None:
    import manifest_validation

    cluster = ClusterRef(name="xc", namespace="ns", uid="u")
    spec = parse_spec(
        {
            "backup": {
                "schedule": "0 */6 * * *",
                "s3": {
                    "url": "s3://backups/xc",
                    "endpointUrl": "http://minio:9000",
                    "credentialsSecretRef": {"name": "s3-creds"},
                },
            }
        }
    )
    state = render.RenderState(statefulset_replicas=3, bootstrap_replicas=3)
    job = render.backup_cronjob(cluster, spec, state)
    assert manifest_validation.errors(job) == []
    pod = job["spec"]["jobTemplate"]["spec"]["template"]
    assert pss_restricted.violations(pod["spec"]) == []
    args = pod["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--admin=")] == [
        f"--admin=https://xc-{i}.xc-peers.ns.svc:8081" for i in range(3)
    ]
    assert "--store=s3://backups/xc" in args and "--endpoint-url=http://minio:9000" in args
    assert pod["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    # Not a member: no Service, PDB or member policy selects it; the admin port admits it.
    assert not names.selector_labels("xc").items() <= pod["metadata"]["labels"].items()
    policy = render.network_policy(cluster, spec, state)
    (admin_rule,) = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8081]
    assert {"podSelector": {"matchLabels": render.backup_labels("xc")}} in admin_rule["from"]
    without = render.network_policy(cluster, parse_spec({}), state)
    (admin_rule,) = [r for r in without["spec"]["ingress"] if r["ports"][0]["port"] == 8081]
    assert len(admin_rule["from"]) == 1
    pvc = parse_spec({"backup": {"schedule": "@daily", "pvc": {"claimName": "backups"}}})
    volumes = render.backup_cronjob(cluster, pvc, state)["spec"]["jobTemplate"]["spec"]["template"][
        "spec"
    ]["volumes"]
    assert {"name": "store", "persistentVolumeClaim": {"claimName": "backups"}} in volumes


def test_restore_from_adds_an_init_container_for_the_initial_members() -> None:
    import manifest_validation

    cluster = ClusterRef(name="xc", namespace="ns", uid="u")
    spec = parse_spec(
        {"restoreFrom": {"cluster": "prod", "pvc": {"claimName": "backups"}, "index": 42}}
    )
    state = render.RenderState(statefulset_replicas=3, bootstrap_replicas=3)
    sts = render.stateful_set(cluster, spec, state)
    assert manifest_validation.errors(sts) == []
    pod = sts["spec"]["template"]["spec"]
    assert pss_restricted.violations(pod) == []
    (init,) = pod["initContainers"]
    args = init["args"]
    assert "--pod-name=$(POD_NAME)" in args and "--if-empty" in args and "--index=42" in args
    assert [a for a in args if a.startswith("--member=")] == [
        f"--member={i + 1}=xc-{i},xc-{i}.xc-peers.ns.svc:7070,xc-{i}.xc-peers.ns.svc:8080"
        for i in range(3)
    ]
    assert {"name": "data", "mountPath": names.DATA_DIR} in init["volumeMounts"]
    claim = {"claimName": "backups", "readOnly": True}
    assert {"name": "restore-store", "persistentVolumeClaim": claim} in pod["volumes"]
    plain = render.stateful_set(cluster, parse_spec({}), state)["spec"]["template"]["spec"]
    assert "initContainers" not in plain

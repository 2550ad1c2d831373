"""Least privilege and certificates, as rendered: NetworkPolicies, the pod's TLS wiring,
the cluster id, certificate (re)issue decisions on a fake clock, cert-manager objects."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import manifest_validation as validation
import pytest
from cryptography import x509
from exchange_node.security import certs
from exchange_operator import certificates, names, render
from exchange_operator.observed import Member, MemberCertificate, NodeStatus, Observed, PodState
from exchange_operator.spec import ClusterRef, parse_spec

CLUSTER = ClusterRef(name="xc1", namespace="trading", uid="0b7e6c1e-4c1d-4f0e-9a43-7f6f1c2d9e10")
MEMBERS = {"podSelector": {"matchLabels": names.selector_labels("xc1")}}
DAY = datetime.timedelta(days=1)
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def policies(raw: dict[str, Any] | None = None, operator_ns: str | None = "ops") -> dict[str, Any]:
    spec = parse_spec(raw)
    state = render.RenderState(spec.replicas, spec.replicas, operator_namespace=operator_ns)
    return {p["metadata"]["name"]: p for p in render.network_policies(CLUSTER, spec, state)}


def by_port(policy: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            out.setdefault(port["port"], []).extend(rule["from"])
    return out


# --- NetworkPolicy ----------------------------------------------------------------------


def test_default_deny_in_and_with_restrict_egress_out() -> None:
    deny = policies()["xc1-default-deny"]["spec"]
    assert deny == {
        "podSelector": {"matchLabels": names.selector_labels("xc1")},
        "policyTypes": ["Ingress"],
    }
    # Egress stays open by default: an egress allow would defeat policy partitions.
    assert "egress" not in policies()["xc1-peers"]["spec"]
    strict = policies({"network": {"restrictEgress": True}})
    assert strict["xc1-default-deny"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert strict["xc1-peers"]["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_each_port_admits_only_its_sources() -> None:
    allow = policies()["xc1-peers"]
    ports = by_port(allow)
    assert set(ports) == {names.GRPC_PORT, names.HTTP_PORT, names.ADMIN_PORT}
    assert ports[names.GRPC_PORT] == [MEMBERS]
    # HTTP: members (forwarded writes), this namespace's pods, the monitoring namespace.
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    assert ports[names.HTTP_PORT] == [MEMBERS, {"podSelector": {}}, monitoring]
    # Admin: the operator's pods in the operator's namespace, nobody else.
    assert ports[names.ADMIN_PORT] == [
        {
            "podSelector": {"matchLabels": names.operator_selector_labels()},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}},
        }
    ]
    assert validation.errors(allow) == []


def test_client_and_monitoring_sources_come_from_the_spec() -> None:
    clients = [{"namespaceSelector": {"matchLabels": {"team": "trading-desk"}}}]
    prom = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}
    ]
    allow = policies({"network": {"clientFrom": clients, "monitoringFrom": prom}})["xc1-peers"]
    assert by_port(allow)[names.HTTP_PORT] == [MEMBERS, *clients, *prom]
    assert validation.errors(allow) == []
    assert policies({"network": {"policy": False}}) == {}


def test_egress_is_dns_members_and_the_collector() -> None:
    strict = {"restrictEgress": True}
    raw = {"network": strict, "tracing": {"otlpEndpoint": "http://otel.obs:4318"}}
    egress = policies(raw)["xc1-peers"]["spec"]["egress"]
    ports = [sorted((p["protocol"], p["port"]) for p in rule["ports"]) for rule in egress]
    assert ports == [
        [("TCP", 53), ("UDP", 53)],
        [("TCP", names.GRPC_PORT), ("TCP", names.HTTP_PORT)],
        [("TCP", 4318)],
    ]
    assert egress[1]["to"] == [MEMBERS]
    assert len(policies({"network": strict})["xc1-peers"]["spec"]["egress"]) == 2  # no collector


# --- the pod ------------------------------------------------------------------------------


def pod(raw: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = parse_spec(raw)
    return render.pod_template(CLUSTER, spec, render.RenderState.initial(spec))["spec"]


def test_pod_gets_cluster_id_admin_port_and_its_own_certificate_paths() -> None:
    container = pod()["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["EXCHANGE_CLUSTER_ID"] == "xc1-trading"
    assert env["EXCHANGE_ADMIN_PORT"] == "8081"
    assert env["POD_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    # The node makes its member key itself; only the CA is given to it.
    assert env["EXCHANGE_PEER_TLS_ENROLL"] == "true"
    assert env["EXCHANGE_PEER_TLS_CA"] == "/etc/exchange/http-tls/ca.crt"
    assert "EXCHANGE_PEER_TLS_CERT" not in env and "EXCHANGE_PEER_TLS_KEY" not in env
    assert env["EXCHANGE_HTTP_TLS_CERT"] == "/etc/exchange/http-tls/tls.crt"
    assert "EXCHANGE_INSECURE_PEERS" not in env
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["admin"] == 8081
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    explicit = {
        e["name"]: e.get("value") for e in pod({"clusterId": "prod-eu-1"})["containers"][0]["env"]
    }
    assert explicit["EXCHANGE_CLUSTER_ID"] == "prod-eu-1"


def test_no_member_secret_is_mounted() -> None:
    volumes = {v["name"]: v for v in pod()["volumes"]}
    mounted = {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}
    assert mounted == {"xc1-http-tls"}
    assert not any("projected" in v for v in volumes.values())
    # Scaling does not change the pod template (no restart of running members).
    three = render.pod_template(CLUSTER, parse_spec({}), render.RenderState(3, 3))
    five = render.pod_template(CLUSTER, parse_spec({"replicas": 5}), render.RenderState(5, 3))
    assert three["spec"]["volumes"] == five["spec"]["volumes"]


def test_client_service_never_exposes_the_admin_port() -> None:
    for service in (render.client_service(CLUSTER), render.leader_service(CLUSTER)):
        assert [p["port"] for p in service["spec"]["ports"]] == [names.HTTP_PORT]
    assert names.ADMIN_PORT not in [
        p["port"] for p in render.peers_service(CLUSTER)["spec"]["ports"]
    ]


@pytest.mark.parametrize(
    ("name", "namespace", "explicit"),
    [
        ("xc", "trading", None),
        ("a" * 40, "b" * 40, None),
        ("x", "y", "prod-eu-1"),
        ("x", "y", "a.b"),
    ],
)
def test_cluster_id_is_a_stable_dns_label(name: str, namespace: str, explicit: str | None) -> None:
    cluster_id = names.raft_cluster_id(name, namespace, explicit)
    assert certs.validate_cluster_id(cluster_id) == cluster_id
    assert cluster_id == names.raft_cluster_id(name, namespace, explicit)
    if explicit == "prod-eu-1":
        assert cluster_id == "prod-eu-1"
    if len(name) == 40:
        assert cluster_id != names.raft_cluster_id(name, "c" * 40)  # the hash keeps them apart


# --- (re)issue on a fake clock --------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> certs.CertKeyPair:
    return certs.generate_ca("test cluster CA", valid_days=3650)


def member(
    ca: certs.CertKeyPair, node_id: int = 2, now: datetime.datetime = T0
) -> MemberCertificate:
    """What an enrolled node reports: the certificate signed from its CSR."""
    csr = certs.member_csr(certs.new_private_key_pem(), "xc1-trading", node_id)
    pem = certs.issue_member_cert_from_csr(ca, csr, "xc1-trading", node_id, 90, now)
    return MemberCertificate(certificate_pem=pem)


def test_rotation_starts_with_a_third_of_the_lifetime_left(ca: certs.CertKeyPair) -> None:
    assert certificates.rotation_due(T0, T0 + 90 * DAY) == T0 + 60 * DAY
    node = member(ca)
    pem = ca.cert_pem
    assert certificates.enrollment_reason(node, 2, "xc1-trading", pem, T0) is None
    assert certificates.enrollment_reason(node, 2, "xc1-trading", pem, T0 + 59 * DAY) is None
    assert certificates.enrollment_reason(node, 2, "xc1-trading", pem, T0 + 60 * DAY) == "expiring"
    assert certificates.enrollment_reason(node, 2, "xc1-trading", pem, T0 + 91 * DAY) == "expiring"


def test_resign_when_missing_another_member_or_another_ca(ca: certs.CertKeyPair) -> None:
    node = member(ca)
    pem = ca.cert_pem
    waiting = MemberCertificate(certificate_pem=None, problem="no member key yet")
    assert certificates.enrollment_reason(waiting, 2, "xc1-trading", pem, T0) == "no member key yet"
    assert "identity" in str(certificates.enrollment_reason(node, 7, "xc1-trading", pem, T0))
    assert "identity" in str(certificates.enrollment_reason(node, 2, "other", pem, T0))
    other = certs.generate_ca("another CA", valid_days=10)
    assert certificates.enrollment_reason(node, 2, "xc1-trading", other.cert_pem, T0) == (
        "another CA"
    )
    # While the CA is replaced the bundle holds both: a certificate of either is good.
    bundle = other.cert_pem + pem
    assert certificates.enrollment_reason(node, 2, "xc1-trading", bundle, T0) is None
    garbled = MemberCertificate(certificate_pem=b"-----BEGIN CERTIFICATE-----\nAA\n")
    assert certificates.enrollment_reason(garbled, 2, "xc1-trading", pem, T0) == "unreadable"


def test_a_certificate_from_an_intermediate_ca_in_its_chain_is_good() -> None:
    """An Issuer may sign with an intermediate CA: the node reports leaf + intermediate."""
    root = certs.generate_ca("root", path_length=1)
    intermediate = certs.generate_ca("intermediate", 30, issuer=root)
    csr = certs.member_csr(certs.new_private_key_pem(), "xc1-trading", 2)
    leaf = certs.issue_member_cert_from_csr(intermediate, csr, "xc1-trading", 2, 90, T0)
    with_chain = MemberCertificate(certificate_pem=leaf + intermediate.cert_pem)
    assert certificates.enrollment_reason(with_chain, 2, "xc1-trading", root.cert_pem, T0) is None
    bare = MemberCertificate(certificate_pem=leaf)
    assert certificates.enrollment_reason(bare, 2, "xc1-trading", root.cert_pem, T0) == (
        "another CA"
    )


def test_status_shows_the_earliest_expiry(ca: certs.CertKeyPair) -> None:
    late, early = member(ca), member(ca, now=T0 - 5 * DAY)
    server = certificates.server_secret(CLUSTER, ca, 365, T0)
    assert certificates.earliest_not_after(
        [server], [late.certificate_pem or b"", early.certificate_pem or b""]
    ) == (T0 - 5 * DAY + 90 * DAY)


def _observed(*pods: tuple[int, int], leader_members: tuple[Member, ...] = ()) -> Observed:
    states = [
        PodState(
            name=f"xc1-{ordinal}",
            ordinal=ordinal,
            node=NodeStatus(
                node_id=node_id,
                name=f"xc1-{ordinal}",
                role="leader" if i == 0 else "follower",
                term=1,
                leader=pods[0][1],
                commit_index=1,
                applied_index=1,
                members=leader_members if i == 0 else (),
            ),
        )
        for i, (ordinal, node_id) in enumerate(pods)
    ]
    return Observed(statefulset_replicas=len(pods), pods=tuple(states))


def test_no_certificate_for_an_id_another_pod_holds() -> None:
    """A pod reports its own id; a compromised one claiming another's gets nothing."""
    config = tuple(Member(i + 1, names.peer_address("xc1", i, "trading"), True) for i in range(3))
    fine = _observed((0, 1), (1, 2), (2, 3), leader_members=config)
    assert certificates.signing_refusal(fine, "xc1", 2, 3) is None
    # Pod 2 claims member 2, which pod 1 reports.
    clash = _observed((0, 1), (1, 2), (2, 2), leader_members=config)
    assert "xc1-1 also reports member id 2" in str(certificates.signing_refusal(clash, "xc1", 2, 2))
    # Pod 2 claims member 1 while pod 0 does not answer: the configuration says whose it is.
    quiet = _observed((1, 2), (2, 1), leader_members=config)
    assert "ordinal 0" in str(certificates.signing_refusal(quiet, "xc1", 2, 1))
    # A new pod's fresh id, not in the configuration yet, is signed.
    assert certificates.signing_refusal(fine, "xc1", 3, 98765) is None


def test_server_certificate_names_every_way_to_reach_a_node(ca: certs.CertKeyPair) -> None:
    secret = certificates.server_secret(CLUSTER, ca, 90, T0)
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names_in = set(dns.get_values_for_type(x509.DNSName))
    assert {"xc1.trading.svc", "xc1-leader.trading.svc", "*.xc1-peers.trading.svc"} <= names_in
    assert certificates.server_reissue_reason(secret, ca.cert_pem, T0 + 59 * DAY) is None
    assert certificates.server_reissue_reason(secret, ca.cert_pem, T0 + 60 * DAY) == "expiring"


# --- cert-manager --------------------------------------------------------------------------


def test_cert_manager_requests_carry_the_nodes_csr() -> None:
    spec = parse_spec({"tls": {"issuerRef": {"name": "exchange-ca", "kind": "ClusterIssuer"}}})
    key = certs.new_private_key_pem()
    csr = certs.member_csr(key, "xc1-trading", 3)
    request = certificates.certificate_request(CLUSTER, spec, 2, 3, csr)
    assert request["apiVersion"] == "cert-manager.io/v1"
    assert request["kind"] == "CertificateRequest"
    body = request["spec"]
    assert base64.b64decode(body["request"]) == csr
    assert body["issuerRef"] == {
        "name": "exchange-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert body["duration"] == "2160h" and body["isCA"] is False
    assert {"server auth", "client auth"} <= set(body["usages"])
    # One request per member key: another CSR of the same key finds the same request.
    again = certs.member_csr(key, "xc1-trading", 3)
    name = request["metadata"]["name"]
    assert name.startswith("xc1-member-2-")
    assert certificates.certificate_request_name(CLUSTER, 2, again) == name
    other = certs.member_csr(certs.new_private_key_pem(), "xc1-trading", 3)
    assert certificates.certificate_request_name(CLUSTER, 2, other) != name
    server = certificates.server_certificate(CLUSTER, spec)["spec"]
    assert server["secretName"] == "xc1-http-tls" and "client auth" not in server["usages"]


def test_a_request_is_pending_signed_or_refused() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\n"
    encoded = base64.b64encode(pem).decode()
    assert certificates.request_outcome({}) == (None, None)
    assert certificates.request_outcome({"status": {"certificate": encoded}}) == (pem, None)
    denied = {"status": {"conditions": [{"type": "Denied", "status": "True", "message": "no"}]}}
    assert certificates.request_outcome(denied) == (None, "denied: no")
    failed = {
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "Failed", "message": "bad"}
            ]
        }
    }
    assert certificates.request_outcome(failed) == (None, "failed: bad")
    pending = {
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending"}]}
    }
    assert certificates.request_outcome(pending) == (None, None)

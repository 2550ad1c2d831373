"""Least privilege and certificates, as rendered: NetworkPolicies, the pod's TLS wiring,
the cluster id, certificate (re)issue decisions on a fake clock, cert-manager objects."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import manifest_validation as validation
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from exchange_node.security import certs
from exchange_operator import certificates, names, render
from exchange_operator.admin import AdminClient, AdminError
from exchange_operator.spec import MAX_REPLICAS, ClusterRef, parse_spec

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
    member = "/etc/exchange/member-tls/member-$(POD_INDEX)"
    assert env["EXCHANGE_PEER_TLS_CERT"] == f"{member}/tls.crt"
    assert env["EXCHANGE_PEER_TLS_KEY"] == f"{member}/tls.key"
    assert env["EXCHANGE_PEER_TLS_CA"] == f"{member}/ca.crt"
    assert env["EXCHANGE_HTTP_TLS_CERT"] == "/etc/exchange/http-tls/tls.crt"
    assert "EXCHANGE_INSECURE_PEERS" not in env
    # POD_INDEX is defined before the variables that expand it.
    order = [e["name"] for e in container["env"]]
    assert order.index("POD_INDEX") < order.index("EXCHANGE_PEER_TLS_CERT")
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["admin"] == 8081
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    explicit = {
        e["name"]: e.get("value") for e in pod({"clusterId": "prod-eu-1"})["containers"][0]["env"]
    }
    assert explicit["EXCHANGE_CLUSTER_ID"] == "prod-eu-1"


def test_member_secrets_are_projected_per_ordinal_and_optional() -> None:
    volumes = {v["name"]: v for v in pod()["volumes"]}
    sources = volumes["member-tls"]["projected"]["sources"]
    assert len(sources) == MAX_REPLICAS
    for ordinal, source in enumerate(sources):
        secret = source["secret"]
        assert secret["name"] == f"xc1-member-{ordinal}" and secret["optional"] is True
        assert {i["path"] for i in secret["items"]} == {
            f"member-{ordinal}/{k}" for k in ("tls.crt", "tls.key", "ca.crt")
        }
    assert volumes["http-tls"]["secret"]["secretName"] == "xc1-http-tls"
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


def member(ca: certs.CertKeyPair, node_id: int = 2, now: datetime.datetime = T0) -> dict[str, Any]:
    return certificates.member_secret(CLUSTER, 1, node_id, "xc1-trading", ca, 90, now)


def test_rotation_starts_with_a_third_of_the_lifetime_left(ca: certs.CertKeyPair) -> None:
    assert certificates.rotation_due(T0, T0 + 90 * DAY) == T0 + 60 * DAY
    secret = member(ca)
    pem = ca.cert_pem
    assert certificates.reissue_reason(secret, 2, "xc1-trading", pem, T0) is None
    assert (
        certificates.reissue_reason(secret, 2, "xc1-trading", pem, T0 + 60 * DAY - 1 * DAY) is None
    )
    assert certificates.reissue_reason(secret, 2, "xc1-trading", pem, T0 + 60 * DAY) == "expiring"
    assert certificates.reissue_reason(secret, 2, "xc1-trading", pem, T0 + 91 * DAY) == "expiring"


def test_reissue_when_missing_another_member_or_another_ca(ca: certs.CertKeyPair) -> None:
    secret = member(ca)
    pem = ca.cert_pem
    assert certificates.reissue_reason(None, 2, "xc1-trading", pem, T0) == "missing"
    assert "identity" in str(certificates.reissue_reason(secret, 7, "xc1-trading", pem, T0))
    assert "identity" in str(certificates.reissue_reason(secret, 2, "other", pem, T0))
    other = certs.generate_ca("another CA", valid_days=10)
    assert certificates.reissue_reason(secret, 2, "xc1-trading", other.cert_pem, T0) == "another CA"
    broken = {**secret, "data": {**secret["data"], "tls.key": ""}}
    assert certificates.reissue_reason(broken, 2, "xc1-trading", pem, T0) == "incomplete"


def test_member_secret_binds_the_member_and_its_pod(ca: certs.CertKeyPair) -> None:
    secret = member(ca, node_id=1234567)
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == "xc1-member-1"
    assert secret["metadata"]["annotations"][certificates.ANNOTATION_NODE_ID] == "1234567"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert certs.member_identity(data["tls.crt"]) == ("xc1-trading", 1234567)
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "xc1-1.xc1-peers.trading.svc" in dns.get_values_for_type(x509.DNSName)
    key = serialization.load_pem_private_key(data["tls.key"], None)
    assert key.public_key() == cert.public_key()
    assert data["ca.crt"] == ca.cert_pem
    assert validation.errors(secret) == []
    assert certificates.earliest_not_after([secret, member(ca, now=T0 - 5 * DAY)]) == (
        T0 - 5 * DAY - certificates.CLOCK_SKEW + 90 * DAY
    )
    # Backdated a little, for peers whose clock is behind.
    assert cert.not_valid_before_utc == T0 - certificates.CLOCK_SKEW


def test_server_certificate_names_every_way_to_reach_a_node(ca: certs.CertKeyPair) -> None:
    secret = certificates.server_secret(CLUSTER, ca, 90, T0)
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names_in = set(dns.get_values_for_type(x509.DNSName))
    assert {"xc1.trading.svc", "xc1-leader.trading.svc", "*.xc1-peers.trading.svc"} <= names_in
    assert certificates.server_reissue_reason(secret, ca.cert_pem, T0 + 59 * DAY) is None
    assert certificates.server_reissue_reason(secret, ca.cert_pem, T0 + 60 * DAY) == "expiring"


# --- cert-manager --------------------------------------------------------------------------


def test_cert_manager_certificates_carry_the_member_identity() -> None:
    spec = parse_spec({"tls": {"issuerRef": {"name": "exchange-ca", "kind": "ClusterIssuer"}}})
    cert = certificates.member_certificate(CLUSTER, spec, 2, 3, "xc1-trading")
    assert cert["apiVersion"] == "cert-manager.io/v1" and cert["kind"] == "Certificate"
    body = cert["spec"]
    assert body["secretName"] == "xc1-member-2"
    assert body["uris"] == ["spiffe://raft-exchange/cluster/xc1-trading/member/3"]
    assert body["dnsNames"] == [
        certs.member_dns_name("xc1-trading", 3),
        "xc1-2.xc1-peers.trading.svc",
    ]
    assert body["issuerRef"] == {
        "name": "exchange-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert (body["duration"], body["renewBefore"]) == ("2160h", "720h")
    assert {"server auth", "client auth"} <= set(body["usages"])
    assert body["privateKey"]["rotationPolicy"] == "Always"
    # cert-manager copies these labels onto the Secret: the operator lists it by them.
    assert names.selector_labels("xc1").items() <= body["secretTemplate"]["labels"].items()
    server = certificates.server_certificate(CLUSTER, spec)["spec"]
    assert server["secretName"] == "xc1-http-tls" and "client auth" not in server["usages"]


def test_status_shows_the_earliest_expiry() -> None:
    status = certificates.CertificateStatus("operator", T0 + 90 * DAY, 3).as_status()
    assert status == {"source": "operator", "members": 3, "notAfter": "2026-04-01T00:00:00Z"}


# --- the admin client ------------------------------------------------------------------------


async def test_admin_client_never_sends_the_token_unverified() -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        client = AdminClient(session, "secret-token", tls=None)
        with pytest.raises(AdminError, match="no cluster CA"):
            await client.add_learner("https://127.0.0.1:1", 4, "a:1")
        assert await client.status("https://127.0.0.1:1") is None


async def test_admin_client_verifies_the_node_by_ca_and_pod_name(
    ca: certs.CertKeyPair, tmp_path: Any
) -> None:
    """A TLS server holding the cluster's server certificate: the operator's client
    talks to it only with the cluster's CA and a name the certificate carries."""
    import ssl

    import aiohttp
    from aiohttp import web
    from exchange_operator.admin import pod_server_name, tls_context

    pair = certificates.server_secret(CLUSTER, ca, 90)
    data = certificates.secret_data(pair)
    (tmp_path / "tls.crt").write_bytes(data["tls.crt"])
    (tmp_path / "tls.key").write_bytes(data["tls.key"])
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    seen: list[str] = []

    async def status(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response(
            {"node_id": 1, "name": "xc1-0", "role": "leader", "term": 1, "leader": 1,
             "commit_index": 1, "applied_index": 1, "state_hash": "h", "members": []}
        )  # fmt: skip

    app = web.Application()
    app.router.add_get("/v1/admin/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"https://127.0.0.1:{port}"
    good_name = pod_server_name("xc1", "trading", "xc1-0")
    try:
        async with aiohttp.ClientSession() as session:
            ok = AdminClient(session, "tok", tls=tls_context(ca.cert_pem), server_name=good_name)
            assert (await ok.status(base)).node_id == 1
            assert seen == ["Bearer tok"]
            # A name the certificate does not carry, or another CA: no answer, no token sent.
            other_ns = pod_server_name("xc1", "elsewhere", "xc1-0")
            assert await ok.with_server_name(other_ns).status(base) is None
            stranger = certs.generate_ca("not the cluster's", valid_days=2)
            wrong_ca = AdminClient(
                session, "tok", tls=tls_context(stranger.cert_pem), server_name=good_name
            )
            assert await wrong_ca.status(base) is None
            assert seen == ["Bearer tok"]
    finally:
        await runner.cleanup()

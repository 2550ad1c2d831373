"""Certificates of a cluster: which to make, when to rotate, and their Kubernetes objects.

Two sources, one layout. Each member (pod ordinal) has its own Secret
``<cluster>-member-<ordinal>`` (``tls.crt``, ``tls.key``, ``ca.crt``) holding a
certificate that binds the Raft member id (URI SAN, exchange_node.security.certs);
every pod shares ``<cluster>-http-tls``, the server certificate of the HTTP and
admin listeners.

- cert-manager (its CRDs served and ``spec.tls.issuerRef`` set): the operator
  renders ``Certificate`` objects; cert-manager writes the Secrets and renews
  them (``renewBefore`` = a third of the lifetime).
- otherwise the operator keeps a CA Secret ``<cluster>-ca`` and issues the
  Secrets itself with exchange_node.security.certs, reissuing one when a third
  or less of its lifetime is left, when it names another member id than the pod
  reports, or when it was signed by another CA.

Everything here is pure: the clock is a parameter.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from exchange_node.security import certs

from exchange_operator import names
from exchange_operator.spec import ClusterRef, ClusterSpec

Obj = dict[str, Any]
CERT_MANAGER_API = "cert-manager.io/v1"
# Rotate when this share of the lifetime or less is left (cert-manager's default too).
ROTATE_WHEN_LEFT = 1 / 3
ANNOTATION_NODE_ID = f"{names.GROUP}/member-id"
# Certificates start this much before "now", so peers whose clock is behind accept them.
CLOCK_SKEW = datetime.timedelta(minutes=5)


def _start(now: datetime.datetime | None) -> datetime.datetime | None:
    return None if now is None else now - CLOCK_SKEW


# --- when to (re)issue -------------------------------------------------------------


def rotation_due(not_before: datetime.datetime, not_after: datetime.datetime) -> datetime.datetime:
    """The moment from which a certificate valid over [not_before, not_after] is renewed."""
    return not_after - (not_after - not_before) * ROTATE_WHEN_LEFT


def reissue_reason(
    secret: Obj | None,
    node_id: int,
    cluster_id: str,
    ca_pem: bytes,
    now: datetime.datetime,
) -> str | None:
    """Why the member Secret must be (re)issued, or None when it is good as it is."""
    if secret is None:
        return "missing"
    data = secret_data(secret)
    cert_pem = data.get(names.TLS_CERT_KEY)
    if not cert_pem or not data.get(names.TLS_KEY_KEY):
        return "incomplete"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return "unreadable"
    if data.get(names.CA_CERT_KEY) != ca_pem or not _signed_by(cert, ca_pem):
        return "another CA"
    if certs.member_identity(cert_pem) != (cluster_id, node_id):
        return f"identity is not member {node_id} of {cluster_id}"
    if now >= rotation_due(cert.not_valid_before_utc, cert.not_valid_after_utc):
        return "expiring"
    return None


def server_reissue_reason(secret: Obj | None, ca_pem: bytes, now: datetime.datetime) -> str | None:
    if secret is None:
        return "missing"
    data = secret_data(secret)
    try:
        cert = x509.load_pem_x509_certificate(data.get(names.TLS_CERT_KEY, b""))
    except ValueError:
        return "unreadable"
    if data.get(names.CA_CERT_KEY) != ca_pem or not _signed_by(cert, ca_pem):
        return "another CA"
    if now >= rotation_due(cert.not_valid_before_utc, cert.not_valid_after_utc):
        return "expiring"
    return None


def ca_needs_renewal(ca: certs.CertKeyPair, now: datetime.datetime) -> bool:
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    return now >= rotation_due(cert.not_valid_before_utc, cert.not_valid_after_utc)


def _signed_by(cert: x509.Certificate, ca_pem: bytes) -> bool:
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, x509.InvalidSignature):
        return False
    return True


def earliest_not_after(secrets: list[Obj]) -> datetime.datetime | None:
    """The first expiry among the certificates in these Secrets (status.certificates)."""
    found = []
    for secret in secrets:
        pem = secret_data(secret).get(names.TLS_CERT_KEY)
        if pem:
            try:
                found.append(certs.not_after(pem))
            except ValueError:
                continue
    return min(found) if found else None


# --- names in certificates -----------------------------------------------------------


def member_dns_names(cluster: ClusterRef, ordinal: int) -> list[str]:
    return [names.peer_host(cluster.name, ordinal, cluster.namespace)]


def server_dns_names(cluster: ClusterRef) -> list[str]:
    """Every name a client or the operator uses for the HTTP and admin listeners."""
    ns = cluster.namespace
    out = []
    for service in (names.client_service(cluster.name), names.leader_service(cluster.name)):
        out += [service, f"{service}.{ns}", f"{service}.{ns}.svc"]
    out.append(f"*.{names.peers_service(cluster.name)}.{ns}.svc")
    return out


# --- Secrets -----------------------------------------------------------------------------


def secret_data(secret: Obj) -> dict[str, bytes]:
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    for k, v in (secret.get("stringData") or {}).items():
        data[k] = v.encode()
    return data


def _secret(cluster: ClusterRef, name: str, data: dict[str, bytes], **annotations: str) -> Obj:
    from exchange_operator.render import owner_reference

    meta: Obj = {
        "name": name,
        "namespace": cluster.namespace,
        "labels": names.standard_labels(cluster.name, names.COMPONENT_NODE),
        "ownerReferences": [owner_reference(cluster)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": meta,
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def ca_secret(cluster: ClusterRef, ca: certs.CertKeyPair) -> Obj:
    return _secret(
        cluster,
        names.ca_secret(cluster.name),
        {names.TLS_CERT_KEY: ca.cert_pem, names.TLS_KEY_KEY: ca.key_pem},
    )


def ca_from_secret(secret: Obj) -> certs.CertKeyPair | None:
    data = secret_data(secret)
    cert, key = data.get(names.TLS_CERT_KEY), data.get(names.TLS_KEY_KEY)
    return certs.CertKeyPair(cert, key) if cert and key else None


def member_secret(
    cluster: ClusterRef,
    ordinal: int,
    node_id: int,
    cluster_id: str,
    ca: certs.CertKeyPair,
    valid_days: int,
    now: datetime.datetime | None = None,
) -> Obj:
    pair = certs.issue_member_cert(
        ca,
        cluster_id,
        node_id,
        dns_names=member_dns_names(cluster, ordinal),
        valid_days=valid_days,
        not_before=_start(now),
    )
    return _secret(
        cluster,
        names.member_tls_secret(cluster.name, ordinal),
        {
            names.TLS_CERT_KEY: pair.cert_pem,
            names.TLS_KEY_KEY: pair.key_pem,
            names.CA_CERT_KEY: ca.cert_pem,
        },
        **{ANNOTATION_NODE_ID: str(node_id)},
    )


def server_secret(
    cluster: ClusterRef,
    ca: certs.CertKeyPair,
    valid_days: int,
    now: datetime.datetime | None = None,
) -> Obj:
    pair = certs.issue_server_cert(
        ca, server_dns_names(cluster), valid_days=valid_days, not_before=_start(now)
    )
    return _secret(
        cluster,
        names.http_tls_secret(cluster.name),
        {
            names.TLS_CERT_KEY: pair.cert_pem,
            names.TLS_KEY_KEY: pair.key_pem,
            names.CA_CERT_KEY: ca.cert_pem,
        },
    )


# --- cert-manager ----------------------------------------------------------------------


def _duration(days: int) -> str:
    return f"{days * 24}h"


def _renew_before(days: int) -> str:
    return f"{max(1, round(days * 24 * ROTATE_WHEN_LEFT))}h"


def _certificate(
    cluster: ClusterRef, spec: ClusterSpec, name: str, secret_name: str, body: Obj
) -> Obj:
    from exchange_operator.render import owner_reference

    assert spec.tls.issuer_ref is not None
    issuer = spec.tls.issuer_ref
    return {
        "apiVersion": CERT_MANAGER_API,
        "kind": "Certificate",
        "metadata": {
            "name": name,
            "namespace": cluster.namespace,
            "labels": names.standard_labels(cluster.name, names.COMPONENT_NODE),
            "ownerReferences": [owner_reference(cluster)],
        },
        "spec": {
            "secretName": secret_name,
            "secretTemplate": {"labels": names.standard_labels(cluster.name, names.COMPONENT_NODE)},
            "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
            "duration": _duration(spec.tls.cert_days),
            "renewBefore": _renew_before(spec.tls.cert_days),
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            **body,
        },
    }


def member_certificate(
    cluster: ClusterRef, spec: ClusterSpec, ordinal: int, node_id: int, cluster_id: str
) -> Obj:
    name = names.member_tls_secret(cluster.name, ordinal)
    return _certificate(
        cluster,
        spec,
        name,
        name,
        {
            "commonName": f"member-{node_id}.{cluster_id}",
            "uris": [certs.member_uri(cluster_id, node_id)],
            "dnsNames": [
                certs.member_dns_name(cluster_id, node_id),
                *member_dns_names(cluster, ordinal),
            ],
            "usages": ["digital signature", "server auth", "client auth"],
        },
    )


def server_certificate(cluster: ClusterRef, spec: ClusterSpec) -> Obj:
    name = names.http_tls_secret(cluster.name)
    return _certificate(
        cluster,
        spec,
        name,
        name,
        {"dnsNames": server_dns_names(cluster), "usages": ["digital signature", "server auth"]},
    )


@dataclass(frozen=True)
class CertificateStatus:
    """What status.certificates shows."""

    source: str  # operator | cert-manager
    not_after: datetime.datetime | None
    members: int

    def as_status(self) -> Obj:
        out: Obj = {"source": self.source, "members": self.members}
        if self.not_after is not None:
            out["notAfter"] = (
                self.not_after.astimezone(datetime.UTC)
                .isoformat(timespec="seconds")
                .replace("+00:00", "Z")
            )
        return out

"""Certificates of a cluster: which to sign, when to rotate, and their Kubernetes objects.

Member certificates: each node makes its member key itself and keeps it on its
volume (``--peer-tls-enroll``); the operator reads the node's CSR over the admin
API, checks that it asks for exactly the member id that pod reports, has it
signed and PUTs the certificate back. No pod mounts any member key. Signers:

- cert-manager (its CRDs served and ``spec.tls.issuerRef`` set): a
  ``CertificateRequest`` carrying the node's CSR, named after its public key so a
  later reconcile finds the same request; the certificate is read from
  ``status.certificate`` once cert-manager has signed it.
- otherwise the operator keeps a CA Secret ``<cluster>-ca`` and signs the CSR
  itself with exchange_node.security.certs.

A member certificate is renewed when a third or less of its lifetime is left,
when it names another member id than the pod reports, or when it was signed by
another CA; the node then answers with a CSR for a fresh key.

Every pod shares ``<cluster>-http-tls``, the server certificate of the HTTP and
admin listeners; its ``ca.crt`` is also the CA the nodes trust on the peer port.

Everything here is pure: the clock is a parameter.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from exchange_node.security import certs

from exchange_operator import names
from exchange_operator.observed import MemberCertificate, Observed, member_ordinal
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


def enrollment_reason(
    member: MemberCertificate,
    node_id: int,
    cluster_id: str,
    ca_pem: bytes,
    now: datetime.datetime,
) -> str | None:
    """Why a node's member certificate must be (re)signed, or None when it is good."""
    if member.certificate_pem is None:
        return member.problem or "no certificate"
    try:
        cert = x509.load_pem_x509_certificate(member.certificate_pem)
    except ValueError:
        return "unreadable"
    if not _chains_to(member.certificate_pem, ca_pem):
        return "another CA"
    if certs.member_identity(member.certificate_pem) != (cluster_id, node_id):
        return f"identity is not member {node_id} of {cluster_id}"
    if now >= rotation_due(cert.not_valid_before_utc, cert.not_valid_after_utc):
        return "expiring"
    return None


def signing_refusal(obs: Observed, cluster: str, ordinal: int, node_id: int) -> str | None:
    """Why the operator must not sign member ``node_id`` for the pod with ``ordinal``.

    A pod reports its own id, so a compromised pod could claim another member's;
    it gets no certificate for an id another pod reports, or that the leader's
    configuration holds at another pod's address.
    """
    for pod in obs.pods:
        if pod.ordinal != ordinal and pod.node is not None and pod.node.node_id == node_id:
            return f"pod {pod.name} also reports member id {node_id}"
    leader = obs.leader()
    for member in leader.members if leader is not None else ():
        owner = member_ordinal(cluster, member)
        if member.id == node_id and owner is not None and owner != ordinal:
            return f"member {node_id} is {member.address} (ordinal {owner}) in the configuration"
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
    """Issued by a CA of the ``ca_pem`` bundle (two while a CA is replaced)."""
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        return False
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _chains_to(chain_pem: bytes, ca_pem: bytes) -> bool:
    """The chain's leaf is issued by a CA of the bundle, directly or through the
    chain's own intermediates (an Issuer may sign with an intermediate CA)."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        return False
    current, intermediates = chain[0], chain[1:]
    for _ in range(len(chain)):
        if _signed_by(current, ca_pem):
            return True
        issuer = next(
            (c for c in intermediates if _signed_by(current, c.public_bytes(Encoding.PEM))),
            None,
        )
        if issuer is None:
            return False
        current = issuer
    return False


def earliest_not_after(
    secrets: list[Obj],
    member_pems: Sequence[bytes] = (),
) -> datetime.datetime | None:
    """The first expiry among the certificates in these Secrets and the members'
    certificates (status.certificates)."""
    found = []
    pems = [secret_data(secret).get(names.TLS_CERT_KEY) for secret in secrets]
    for pem in [*pems, *member_pems]:
        if pem:
            try:
                found.append(certs.not_after(pem))
            except ValueError:
                continue
    return min(found) if found else None


# --- names in certificates -----------------------------------------------------------


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


def server_certificate(cluster: ClusterRef, spec: ClusterSpec) -> Obj:
    name = names.http_tls_secret(cluster.name)
    return _certificate(
        cluster,
        spec,
        name,
        name,
        {"dnsNames": server_dns_names(cluster), "usages": ["digital signature", "server auth"]},
    )


def certificate_request_name(cluster: ClusterRef, ordinal: int, csr_pem: bytes) -> str:
    """One CertificateRequest per member key: the same CSR key finds the same request."""
    digest = hashlib.sha256(certs.public_key_der(csr_pem)).hexdigest()[:10]
    return f"{names.member_tls_secret(cluster.name, ordinal)}-{digest}"


def certificate_request(
    cluster: ClusterRef, spec: ClusterSpec, ordinal: int, node_id: int, csr_pem: bytes
) -> Obj:
    """A cert-manager CertificateRequest for a node's CSR (checked by the caller)."""
    from exchange_operator.render import owner_reference

    assert spec.tls.issuer_ref is not None
    issuer = spec.tls.issuer_ref
    return {
        "apiVersion": CERT_MANAGER_API,
        "kind": "CertificateRequest",
        "metadata": {
            "name": certificate_request_name(cluster, ordinal, csr_pem),
            "namespace": cluster.namespace,
            "labels": names.standard_labels(cluster.name, names.COMPONENT_NODE),
            "annotations": {ANNOTATION_NODE_ID: str(node_id)},
            "ownerReferences": [owner_reference(cluster)],
        },
        "spec": {
            "request": base64.b64encode(csr_pem).decode(),
            "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
            "duration": _duration(spec.tls.cert_days),
            "isCA": False,
            "usages": ["digital signature", "server auth", "client auth"],
        },
    }


def request_outcome(request: Obj) -> tuple[bytes | None, str | None]:
    """(certificate chain, None) once signed; (None, why) when refused; (None, None) pending."""
    status = request.get("status") or {}
    for cond in status.get("conditions") or ():
        kind, true = cond.get("type"), cond.get("status") == "True"
        if kind in ("Denied", "InvalidRequest") and true:
            return None, f"{kind.lower()}: {cond.get('message', '')}"
        if kind == "Ready" and not true and cond.get("reason") == "Failed":
            return None, f"failed: {cond.get('message', '')}"
    if status.get("certificate"):
        return base64.b64decode(status["certificate"]), None
    return None, None


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

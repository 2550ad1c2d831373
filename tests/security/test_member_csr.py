"""Member CSRs: a signer issues only exactly the member asked for; a node installs only
a certificate for its own key, id and cluster, signed by the CA it trusts."""

from __future__ import annotations

import datetime
import ipaddress
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from exchange_node.security import (
    CertKeyPair,
    check_member_chain,
    check_member_csr,
    generate_ca,
    issue_member_cert,
    issue_member_cert_from_csr,
    member_csr,
    member_dns_name,
    member_identity,
    member_uri,
    new_private_key_pem,
)

CLUSTER = "xc1-trading"


def now() -> datetime.datetime:
    """Read at each check: a module-level time would be stale by the time the test runs."""
    return datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def ca() -> CertKeyPair:
    return generate_ca("csr test ca")


@pytest.fixture(scope="module")
def key() -> bytes:
    return new_private_key_pem()


def _csr(key_pem: bytes, sans: list[x509.GeneralName], ca: bool = False) -> bytes:
    """A hand-made CSR, for requests the node itself would never build."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def _member_sans(cluster: str, node_id: int) -> list[x509.GeneralName]:
    return [
        x509.UniformResourceIdentifier(member_uri(cluster, node_id)),
        x509.DNSName(member_dns_name(cluster, node_id)),
    ]


def test_a_member_csr_is_signed_into_a_member_certificate(ca: CertKeyPair, key: bytes) -> None:
    csr = member_csr(key, CLUSTER, 4)
    check_member_csr(csr, CLUSTER, 4)
    cert = issue_member_cert_from_csr(ca, csr, CLUSTER, 4, valid_days=30)
    assert member_identity(cert) == (CLUSTER, 4)
    leaf = check_member_chain(cert, key, ca.cert_pem, CLUSTER, 4, now())
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == datetime.timedelta(days=30)


@pytest.mark.parametrize(
    ("sans", "why"),
    [
        (_member_sans(CLUSTER, 5), "member 4"),  # another member id
        (_member_sans("other", 4), "member 4"),  # another cluster
        (
            [*_member_sans(CLUSTER, 4), x509.DNSName("evil.example")],
            "evil.example",
        ),  # an extra DNS name
        (
            [*_member_sans(CLUSTER, 4), x509.UniformResourceIdentifier(member_uri(CLUSTER, 1))],
            "member/1",
        ),  # a second member URI
        (
            [*_member_sans(CLUSTER, 4), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))],
            "10.0.0.1",
        ),  # an IP address
        (_member_sans(CLUSTER, 4)[:1], "missing"),  # no member DNS name
        ([], "no subjectAltName"),
    ],
)
def test_a_csr_for_anything_but_exactly_that_member_is_refused(
    ca: CertKeyPair, key: bytes, sans: list[x509.GeneralName], why: str
) -> None:
    csr = _csr(key, sans)
    with pytest.raises(ValueError, match="csr: .*" + re.escape(why)):
        issue_member_cert_from_csr(ca, csr, CLUSTER, 4)


def test_a_csr_asking_for_a_ca_or_another_key_type_is_refused(ca: CertKeyPair, key: bytes) -> None:
    with pytest.raises(ValueError, match="cannot be a CA"):
        check_member_csr(_csr(key, _member_sans(CLUSTER, 4), ca=True), CLUSTER, 4)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="EC P-256"):
        check_member_csr(_csr(rsa_key, _member_sans(CLUSTER, 4)), CLUSTER, 4)
    with pytest.raises(ValueError, match="not a PEM certificate request"):
        check_member_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", CLUSTER, 4)


def test_a_csr_with_a_broken_signature_is_refused(key: bytes) -> None:
    csr = x509.load_pem_x509_csr(member_csr(key, CLUSTER, 4))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ValueError, match="signature"):
        check_member_csr(pem, CLUSTER, 4)


def test_the_node_refuses_a_certificate_for_another_key_member_cluster_or_ca(
    ca: CertKeyPair, key: bytes
) -> None:
    good = issue_member_cert_from_csr(ca, member_csr(key, CLUSTER, 4), CLUSTER, 4)
    other_key = new_private_key_pem()
    with pytest.raises(ValueError, match="another public key"):
        check_member_chain(good, other_key, ca.cert_pem, CLUSTER, 4, now())
    other_member = issue_member_cert_from_csr(ca, member_csr(key, CLUSTER, 5), CLUSTER, 5)
    with pytest.raises(ValueError, match="not member 4"):
        check_member_chain(other_member, key, ca.cert_pem, CLUSTER, 4, now())
    with pytest.raises(ValueError, match="not member 4 of cluster 'other'"):
        check_member_chain(good, key, ca.cert_pem, "other", 4, now())
    with pytest.raises(ValueError, match="trusted CA"):
        check_member_chain(good, key, generate_ca("another").cert_pem, CLUSTER, 4, now())
    with pytest.raises(ValueError, match="not valid now"):
        check_member_chain(good, key, ca.cert_pem, CLUSTER, 4, now() + datetime.timedelta(days=400))
    with pytest.raises(ValueError, match="not a PEM certificate chain"):
        check_member_chain(b"junk", key, ca.cert_pem, CLUSTER, 4, now())


def test_a_ca_bundle_and_a_chain_with_its_ca_are_accepted(ca: CertKeyPair, key: bytes) -> None:
    cert = issue_member_cert_from_csr(ca, member_csr(key, CLUSTER, 4), CLUSTER, 4)
    bundle = generate_ca("next").cert_pem + ca.cert_pem
    check_member_chain(cert + ca.cert_pem, key, bundle, CLUSTER, 4, now())


def test_the_local_path_and_the_csr_path_give_certificates_the_node_accepts(
    ca: CertKeyPair,
) -> None:
    """`exchange local up` issues key and certificate together (issue_member_cert); the
    operator signs the node's CSR: the node's check takes both the same way."""
    local = issue_member_cert(ca, CLUSTER, 2)
    check_member_chain(local.cert_pem, local.key_pem, ca.cert_pem, CLUSTER, 2, now())
    key = new_private_key_pem()
    kube = issue_member_cert_from_csr(ca, member_csr(key, CLUSTER, 2), CLUSTER, 2)
    check_member_chain(kube, key, ca.cert_pem, CLUSTER, 2, now())
    a, b = x509.load_pem_x509_certificate(local.cert_pem), x509.load_pem_x509_certificate(kube)
    for ext in (x509.ExtendedKeyUsage, x509.KeyUsage, x509.BasicConstraints):
        assert a.extensions.get_extension_for_class(ext).value == (
            b.extensions.get_extension_for_class(ext).value
        )
    assert isinstance(b.public_key(), ec.EllipticCurvePublicKey)


def test_a_chain_through_an_intermediate_ca_is_accepted_and_needs_it() -> None:
    root = generate_ca("root", path_length=1)
    intermediate = generate_ca("intermediate", 30, issuer=root)
    key = new_private_key_pem()
    leaf = issue_member_cert_from_csr(intermediate, member_csr(key, CLUSTER, 4), CLUSTER, 4)
    check_member_chain(leaf + intermediate.cert_pem, key, root.cert_pem, CLUSTER, 4, now())
    with pytest.raises(ValueError, match="trusted CA"):
        check_member_chain(leaf, key, root.cert_pem, CLUSTER, 4, now())

"""Certificates: identity SANs, usages, chain validity and files written with safe modes."""

from __future__ import annotations

import datetime
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store
from exchange_node.security import (
    CertKeyPair,
    generate_ca,
    issue_member_cert,
    issue_server_cert,
    member_dns_name,
    member_identity,
    member_uri,
    not_after,
    parse_member_uri,
    validate_cluster_id,
    write_pair,
)


@pytest.fixture(scope="module")
def ca() -> CertKeyPair:
    return generate_ca("test ca")


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_member_names_have_fixed_forms() -> None:
    assert member_uri("prod-1", 3) == "spiffe://raft-exchange/cluster/prod-1/member/3"
    assert member_dns_name("prod-1", 3) == "member-3.prod-1.peer.raft-exchange.internal"
    assert parse_member_uri(member_uri("prod-1", 3)) == ("prod-1", 3)
    assert parse_member_uri(member_uri("prod-1", 3).encode()) == ("prod-1", 3)


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://raft-exchange/cluster/prod/member/0",
        "spiffe://raft-exchange/cluster/prod/member/01",
        "spiffe://raft-exchange/cluster/prod/member/-1",
        "spiffe://raft-exchange/cluster/prod/member/3/x",
        "spiffe://raft-exchange/cluster/Prod/member/3",
        "spiffe://raft-exchange/cluster/-prod/member/3",
        "spiffe://other/cluster/prod/member/3",
        "https://raft-exchange/cluster/prod/member/3",
        "spiffe://raft-exchange/cluster/prod/member/99999999999999999999",
        "",
    ],
)
def test_parse_member_uri_refuses_anything_else(uri: str) -> None:
    assert parse_member_uri(uri) is None


@pytest.mark.parametrize("bad", ["", "A", "-a", "a-", "a_b", "a.b", "a" * 64, "é"])
def test_validate_cluster_id_refuses_non_labels(bad: str) -> None:
    with pytest.raises(ValueError, match="cluster id"):
        validate_cluster_id(bad)


@pytest.mark.parametrize("good", ["a", "exchange", "prod-eu-1", "a" * 63, "0"])
def test_validate_cluster_id_accepts_labels(good: str) -> None:
    assert validate_cluster_id(good) == good


def test_member_uri_refuses_bad_ids() -> None:
    with pytest.raises(ValueError, match="node id"):
        member_uri("prod", 0)
    with pytest.raises(ValueError, match="cluster id"):
        member_dns_name("Prod", 1)


def test_ca_is_a_ca(ca: CertKeyPair) -> None:
    cert = _cert(ca.cert_pem)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert not_after(ca.cert_pem) - datetime.datetime.now(datetime.UTC) > datetime.timedelta(
        days=3640
    )


def test_member_cert_binds_identity_and_both_usages(ca: CertKeyPair) -> None:
    pair = issue_member_cert(ca, "prod", 2, dns_names=["node-2.local"], ip_addresses=["127.0.0.1"])
    cert = _cert(pair.cert_pem)
    sans = _sans(cert)
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [member_uri("prod", 2)]
    assert sans.get_values_for_type(x509.DNSName) == [
        member_dns_name("prod", 2),
        "node-2.local",
    ]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert member_identity(pair.cert_pem) == ("prod", 2)
    # the key is the certificate's key
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    assert key.public_key() == cert.public_key()


def test_member_cert_verifies_against_its_ca_only(ca: CertKeyPair) -> None:
    pair = issue_member_cert(ca, "prod", 2)
    name = x509.DNSName(member_dns_name("prod", 2))
    verifier = PolicyBuilder().store(Store([_cert(ca.cert_pem)])).build_server_verifier(name)
    verifier.verify(_cert(pair.cert_pem), [])
    other = generate_ca("other ca")
    verifier = PolicyBuilder().store(Store([_cert(other.cert_pem)])).build_server_verifier(name)
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(_cert(pair.cert_pem), [])


def test_server_cert(ca: CertKeyPair) -> None:
    pair = issue_server_cert(ca, ["api.example"], ["::1"], valid_days=10)
    cert = _cert(pair.cert_pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert member_identity(pair.cert_pem) is None
    left = not_after(pair.cert_pem) - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=9) < left <= datetime.timedelta(days=10)
    with pytest.raises(ValueError, match="at least one"):
        issue_server_cert(ca, [])
    with pytest.raises(ValueError, match="not an IP"):
        issue_server_cert(ca, ["x"], ["nope"])


def test_not_before_makes_expired_certificates(ca: CertKeyPair) -> None:
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    pair = issue_member_cert(ca, "prod", 1, valid_days=1, not_before=start)
    assert not_after(pair.cert_pem) < datetime.datetime.now(datetime.UTC)
    with pytest.raises(ValueError, match="timezone"):
        issue_member_cert(ca, "prod", 1, not_before=datetime.datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="valid_days"):
        issue_member_cert(ca, "prod", 1, valid_days=0)


def test_write_pair_modes_and_atomic_replace(ca: CertKeyPair, tmp_path) -> None:
    cert_path, key_path = tmp_path / "m.crt", tmp_path / "m.key"
    first = issue_member_cert(ca, "prod", 1)
    write_pair(first, cert_path, key_path)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cert_path).st_mode) == 0o644
    assert cert_path.read_bytes() == first.cert_pem
    assert key_path.read_bytes() == first.key_pem
    second = issue_member_cert(ca, "prod", 1)
    inode = os.stat(key_path).st_ino
    write_pair(second, cert_path, key_path)
    assert key_path.read_bytes() == second.key_pem
    assert os.stat(key_path).st_ino != inode  # replaced by rename, never rewritten in place
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.crt", "m.key"]

"""X.509 certificates for the cluster: a CA, member certificates and server certificates.

A member certificate names its holder by a URI SAN,
``spiffe://raft-exchange/cluster/<cluster_id>/member/<node_id>``, which the peer
transport reads from the TLS handshake to know which member sent a frame. It also
carries a fixed DNS SAN, ``member-<node_id>.<cluster_id>.peer.raft-exchange.internal``,
that a dialing peer uses as the TLS target name, so a client checks that it reached
the member it meant and not merely some member. Keys are EC P-256.

Pure functions over ``cryptography``; the only I/O is :func:`write_pair`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MEMBER_URI_PREFIX = "spiffe://raft-exchange/cluster/"
MEMBER_DNS_SUFFIX = "peer.raft-exchange.internal"
_CLUSTER_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MEMBER_URI = re.compile(
    re.escape(MEMBER_URI_PREFIX) + r"(?P<cluster>[a-z0-9-]+)/member/(?P<node>[1-9][0-9]{0,18})"
)
# Backdate a little so a peer whose clock is slightly behind accepts a fresh certificate.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclasses.dataclass(frozen=True)
class CertKeyPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes


def validate_cluster_id(text: str) -> str:
    """Return ``text`` if it is a valid cluster id (a DNS label), else raise ValueError."""
    if not isinstance(text, str) or not _CLUSTER_ID.fullmatch(text):
        raise ValueError(
            f"cluster id {text!r} is invalid: use 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return text


def _validate_node_id(node_id: int) -> int:
    if isinstance(node_id, bool) or not isinstance(node_id, int) or node_id < 1:
        raise ValueError(f"node id {node_id!r} is invalid: it must be a positive integer")
    if node_id >= 2**63:
        raise ValueError(f"node id {node_id} is invalid: it must be below 2**63")
    return node_id


def member_uri(cluster_id: str, node_id: int) -> str:
    """The URI SAN that names member ``node_id`` of ``cluster_id``."""
    validate_cluster_id(cluster_id)
    _validate_node_id(node_id)
    return f"{MEMBER_URI_PREFIX}{cluster_id}/member/{node_id}"


def member_dns_name(cluster_id: str, node_id: int) -> str:
    """The DNS SAN a dialing peer uses as TLS target name for member ``node_id``."""
    validate_cluster_id(cluster_id)
    _validate_node_id(node_id)
    return f"member-{node_id}.{cluster_id}.{MEMBER_DNS_SUFFIX}"


def parse_member_uri(uri: str | bytes) -> tuple[str, int] | None:
    """``(cluster_id, node_id)`` from a member URI SAN, or None if it is not one."""
    if isinstance(uri, bytes):
        try:
            uri = uri.decode("ascii")
        except UnicodeDecodeError:
            return None
    m = _MEMBER_URI.fullmatch(uri)
    if m is None or not _CLUSTER_ID.fullmatch(m["cluster"]):
        return None
    node_id = int(m["node"])
    if node_id >= 2**63:
        return None
    return m["cluster"], node_id


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity(
    valid_days: int, not_before: datetime.datetime | None
) -> tuple[datetime.datetime, datetime.datetime]:
    if isinstance(valid_days, bool) or not isinstance(valid_days, int) or valid_days < 1:
        raise ValueError(f"valid_days {valid_days!r} is invalid: it must be a positive integer")
    if not_before is None:
        start = datetime.datetime.now(datetime.UTC) - _CLOCK_SKEW
    elif not_before.tzinfo is None:
        raise ValueError("not_before must be timezone-aware")
    else:
        start = not_before
    return start, start + datetime.timedelta(days=valid_days)


def generate_ca(
    common_name: str,
    valid_days: int = 3650,
    issuer: CertKeyPair | None = None,
    path_length: int = 0,
) -> CertKeyPair:
    """A CA; self-signed, or an intermediate signed by ``issuer``.

    ``path_length`` 0 (the default) may sign end-entity certificates only; a root
    meant to sign an intermediate needs 1.
    """
    if not common_name:
        raise ValueError("common_name must not be empty")
    key = _new_key()
    start, end = _validity(valid_days, None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    if issuer is None:
        issuer_name, signer = name, key
    else:
        issuer_cert, signer = _load_ca(issuer)
        issuer_name = issuer_cert.subject
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
    )
    if issuer is not None:
        cert = cert.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    signed = cert.sign(signer, hashes.SHA256())
    return CertKeyPair(signed.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _load_ca(ca: CertKeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    return cert, key


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _sign_leaf(
    ca: CertKeyPair,
    common_name: str,
    public_key: ec.EllipticCurvePublicKey,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    valid_days: int,
    not_before: datetime.datetime | None,
) -> bytes:
    """An end-entity certificate (PEM) for ``public_key``, signed by ``ca``."""
    ca_cert, ca_key = _load_ca(ca)
    start, end = _validity(valid_days, not_before)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _issue(
    ca: CertKeyPair,
    common_name: str,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    valid_days: int,
    not_before: datetime.datetime | None,
) -> CertKeyPair:
    """A new key and its certificate."""
    key = _new_key()
    cert_pem = _sign_leaf(ca, common_name, key.public_key(), sans, usages, valid_days, not_before)
    return CertKeyPair(cert_pem, _key_pem(key))


def issue_member_cert(
    ca: CertKeyPair,
    cluster_id: str,
    node_id: int,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    valid_days: int = 365,
    not_before: datetime.datetime | None = None,
) -> CertKeyPair:
    """A certificate for member ``node_id``, usable as TLS server and client certificate.

    Its identity is the URI SAN :func:`member_uri`; it also carries
    :func:`member_dns_name` plus any extra ``dns_names`` / ``ip_addresses``.
    """
    uri = member_uri(cluster_id, node_id)
    dns = [member_dns_name(cluster_id, node_id), *dns_names]
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    sans += [x509.DNSName(d) for d in dict.fromkeys(dns)]
    sans += [x509.IPAddress(_ip(a)) for a in ip_addresses]
    return _issue(
        ca,
        f"member-{node_id}.{cluster_id}",
        sans,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        valid_days,
        not_before,
    )


def issue_server_cert(
    ca: CertKeyPair,
    dns_names: Iterable[str],
    ip_addresses: Iterable[str] = (),
    valid_days: int = 365,
    not_before: datetime.datetime | None = None,
) -> CertKeyPair:
    """A TLS server certificate (HTTP API, admin listener) for the given names."""
    dns = list(dict.fromkeys(dns_names))
    ips = list(ip_addresses)
    if not dns and not ips:
        raise ValueError("a server certificate needs at least one DNS name or IP address")
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(_ip(a)) for a in ips]
    return _issue(
        ca,
        dns[0] if dns else ips[0],
        sans,
        [ExtendedKeyUsageOID.SERVER_AUTH],
        valid_days,
        not_before,
    )


def not_after(cert_pem: bytes) -> datetime.datetime:
    """When the (first) certificate in ``cert_pem`` expires, timezone-aware UTC."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def member_identity(cert_pem: bytes) -> tuple[str, int] | None:
    """``(cluster_id, node_id)`` from a member certificate's URI SAN, or None."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        parsed = parse_member_uri(uri)
        if parsed is not None:
            return parsed
    return None


def _write_atomic(path: str | os.PathLike[str], data: bytes, mode: int) -> None:
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(target))
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` atomically (a reader sees old or new)."""
    _write_atomic(path, data, mode)


def write_pair(
    pair: CertKeyPair,
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
) -> None:
    """Write the key (mode 0600) then the certificate (0644), each atomically.

    The key goes first so a reader that notices the new certificate finds its key.
    """
    _write_atomic(key_path, pair.key_pem, 0o600)
    _write_atomic(cert_path, pair.cert_pem, 0o644)


# --- certificate requests: the member key never leaves its node ------------------------


def new_private_key_pem() -> bytes:
    """A fresh EC P-256 private key (PEM, PKCS#8, unencrypted) for a member to keep."""
    return _key_pem(_new_key())


def public_key_der(pem: bytes) -> bytes:
    """The SubjectPublicKeyInfo (DER) of a PEM private key, certificate or CSR."""
    if b"-----BEGIN CERTIFICATE REQUEST-----" in pem:
        public = x509.load_pem_x509_csr(pem).public_key()
    elif b"-----BEGIN CERTIFICATE-----" in pem:
        public = x509.load_pem_x509_certificate(pem).public_key()
    else:
        public = serialization.load_pem_private_key(pem, password=None).public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def member_csr(key_pem: bytes, cluster_id: str, node_id: int) -> bytes:
    """A CSR (PEM) for member ``node_id`` of ``cluster_id`` signed with ``key_pem``.

    It asks for exactly the member URI SAN and the member DNS SAN, nothing else.
    """
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("a member key must be an EC P-256 key")
    sans = x509.SubjectAlternativeName(
        [
            x509.UniformResourceIdentifier(member_uri(cluster_id, node_id)),
            x509.DNSName(member_dns_name(cluster_id, node_id)),
        ]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"member-{node_id}.{cluster_id}")])
        )
        .add_extension(sans, critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def check_member_csr(
    csr_pem: bytes, cluster_id: str, node_id: int
) -> x509.CertificateSigningRequest:
    """The CSR, if it asks for exactly member ``node_id`` of ``cluster_id``; else ValueError.

    Refused: a bad self-signature, a key other than EC P-256, a URI or DNS SAN that
    is not this member's, any other SAN (IP, e-mail, a second URI), a CA request.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ValueError(f"csr: not a PEM certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise ValueError("csr: its signature does not verify with its own key")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("csr: the key must be EC P-256")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("csr: no subjectAltName; a member CSR names its member URI") from None
    wanted = {
        x509.UniformResourceIdentifier(member_uri(cluster_id, node_id)),
        x509.DNSName(member_dns_name(cluster_id, node_id)),
    }
    asked = set(san)
    if asked != wanted or len(list(san)) != len(wanted):
        extra = sorted(str(n.value) for n in asked - wanted)
        missing = sorted(str(n.value) for n in wanted - asked)
        raise ValueError(
            f"csr: subjectAltName must be exactly member {node_id} of cluster {cluster_id!r}"
            + (f"; not allowed: {extra}" if extra else "")
            + (f"; missing: {missing}" if missing else "")
        )
    try:
        basic = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is not None and basic.ca:
        raise ValueError("csr: a member certificate cannot be a CA")
    return csr


def issue_member_cert_from_csr(
    ca: CertKeyPair,
    csr_pem: bytes,
    cluster_id: str,
    node_id: int,
    valid_days: int = 365,
    not_before: datetime.datetime | None = None,
) -> bytes:
    """Sign a member's CSR (checked by :func:`check_member_csr`): the certificate (PEM).

    Only the CSR's key is taken from it; names, usages and lifetime are the signer's,
    the same as :func:`issue_member_cert` gives.
    """
    csr = check_member_csr(csr_pem, cluster_id, node_id)
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("csr: the key must be EC P-256")
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(member_uri(cluster_id, node_id)),
        x509.DNSName(member_dns_name(cluster_id, node_id)),
    ]
    return _sign_leaf(
        ca,
        f"member-{node_id}.{cluster_id}",
        public_key,
        sans,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        valid_days,
        not_before,
    )


def check_member_chain(
    chain_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes,
    cluster_id: str,
    node_id: int,
    now: datetime.datetime,
) -> x509.Certificate:
    """The leaf of ``chain_pem`` if a node holding ``key_pem`` may serve it; else ValueError.

    Checked: the leaf certifies this very key, names member ``node_id`` of
    ``cluster_id``, is valid at ``now``, allows server and client auth, and chains
    (through any intermediates after it) to a CA of the ``ca_pem`` bundle.
    """
    from cryptography.x509 import verification

    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise ValueError(f"certificate: not a PEM certificate chain: {exc}") from None
    leaf, intermediates = chain[0], chain[1:]
    if public_key_der(leaf.public_bytes(serialization.Encoding.PEM)) != public_key_der(key_pem):
        raise ValueError("certificate: it certifies another public key than this node's member key")
    identity = member_identity(leaf.public_bytes(serialization.Encoding.PEM))
    if identity != (cluster_id, node_id):
        raise ValueError(
            f"certificate: it names {identity or 'no member'}, "
            f"not member {node_id} of cluster {cluster_id!r}"
        )
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise ValueError(
            f"certificate: not valid now (valid {leaf.not_valid_before_utc.isoformat()} "
            f"to {leaf.not_valid_after_utc.isoformat()})"
        )
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            raise ValueError("certificate: no clientAuth usage (a member dials its peers)")
    except x509.ExtensionNotFound:
        pass  # no EKU: every usage
    try:
        store = verification.Store(x509.load_pem_x509_certificates(ca_pem))
        verifier = (
            verification.PolicyBuilder()
            .store(store)
            .time(now)
            .build_server_verifier(x509.DNSName(member_dns_name(cluster_id, node_id)))
        )
        verifier.verify(leaf, intermediates)
    except (ValueError, verification.VerificationError) as exc:
        raise ValueError(f"certificate: does not chain to the trusted CA: {exc}") from None
    return leaf

"""Mutual TLS material for the peer port: files read at start and re-read when they change.

A member's certificate (see ``exchange_node.security.certs``) binds its cluster id and
member id. The transport serves with it, dials with it, and trusts only the CA file.
``PeerCredentials.refresh()`` compares the files' (mtime, size, inode) with what it
loaded; on a change it reloads, but keeps the previous material when the new files do
not form a valid pair yet (a rotation writes key and certificate one after the other).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from exchange_node.security.certs import member_identity

log = logging.getLogger(__name__)


class PeerTLSError(ValueError):
    """The peer TLS files are unreadable, inconsistent, or name another member or cluster."""


@dataclass(frozen=True, slots=True)
class PeerTLS:
    """Where the node's member certificate, its key and the cluster CA live (PEM files)."""

    cert_file: Path
    key_file: Path
    ca_file: Path


@dataclass(frozen=True, slots=True)
class PeerMaterial:
    """One consistent load of the three files."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    cluster_id: str
    member_id: int
    version: int
    """Increases with every successful reload."""


_FileStamp = tuple[tuple[int, int, int], ...]


def _stamp(tls: PeerTLS) -> _FileStamp:
    out = []
    for path in (tls.cert_file, tls.key_file, tls.ca_file):
        st = os.stat(path)
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def load_material(tls: PeerTLS, version: int = 1) -> PeerMaterial:
    """Read and check the files; ``PeerTLSError`` names the flag of the file at fault."""
    contents: list[bytes] = []
    for flag, path in (
        ("--peer-tls-cert", tls.cert_file),
        ("--peer-tls-key", tls.key_file),
        ("--peer-tls-ca", tls.ca_file),
    ):
        try:
            contents.append(Path(path).read_bytes())
        except OSError as exc:
            raise PeerTLSError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None
    cert_pem, key_pem, ca_pem = contents
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise PeerTLSError(
            f"--peer-tls-cert: {tls.cert_file} is not a PEM certificate: {exc}"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PeerTLSError(
            f"--peer-tls-key: {tls.key_file} is not an unencrypted PEM private key: {exc}"
        ) from None
    if key.public_key() != cert.public_key():
        raise PeerTLSError(
            f"--peer-tls-key: {tls.key_file} is not the key of --peer-tls-cert {tls.cert_file}"
        )
    try:
        if not x509.load_pem_x509_certificates(ca_pem):
            raise ValueError("no certificate")
    except ValueError as exc:
        raise PeerTLSError(
            f"--peer-tls-ca: {tls.ca_file} is not a PEM certificate: {exc}"
        ) from None
    identity = member_identity(cert_pem)
    if identity is None:
        raise PeerTLSError(
            f"--peer-tls-cert: {tls.cert_file} is not a member certificate "
            "(no spiffe://raft-exchange/cluster/<id>/member/<n> URI SAN); "
            "create one with `exchange certs member`"
        )
    cluster_id, member_id = identity
    return PeerMaterial(cert_pem, key_pem, ca_pem, cluster_id, member_id, version)


def check_identity(material: PeerMaterial, cluster_id: str, node_id: int) -> None:
    """Refuse a certificate issued for another member or another cluster."""
    if material.member_id != node_id:
        raise PeerTLSError(
            f"--peer-tls-cert: the certificate is for member {material.member_id}, "
            f"but this node's id is {node_id}"
        )
    if material.cluster_id != cluster_id:
        raise PeerTLSError(
            f"--peer-tls-cert: the certificate is for cluster {material.cluster_id!r}, "
            f"but --cluster-id is {cluster_id!r}"
        )


class PeerCredentials:
    """The current material for one node, reloaded when its files change."""

    def __init__(self, tls: PeerTLS, cluster_id: str, node_id: int) -> None:
        self.tls = tls
        self._cluster_id = cluster_id
        self._node_id = node_id
        self._stamp = _stamp(tls)
        self.material = load_material(tls)
        check_identity(self.material, cluster_id, node_id)
        self.reload_failures = 0
        self._failed_stamp: _FileStamp | None = None

    def refresh(self) -> bool:
        """Reload if the files changed; True when new material is now current."""
        try:
            stamp = _stamp(self.tls)
        except OSError as exc:
            log.warning("peer TLS files: %s; keeping the loaded certificate", exc)
            return False
        if stamp in (self._stamp, self._failed_stamp):
            return False
        try:
            material = load_material(self.tls, self.material.version + 1)
            check_identity(material, self._cluster_id, self._node_id)
        except PeerTLSError as exc:
            # Half-way through a rotation, or a bad file: retry at the next check.
            self.reload_failures += 1
            self._failed_stamp = stamp
            log.warning("peer TLS files changed but cannot be used yet: %s", exc)
            return False
        self._stamp = stamp
        self.material = material
        log.info(
            "peer TLS certificate reloaded",
            extra={"version": material.version, "cert": str(self.tls.cert_file)},
        )
        return True

"""A member key that never leaves its node, and the certificate signed for it (--peer-tls-enroll).

The node keeps its member key in ``<data-dir>/peer-tls/tls.key`` (0600), created
when first needed, and serves a CSR for it on the admin API; whoever runs the CA
(the operator) signs it and PUTs the certificate back, which the node checks
(:func:`certs.check_member_chain`) before writing it next to the key.

Key rotation: a CSR asked for while the node holds a valid certificate is for a
*new* key, kept in ``next.key`` (0600) until its certificate arrives; then the
key and the certificate are replaced (key first: the peer transport keeps its
loaded pair until the files form a valid pair again). Asking again before that
returns a CSR for the same pending key, so a signer that needs several rounds
(cert-manager) sees one public key throughout.

All state is in the files; the clock is a parameter.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from exchange_node.security import certs

ENROLL_DIR = "peer-tls"


class EnrollmentError(ValueError):
    """A certificate or request the node cannot use; the text names the field at fault."""


@dataclass(frozen=True)
class MemberEnrollment:
    """Member ``node_id`` of ``cluster_id``: its key and certificate under ``directory``."""

    directory: Path
    ca_file: Path
    cluster_id: str
    node_id: int

    @classmethod
    def for_data_dir(
        cls, data_dir: Path, ca_file: Path, cluster_id: str, node_id: int
    ) -> MemberEnrollment:
        return cls(Path(data_dir) / ENROLL_DIR, Path(ca_file), cluster_id, node_id)

    @property
    def key_file(self) -> Path:
        return self.directory / "tls.key"

    @property
    def cert_file(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def next_key_file(self) -> Path:
        return self.directory / "next.key"

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _ca(self) -> bytes:
        try:
            return self.ca_file.read_bytes()
        except OSError as exc:
            raise EnrollmentError(
                f"--peer-tls-ca: cannot read {self.ca_file}: {exc.strerror or exc}"
            ) from None

    def certificate_problem(self, now: datetime.datetime) -> str | None:
        """Why the node cannot serve the peer port with its files now, or None."""
        key, chain = self._read(self.key_file), self._read(self.cert_file)
        if key is None:
            return "no member key yet"
        if chain is None:
            return "no member certificate yet"
        try:
            certs.check_member_chain(chain, key, self._ca(), self.cluster_id, self.node_id, now)
        except ValueError as exc:
            return str(exc)
        return None

    def _key(self, path: Path) -> bytes:
        """The key at ``path``, created (0600) when there is none. Handlers call this
        without awaiting in between, so two requests cannot both create one."""
        existing = self._read(path)
        if existing is not None:
            return existing
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = certs.new_private_key_pem()
        certs.write_atomic(path, pem, 0o600)
        return pem

    def certificate_request(self, now: datetime.datetime) -> bytes:
        """A CSR (PEM) for this member: the pending key's, a new key's when the current
        certificate is valid (rotation), else the current key's (created if needed)."""
        if self.next_key_file.exists() or self.certificate_problem(now) is None:
            key = self._key(self.next_key_file)
        else:
            key = self._key(self.key_file)
        return certs.member_csr(key, self.cluster_id, self.node_id)

    def install(self, chain_pem: bytes, now: datetime.datetime) -> str:
        """Check and write a signed certificate chain; which key it is for: current | next."""
        try:
            parsed = x509.load_pem_x509_certificates(chain_pem)
        except ValueError as exc:
            raise EnrollmentError(f"certificate: not a PEM certificate: {exc}") from None
        # Only the certificates are kept: whatever else the body held is not written.
        chain_pem = b"".join(c.public_bytes(Encoding.PEM) for c in parsed)
        leaf_key = certs.public_key_der(parsed[0].public_bytes(Encoding.PEM))
        ca = self._ca()
        for which, path in (("next", self.next_key_file), ("current", self.key_file)):
            key = self._read(path)
            if key is None or certs.public_key_der(key) != leaf_key:
                continue
            try:
                certs.check_member_chain(chain_pem, key, ca, self.cluster_id, self.node_id, now)
            except ValueError as exc:
                raise EnrollmentError(str(exc)) from None
            if which == "next":
                certs.write_atomic(self.key_file, key, 0o600)
            certs.write_atomic(self.cert_file, chain_pem, 0o644)
            if which == "next":
                self.next_key_file.unlink()
            return which
        raise EnrollmentError(
            "certificate: it certifies another public key than this node's member key "
            "(sign the CSR from GET /v1/admin/certificate-request)"
        )

    def status(self, now: datetime.datetime) -> dict[str, Any]:
        """For the admin status: the certificate in use (public) or why there is none."""
        problem = self.certificate_problem(now)
        doc: dict[str, Any] = {"enrolling": True, "rotation_pending": self.next_key_file.exists()}
        if problem is not None:
            doc["problem"] = problem
            return doc
        chain = self._read(self.cert_file) or b""
        leaf = x509.load_pem_x509_certificate(chain)
        doc["certificate"] = chain.decode()
        doc["not_before"] = _iso(leaf.not_valid_before_utc)
        doc["not_after"] = _iso(leaf.not_valid_after_utc)
        return doc


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def for_node(node: Any) -> MemberEnrollment | None:
    """The enrollment of a running node (shell ``Node``), or None without --peer-tls-enroll."""
    cfg = node.config
    if not getattr(cfg, "peer_tls_enroll", False) or cfg.peer_tls_ca is None:
        return None
    return MemberEnrollment.for_data_dir(
        cfg.data_dir, cfg.peer_tls_ca, cfg.cluster_id, int(node.node_id)
    )

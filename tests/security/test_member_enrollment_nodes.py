"""--peer-tls-enroll on real node processes: the member key is made on the node and
never leaves it; the admin API hands out a CSR and takes the signed certificate.

A 3-node mTLS cluster in which members 1 and 2 run with certificates written by the
local path (`exchange local up`: key and certificate issued together) and member 3
enrolls (the Kubernetes path: the node's own key, a CSR signed by the CA): it waits,
its CSR is signed, the certificate is PUT, it joins and replicates. Then a rotation:
a second CSR is for a new key, and the peer port serves the new certificate without
a restart.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from exchange_node.security import certs
from exchange_node.security.enrollment import ENROLL_DIR
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow
ENROLLING = 3


class EnrollingCluster(LocalCluster):
    """Member 3 makes its own key (--peer-tls-enroll); the others use the local path."""

    def peer_args(self, node_id: int) -> list[str]:
        if node_id != ENROLLING:
            return super().peer_args(node_id)
        _, _, ca = self.member_cert_paths(node_id)
        return ["--peer-tls-enroll", f"--peer-tls-ca={ca}"]

    def ensure_certificates(self) -> None:
        super().ensure_certificates()
        cert, key, _ = self.member_cert_paths(ENROLLING)
        cert.unlink(missing_ok=True)  # nobody but the node holds member 3's key
        key.unlink(missing_ok=True)


def _admin(
    cluster: LocalCluster, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    m = cluster.member(ENROLLING)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{m.admin}{path}", data=data, method=method)
    if token != "":
        req.add_header("Authorization", f"Bearer {token or cluster.spec.admin_token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise TimeoutError(what)


def _ca(cluster: LocalCluster) -> certs.CertKeyPair:
    pki = cluster.root / "pki"
    return certs.CertKeyPair((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())


def _served_public_key(cluster: LocalCluster) -> bytes:
    """The public key member 3's peer port presents to a member (member 1) dialing it."""
    cert, key, ca = cluster.member_cert_paths(1)
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2"])
    m = cluster.member(ENROLLING)
    with (
        socket.create_connection(("127.0.0.1", m.grpc_port), timeout=5) as raw,
        context.wrap_socket(
            raw, server_hostname=certs.member_dns_name(cluster.spec.cluster_id, ENROLLING)
        ) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return certs.public_key_der(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EnrollingCluster]:
    c = EnrollingCluster.create(tmp_path / "c", 3, election_ms=400, heartbeat_ms=40)
    c.start_all()
    try:
        yield c
    finally:
        c.stop_all(10)


def test_a_node_enrolls_its_own_key_joins_the_mtls_cluster_and_rotates(
    cluster: EnrollingCluster,
) -> None:
    leader = cluster.wait_for_leader(60, among=[1, 2])
    cid = cluster.spec.cluster_id
    # Member 3 waits: serves its admin status, no peer port, no certificate.
    _wait(lambda: _admin(cluster, "GET", "/v1/admin/status")[0] == 200, 30, "member 3 admin")
    status = _admin(cluster, "GET", "/v1/admin/status")[1]
    assert status["member_certificate"]["enrolling"] is True
    assert "certificate" not in status["member_certificate"]
    assert "no member key" in status["member_certificate"]["problem"]

    # The admin token guards both calls.
    assert _admin(cluster, "GET", "/v1/admin/certificate-request", token="")[0] == 401
    assert _admin(cluster, "PUT", "/v1/admin/certificate", {"certificate": "x"}, "wrong")[0] == 401

    code, doc = _admin(cluster, "GET", "/v1/admin/certificate-request")
    assert code == 200 and (doc["member_id"], doc["cluster_id"]) == (ENROLLING, cid)
    csr = doc["csr"].encode()
    assert b"PRIVATE" not in csr
    key_file = Path(cluster.member(ENROLLING).data_dir) / ENROLL_DIR / "tls.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert certs.public_key_der(csr) == certs.public_key_der(key_file.read_bytes())
    # Asking again: the same key (a signer may take several rounds).
    again = _admin(cluster, "GET", "/v1/admin/certificate-request")[1]["csr"].encode()
    assert certs.public_key_der(again) == certs.public_key_der(csr)

    # Bad input: 4xx naming the field; nothing is written.
    ca = _ca(cluster)
    assert _admin(cluster, "PUT", "/v1/admin/certificate", {})[1]["error"].startswith(
        "certificate must be"
    )
    assert _admin(cluster, "PUT", "/v1/admin/certificate", [1])[0] == 400
    other_key = certs.member_csr(certs.new_private_key_pem(), cid, ENROLLING)
    wrong = certs.issue_member_cert_from_csr(ca, other_key, cid, ENROLLING)
    code, doc = _admin(cluster, "PUT", "/v1/admin/certificate", {"certificate": wrong.decode()})
    assert code == 400 and "another public key" in doc["error"]
    foreign = certs.issue_member_cert_from_csr(
        certs.generate_ca("not the cluster's"), csr, cid, ENROLLING
    )
    code, doc = _admin(cluster, "PUT", "/v1/admin/certificate", {"certificate": foreign.decode()})
    assert code == 400 and "trusted CA" in doc["error"]
    assert not (key_file.parent / "tls.crt").exists()

    # The operator's part: sign the CSR (it names exactly member 3) and PUT it.
    signed = certs.issue_member_cert_from_csr(ca, csr, cid, ENROLLING, valid_days=30)
    # Anything but certificates in the body (here a stray key) is not written.
    body = {"certificate": (signed + certs.new_private_key_pem()).decode()}
    code, doc = _admin(cluster, "PUT", "/v1/admin/certificate", body)
    assert code == 200 and doc["installed"] == "current", doc
    assert doc["certificate"] == signed.decode() and "problem" not in doc
    assert (key_file.parent / "tls.crt").read_bytes() == signed

    # Member 3 starts Raft with it and replicates over mTLS with the local-path members.
    def replicating() -> bool:
        st = cluster.status(leader)
        assert st is not None
        three = next(m for m in st["members"] if m["id"] == ENROLLING)
        mine = cluster.status(ENROLLING)
        return bool(
            three["healthy"]
            and three["match_index"] >= st["commit_index"] > 0
            and mine
            and mine["leader"] == leader
        )

    _wait(replicating, 60, "member 3 replicating:\n" + cluster.log_tail(ENROLLING))
    _transfer(cluster, leader, ENROLLING)  # it even leads the local-path members
    assert _served_public_key(cluster) == certs.public_key_der(key_file.read_bytes())

    # Rotation: with a valid certificate, a CSR is for a fresh key, kept aside until
    # its certificate arrives; the peer port then serves it, no restart.
    old_key = certs.public_key_der(key_file.read_bytes())
    rotated = _admin(cluster, "GET", "/v1/admin/certificate-request")[1]["csr"].encode()
    assert certs.public_key_der(rotated) != old_key
    assert _admin(cluster, "GET", "/v1/admin/status")[1]["member_certificate"]["rotation_pending"]
    assert stat.S_IMODE(os.stat(key_file.parent / "next.key").st_mode) == 0o600
    renewed = certs.issue_member_cert_from_csr(ca, rotated, cid, ENROLLING, valid_days=30)
    code, doc = _admin(cluster, "PUT", "/v1/admin/certificate", {"certificate": renewed.decode()})
    assert code == 200 and doc["installed"] == "next" and not doc["rotation_pending"]
    assert certs.public_key_der(key_file.read_bytes()) == certs.public_key_der(rotated)
    _wait(
        lambda: _served_public_key(cluster) == certs.public_key_der(rotated),
        30,
        "the peer port serves the rotated certificate",
    )
    # Still one cluster: leadership moves back over the rotated peer TLS, all caught up.
    _transfer(cluster, ENROLLING, 1)
    _wait(lambda: _all_caught_up(cluster), 30, "all caught up after the rotation")


def _transfer(cluster: LocalCluster, leader: int, target: int) -> None:
    """Hand leadership from ``leader`` to ``target``. The leader abandons a transfer
    that does not finish within one election timeout (dissertation 3.10; here 400 ms,
    which a loaded machine re-dialling rotated TLS can miss) and answers 504; like the
    operator, ask again."""
    deadline = time.monotonic() + 30
    answers = []
    while time.monotonic() < deadline:
        code, _ = cluster.request(
            leader, "POST", "/v1/admin/transfer-leadership", {"target": target}
        )
        answers.append(code)
        if code == 200 and cluster.wait_for_leader(30) == target:
            return
        assert code == 504, answers  # "did not move in time"; anything else is wrong
        leader = cluster.wait_for_leader(30)
        if leader == target:  # it moved after all, just late
            return
    raise AssertionError(f"leadership never moved to {target}: {answers}")


def _all_caught_up(cluster: LocalCluster) -> bool:
    docs = [cluster.status(i) for i in (1, 2, 3)]
    if not all(docs):
        return False
    leader = next((d for d in docs if d and d["role"] == "leader"), None)
    return leader is not None and all(
        m["healthy"] and m["match_index"] >= leader["commit_index"] for m in leader["members"]
    )


def test_enroll_flags_that_contradict_are_usage_errors(tmp_path: Path) -> None:
    import argparse

    from exchange_node.server import config as node_config

    def parse(*flags: str) -> node_config.NodeConfig:
        parser = argparse.ArgumentParser()
        node_config.add_arguments(parser)
        return node_config.from_args(parser.parse_args([f"--data-dir={tmp_path}", *flags]), env={})

    ca = tmp_path / "ca.crt"
    ca.write_bytes(certs.generate_ca("x").cert_pem)
    cfg = parse("--peer-tls-enroll", f"--peer-tls-ca={ca}")
    assert cfg.peer_tls_enroll and cfg.await_member_certificate
    assert cfg.peer_tls_key == tmp_path / ENROLL_DIR / "tls.key"
    with pytest.raises(node_config.ConfigError, match="needs --peer-tls-ca"):
        parse("--peer-tls-enroll")
    with pytest.raises(node_config.ConfigError, match="--insecure-peers contradicts"):
        parse("--peer-tls-enroll", f"--peer-tls-ca={ca}", "--insecure-peers")
    with pytest.raises(node_config.ConfigError, match="--peer-tls-key contradicts"):
        parse("--peer-tls-enroll", f"--peer-tls-ca={ca}", f"--peer-tls-key={ca}")

"""The admin API on its own listener, and TLS on the HTTP and admin listeners.

Real node processes on loopback, real TLS handshakes (certificates made at
test time by exchange_node.security.certs in a temporary directory):

- /v1/admin/* answers only on --admin-port; the public port answers 404;
- with --http-tls-cert/--http-tls-key both listeners speak TLS only, and a
  certificate replaced on disk is served to the next handshake, no restart;
- with --admin-tls-client-ca the admin port refuses a client without a
  certificate, or with one from another CA;
- half a TLS configuration is a usage error naming the flags.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from exchange_node.security import certs
from exchange_node.server import config as node_config
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow


def _get(url: str, token: str | None, context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=3, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"condition not met in {timeout}s (last error: {last})")


@pytest.fixture
def plain_node(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster.create(tmp_path / "c", 1, election_ms=400, heartbeat_ms=40)
    cluster.start_all()
    try:
        cluster.wait_for_leader(60)
        yield cluster
    finally:
        cluster.stop_all(10)


def test_admin_api_answers_only_on_the_admin_port(plain_node: LocalCluster) -> None:
    m = plain_node.member(1)
    token = plain_node.spec.admin_token
    assert m.admin_port not in (m.http_port, 0)
    # The public listener does not know the admin routes at all.
    assert _get(f"http://{m.http}/v1/admin/status", token)[0] == 404
    code, doc = _get(f"http://{m.admin}/v1/admin/status", token)
    assert code == 200 and doc["role"] == "leader"
    assert _get(f"http://{m.admin}/v1/admin/status", "wrong")[0] == 401
    # The admin listener serves nothing else; probes and metrics stay public.
    assert _get(f"http://{m.admin}/v1/symbols", plain_node.key_for("alice"))[0] == 404
    assert _get(f"http://{m.admin}/healthz", None)[0] == 404
    assert _get(f"http://{m.http}/healthz", None)[0] == 200
    # LocalCluster (and so `exchange local status`) goes to the admin port.
    assert plain_node.status(1)["node_id"] == 1


# ---- TLS ------------------------------------------------------------------------------


def _server_pair(ca: certs.CertKeyPair, cn_hint: str) -> certs.CertKeyPair:
    return certs.issue_server_cert(ca, [cn_hint, "localhost"], ["127.0.0.1"], valid_days=2)


def _serial(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number


def _peer_serial(address: str, context: ssl.SSLContext) -> int:
    import socket

    host, port = address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=3) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return _serial(der)


@pytest.fixture
def tls_node(tmp_path: Path) -> Iterator[tuple[LocalCluster, Path, certs.CertKeyPair]]:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = certs.generate_ca("test http ca", valid_days=2)
    (pki / "ca.pem").write_bytes(ca.cert_pem)
    certs.write_pair(_server_pair(ca, "first.test"), pki / "tls.crt", pki / "tls.key")
    client_ca = certs.generate_ca("test admin client ca", valid_days=2)
    (pki / "client-ca.pem").write_bytes(client_ca.cert_pem)
    cluster = LocalCluster.create(
        tmp_path / "c",
        1,
        election_ms=400,
        heartbeat_ms=40,
        extra_args=[
            f"--http-tls-cert={pki / 'tls.crt'}",
            f"--http-tls-key={pki / 'tls.key'}",
            f"--admin-tls-client-ca={pki / 'client-ca.pem'}",
        ],
    )
    cluster.start_all()
    try:
        yield cluster, pki, (ca, client_ca)  # type: ignore[misc]
    finally:
        cluster.stop_all(10)


def test_tls_on_both_listeners_reload_and_admin_client_certificates(tls_node) -> None:
    cluster, pki, (ca, client_ca) = tls_node
    m = cluster.member(1)
    token = cluster.spec.admin_token
    trust = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    _wait(lambda: _get(f"https://{m.http}/readyz", None, trust)[0] == 200, 60)

    # Public listener: TLS only; a client that does not trust the CA is refused.
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _get(f"http://{m.http}/healthz", None)
    with pytest.raises(urllib.error.URLError) as refused:
        _get(f"https://{m.http}/healthz", None, ssl.create_default_context())
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)

    # Admin listener: TLS and a client certificate from --admin-tls-client-ca.
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        _get(f"https://{m.admin}/v1/admin/status", token, trust)
    stranger = certs.issue_member_cert(certs.generate_ca("someone else", 2), "admin-test", 1)
    certs.write_pair(stranger, pki / "wrong.crt", pki / "wrong.key")
    wrong = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    wrong.load_cert_chain(pki / "wrong.crt", pki / "wrong.key")
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        _get(f"https://{m.admin}/v1/admin/status", token, wrong)
    operator = _client_context(client_ca, pki)
    code, doc = _get(f"https://{m.admin}/v1/admin/status", token, operator)
    assert code == 200 and doc["node_id"] == 1
    # Still the public port's 404 for admin paths, over TLS too.
    assert _get(f"https://{m.http}/v1/admin/status", token, trust)[0] == 404

    # Rotation: new files on disk, the next handshake gets them, no restart.
    before = _peer_serial(m.http, trust)
    rotated = _server_pair(ca, "second.test")
    time.sleep(0.01)  # a distinct mtime even on coarse-grained file systems
    certs.write_pair(rotated, pki / "tls.crt", pki / "tls.key")
    after_public = _peer_serial(m.http, trust)
    assert after_public != before
    assert after_public == x509.load_pem_x509_certificate(rotated.cert_pem).serial_number
    admin_trust = _client_context(client_ca, pki)
    assert _peer_serial(m.admin, admin_trust) == after_public
    assert cluster.alive(1)

    # A broken rotation (a key that does not match) keeps the last good certificate.
    other = _server_pair(ca, "third.test")
    (pki / "tls.key").write_bytes(other.key_pem)
    assert _peer_serial(m.http, trust) == after_public
    assert _get(f"https://{m.http}/healthz", None, trust)[0] == 200


def _client_context(client_ca: certs.CertKeyPair, pki: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    # A member certificate carries clientAuth (a server certificate does not).
    pair = certs.issue_member_cert(client_ca, "admin-test", 1, valid_days=2)
    certs.write_pair(pair, pki / "op.crt", pki / "op.key")
    context.load_cert_chain(pki / "op.crt", pki / "op.key")
    return context


# ---- configuration ----------------------------------------------------------------------


def _parse(argv: list[str]) -> node_config.NodeConfig:
    parser = argparse.ArgumentParser()
    node_config.add_arguments(parser)
    return node_config.from_args(parser.parse_args(["--insecure-peers", *argv]), env={})


def test_admin_port_and_tls_flags(tmp_path: Path) -> None:
    assert _parse([]).admin_port == 8081
    assert _parse(["--admin-port=9091"]).admin_port == 9091
    with pytest.raises(node_config.ConfigError, match="--admin-port"):
        _parse(["--admin-port=8080"])
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    with pytest.raises(node_config.ConfigError, match="--http-tls-cert and --http-tls-key"):
        _parse([f"--http-tls-cert={cert}"])
    with pytest.raises(node_config.ConfigError, match="--http-tls-cert and --http-tls-key"):
        _parse([f"--http-tls-key={key}"])
    with pytest.raises(node_config.ConfigError, match="--admin-tls-client-ca needs"):
        _parse([f"--admin-tls-client-ca={cert}"])
    with pytest.raises(node_config.ConfigError, match=r"--http-tls-key: .* not a readable file"):
        _parse([f"--http-tls-cert={cert}", f"--http-tls-key={tmp_path / 'missing'}"])
    cfg = _parse([f"--http-tls-cert={cert}", f"--http-tls-key={key}"])
    assert (cfg.http_tls_cert, cfg.http_tls_key) == (cert, key)


def test_unloadable_certificate_is_a_usage_error_naming_the_flags(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange_node.cli",
            "node",
            f"--data-dir={tmp_path / 'data'}",
            "--listen-host=127.0.0.1",
            "--http-port=0",
            "--grpc-port=0",
            "--admin-port=0",
            "--insecure-peers",
            f"--http-tls-cert={cert}",
            f"--http-tls-key={key}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--http-tls-cert/--http-tls-key" in proc.stderr


# ---- --await-member-certificate -------------------------------------------------------------


def test_a_node_waits_for_the_certificate_of_its_id(tmp_path: Path) -> None:
    """What a new Kubernetes pod does: its id is only known once it runs, so it serves
    its admin status, and starts Raft when a certificate for that id appears."""
    from exchange_node.tools.local import free_ports

    pki = tmp_path / "pki"
    pki.mkdir()
    ca = certs.generate_ca("members", valid_days=2)
    (pki / "ca.crt").write_bytes(ca.cert_pem)
    # The operator's first guess (ordinal + 1); the node picks a random id of its own.
    certs.write_pair(certs.issue_member_cert(ca, "await", 6), pki / "tls.crt", pki / "tls.key")
    http, grpc, admin = free_ports(3)
    token = "await-admin-token"
    env = dict(os.environ, EXCHANGE_ADMIN_TOKEN=token, PYTHONUNBUFFERED="1")
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "exchange_node.cli", "node",
            "--name=waiter", "--cluster-id=await", f"--data-dir={tmp_path / 'data'}",
            "--listen-host=127.0.0.1", f"--http-port={http}", f"--grpc-port={grpc}",
            f"--admin-port={admin}", f"--advertise-address=127.0.0.1:{grpc}",
            f"--peer-tls-cert={pki / 'tls.crt'}", f"--peer-tls-key={pki / 'tls.key'}",
            f"--peer-tls-ca={pki / 'ca.crt'}", "--await-member-certificate",
            "--election-ms=300", "--heartbeat-ms=30",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    try:
        status: dict[str, Any] = {}

        def waiting() -> bool:
            code, doc = _get(f"http://127.0.0.1:{admin}/v1/admin/status", token)
            status.update(doc or {})
            return code == 200

        _wait(waiting, 30)
        node_id = status["node_id"]
        assert node_id >= 1000 and status["role"] != "leader"  # a random id, not 6
        assert _get(f"http://127.0.0.1:{http}/healthz", None)[0] == 200
        assert _get(f"http://127.0.0.1:{http}/readyz", None)[0] == 503
        time.sleep(1.5)
        assert proc.poll() is None, (tmp_path / "node.log").read_text()
        assert _get(f"http://127.0.0.1:{admin}/v1/admin/status", token)[1]["role"] != "leader"

        # The operator issues the certificate for the id the node reported.
        certs.write_pair(
            certs.issue_member_cert(ca, "await", node_id), pki / "tls.crt", pki / "tls.key"
        )
        _wait(
            lambda: _get(f"http://127.0.0.1:{admin}/v1/admin/status", token)[1]["role"] == "leader",
            30,
        )
        _wait(lambda: _get(f"http://127.0.0.1:{http}/readyz", None)[0] == 200, 30)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

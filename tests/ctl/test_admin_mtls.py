"""Who did it, when the admin listener requires client certificates: the CLI
speaks TLS with --cacert/--cert/--key, and the audit names the certificate."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from exchange_node.cli import main as exchange
from exchange_node.security import certs
from exchange_node.tools.local import LocalCluster

pytestmark = pytest.mark.slow  # real node processes


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path]]:
    tmp = tmp_path_factory.mktemp("mtls")
    pki = tmp / "pki"
    pki.mkdir()
    ca = certs.generate_ca("ctl http ca", valid_days=2)
    (pki / "ca.pem").write_bytes(ca.cert_pem)
    server = certs.issue_server_cert(ca, ["localhost"], ["127.0.0.1"], valid_days=2)
    certs.write_pair(server, pki / "tls.crt", pki / "tls.key")
    client_ca = certs.generate_ca("ctl admin client ca", valid_days=2)
    (pki / "client-ca.pem").write_bytes(client_ca.cert_pem)
    # A member certificate carries clientAuth: the operator's identity here.
    operator = certs.issue_member_cert(client_ca, "ops", 7, valid_days=2)
    certs.write_pair(operator, pki / "op.crt", pki / "op.key")
    cluster = LocalCluster.create(
        tmp / "c",
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
        yield cluster, pki
    finally:
        cluster.stop_all(10)


def _subject(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    common = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if common:
        return str(common[0].value)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    first = next(iter(san))
    kind = {"UniformResourceIdentifier": "URI", "DNSName": "DNS"}[type(first).__name__]
    return f"{kind}:{first.value}"


def test_the_audit_names_the_client_certificate(
    tls_cluster: tuple[LocalCluster, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, pki = tls_cluster
    m = cluster.member(1)
    token = pki / "admin-token"
    token.write_text(cluster.spec.admin_token)
    tls = [
        "--cacert",
        str(pki / "ca.pem"),
        "--cert",
        str(pki / "op.crt"),
        "--key",
        str(pki / "op.key"),
    ]
    flags = ["--endpoints", f"https://127.0.0.1:{m.admin_port}", "--admin-token-file", str(token)]
    # Wait for the node to serve and lead (cluster status exits 0 once one leads).
    for _ in range(300):
        if exchange([*flags, *tls, "cluster", "status"]) == 0:
            break
        time.sleep(0.1)
    capsys.readouterr()
    # Without the client certificate the admin listener refuses the handshake.
    code = exchange([*flags, "--cacert", str(pki / "ca.pem"), "symbol", "halt", "BTC-USD"])
    assert code == 1 and "no admin endpoint answered" in capsys.readouterr().err
    code = exchange([*flags, *tls, "-o", "json", "symbol", "halt", "BTC-USD"])
    assert code == 0 and json.loads(capsys.readouterr().out)["halted"] is True
    code = exchange([*flags, *tls, "symbol", "resume", "BTC-USD"])
    assert code == 0
    capsys.readouterr()
    import asyncio

    from exchange_client import AdminClient
    from exchange_client.admin import tls_context

    async def audit() -> list[dict]:
        context = tls_context(str(pki / "ca.pem"), str(pki / "op.crt"), str(pki / "op.key"))
        async with AdminClient(flags[1], cluster.spec.admin_token, ssl_context=context) as a:
            return await a.audit()

    actions = asyncio.run(audit())
    assert [a["action"] for a in actions] == ["halt", "resume"]
    expected = _subject((pki / "op.crt").read_bytes())
    for action in actions:
        assert action["auth"] == "mtls" and action["subject"] == expected, action
        assert "@" in action["actor"]  # the CLI's user@host


def test_tls_flags_name_themselves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--endpoints", "https://127.0.0.1:1", "--admin-token-file", __file__]
    assert exchange([*flags, "--cert", str(tmp_path / "none.crt"), "cluster", "status"]) == 2
    assert "--cert" in capsys.readouterr().err
    assert exchange([*flags, "--key", __file__, "cluster", "status"]) == 2
    assert "--key needs --cert" in capsys.readouterr().err

"""`exchange certs`: files a node accepts, 0600 keys, errors that name the flag."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from exchange_node.security import member_identity
from exchange_node.transport.tls import PeerTLS, check_identity, load_material


def certs(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange_node.cli", "certs", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ca_member_and_server(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    assert certs("ca", "--dir", str(d)).returncode == 0
    proc = certs("member", "--dir", str(d), "--cluster-id", "prod", "--node-id", "2",
                 "--dns", "node-2.example", "--ip", "10.0.0.2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert certs("server", "--dir", str(d), "--dns", "api.example").returncode == 0
    names = sorted(p.name for p in d.iterdir())
    assert names == ["ca.crt", "ca.key", "member-2.crt", "member-2.key", "server.crt", "server.key"]
    for key in d.glob("*.key"):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key
    assert member_identity((d / "member-2.crt").read_bytes()) == ("prod", 2)
    material = load_material(PeerTLS(d / "member-2.crt", d / "member-2.key", d / "ca.crt"))
    check_identity(material, "prod", 2)


def test_errors_name_the_flag(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    proc = certs("member", "--dir", str(d), "--cluster-id", "prod", "--node-id", "1")
    assert proc.returncode == 2 and "no ca.crt" in proc.stderr and "--dir" in proc.stderr
    assert certs("ca", "--dir", str(d)).returncode == 0
    proc = certs("ca", "--dir", str(d))
    assert proc.returncode == 2 and "--force" in proc.stderr
    proc = certs("member", "--dir", str(d), "--cluster-id", "Prod!", "--node-id", "1")
    assert proc.returncode == 2 and "--cluster-id" in proc.stderr
    proc = certs("member", "--dir", str(d), "--cluster-id", "prod", "--node-id", "0")
    assert proc.returncode == 2 and "--node-id" in proc.stderr
    proc = certs("server", "--dir", str(d), "--ip", "not-an-ip")
    assert proc.returncode == 2 and "--ip" in proc.stderr
    proc = certs("server", "--dir", str(d))
    assert proc.returncode == 2 and "--dns" in proc.stderr
    proc = certs("ca", "--dir", str(tmp_path / "x"), "--days", "0")
    assert proc.returncode == 2 and "--days" in proc.stderr


def test_sign_a_nodes_csr_only_for_exactly_that_member(tmp_path: Path) -> None:
    """`exchange certs sign`: the manual counterpart of the operator for --peer-tls-enroll."""
    import datetime

    from exchange_node.security import check_member_chain, member_csr, new_private_key_pem

    d = tmp_path / "pki"
    assert certs("ca", "--dir", str(d)).returncode == 0
    key = new_private_key_pem()  # stays "on the node": never written under pki/
    csr = tmp_path / "node-3.csr"
    csr.write_bytes(member_csr(key, "prod", 3))
    proc = certs("sign", "--dir", str(d), "--csr", str(csr), "--cluster-id", "prod",
                 "--node-id", "3", "--days", "30")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in d.iterdir()) == ["ca.crt", "ca.key", "member-3.crt"]
    now = datetime.datetime.now(datetime.UTC)
    check_member_chain((d / "member-3.crt").read_bytes(), key, (d / "ca.crt").read_bytes(),
                       "prod", 3, now)  # fmt: skip
    proc = certs("sign", "--dir", str(d), "--csr", str(csr), "--cluster-id", "prod",
                 "--node-id", "4")  # fmt: skip
    assert proc.returncode == 2 and "--csr" in proc.stderr and "member 4" in proc.stderr
    proc = certs("sign", "--dir", str(d), "--csr", str(tmp_path / "none"), "--cluster-id",
                 "prod", "--node-id", "3")  # fmt: skip
    assert proc.returncode == 2 and "--csr" in proc.stderr and "cannot read" in proc.stderr

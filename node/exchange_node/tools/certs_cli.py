"""`exchange certs`: a CA, member certificates and server certificates as PEM files.

    exchange certs ca --dir DIR [--days N]
    exchange certs member --dir DIR --cluster-id ID --node-id N [--dns NAME ...] [--ip IP ...]
    exchange certs server --dir DIR --dns NAME [--dns ...] [--ip IP ...] [--days N]
    exchange certs sign --dir DIR --csr FILE --cluster-id ID --node-id N [--days N]

``ca`` writes ``DIR/ca.crt`` and ``DIR/ca.key``; ``member`` and ``server`` read them
and write ``DIR/member-<N>.crt/.key`` or ``DIR/server.crt/.key`` (``--name`` picks
another base name). Keys are written 0600, atomically. A member certificate is what
``exchange node --peer-tls-cert/--peer-tls-key`` expects, with ``DIR/ca.crt`` as
``--peer-tls-ca``. ``sign`` signs the CSR of a node started with ``--peer-tls-enroll``
(``GET /v1/admin/certificate-request``; its key stays on the node) if it asks for
exactly member N of cluster ID, and writes only ``DIR/member-<N>.crt``, to PUT to
``/v1/admin/certificate``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exchange_node.security.certs import (
    CertKeyPair,
    generate_ca,
    issue_member_cert,
    issue_member_cert_from_csr,
    issue_server_cert,
    not_after,
    validate_cluster_id,
    write_atomic,
    write_pair,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="certs_command", required=True, metavar="KIND")
    ca = sub.add_parser("ca", help="a new CA (ca.crt, ca.key)")
    ca.add_argument("--dir", type=Path, required=True, help="where ca.crt and ca.key go")
    ca.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    ca.add_argument("--common-name", default="raft-exchange cluster CA")
    ca.add_argument("--force", action="store_true", help="replace an existing CA")

    member = sub.add_parser("member", help="a member certificate for the peer port")
    member.add_argument("--dir", type=Path, required=True, help="holds ca.crt and ca.key")
    member.add_argument("--cluster-id", required=True)
    member.add_argument("--node-id", type=int, required=True)
    _names(member)
    member.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    member.add_argument("--name", help="base file name (default member-<node-id>)")

    sign = sub.add_parser("sign", help="sign a node's member CSR (--peer-tls-enroll)")
    sign.add_argument("--dir", type=Path, required=True, help="holds ca.crt and ca.key")
    sign.add_argument("--csr", type=Path, required=True, help="the node's PEM CSR")
    sign.add_argument("--cluster-id", required=True)
    sign.add_argument("--node-id", type=int, required=True)
    sign.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    sign.add_argument("--name", help="base file name (default member-<node-id>)")

    server = sub.add_parser("server", help="a TLS server certificate (HTTP API, admin)")
    server.add_argument("--dir", type=Path, required=True, help="holds ca.crt and ca.key")
    _names(server)
    server.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    server.add_argument("--name", default="server", help="base file name (default server)")


def _names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dns", action="append", default=[], help="a DNS name (repeatable)")
    parser.add_argument("--ip", action="append", default=[], help="an IP address (repeatable)")


def _error(message: str) -> int:
    print(f"exchange certs: error: {message}", file=sys.stderr)
    return 2


def _load_ca(directory: Path) -> CertKeyPair:
    cert, key = directory / "ca.crt", directory / "ca.key"
    for path in (cert, key):
        if not path.is_file():
            raise FileNotFoundError(
                f"--dir {directory}: no {path.name} (create it with `exchange certs ca`)"
            )
    return CertKeyPair(cert.read_bytes(), key.read_bytes())


def main(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    if args.days < 1:
        return _error(f"--days must be >= 1, got {args.days}")
    if args.certs_command == "sign":
        return _sign(args)
    try:
        if args.certs_command == "ca":
            if (directory / "ca.key").exists() and not args.force:
                return _error(
                    f"--dir {directory} already holds ca.key; --force replaces it "
                    "(every certificate it signed stops being trusted)"
                )
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            pair = generate_ca(args.common_name, valid_days=args.days)
            base = "ca"
        elif args.certs_command == "member":
            try:
                validate_cluster_id(args.cluster_id)
            except ValueError as exc:
                return _error(f"--cluster-id: {exc}")
            if args.node_id < 1:
                return _error(f"--node-id must be >= 1, got {args.node_id}")
            ca = _load_ca(directory)
            pair = issue_member_cert(
                ca, args.cluster_id, args.node_id, args.dns, args.ip, valid_days=args.days
            )
            base = args.name or f"member-{args.node_id}"
        else:
            if not args.dns and not args.ip:
                return _error("give at least one --dns or --ip")
            ca = _load_ca(directory)
            pair = issue_server_cert(ca, args.dns, args.ip, valid_days=args.days)
            base = args.name
    except FileNotFoundError as exc:
        return _error(str(exc))
    except ValueError as exc:
        flag = "--ip" if "IP address" in str(exc) else "--dns/--ip"
        return _error(f"{flag}: {exc}")
    cert_path, key_path = directory / f"{base}.crt", directory / f"{base}.key"
    try:
        write_pair(pair, cert_path, key_path)
    except OSError as exc:
        return _error(f"--dir {directory}: {exc}")
    print(f"{cert_path} (valid until {not_after(pair.cert_pem):%Y-%m-%d %H:%M} UTC)")
    print(f"{key_path} (0600)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    try:
        validate_cluster_id(args.cluster_id)
    except ValueError as exc:
        return _error(f"--cluster-id: {exc}")
    if args.node_id < 1:
        return _error(f"--node-id must be >= 1, got {args.node_id}")
    try:
        csr = args.csr.read_bytes()
    except OSError as exc:
        return _error(f"--csr: cannot read {args.csr}: {exc.strerror or exc}")
    try:
        ca = _load_ca(args.dir)
        cert = issue_member_cert_from_csr(
            ca, csr, args.cluster_id, args.node_id, valid_days=args.days
        )
    except FileNotFoundError as exc:
        return _error(str(exc))
    except ValueError as exc:
        return _error(f"--csr {args.csr}: {exc}")
    path = args.dir / f"{args.name or f'member-{args.node_id}'}.crt"
    try:
        write_atomic(path, cert, 0o644)
    except OSError as exc:
        return _error(f"--dir {args.dir}: {exc}")
    print(f"{path} (valid until {not_after(cert):%Y-%m-%d %H:%M} UTC)")
    return 0

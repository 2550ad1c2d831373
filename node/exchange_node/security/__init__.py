"""Cluster security: certificates that bind a member id and cluster id (certs.py)."""

from exchange_node.security.certs import (
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

__all__ = [
    "CertKeyPair",
    "generate_ca",
    "issue_member_cert",
    "issue_server_cert",
    "member_dns_name",
    "member_identity",
    "member_uri",
    "not_after",
    "parse_member_uri",
    "validate_cluster_id",
    "write_pair",
]

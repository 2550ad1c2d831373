"""One name per replica: every node of a new cluster writes the same bootstrap entries,
and a member's name follows from its peer address alone (server/shell.py bootstrap_member)."""

from __future__ import annotations

from exchange_node.server.config import PeerSpec
from exchange_node.server.shell import bootstrap_member


def test_a_pod_is_named_by_the_first_label_of_its_peer_host() -> None:
    peer = PeerSpec(2, "xc-1.xc-peers.trading.svc:7000", "xc-1.xc-peers.trading.svc:8080")
    info = bootstrap_member(peer)
    assert (info.name, info.grpc, info.http) == (
        "xc-1",
        "xc-1.xc-peers.trading.svc:7000",
        "xc-1.xc-peers.trading.svc:8080",
    )


def test_an_address_by_ip_gives_node_id() -> None:
    assert bootstrap_member(PeerSpec(3, "127.0.0.1:40000", "127.0.0.1:8080")).name == "node-3"
    assert bootstrap_member(PeerSpec(4, "[::1]:40000", "")).name == "node-4"


def test_every_node_writes_the_same_bootstrap_members() -> None:
    peers = [PeerSpec(i, f"10.0.0.{i}:7000", f"10.0.0.{i}:8080") for i in (1, 2, 3)]
    # What each node would write: its own advertised HTTP only fills a gap in --peer-http.
    views = [
        [bootstrap_member(p, f"me-{me}:8080" if p.node_id == me else "") for p in peers]
        for me in (1, 2, 3)
    ]
    assert views[0] == views[1] == views[2]


def test_own_http_fills_only_a_missing_peer_http() -> None:
    assert bootstrap_member(PeerSpec(1, "10.0.0.1:7000", ""), "10.0.0.1:8080").http == (
        "10.0.0.1:8080"
    )

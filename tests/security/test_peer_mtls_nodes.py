"""Peer mTLS end to end: real node processes started by ``LocalCluster`` (mTLS by default).

A process holding member 3's real certificate (a stolen key, or a member with a bug)
sends frames claiming to be the leader with a much higher term. The target drops them
as ``sender_mismatch``: no term change, no leader change, a counted metric and a log
line naming the address and the claimed id.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from exchange_node.raft.types import Message, MessageType
from exchange_node.security import CertKeyPair, issue_member_cert, member_dns_name
from exchange_node.tools.local import LocalCluster
from exchange_node.transport import peer_pb2_grpc as pb_grpc
from exchange_node.transport.codec import encode_envelope

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster.create(tmp_path / "c", 3, election_ms=400, heartbeat_ms=40)
    c.start_all()
    try:
        c.wait_for_leader(60)
        c.wait_ready(timeout=60)
        yield c
    finally:
        c.stop_all(10)


def rejected(cluster: LocalCluster, node_id: int, reason: str) -> float:
    url = f"http://{cluster.member(node_id).http}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    key = f'exchange_peer_frames_rejected_total{{reason="{reason}"}} '
    for line in text.splitlines():
        if line.startswith(key):
            return float(line.split()[1])
    raise AssertionError(f"{key!r} not in /metrics")


async def send_as(
    cluster: LocalCluster, target: int, holder: CertKeyPair, claimed: int, term: int
) -> None:
    ca_pem = (cluster.root / "pki" / "ca.crt").read_bytes()
    creds = grpc.ssl_channel_credentials(ca_pem, holder.key_pem, holder.cert_pem)
    name = member_dns_name(cluster.spec.cluster_id, target)
    async with grpc.aio.secure_channel(
        cluster.member(target).grpc, creds, options=[("grpc.ssl_target_name_override", name)]
    ) as channel:
        call = pb_grpc.PeerStub(channel).Replicate(timeout=10)
        forged = Message(MessageType.HEARTBEAT, target, claimed, term=term)
        envelope = encode_envelope(claimed, target, 1, [forged], cluster_id=cluster.spec.cluster_id)
        await call.write(envelope)
        await call.done_writing()
        summary = await call
    assert (summary.envelopes, summary.dropped) == (0, 1)


def test_a_member_certificate_cannot_speak_for_another_member(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader(30)
    target = next(m.node_id for m in cluster.spec.members if m.node_id != leader)
    holder_id = next(m.node_id for m in cluster.spec.members if m.node_id not in (leader, target))
    before = {m.node_id: cluster.status(m.node_id) for m in cluster.spec.members}
    assert all(before.values())
    terms = {doc["term"] for doc in before.values() if doc}
    # Member `holder_id`'s own certificate, issued by the cluster's CA.
    pki = cluster.root / "pki"
    ca = CertKeyPair((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
    holder = issue_member_cert(ca, cluster.spec.cluster_id, holder_id)

    asyncio.run(send_as(cluster, target, holder, claimed=leader, term=max(terms) + 1000))

    assert rejected(cluster, target, "sender_mismatch") == 1
    time.sleep(1.0)  # several election timeouts: a forged term would have shown by now
    after = {m.node_id: cluster.status(m.node_id) for m in cluster.spec.members}
    assert {doc["term"] for doc in after.values() if doc} == terms
    assert cluster.leader() == leader
    log = (cluster.root / f"node-{target}.log").read_text()
    assert "sender_mismatch" in log and f"member {holder_id} claims to be {leader}" in log

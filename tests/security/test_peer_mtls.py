"""Mutual TLS on the peer port, with real PeerTransports and real gRPC clients on 127.0.0.1.

Every refused client is checked twice: the frame it sent reached no callback, and a
control (the same frame from a properly authenticated member) does, so a test cannot
pass merely because nothing works.
"""

from __future__ import annotations

import asyncio
import datetime
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from exchange_node.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMeta
from exchange_node.security import (
    CertKeyPair,
    generate_ca,
    issue_member_cert,
    member_dns_name,
    write_pair,
)
from exchange_node.transport import PeerTransport
from exchange_node.transport import peer_pb2 as pb
from exchange_node.transport import peer_pb2_grpc as pb_grpc
from exchange_node.transport.codec import Digest, encode_envelope, snapshot_chunks
from exchange_node.transport.tls import PeerTLS, PeerTLSError

CLUSTER = "prod"
WAIT_LIMIT_S = 30.0


async def until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT_S
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


def heartbeat(frm: int, to: int, n: int = 1) -> Message:
    return Message(MessageType.HEARTBEAT, to, frm, term=3, commit=n, context=n.to_bytes(4, "big"))


class PKI:
    """A CA and member certificate files in a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = generate_ca("test cluster ca")
        self.ca_file = root / "ca.crt"
        self.ca_file.write_bytes(self.ca.cert_pem)

    def member(self, node_id: int, cluster: str = CLUSTER, **kw: Any) -> CertKeyPair:
        return issue_member_cert(self.ca, cluster, node_id, **kw)

    def files(self, node_id: int, pair: CertKeyPair | None = None) -> PeerTLS:
        pair = pair or self.member(node_id)
        cert, key = self.root / f"member-{node_id}.crt", self.root / f"member-{node_id}.key"
        write_pair(pair, cert, key)
        return PeerTLS(cert, key, self.ca_file)


@dataclass
class Peer:
    transport: PeerTransport
    messages: list[Message] = field(default_factory=list)
    digests: list[tuple[int, int, bytes]] = field(default_factory=list)


class Nodes:
    def __init__(self, pki: PKI) -> None:
        self.pki = pki
        self.peers: list[Peer] = []

    async def start(self, node_id: int, tls: PeerTLS | None = None, **options: Any) -> Peer:
        peer = Peer(None)  # type: ignore[arg-type]
        peer.transport = PeerTransport(
            node_id,
            "127.0.0.1:0",
            peer.messages.append,
            on_digest=lambda p, i, h: peer.digests.append((p, i, h)),
            cluster_id=CLUSTER,
            tls=tls if tls is not None else self.pki.files(node_id),
            **options,
        )
        await peer.transport.start()
        self.peers.append(peer)
        return peer

    async def stop(self) -> None:
        await asyncio.gather(*(p.transport.stop() for p in self.peers))


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path)


@pytest.fixture
async def nodes(pki: PKI) -> AsyncIterator[Nodes]:
    n = Nodes(pki)
    yield n
    await n.stop()


def client_channel(
    address: str, ca_pem: bytes, pair: CertKeyPair | None, target_member: int = 2
) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca_pem,
        private_key=pair.key_pem if pair else None,
        certificate_chain=pair.cert_pem if pair else None,
    )
    target = member_dns_name(CLUSTER, target_member)
    return grpc.aio.secure_channel(
        address, creds, options=[("grpc.ssl_target_name_override", target)]
    )


async def replicate(channel: grpc.aio.Channel, *envelopes: pb.Envelope) -> pb.ReplicateSummary:
    call = pb_grpc.PeerStub(channel).Replicate(timeout=10)
    for envelope in envelopes:
        await call.write(envelope)
    await call.done_writing()
    summary: pb.ReplicateSummary = await call
    return summary


def envelope(from_node: int, *messages: Message, cluster: str = CLUSTER) -> pb.Envelope:
    return encode_envelope(from_node, 2, 1, list(messages), cluster_id=cluster)


async def assert_refused(channel: grpc.aio.Channel, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await replicate(channel, envelope(1, heartbeat(1, 2)))
    assert info.value.code() == code, info.value


# ---- the happy path and the control ------------------------------------------------


async def test_members_talk_over_mtls(nodes: Nodes) -> None:
    a = await nodes.start(1)
    b = await nodes.start(2)
    a.transport.set_peers({2: b.transport.address})
    a.transport.send([heartbeat(1, 2)])
    a.transport.send_digest(2, 7, b"h" * 32)
    await until(lambda: b.messages and b.digests, "the heartbeat and the digest")
    assert b.messages == [heartbeat(1, 2)]
    assert b.digests == [(1, 7, b"h" * 32)]
    assert a.transport.stats.tls_enabled and b.transport.stats.tls_enabled


async def test_a_member_certificate_gets_through(nodes: Nodes, pki: PKI) -> None:
    """The control for the refusals below: the same client code with a good certificate."""
    b = await nodes.start(2)
    async with client_channel(b.transport.address, pki.ca.cert_pem, pki.member(1)) as ch:
        summary = await replicate(ch, envelope(1, heartbeat(1, 2)))
    assert (summary.envelopes, summary.dropped) == (1, 0)
    assert b.messages == [heartbeat(1, 2)]


# ---- refused clients ---------------------------------------------------------------


async def test_client_without_a_certificate_is_refused(nodes: Nodes, pki: PKI) -> None:
    b = await nodes.start(2)
    async with client_channel(b.transport.address, pki.ca.cert_pem, None) as ch:
        await assert_refused(ch, grpc.StatusCode.UNAVAILABLE)
    async with grpc.aio.insecure_channel(b.transport.address) as ch:
        await assert_refused(ch, grpc.StatusCode.UNAVAILABLE)
    assert b.messages == []


async def test_certificate_of_another_ca_is_refused(nodes: Nodes, pki: PKI) -> None:
    b = await nodes.start(2)
    rogue = issue_member_cert(generate_ca("rogue ca"), CLUSTER, 1)
    async with client_channel(b.transport.address, pki.ca.cert_pem, rogue) as ch:
        await assert_refused(ch, grpc.StatusCode.UNAVAILABLE)
    assert b.messages == []


async def test_expired_certificate_is_refused(nodes: Nodes, pki: PKI) -> None:
    b = await nodes.start(2)
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = pki.member(1, valid_days=1, not_before=start)
    async with client_channel(b.transport.address, pki.ca.cert_pem, expired) as ch:
        await assert_refused(ch, grpc.StatusCode.UNAVAILABLE)
    assert b.messages == []


async def test_certificate_of_another_cluster_is_refused(nodes: Nodes, pki: PKI) -> None:
    b = await nodes.start(2)
    foreign = pki.member(1, cluster="staging")  # same CA, other cluster id
    async with client_channel(b.transport.address, pki.ca.cert_pem, foreign) as ch:
        await assert_refused(ch, grpc.StatusCode.PERMISSION_DENIED)
        result = await pb_grpc.PeerStub(ch).InstallSnapshot(
            iter(list(snapshot_chunks(snap_message(1, 2), 1, 1024, CLUSTER)))
        )
    assert not result.ok and "staging" in result.reason
    assert b.messages == []
    assert b.transport.stats.wrong_cluster == 2


async def test_member_claiming_another_id_is_dropped_and_counted(nodes: Nodes, pki: PKI) -> None:
    """Member 3 (a valid certificate) sends as member 1: nothing it claims arrives."""
    b = await nodes.start(2)
    as_3 = pki.member(3)
    async with client_channel(b.transport.address, pki.ca.cert_pem, as_3) as ch:
        summary = await replicate(
            ch,
            envelope(1, heartbeat(1, 2)),  # envelope claims 1
            encode_envelope(3, 2, 2, [heartbeat(1, 2)], cluster_id=CLUSTER),  # message claims 1
            encode_envelope(1, 2, 3, [], [Digest(99, b"x" * 32)], cluster_id=CLUSTER),
            encode_envelope(3, 2, 4, [heartbeat(3, 2)], cluster_id=CLUSTER),  # honest: arrives
        )
        snap = snap_message(1, 2)
        result = await pb_grpc.PeerStub(ch).InstallSnapshot(
            iter(list(snapshot_chunks(snap, 1, 1024, CLUSTER)))
        )
    assert (summary.envelopes, summary.dropped) == (1, 3)
    assert not result.ok and "member 3" in result.reason
    await asyncio.sleep(0.05)  # digests are delivered with call_soon
    assert b.messages == [heartbeat(3, 2)]
    assert b.digests == []
    assert b.transport.stats.sender_mismatch == 4


def snap_message(frm: int, to: int, size: int = 3000) -> Message:
    meta = SnapshotMeta(10, 2, ConfState((1, 2, 3)))
    return Message(MessageType.SNAP, to, frm, term=3, snapshot=Snapshot(meta, b"s" * size))


async def test_dialer_checks_it_reached_the_member_it_meant(nodes: Nodes) -> None:
    """Node 1 is told that member 2 lives where member 3 serves: it never connects."""
    a = await nodes.start(1, connect_timeout=0.5)
    c = await nodes.start(3)
    a.transport.set_peers({2: c.transport.address})
    a.transport.send([heartbeat(1, 2)])
    await asyncio.sleep(1.5)
    assert not a.transport.peer_connected(2)
    assert c.messages == []
    a.transport.set_peers({3: c.transport.address})  # the control: the right name works
    await until(lambda: a.transport.peer_connected(3), "the stream to member 3")
    a.transport.send([heartbeat(1, 3)])
    await until(lambda: c.messages == [heartbeat(1, 3)], "the heartbeat")


async def test_node_refuses_a_certificate_of_another_member_or_cluster(pki: PKI) -> None:
    with pytest.raises(PeerTLSError, match="is for member 3, but this node's id is 1"):
        PeerTransport(1, "127.0.0.1:0", lambda m: None, cluster_id=CLUSTER, tls=pki.files(3))
    other = pki.files(1, pki.member(1, cluster="staging"))
    with pytest.raises(PeerTLSError, match="for cluster 'staging', but --cluster-id is 'prod'"):
        PeerTransport(1, "127.0.0.1:0", lambda m: None, cluster_id=CLUSTER, tls=other)
    mismatched = pki.files(1)
    mismatched.key_file.write_bytes(pki.member(1).key_pem)
    with pytest.raises(PeerTLSError, match=r"--peer-tls-key: .* is not the key of"):
        PeerTransport(1, "127.0.0.1:0", lambda m: None, cluster_id=CLUSTER, tls=mismatched)


# ---- rotation ------------------------------------------------------------------------


async def test_rotated_certificates_are_used_without_a_restart(nodes: Nodes, pki: PKI) -> None:
    a = await nodes.start(1, tls_check_interval=0.2)
    b = await nodes.start(2, tls_check_interval=0.2)
    a.transport.set_peers({2: b.transport.address})
    a.transport.send([heartbeat(1, 2, 1)])
    await until(lambda: len(b.messages) == 1, "the first heartbeat")

    # A new CA; both members' files and the CA file are rewritten in place.
    new = PKI.__new__(PKI)
    new.root, new.ca, new.ca_file = pki.root, generate_ca("rotated ca"), pki.ca_file
    new_b = new.member(2)
    pki.files(2, new_b)
    pki.files(1, new.member(1))
    pki.ca_file.write_bytes(new.ca.cert_pem)

    # The next handshake presents the new certificate: a client trusting only the
    # new CA gets in, one with an old-CA certificate no longer does.
    async with client_channel(b.transport.address, new.ca.cert_pem, new.member(3)) as ch:
        summary = await replicate(ch, envelope(3, heartbeat(3, 2)))
    assert summary.envelopes == 1
    async with client_channel(b.transport.address, pki.ca.cert_pem, pki.member(3)) as ch:
        await assert_refused(ch, grpc.StatusCode.UNAVAILABLE)
    # And the member's own channel moved to the new files: traffic flows again.
    await until(lambda: b.transport.stats.tls_reloads >= 1, "b's reload")
    await until(lambda: a.transport.stats.tls_reloads >= 1, "a's reload")

    def resend() -> bool:
        a.transport.send([heartbeat(1, 2, 2)])
        return heartbeat(1, 2, 2) in b.messages

    await until(resend, "a heartbeat over the rotated certificates")


# ---- snapshot bounds -----------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def header_chunk(total_size: int, transfer_id: int = 1, frm: int = 1) -> pb.SnapshotChunk:
    first = next(snapshot_chunks(snap_message(frm, 2, 0), transfer_id, 1024, CLUSTER))
    body = pb.SnapshotChunkBody.FromString(first.body)
    body.total_size = total_size
    raw = body.SerializeToString()
    return pb.SnapshotChunk(body=raw, crc32=zlib.crc32(raw))


async def test_a_4_gib_header_without_data_costs_nothing_and_times_out(
    nodes: Nodes, pki: PKI
) -> None:
    b = await nodes.start(2, max_snapshot_bytes=8 << 30, snapshot_stall_timeout=1.0)
    before = rss_bytes()
    async with client_channel(b.transport.address, pki.ca.cert_pem, pki.member(1)) as ch:
        call = pb_grpc.PeerStub(ch).InstallSnapshot(timeout=20)
        await call.write(header_chunk(4 << 30))
        await asyncio.sleep(0.3)
        grown = rss_bytes() - before
        result = await call  # the receiver gives up on the stalled stream
    assert grown < 64 << 20, f"RSS grew by {grown >> 20} MiB"
    assert not result.ok and "no snapshot chunk for 1 s" in result.reason
    assert b.transport.stats.snapshot_timeouts == 1
    assert b.messages == []


async def test_a_header_above_the_maximum_is_refused(nodes: Nodes, pki: PKI) -> None:
    b = await nodes.start(2)  # default maximum: 1 GiB
    async with client_channel(b.transport.address, pki.ca.cert_pem, pki.member(1)) as ch:
        result = await pb_grpc.PeerStub(ch).InstallSnapshot(iter([header_chunk(4 << 30)]))
    assert not result.ok and "exceeds the limit of 1073741824" in result.reason
    assert b.transport.stats.snapshot_oversized == 1


async def test_a_third_concurrent_transfer_is_refused(nodes: Nodes, pki: PKI) -> None:
    b = await nodes.start(2, snapshot_stall_timeout=2.0)
    async with client_channel(b.transport.address, pki.ca.cert_pem, pki.member(1)) as ch:
        stub = pb_grpc.PeerStub(ch)
        held = [stub.InstallSnapshot(timeout=20) for _ in range(2)]
        for i, call in enumerate(held):
            await call.write(header_chunk(1 << 20, transfer_id=i + 1))
        await until(lambda: b.transport._incoming_snapshots == 2, "two transfers running")
        third = await stub.InstallSnapshot(iter([header_chunk(1 << 20, transfer_id=3)]))
        assert not third.ok and "limit 2" in third.reason
        assert b.transport.stats.snapshot_busy == 1
        for call in held:
            assert not (await call).ok  # stalled: timed out
        # Slots free again: a real transfer goes through.
        snap = snap_message(1, 2)
        result = await stub.InstallSnapshot(iter(list(snapshot_chunks(snap, 9, 1024, CLUSTER))))
    assert result.ok
    assert b.messages == [snap]


async def test_a_transfer_past_the_snapshot_timeout_is_aborted(nodes: Nodes, pki: PKI) -> None:
    b = await nodes.start(2, snapshot_timeout=1.0, snapshot_stall_timeout=0.5)
    snap = snap_message(1, 2, size=50_000)
    chunks = list(snapshot_chunks(snap, 1, 1000, CLUSTER))
    async with client_channel(b.transport.address, pki.ca.cert_pem, pki.member(1)) as ch:
        call = pb_grpc.PeerStub(ch).InstallSnapshot(timeout=20)
        for chunk in chunks:  # a trickle: never stalled, never done in time
            if call.done():
                break
            await call.write(chunk)
            await asyncio.sleep(0.1)
        result = await call
    assert not result.ok and "longer than 1 s" in result.reason
    assert b.transport.stats.snapshot_timeouts == 1
    assert b.messages == []


async def test_terms_above_max_term_are_dropped_on_the_wire(nodes: Nodes, pki: PKI) -> None:
    b = await nodes.start(2)
    forged = Message(MessageType.HEARTBEAT, 2, 1, term=2**64 - 1)
    async with client_channel(b.transport.address, pki.ca.cert_pem, pki.member(1)) as ch:
        summary = await replicate(ch, envelope(1, forged))
    assert (summary.envelopes, summary.dropped) == (0, 1)
    assert b.messages == []
    assert b.transport.stats.decode_failures == 1


async def test_envelope_of_another_cluster_is_refused_without_tls(nodes: Nodes) -> None:
    peer = Peer(PeerTransport(2, "127.0.0.1:0", lambda m: None, cluster_id=CLUSTER))
    peer.transport._on_message = peer.messages.append
    await peer.transport.start()
    nodes.peers.append(peer)
    async with grpc.aio.insecure_channel(peer.transport.address) as ch:
        summary = await replicate(
            ch, envelope(1, heartbeat(1, 2), cluster="staging"), envelope(1, heartbeat(1, 2))
        )
    assert (summary.envelopes, summary.dropped) == (1, 1)
    assert peer.messages == [heartbeat(1, 2)]
    assert peer.transport.stats.wrong_cluster == 1


async def test_a_ca_bundle_trusts_both_cas_during_a_ca_change(nodes: Nodes, pki: PKI) -> None:
    new_ca = generate_ca("next ca")
    pki.ca_file.write_bytes(pki.ca.cert_pem + new_ca.cert_pem)
    b = await nodes.start(2)  # still on its old-CA certificate
    for ca, n in ((pki.ca, 1), (new_ca, 3)):
        pair = issue_member_cert(ca, CLUSTER, n)
        async with client_channel(b.transport.address, pki.ca.cert_pem, pair) as ch:
            summary = await replicate(ch, envelope(n, heartbeat(n, 2)))
        assert summary.envelopes == 1
    assert b.messages == [heartbeat(1, 2), heartbeat(3, 2)]


async def test_a_ca_signed_certificate_naming_no_member_is_refused(nodes: Nodes, pki: PKI) -> None:
    """Same CA, clientAuth usage, but no member URI (e.g. a client tool's certificate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(pki.ca.cert_pem)
    ca_key = serialization.load_pem_private_key(pki.ca.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "member-1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("member-1.prod.example")]), critical=False
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    pair = CertKeyPair(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    b = await nodes.start(2)
    async with client_channel(b.transport.address, pki.ca.cert_pem, pair) as ch:
        await assert_refused(ch, grpc.StatusCode.PERMISSION_DENIED)
    assert b.messages == []
    assert b.transport.stats.unauthenticated == 1

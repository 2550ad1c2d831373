"""PeerTransport over real gRPC on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from exchange_node.raft.types import (
    ConfState,
    Entry,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from exchange_node.transport import PeerTransport
from exchange_node.transport import peer_pb2 as pb
from exchange_node.transport import peer_pb2_grpc as pb_grpc
from exchange_node.transport.codec import encode_envelope, snapshot_chunks
from exchange_node.transport.transport import backoff_delay

ECHO_PEER = Path(__file__).with_name("echo_peer.py")

WAIT_LIMIT_S = 30.0
"""Only a guard against hanging forever: no test asserts on how long anything takes."""


async def until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT_S
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.005)


@dataclass
class Recorder:
    """Collects everything a transport reports."""

    messages: list[Message] = field(default_factory=list)
    digests: list[tuple[int, int, bytes]] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    snapshot_status: list[tuple[int, bool]] = field(default_factory=list)

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_digest": lambda peer, index, digest: self.digests.append((peer, index, digest)),
            "on_unreachable": self.unreachable.append,
            "on_snapshot_status": lambda peer, ok: self.snapshot_status.append((peer, ok)),
        }


@dataclass
class Node:
    transport: PeerTransport
    seen: Recorder


class Cluster:
    """Transports on 127.0.0.1 ephemeral ports, stopped at the end of the test."""

    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}

    async def add(self, node_id: int, listen: str = "127.0.0.1:0", **options: Any) -> Node:
        seen = Recorder()
        transport = PeerTransport(
            node_id, listen, seen.messages.append, **{**seen.callbacks(), **options}
        )
        await transport.start()
        node = Node(transport, seen)
        self.nodes[node_id] = node
        return node

    def connect_all(self) -> None:
        addresses = {i: n.transport.address for i, n in self.nodes.items()}
        for node in self.nodes.values():
            node.transport.set_peers(addresses)

    async def stop(self) -> None:
        await asyncio.gather(*(n.transport.stop() for n in self.nodes.values()))


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    yield c
    await c.stop()


def app(frm: int, to: int, first_index: int, count: int, size: int = 100) -> Message:
    entries = [
        Entry(3, first_index + i, (first_index + i).to_bytes(8, "big") * (size // 8))
        for i in range(count)
    ]
    return Message(
        MessageType.APP,
        to,
        frm,
        term=3,
        log_term=3,
        index=first_index - 1,
        entries=entries,
        commit=first_index - 1,
    )


def small(kind: MessageType, frm: int, to: int, n: int) -> Message:
    return Message(kind, to, frm, term=3, index=n, commit=n, context=n.to_bytes(4, "big"))


def canonical(msg: Message) -> Message:
    return dataclasses.replace(msg, entries=list(msg.entries))


SMALL_KINDS = [k for k in MessageType if k not in (MessageType.APP, MessageType.SNAP)]


def mixed_traffic(frm: int, to: int, batches: int, per_batch: int) -> list[list[Message]]:
    """Send-calls of APP messages with many entries, interleaved with every other type."""
    calls: list[list[Message]] = []
    index = 1
    for b in range(batches):
        call = [app(frm, to, index, per_batch)]
        index += per_batch
        call.append(small(SMALL_KINDS[b % len(SMALL_KINDS)], frm, to, b))
        calls.append(call)
    return calls


async def test_batches_of_thousands_of_entries_arrive_in_order_both_ways(
    cluster: Cluster,
) -> None:
    a = await cluster.add(1)
    b = await cluster.add(2)
    cluster.connect_all()
    to_b = mixed_traffic(1, 2, batches=40, per_batch=256)
    to_a = mixed_traffic(2, 1, batches=20, per_batch=512)
    for i in range(max(len(to_b), len(to_a))):
        if i < len(to_b):
            a.transport.send(to_b[i])
        if i < len(to_a):
            b.transport.send(to_a[i])
        if i % 3 == 0:
            await asyncio.sleep(0)  # let the senders run: envelopes of varying sizes
    want_b = [m for call in to_b for m in call]
    want_a = [m for call in to_a for m in call]
    await until(lambda: len(b.seen.messages) >= len(want_b), "messages at node 2")
    await until(lambda: len(a.seen.messages) >= len(want_a), "messages at node 1")
    assert [canonical(m) for m in b.seen.messages] == [canonical(m) for m in want_b]
    assert [canonical(m) for m in a.seen.messages] == [canonical(m) for m in want_a]
    assert a.transport.stats.entries_sent == 40 * 256
    assert b.transport.stats.entries_received == 40 * 256
    assert a.transport.stats.envelopes_sent < a.transport.stats.messages_sent  # coalesced
    assert a.transport.peer_connected(2) and b.transport.peer_connected(1)
    for node in (a, b):
        stats = node.transport.stats
        assert stats.checksum_failures == stats.decode_failures == stats.sequence_gaps == 0
        assert stats.dropped_queue_full == stats.dropped_disconnected == 0
        assert node.seen.unreachable == []


async def test_a_dead_peer_does_not_hold_up_the_others(cluster: Cluster) -> None:
    a = await cluster.add(1, min_backoff=0.01, max_backoff=0.1)
    b = await cluster.add(2)
    dead = await cluster.add(3)
    dead_address = dead.transport.address
    await dead.transport.stop()
    a.transport.set_peers({2: b.transport.address, 3: dead_address})
    sent: list[Message] = []
    for i in range(50):
        batch = [app(1, 2, 1 + 200 * i, 200), app(1, 3, 1 + 200 * i, 200)]
        sent.append(batch[0])
        a.transport.send(batch)
        await asyncio.sleep(0)
    await until(lambda: len(b.seen.messages) == len(sent), "everything at node 2")
    assert [canonical(m) for m in b.seen.messages] == [canonical(m) for m in sent]
    await until(lambda: 3 in a.seen.unreachable, "node 3 reported unreachable")
    assert 2 not in a.seen.unreachable
    assert not a.transport.peer_connected(3)
    assert a.transport.stats.peers[3].dropped > 0


async def test_digests_travel_in_order_with_messages(cluster: Cluster) -> None:
    a = await cluster.add(1)
    b = await cluster.add(2)
    cluster.connect_all()
    a.transport.send([app(1, 2, 1, 10)])
    a.transport.send_digest(2, 10, b"\x11" * 32)
    a.transport.send_digest(2, 20, b"\x22" * 32)
    await until(lambda: len(b.seen.digests) == 2, "digests")
    assert b.seen.digests == [(1, 10, b"\x11" * 32), (1, 20, b"\x22" * 32)]
    assert len(b.seen.messages) == 1
    assert a.transport.stats.digests_sent == b.transport.stats.digests_received == 2


@pytest.mark.parametrize("child_loop", ["asyncio", "uvloop"])
async def test_exchange_with_a_transport_in_another_process(
    cluster: Cluster, child_loop: str
) -> None:
    a = await cluster.add(1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ECHO_PEER),
        "2",
        "1",
        a.transport.address,
        child_loop,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = (await proc.stdout.readline()).decode()
        assert line.startswith("PORT "), line
        a.transport.set_peers({2: f"127.0.0.1:{int(line.split()[1])}"})
        sent = [m for call in mixed_traffic(1, 2, batches=30, per_batch=300) for m in call]
        for i in range(0, len(sent), 4):
            a.transport.send(sent[i : i + 4])
            await asyncio.sleep(0)
        a.transport.send_digest(2, 9000, b"\x42" * 32)
        await until(lambda: len(a.seen.messages) >= len(sent), "echoed messages")
        await until(lambda: len(a.seen.digests) == 1, "echoed digest")
        echoed = [canonical(dataclasses.replace(m, to=m.frm, frm=m.to)) for m in a.seen.messages]
        assert echoed == [canonical(m) for m in sent]
        assert a.seen.digests == [(2, 9000, b"\x42" * 32)]
        assert a.transport.stats.entries_received == 30 * 300
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        await proc.wait()
    assert proc.returncode == 0


async def test_reconnects_after_the_peer_restarts(cluster: Cluster) -> None:
    a = await cluster.add(1, min_backoff=0.01, max_backoff=0.2)
    b = await cluster.add(2)
    cluster.connect_all()
    a.transport.send([app(1, 2, 1, 100)])
    await until(lambda: len(b.seen.messages) == 1, "the first batch")
    port = b.transport.port

    await b.transport.stop()
    await until(lambda: 2 in a.seen.unreachable, "node 2 reported unreachable")
    await until(lambda: not a.transport.peer_connected(2), "the stream to drop")
    a.transport.send([app(1, 2, 101, 100)])  # into the void (or a later stream): allowed

    b2 = await cluster.add(2, listen=f"127.0.0.1:{port}")
    await until(lambda: a.transport.peer_connected(2), "the stream to come back")
    after = [app(1, 2, 201 + 100 * i, 100) for i in range(20)]
    a.transport.send(after)
    await until(lambda: len(b2.seen.messages) >= len(after), "messages after the restart")
    got = [canonical(m) for m in b2.seen.messages]
    # Anything queued while the peer was down may arrive first; the rest in order.
    assert got[-len(after) :] == [canonical(m) for m in after]
    assert a.transport.stats.reconnects >= 1
    assert a.transport.stats.stream_failures >= 1


async def test_a_peer_whose_process_is_gone_is_reported_gone(cluster: Cluster) -> None:
    gone: list[int] = []
    a = await cluster.add(1, min_backoff=0.01, max_backoff=0.2, on_peer_gone=gone.append)
    b = await cluster.add(2)
    cluster.connect_all()
    a.transport.send([app(1, 2, 1, 10)])
    await until(lambda: len(b.seen.messages) == 1, "the first batch")
    await b.transport.stop()  # the listener closes with the streams, as at a process exit
    await until(lambda: 2 in gone, "node 2 reported gone")
    assert set(gone) == {2}  # again at each refused reconnect: the core ignores repeats
    assert a.transport.stats.peers_gone >= 1


async def test_a_broken_stream_to_a_listening_peer_is_not_reported_gone(
    cluster: Cluster,
) -> None:
    gone: list[int] = []
    a = await cluster.add(1, min_backoff=0.01, max_backoff=0.2, on_peer_gone=gone.append)
    b = await cluster.add(2, answer_timeout=60.0)
    cluster.connect_all()
    a.transport.send([app(1, 2, 1, 10)])
    await until(lambda: len(b.seen.messages) == 1, "the first batch")
    for inbound in list(b.transport._inbound.values()):
        inbound.end()  # the stream breaks; the peer still listens
    await until(lambda: a.transport.stats.reconnects >= 1, "the stream to come back")
    a.transport.send([app(1, 2, 11, 10)])
    await until(lambda: len(b.seen.messages) >= 2, "a batch over the new stream")
    assert a.transport.stats.stream_failures >= 1
    assert gone == [] and a.transport.stats.peers_gone == 0


async def test_snapshot_of_several_mib_is_chunked_and_reassembled(cluster: Cluster) -> None:
    a = await cluster.add(1, snapshot_chunk_bytes=1 << 20)
    b = await cluster.add(2)
    cluster.connect_all()
    data = random.Random(7).randbytes(5 * (1 << 20) + 12_345)
    snap = Message(
        MessageType.SNAP,
        2,
        1,
        term=9,
        snapshot=Snapshot(SnapshotMeta(77_000, 8, ConfState((1, 2, 3), (4,))), data),
    )
    a.transport.send([snap, small(MessageType.HEARTBEAT, 1, 2, 1)])
    await until(lambda: a.seen.snapshot_status == [(2, True)], "the snapshot status")
    snaps = [m for m in b.seen.messages if m.type == MessageType.SNAP]
    assert snaps == [snap]
    assert any(m.type == MessageType.HEARTBEAT for m in b.seen.messages)
    assert a.transport.stats.snapshots_sent == b.transport.stats.snapshots_received == 1
    assert b.transport.stats.bytes_received > len(data)


async def test_snapshot_to_an_unreachable_peer_reports_failure(cluster: Cluster) -> None:
    a = await cluster.add(1)
    b = await cluster.add(2)
    address = b.transport.address
    await b.transport.stop()
    a.transport.set_peers({2: address})
    snap = Message(
        MessageType.SNAP, 2, 1, snapshot=Snapshot(SnapshotMeta(5, 1, ConfState((1, 2))), b"x")
    )
    a.transport.send([snap])
    await until(lambda: a.seen.snapshot_status == [(2, False)], "the failure status")
    assert a.transport.stats.snapshot_failures == 1


async def test_corrupted_envelope_is_dropped_and_counted(cluster: Cluster) -> None:
    b = await cluster.add(2)
    first, second, third = (small(MessageType.HEARTBEAT, 1, 2, n) for n in (1, 2, 3))
    good1 = encode_envelope(1, 2, 1, [first], cluster_id="exchange")
    corrupt = encode_envelope(1, 2, 2, [second], cluster_id="exchange")
    flipped = bytearray(corrupt.body)
    flipped[-1] ^= 0x04
    corrupt = pb.Envelope(body=bytes(flipped), crc32=corrupt.crc32)
    misdirected = encode_envelope(1, 5, 3, [second], cluster_id="exchange")
    good2 = encode_envelope(1, 2, 4, [third], cluster_id="exchange")
    async with grpc.aio.insecure_channel(b.transport.address) as channel:
        call = pb_grpc.PeerStub(channel).Replicate()
        for envelope in (good1, corrupt, misdirected, good2):
            await call.write(envelope)
        await call.done_writing()
        summary = await call
    assert (summary.envelopes, summary.dropped) == (2, 2)
    assert b.seen.messages == [first, third]
    stats = b.transport.stats
    assert (stats.checksum_failures, stats.misdirected, stats.sequence_gaps) == (1, 1, 0)


async def test_corrupted_snapshot_chunk_fails_the_transfer(cluster: Cluster) -> None:
    b = await cluster.add(2)
    data = random.Random(3).randbytes(300_000)
    snap = Message(
        MessageType.SNAP, 2, 1, snapshot=Snapshot(SnapshotMeta(10, 2, ConfState((1, 2))), data)
    )
    chunks = list(snapshot_chunks(snap, 1, 64 * 1024, "exchange"))
    flipped = bytearray(chunks[2].body)
    flipped[100] ^= 0x01
    bad = [*chunks[:2], pb.SnapshotChunk(body=bytes(flipped), crc32=chunks[2].crc32), *chunks[3:]]
    async with grpc.aio.insecure_channel(b.transport.address) as channel:
        stub = pb_grpc.PeerStub(channel)
        result = await stub.InstallSnapshot(iter(bad))
        assert not result.ok and "checksum" in result.reason
        assert b.seen.messages == []
        assert b.transport.stats.checksum_failures == 1
        result = await stub.InstallSnapshot(iter(chunks))
        assert result.ok
    assert b.seen.messages == [snap]


async def test_oversized_batches_are_split_under_the_message_limit(cluster: Cluster) -> None:
    limit = 64 * 1024
    a = await cluster.add(1, max_message_bytes=limit)
    b = await cluster.add(2, max_message_bytes=limit)
    cluster.connect_all()
    huge = app(1, 2, 1, 3000, size=96)  # ~400 KB of entries in one APP message
    many = [small(MessageType.HEARTBEAT, 1, 2, n) for n in range(2000)]  # coalesced, then cut
    data = random.Random(5).randbytes(300_000)
    snap = Message(
        MessageType.SNAP, 2, 1, snapshot=Snapshot(SnapshotMeta(3000, 3, ConfState((1, 2))), data)
    )
    too_big_entry = app(1, 2, 3001, 1, size=limit)
    a.transport.send([huge, *many, snap, too_big_entry])
    await until(lambda: len(b.seen.messages) >= 2000 + 2, "everything at node 2")
    await until(lambda: a.seen.snapshot_status == [(2, True)], "the snapshot")
    apps = [m for m in b.seen.messages if m.type == MessageType.APP]
    assert len(apps) > 1
    assert [e for m in apps for e in m.entries] == list(huge.entries)
    assert [m for m in b.seen.messages if m.type == MessageType.HEARTBEAT] == many
    assert [m for m in b.seen.messages if m.type == MessageType.SNAP] == [snap]
    assert a.transport.stats.envelopes_sent > 6
    assert a.transport.stats.dropped_oversized == 1
    assert 2 in a.seen.unreachable  # the dropped entry makes the core probe again
    assert b.transport.stats.decode_failures == 0


async def test_queue_overflow_drops_and_reports_unreachable(cluster: Cluster) -> None:
    a = await cluster.add(1, queue_limit=16)
    b = await cluster.add(2)
    cluster.connect_all()
    burst = [small(MessageType.HEARTBEAT, 1, 2, n) for n in range(100)]
    a.transport.send(burst)  # the sender task cannot run inside send(): 16 fit
    assert a.transport.stats.dropped_queue_full == 84
    await until(lambda: a.seen.unreachable == [2], "the unreachable report")
    await until(lambda: len(b.seen.messages) == 16, "the queued messages")
    assert b.seen.messages == burst[:16]
    assert a.transport.stats.peers[2].dropped == 84


async def test_queue_byte_limit_drops_and_reports_unreachable(cluster: Cluster) -> None:
    a = await cluster.add(1, queue_limit_bytes=100_000)
    b = await cluster.add(2)
    cluster.connect_all()
    batches = [app(1, 2, 1 + 100 * i, 100) for i in range(20)]  # ~13 KB each
    a.transport.send(batches)
    dropped = a.transport.stats.dropped_queue_full
    assert 0 < dropped < len(batches)
    await until(lambda: a.seen.unreachable == [2], "the unreachable report")
    await until(lambda: len(b.seen.messages) == len(batches) - dropped, "the queued messages")
    assert [canonical(m) for m in b.seen.messages] == [
        canonical(m) for m in batches[: len(batches) - dropped]
    ]


async def test_a_message_the_codec_rejects_does_not_break_the_stream(cluster: Cluster) -> None:
    a = await cluster.add(1)
    b = await cluster.add(2)
    cluster.connect_all()
    await until(lambda: a.transport.peer_connected(2), "the stream")
    bad = Message(MessageType.APP, 2, 1, entries=[Entry(1, 1, "not bytes")])  # type: ignore[arg-type]
    a.transport.send([bad])
    await until(lambda: a.transport.stats.encode_failures == 1, "the encode failure")
    good = small(MessageType.HEARTBEAT, 1, 2, 1)
    a.transport.send([good])
    await until(lambda: len(b.seen.messages) == 1, "the next message")
    assert b.seen.messages == [good]
    assert a.seen.unreachable == [2]
    assert a.transport.stats.stream_failures == 0


async def test_stopping_with_open_streams_is_clean_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # grpc.aio can hang when a task is cancelled inside a call; stop() must not.
    caplog.set_level(logging.WARNING, logger="exchange_node.transport")
    for round_ in range(8):
        a = PeerTransport(1, "127.0.0.1:0", lambda m: None)
        b = PeerTransport(2, "127.0.0.1:0", lambda m: None)
        await a.start()
        await b.start()
        a.set_peers({2: b.address})
        b.set_peers({1: a.address})
        a.send([small(MessageType.HEARTBEAT, 1, 2, 1)])
        await until(lambda: a.peer_connected(2), "a->b")  # noqa: B023
        first, second = (a, b) if round_ % 2 else (b, a)
        await first.stop()
        await second.stop()
    assert [r.getMessage() for r in caplog.records if not _from_a_closed_loop(r)] == []


def _from_a_closed_loop(record: logging.LogRecord) -> bool:
    """gRPC's poller handing a completion to the loop of an earlier test, closed since
    (the test runner's loop per test; a node's process has one loop for its life):
    not something this test's loop did."""
    error = record.exc_info[1] if record.exc_info else None
    return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


async def test_peers_set_before_start_are_connected_on_start(cluster: Cluster) -> None:
    b = await cluster.add(2)
    a = PeerTransport(1, "127.0.0.1:0", lambda m: None)
    a.set_peers({1: "127.0.0.1:1", 2: b.transport.address})  # its own entry is ignored
    await a.start()
    try:
        a.send([small(MessageType.HEARTBEAT, 1, 2, 1)])
        await until(lambda: len(b.seen.messages) == 1, "the heartbeat")
        assert set(a.stats.peers) == {2}
    finally:
        await a.stop()


async def test_snapshot_for_another_node_is_refused(cluster: Cluster) -> None:
    b = await cluster.add(2)
    snap = Message(
        MessageType.SNAP, 3, 1, snapshot=Snapshot(SnapshotMeta(10, 2, ConfState((1, 3))), b"s")
    )
    async with grpc.aio.insecure_channel(b.transport.address) as channel:
        result = await pb_grpc.PeerStub(channel).InstallSnapshot(
            iter(list(snapshot_chunks(snap, 1, 1024, "exchange")))
        )
    assert not result.ok
    assert b.seen.messages == []
    assert (b.transport.stats.misdirected, b.transport.stats.decode_failures) == (1, 0)


async def test_unknown_destination_reports_unreachable(cluster: Cluster) -> None:
    a = await cluster.add(1)
    a.transport.send([small(MessageType.VOTE, 1, 9, 1)])
    await until(lambda: a.seen.unreachable == [9], "the unreachable report")
    assert a.transport.stats.dropped_disconnected == 1


async def test_set_peers_follows_membership_changes(cluster: Cluster) -> None:
    a = await cluster.add(1)
    b = await cluster.add(2)
    c = await cluster.add(3)
    a.transport.set_peers({1: a.transport.address, 2: b.transport.address})
    a.transport.send([small(MessageType.HEARTBEAT, 1, 2, 1)])
    await until(lambda: len(b.seen.messages) == 1, "node 2")
    # Node 2 moves to node 3's address (a replaced pod), node 3 joins.
    a.transport.set_peers({2: c.transport.address, 3: c.transport.address})
    a.transport.send([small(MessageType.HEARTBEAT, 1, 2, 2), small(MessageType.HEARTBEAT, 1, 3, 3)])
    await until(lambda: len(c.seen.messages) == 1, "node 3")
    assert c.seen.messages == [small(MessageType.HEARTBEAT, 1, 3, 3)]
    assert set(a.transport.stats.peers) == {2, 3}
    a.transport.set_peers({})
    assert a.transport.stats.peers == {}
    a.transport.send([small(MessageType.HEARTBEAT, 1, 3, 4)])
    await until(lambda: 3 in a.seen.unreachable, "the report for the removed peer")


class _RecordingPeer(pb_grpc.PeerServicer):
    def __init__(self) -> None:
        self.metadata: list[tuple[str, str | bytes]] = []

    async def Replicate(self, request_iterator, context):  # type: ignore[no-untyped-def]
        self.metadata = list(context.invocation_metadata() or ())
        await context.send_initial_metadata(())
        async for _ in request_iterator:
            pass
        return pb.ReplicateSummary()


async def test_grpc_metadata_is_passed_through_unchanged(cluster: Cluster) -> None:
    recording = _RecordingPeer()
    server = grpc.aio.server()
    pb_grpc.add_PeerServicer_to_server(recording, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        a = await cluster.add(
            1, metadata=(("x-exchange-cluster", "blue"), ("traceparent-bin", b"\x00\x01"))
        )
        a.transport.set_peers({2: f"127.0.0.1:{port}"})
        await until(lambda: a.transport.peer_connected(2), "the stream")
        assert ("x-exchange-cluster", "blue") in recording.metadata
        assert ("traceparent-bin", b"\x00\x01") in recording.metadata
    finally:
        await server.stop(None)


async def test_stop_is_clean_and_idempotent() -> None:
    a = PeerTransport(1, "127.0.0.1:0", lambda m: None)
    await a.start()
    a.set_peers({2: "127.0.0.1:1"})  # nobody listens there
    a.send([small(MessageType.HEARTBEAT, 1, 2, 1)])
    await a.stop()
    await a.stop()
    a.send([small(MessageType.HEARTBEAT, 1, 2, 2)])  # harmless after stop


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt in range(40):
        ceiling = min(1.0, 0.05 * 2**attempt)
        delays = [backoff_delay(attempt, 0.05, 1.0, rng) for _ in range(50)]
        assert all(ceiling * 0.5 <= d < ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff_delay(1000, 0.05, 1.0, rng) < 1.0


# ---- peers that stop answering -----------------------------------------------------


async def send_for(node: Node, peer: int, kind: MessageType, seconds: float) -> None:
    """What a leader (HEARTBEAT) or a campaigning node (PRE_VOTE) sends, every 50 ms."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    n = 0
    while loop.time() < end:
        n += 1
        node.transport.send([small(kind, node.transport.node_id, peer, n)])
        await asyncio.sleep(0.05)


async def answering(cluster: Cluster, node_id: int, **options: Any) -> Node:
    """A node that answers every APP and HEARTBEAT, like a live follower."""
    node = await cluster.add(node_id, **options)
    answers = {
        MessageType.APP: MessageType.APP_RESP,
        MessageType.HEARTBEAT: MessageType.HEARTBEAT_RESP,
    }

    def on_message(m: Message) -> None:
        node.seen.messages.append(m)
        if m.type in answers:
            node.transport.send([Message(answers[m.type], m.frm, node_id, m.term, index=m.index)])

    node.transport._on_message = on_message
    return node


async def test_a_peer_that_answers_nothing_gets_both_streams_reset(cluster: Cluster) -> None:
    # Node 2 hears the heartbeats but never answers (as behind a wedged stream).
    a = await cluster.add(1, answer_timeout=0.3, min_backoff=0.01, max_backoff=0.1)
    b = await cluster.add(2, min_backoff=0.01, max_backoff=0.1)
    cluster.connect_all()
    await until(lambda: a.transport.peer_connected(2) and b.transport.peer_connected(1), "streams")
    # Without TLS a stream's sender is known from its first envelope on.
    b.transport.send([small(MessageType.PRE_VOTE, 2, 1, 0)])
    await until(lambda: len(a.seen.messages) == 1, "node 2's first envelope")
    b_channel = b.transport._peers[1].channel
    sending = asyncio.create_task(send_for(a, 2, MessageType.HEARTBEAT, WAIT_LIMIT_S))
    try:
        await until(lambda: a.transport.stats.reconnects >= 2, "two resets of the silent stream")
        # Our stream to it was reset and came back, and so did its stream to us.
        assert a.transport.stats.silent_resets >= 2
        assert a.transport.stats.peers[2].silent_resets == a.transport.stats.silent_resets
        await until(lambda: b.transport.stats.reconnects >= 1, "node 2's stream to node 1 reset")
        # ... over a new connection: the wedge may be in node 2's own.
        assert b.transport._peers[1].channel is not b_channel
        assert a.transport._peers[2].silent_run >= 2  # the next reconnect backs off further
    finally:
        sending.cancel()
    # Answers again: the run of resets ends.
    b.transport._on_message = await answering_callback(b)
    a.transport.send([small(MessageType.HEARTBEAT, 1, 2, 0)])
    await until(lambda: a.transport._peers[2].silent_run == 0, "the peer answering again")


async def answering_callback(node: Node) -> Callable[[Message], None]:
    def on_message(m: Message) -> None:
        if m.type is MessageType.HEARTBEAT:
            node.transport.send([Message(MessageType.HEARTBEAT_RESP, m.frm, m.to, m.term)])

    return on_message


async def test_a_quiet_or_answering_peer_is_never_reset(cluster: Cluster) -> None:
    # Heartbeats answered, and pre-votes nobody answers (a cluster without a leader,
    # or a node whose campaign the others ignore): no reset either way.
    a = await cluster.add(1, answer_timeout=0.2)
    b = await answering(cluster, 2, answer_timeout=0.2)
    c = await cluster.add(3, answer_timeout=0.2)
    cluster.connect_all()
    await until(
        lambda: all(
            n.transport.peer_connected(p)
            for n in (a, b, c)
            for p in (1, 2, 3)
            if n.transport.node_id != p
        ),
        "streams",
    )
    await asyncio.gather(
        send_for(a, 2, MessageType.HEARTBEAT, 1.5),
        send_for(a, 3, MessageType.PRE_VOTE, 1.5),
        send_for(c, 1, MessageType.PRE_VOTE, 1.5),
        send_for(c, 2, MessageType.VOTE, 1.5),
    )
    for n in (a, b, c):
        assert n.transport.stats.silent_resets == 0
        assert n.transport.stats.reconnects == 0


def test_answer_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="answer_timeout"):
        PeerTransport(1, "127.0.0.1:0", lambda m: None, answer_timeout=0)

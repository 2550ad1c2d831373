"""The shell on its own: three ``Node``s in one event loop, real gRPC transport,
the simulator's in-memory disk and a recording engine."""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest
from exchange_node.engine.commands import NewOrder, OrderType, Side, TimeInForce
from exchange_node.server import config as node_config
from exchange_node.server import divergence
from exchange_node.server.shell import Node
from exchange_node.service import NotLeader, Unavailable
from exchange_node.sim.disk import SimStorage
from node_fakes import RecordingEngine


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def make_config(
    tmp: Path, node_id: int, grpc: dict[int, int], http: dict[int, int]
) -> node_config.NodeConfig:
    parser = argparse.ArgumentParser()
    node_config.add_arguments(parser)
    peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in grpc.items())
    peer_http = ",".join(f"{i}=127.0.0.1:{p}" for i, p in http.items())
    args = parser.parse_args(
        [
            f"--node-id={node_id}",
            f"--name=n{node_id}",
            f"--peers={peers}",
            f"--peer-http={peer_http}",
            "--listen-host=127.0.0.1",
            f"--grpc-port={grpc[node_id]}",
            f"--http-port={http[node_id]}",
            f"--data-dir={tmp / f'n{node_id}'}",
            "--election-ms=300",
            "--heartbeat-ms=30",
            "--snapshot-threshold=40",
            "--insecure-peers",  # in-process shells; mTLS is tested in tests/security
        ]
    )
    return node_config.from_args(args, env={})


def order(i: int) -> NewOrder:
    return NewOrder("alice", f"o{i}", "BTC-USD", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 100, 1)


async def wait_for(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


@pytest.fixture
async def cluster(tmp_path):
    ports = free_ports(6)
    grpc = {1: ports[0], 2: ports[1], 3: ports[2]}
    http = {1: ports[3], 2: ports[4], 3: ports[5]}
    disks = {i: SimStorage() for i in grpc}
    nodes = {
        i: Node(
            make_config(tmp_path, i, grpc, http),
            engine_factory=RecordingEngine,
            storage_factory=lambda cfg, timing, d=disks[i]: d,
        )
        for i in grpc
    }
    for node in nodes.values():
        await node.start()
    yield nodes
    for node in nodes.values():
        if not node._stopped.is_set():
            await node.stop(0.5)


def leader_of(nodes: dict[int, Node]) -> Node | None:
    leaders = [n for n in nodes.values() if n.role.name == "LEADER"]
    return leaders[0] if len(leaders) == 1 else None


async def test_three_nodes_elect_replicate_and_agree(cluster):
    await wait_for(lambda: leader_of(cluster) is not None)
    leader = leader_of(cluster)
    follower = next(n for n in cluster.values() if n is not leader)
    with pytest.raises((NotLeader, Unavailable)) as exc:
        await follower.submit([order(0)])
    if isinstance(exc.value, NotLeader):
        assert exc.value.leader_id == leader.node_id
        assert exc.value.leader_http == leader.config.advertise_http
    results = await asyncio.gather(*(leader.submit([order(i)]) for i in range(1, 101)))
    assert [r[0].command.client_order_id for r in results] == [f"o{i}" for i in range(1, 101)]
    target = leader.applied_index
    await wait_for(lambda: all(n.applied_index >= target for n in cluster.values()))
    hashes = {n.engine.state_hash() for n in cluster.values()}
    assert len(hashes) == 1
    ids = [cid for _, cid in leader.engine.applied]
    assert ids == [f"o{i}" for i in range(1, 101)]
    # The leader listed the configured symbols through the log.
    assert all(n.engine.symbols() == ["BTC-USD", "ETH-USD"] for n in cluster.values())
    # Automatic snapshots happened (threshold 40 entries).
    assert leader.snapshots.index > 0
    await follower.read_barrier()
    assert follower.applied_index >= target
    st = leader.status()
    assert st.role == "leader" and len(st.members) == 3
    # Idle replicas exchange state digests at the same applied index and agree.
    await wait_for(lambda: all(n.digests_compared > 0 for n in cluster.values()))
    assert not any(n.diverged for n in cluster.values())
    assert {m.http_address for m in st.members} == {
        n.config.advertise_http for n in cluster.values()
    }


async def test_commit_notices_ride_on_the_next_append_or_leave_on_their_own(cluster):
    await wait_for(lambda: leader_of(cluster) is not None)
    leader = leader_of(cluster)
    await wait_for(lambda: leader._pending_commands == 0)
    stats = leader.driver.notices
    # Back-to-back orders: each order's append carries the previous order's commit.
    for i in range(30):
        await leader.submit([order(i)])
    assert stats.merged > 0
    # One order and then silence: its commit notice leaves when the hold is up,
    # and every follower applies the order.
    released = stats.released
    await leader.submit([order(99)])
    target = leader.applied_index
    await wait_for(lambda: all(n.applied_index >= target for n in cluster.values()))
    await wait_for(lambda: stats.released > released)


async def test_leadership_transfer_moves_the_leader(cluster):
    await wait_for(lambda: leader_of(cluster) is not None)
    leader = leader_of(cluster)
    await leader.submit([order(1)])
    target = await leader.transfer_leadership(None)
    assert target != leader.node_id
    await wait_for(lambda: leader_of(cluster) is not None and leader_of(cluster).node_id == target)


async def test_one_trace_per_order_across_replicas(cluster):
    from exchange_node.server import tracing
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        await wait_for(lambda: leader_of(cluster) is not None)
        leader = leader_of(cluster)
        with provider.get_tracer("test").start_as_current_span("client") as client_span:
            carrier: dict[str, str] = {}
            from opentelemetry.propagate import inject

            inject(carrier)
            await leader.submit([order(7)], trace_carrier=carrier)
        target = leader.applied_index
        await wait_for(lambda: all(n.applied_index >= target for n in cluster.values()))
        trace_id = client_span.get_span_context().trace_id
        spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        names = sorted(s.name for s in spans)
        assert names == ["apply", "apply", "apply", "client", "propose"], names
        applying_nodes = {s.attributes["exchange.node"] for s in spans if s.name == "apply"}
        assert applying_nodes == {1, 2, 3}
        propose = next(s for s in spans if s.name == "propose")
        assert propose.parent.span_id == client_span.get_span_context().span_id
        assert any(e.name == "committed" for e in propose.events)
        assert all(s.parent.span_id == propose.context.span_id for s in spans if s.name == "apply")
    finally:
        tracing._enabled = False


async def test_a_different_state_hash_at_the_same_index_raises_the_alarm(cluster, monkeypatch):
    monkeypatch.setattr(divergence, "CONFIRM_S", 0.0)  # no wait for refutation here
    await wait_for(lambda: leader_of(cluster) is not None)
    node = next(iter(cluster.values()))
    before = node.metrics.divergence._value.get()
    node.divergence.record(10_000, b"mine", time.monotonic())
    node._on_digest(2, 10_000, b"mine")
    assert not node.diverged
    node._on_digest(3, 10_000, b"theirs")
    assert node.diverged and node.status().diverged
    assert node.metrics.divergence._value.get() == before + 1
    # one voter out of three disagreeing is an alarm, not a verdict on this replica
    assert not node.fenced
    assert "diverged" not in node.ready()[1]
    # A digest from ahead of us is compared once we reach that index.
    node._on_digest(2, 20_000, b"later")
    assert node.divergence.verdicts[2][:2] == (10_000, True)
    node.divergence.record(20_000, b"other", time.monotonic())
    assert node.divergence.verdicts[2][:2] == (20_000, False)


async def test_a_replica_contradicted_by_a_majority_fences_itself_and_hands_over(
    cluster, monkeypatch
):
    monkeypatch.setattr(divergence, "CONFIRM_S", 0.2)
    await wait_for(lambda: leader_of(cluster) is not None)
    leader = leader_of(cluster)
    await leader.submit([order(1)])
    others = [i for i in cluster if i != leader.node_id]
    leader.divergence.record(30_000, b"bad", time.monotonic())
    for peer in others:  # both other voters hold another state at that index
        leader._on_digest(peer, 30_000, b"good")
    assert not leader.fenced  # not before the contradiction has stood CONFIRM_S
    await wait_for(lambda: leader.fenced, timeout=5.0)
    assert leader.diverged
    ready, reason = leader.ready()
    assert not ready and "diverged" in reason
    with pytest.raises(Unavailable):
        await leader.submit([order(2)])
    with pytest.raises(Unavailable):
        await leader.read_barrier()
    # the fenced leader hands leadership to a healthy voter, which keeps serving
    await wait_for(lambda: leader_of(cluster) is not None and leader_of(cluster) is not leader)
    healthy = leader_of(cluster)
    result = await healthy.submit([order(3)])
    assert result[0].command.client_order_id == "o3"


def rejected(node: Node, reason: str) -> float:
    return node.metrics.peer_messages_rejected.labels(reason=reason)._value.get()


async def test_forged_digests_of_live_voters_are_refuted_and_never_fence(cluster, monkeypatch):
    monkeypatch.setattr(divergence, "CONFIRM_S", 2.0)
    await wait_for(lambda: leader_of(cluster) is not None)
    await wait_for(lambda: all(n.digests_compared > 0 for n in cluster.values()))
    for node in cluster.values():
        index = max(node.divergence.hash_ring)
        for peer in cluster:
            if peer != node.node_id:  # as if both other voters contradicted this one
                node._on_digest(peer, index, b"forged")
    await asyncio.sleep(3.5)  # past CONFIRM_S: the voters' own digests refuted them
    assert not any(n.fenced or n.diverged for n in cluster.values())
    assert all(n.ready()[0] for n in cluster.values())


async def test_a_digest_from_a_non_voter_is_refused_and_counted(cluster):
    await wait_for(lambda: leader_of(cluster) is not None)
    node = next(iter(cluster.values()))
    before = rejected(node, "digest_not_voter")
    node.divergence.record(40_000, b"mine", time.monotonic())
    node._on_digest(9, 40_000, b"theirs")  # no member
    node._on_digest(node.node_id, 40_000, b"theirs")  # ourselves: forged
    assert rejected(node, "digest_not_voter") == before + 2
    assert 9 not in node.divergence.verdicts and node.node_id not in node.divergence.verdicts


async def test_a_message_from_a_non_member_never_reaches_the_core(cluster):
    from exchange_node.raft.types import Message, MessageType

    await wait_for(lambda: leader_of(cluster) is not None)
    leader = leader_of(cluster)
    term = leader.term
    before = rejected(leader, "not_member")
    # A "leader" nobody knows, two terms ahead: it would depose the real one.
    leader._on_message(Message(MessageType.HEARTBEAT, leader.node_id, 9, term + 2))
    leader._on_message(Message(MessageType.APP_RESP, leader.node_id, 9, term + 2, index=1))
    assert rejected(leader, "not_member") == before + 2
    # Members' own messages may be arriving meanwhile; none from id 9 may be queued.
    assert not [m for m in leader._inbox if m.frm == 9]
    await asyncio.sleep(0.1)
    assert leader_of(cluster) is leader and leader.term == term


async def test_a_full_proposal_queue_answers_overloaded(cluster):
    from exchange_node.service import Overloaded

    await wait_for(lambda: leader_of(cluster) is not None)
    leader = leader_of(cluster)
    # A new leader lists the configured symbols with a proposal of its own; that counts
    # against the limit too, so start from an idle queue (on a loaded machine it can
    # still be in flight here).
    await wait_for(lambda: leader._pending_commands == 0)
    leader.config.max_pending_proposals = 10
    big = [order(1000 + i) for i in range(8)]
    first = asyncio.ensure_future(leader.submit(big))
    await asyncio.sleep(0)  # the first request is now queued
    with pytest.raises(Overloaded) as exc:
        await leader.submit([order(2000 + i) for i in range(8)])
    assert exc.value.retry_after_seconds > 0
    assert len(await first) == 8
    # Once the queue drained, the same request is accepted.
    assert len(await leader.submit([order(3000 + i) for i in range(8)])) == 8


async def test_removing_the_leader_moves_leadership_to_the_rest(cluster):
    await wait_for(lambda: leader_of(cluster) is not None)
    leader = leader_of(cluster)
    await leader.submit([order(1)])
    await leader.remove_member(leader.node_id)
    rest = {i: n for i, n in cluster.items() if i != leader.node_id}
    await wait_for(lambda: leader_of(rest) is not None)
    new = leader_of(rest)
    assert leader.node_id not in new.conf_state.voters
    assert sorted(m.id for m in new.status().members) == sorted(rest)
    assert (await new.submit([order(2)]))[0].command.client_order_id == "o2"
    await wait_for(lambda: leader.role.name != "LEADER")
    ok, reason = leader.ready()
    assert not ok and "not a member" in reason


async def test_a_waiter_whose_index_is_reused_is_answered_not_forgotten(cluster):
    await wait_for(lambda: leader_of(cluster) is not None)
    leader = leader_of(cluster)
    await leader.submit([order(1)])
    loop = asyncio.get_running_loop()
    stale = loop.create_future()
    stale_conf = loop.create_future()
    nxt = leader.core.log.last_index() + 1
    from exchange_node.server.requests import Proposal

    # As if an older term's request, then an admin call, had waited at the next index
    # (the admin call replaces the request there; the new order replaces the call).
    now = loop.time()
    leader.driver._wait(nxt, leader.term - 1, Proposal([order(0)], stale, now + 60, now), now + 60)
    leader._pending_commands += 1
    leader.driver._wait(nxt, leader.term - 1, stale_conf, now + 60)
    result = await leader.submit([order(2)])
    assert result[0].command.client_order_id == "o2"
    with pytest.raises(Unavailable):
        await stale
    with pytest.raises(Unavailable):
        await stale_conf
    assert leader._pending_commands == 0


class GatedStorage(SimStorage):
    """SimStorage whose save() can be held inside the disk thread, to see
    what the node does while its own fsync has not returned."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.durable_last = 0

    def save(self, *, entries=(), hard_state=None, snapshot=None) -> None:
        if self.hold.is_set() and entries:
            self.entered.set()
            self.release.wait(10)
        super().save(entries=entries, hard_state=hard_state, snapshot=snapshot)
        if entries:
            self.durable_last = max(self.durable_last, entries[-1].index)


async def test_a_single_voter_never_answers_before_its_own_fsync(tmp_path):
    """With one voter an entry commits in the Ready that first persists it:
    answering before that fsync returns would acknowledge an order that a
    kill -9 at that instant loses."""
    grpc, http = {1: free_ports(1)[0]}, {1: free_ports(1)[0]}
    disk = GatedStorage()
    node = Node(
        make_config(tmp_path, 1, grpc, http),
        engine_factory=RecordingEngine,
        storage_factory=lambda cfg, timing: disk,
    )
    await node.start()
    try:
        await wait_for(lambda: node.role.name == "LEADER")
        await node.submit([order(1)])  # warm: symbols listed, leader settled
        disk.hold.set()
        answered_while_unsynced = []
        task = asyncio.ensure_future(node.submit([order(2)]))
        task.add_done_callback(lambda t: answered_while_unsynced.append(not disk.release.is_set()))
        await wait_for(disk.entered.is_set)
        await asyncio.sleep(0.3)  # the loop runs freely while the fsync is held
        assert not task.done(), "answered before the entry was durable"
        disk.release.set()
        result = await asyncio.wait_for(task, 10)
        assert result[0].command.client_order_id == "o2"
        assert answered_while_unsynced == [False]
    finally:
        disk.release.set()
        await node.stop(0.5)

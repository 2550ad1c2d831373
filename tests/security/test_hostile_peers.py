"""Hostile peers against real node processes: every attack of issue 12, replayed.

The attacker is a process that reaches the nodes' gRPC peer ports and speaks the
project's own protocol (``transport.codec`` frames over the generated stub). The
cluster runs with ``--insecure-peers``, so the frames get past the transport and
meet the node's own defences (server/shell.py, raft/core.py). Each attack must fail
harmlessly: no state change (same state hash, no order in another client's name, no
halt, no new member), nodes alive, no leader change, the refusal counted in
/metrics and logged. Some attacks in a real member's name (an append from the
leader's id, an acknowledgement from a frozen follower's) cannot be told apart from
that member without authentication: the last test shows that with peer TLS they
never reach a node at all.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from exchange_node.engine.commands import (
    HaltSymbol,
    NewOrder,
    OrderType,
    Side,
    TimeInForce,
    encode_batch,
)
from exchange_node.raft.types import (
    MAX_TERM,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from exchange_node.server.envelope import MemberInfo, wrap_entry, wrap_snapshot
from exchange_node.tools.local import LocalCluster
from exchange_node.transport import peer_pb2_grpc as pb_grpc
from exchange_node.transport.codec import Digest, encode_envelope, snapshot_chunks

pytestmark = pytest.mark.slow

STRANGER = 99
"""A member id nobody ever added."""
CONFIRM_WAIT_S = 5.0
"""server.shell.CONFIRM_S (3 s) plus two digest intervals."""


# ---- the cluster ------------------------------------------------------------------


def start_cluster(root: Path, *, peer_tls: bool) -> LocalCluster:
    cluster = LocalCluster.create(
        root,
        3,
        election_ms=400,
        heartbeat_ms=40,
        extra_args=["--request-timeout-ms=2000", "--log-level=info"],
        peer_tls=peer_tls,
    )
    cluster.start_all()
    try:
        cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
    except BaseException:
        cluster.stop_all(5)
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = start_cluster(tmp_path_factory.mktemp("insecure"), peer_tls=False)
    # Something to protect: a resting order of alice's.
    code, _ = place(c, c.leader() or 1, "alice", f"rest-{uuid.uuid4().hex[:8]}")
    assert code == 200
    yield c
    c.stop_all(10)


def place(cluster: LocalCluster, node_id: int, client: str, coid: str) -> tuple[int, Any]:
    body = {
        "symbol": "BTC-USD",
        "side": "BUY",
        "price": 49_000,
        "quantity": 1,
        "client_order_id": coid,
    }
    try:
        return cluster.request(
            node_id, "POST", "/v1/orders", body, token=cluster.key_for(client), timeout=5
        )
    except (OSError, urllib.error.URLError) as exc:
        return 0, str(exc)


def ids(cluster: LocalCluster) -> list[int]:
    return [m.node_id for m in cluster.spec.members]


class View:
    """What an attack must not change, as every node reports it."""

    def __init__(self, cluster: LocalCluster) -> None:
        # Converged: same applied index everywhere, hashes fresh at that index.
        self.statuses = cluster.wait_converged(ids(cluster), timeout=30)

    def st(self, node_id: int) -> dict[str, Any]:
        return self.statuses[node_id]  # type: ignore[return-value]

    @property
    def leader(self) -> int:
        leaders = {st["leader"] for st in self.statuses.values()}  # type: ignore[index]
        assert len(leaders) == 1, f"nodes disagree on the leader: {leaders}"
        return leaders.pop()

    @property
    def term(self) -> int:
        return max(st["term"] for st in self.statuses.values())  # type: ignore[index]

    def members(self, node_id: int) -> list[tuple[int, bool]]:
        return sorted((m["id"], m["voter"]) for m in self.st(node_id)["members"])

    def followers(self) -> list[int]:
        return [i for i in self.statuses if i != self.leader]


def metric(cluster: LocalCluster, node_id: int, name: str, reason: str) -> float:
    code, text = cluster.request(node_id, "GET", "/metrics", timeout=3)
    assert code == 200
    match = re.search(rf'^{name}\{{reason="{reason}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def refused(cluster: LocalCluster, node_id: int, reason: str) -> float:
    return metric(cluster, node_id, "exchange_peer_messages_rejected_total", reason)


def logged(cluster: LocalCluster, node_id: int, text: str) -> bool:
    return text in (cluster.root / f"node-{node_id}.log").read_text(errors="replace")


def assert_harmless(cluster: LocalCluster, before: View, *, elections: int = 0) -> View:
    """Nodes alive, same leader (or at most ``elections`` more terms), same members,
    same engine state on every replica, and nothing done in bob's name."""
    for i in ids(cluster):
        assert cluster.alive(i), f"node {i} died:\n{cluster.log_tail(i)}"
    cluster.wait_for_leader(30)
    after = View(cluster)
    converged = after.statuses
    if elections == 0:
        assert after.leader == before.leader
    assert after.term <= before.term + elections
    for i in ids(cluster):
        assert after.members(i) == before.members(i)
        assert converged[i]["state_hash"] == before.st(i)["state_hash"] or (
            converged[i]["applied_index"] > before.st(i)["applied_index"]
        )
    hashes = {st["state_hash"] for st in converged.values()}
    assert len(hashes) == 1
    assert_no_forged_effects(cluster)
    return after


FORGED_COID = "forged-by-attacker"


def assert_no_forged_effects(cluster: LocalCluster) -> None:
    for i in ids(cluster):
        code, _ = cluster.request(
            i, "GET", f"/v1/orders/by-client-id/{FORGED_COID}", token=cluster.key_for("bob")
        )
        assert code == 404, f"node {i} knows bob's forged order"
        code, doc = cluster.request(i, "GET", "/v1/symbols", token=cluster.key_for("alice"))
        assert code == 200
        assert not any(s.get("halted") for s in doc["symbols"]), f"node {i}: a symbol is halted"


# ---- the attacker -----------------------------------------------------------------


def send(
    cluster: LocalCluster,
    to: int,
    from_node: int,
    messages: Sequence[Message] = (),
    digests: Sequence[Digest] = (),
) -> None:
    """One Replicate call, as any process on the network can make. The transport
    drops an envelope whose messages name another sender than the envelope, so each
    claimed sender gets its own envelope (``from_node`` for the digests)."""
    by_sender: dict[int, list[Message]] = {from_node: []}
    for m in messages:
        by_sender.setdefault(m.frm, []).append(m)

    async def go() -> None:
        async with grpc.aio.insecure_channel(cluster.member(to).grpc) as channel:
            call = pb_grpc.PeerStub(channel).Replicate(timeout=5)
            for seq, (sender, batch) in enumerate(by_sender.items(), 1):
                if not batch and (sender != from_node or not digests):
                    continue
                own_digests = list(digests) if sender == from_node else []
                await call.write(
                    encode_envelope(sender, to, seq, batch, own_digests, cluster.spec.cluster_id)
                )
            await call.done_writing()
            await call

    asyncio.run(go())


def forged_batch(term: int, index: int) -> Entry:
    """An entry placing an order in bob's name and halting BTC-USD."""
    order = NewOrder(
        "bob", FORGED_COID, "BTC-USD", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 49_000, 1
    )
    payload = encode_batch(time.time_ns(), [order, HaltSymbol("BTC-USD")])
    return Entry(term, index, wrap_entry(payload))


def fake_append(to: int, frm: int, view: View, entry: Entry, term: int) -> Message:
    """An APP that a follower would accept from its leader: it runs on from the last
    entry (an entry of the current term, the leader's no-op or later) and commits."""
    last = view.st(to)["commit_index"]
    entry.index = last + 1
    entry.term = term
    return Message(
        MessageType.APP,
        to,
        frm,
        term,
        log_term=view.term,
        index=last,
        entries=[entry],
        commit=last + 1,
    )


# ---- the attacks ------------------------------------------------------------------


def test_a_fake_leader_commits_no_order_and_no_halt(cluster: LocalCluster) -> None:
    before = View(cluster)
    counted = {i: refused(cluster, i, "not_member") for i in ids(cluster)}
    for i in ids(cluster):
        entry = forged_batch(before.term + 1, 0)
        send(cluster, i, STRANGER, [fake_append(i, STRANGER, before, entry, before.term + 1)])
        send(cluster, i, STRANGER, [Message(MessageType.HEARTBEAT, i, STRANGER, before.term + 1)])
    assert_harmless(cluster, before)
    for i in ids(cluster):
        assert refused(cluster, i, "not_member") >= counted[i] + 2
        assert logged(cluster, i, "refused a peer message (not_member)")


def test_an_append_in_the_leader_s_name_and_term_is_refused(cluster: LocalCluster) -> None:
    """The fake-leader attack with the real leader's id, in its current term: the
    followers already hold this term's leader nonce and refuse any other."""
    before = View(cluster)
    leader, term = before.leader, before.term
    for f in before.followers():
        for guess in (0, 1, 2**61):
            m = fake_append(f, leader, before, forged_batch(0, 0), term)
            m.nonce = guess
            send(cluster, f, leader, [m])
    assert_harmless(cluster, before)


def test_a_forged_configuration_change_adds_no_learner(cluster: LocalCluster) -> None:
    before = View(cluster)
    evil = MemberInfo("evil", "127.0.0.1:1", "127.0.0.1:2").to_context()
    change = ConfChange(ConfChangeType.ADD_LEARNER, 77, evil).encode()
    for i in ids(cluster):
        entry = Entry(0, 0, change, EntryType.CONF_CHANGE)
        send(cluster, i, STRANGER, [fake_append(i, STRANGER, before, entry, before.term + 1)])
    after = assert_harmless(cluster, before)
    for i in ids(cluster):
        assert 77 not in [m for m, _ in after.members(i)]
        assert "127.0.0.1:2" not in str(after.st(i)["members"])


def test_a_higher_term_from_a_stranger_or_in_a_follower_s_answers_deposes_nobody(
    cluster: LocalCluster,
) -> None:
    before = View(cluster)
    leader = before.leader
    for i in ids(cluster):
        for kind in (MessageType.HEARTBEAT, MessageType.APP, MessageType.VOTE):
            send(cluster, i, STRANGER, [Message(kind, i, STRANGER, before.term + 5)])
    # Answers, reads and transfer requests in a follower's name at a higher term: only
    # a real answer (echoing the leader's nonce) may bring news of a higher term.
    for f in before.followers():
        forged = [
            Message(kind, leader, f, before.term + 1, nonce=guess, reject=True)
            for kind in (
                MessageType.APP_RESP,
                MessageType.HEARTBEAT_RESP,
                MessageType.VOTE_RESP,
                MessageType.READ_INDEX,
                MessageType.TRANSFER_LEADER,
            )
            for guess in (0, 1, 2**61)
        ]
        send(cluster, leader, f, forged)
    assert_harmless(cluster, before)


def test_unencodable_and_capped_terms_change_nothing_and_a_restart_still_elects(
    cluster: LocalCluster,
) -> None:
    before = View(cluster)
    leader = before.leader
    rejected = {
        i: metric(cluster, i, "exchange_peer_frames_rejected_total", "decode") for i in ids(cluster)
    }
    for i in ids(cluster):
        # 2**64-1 from the leader's own id: refused when the frame is decoded.
        send(cluster, i, leader, [Message(MessageType.HEARTBEAT, i, leader, 2**64 - 1)])
        # The cap itself from a stranger, and from the leader's id (a member with a
        # bug): refused by the node (a stranger) and by the core (a jump that large).
        send(cluster, i, STRANGER, [Message(MessageType.HEARTBEAT, i, STRANGER, MAX_TERM)])
        if i != leader:
            send(cluster, i, leader, [Message(MessageType.HEARTBEAT, i, leader, MAX_TERM)])
    assert_harmless(cluster, before)
    for i in ids(cluster):
        if i != leader:
            assert metric(cluster, i, "exchange_peer_frames_rejected_total", "decode") > rejected[i]
    # The original attack left a term on disk that no election could follow: restart a
    # follower on its data and see it rejoin under a leader.
    follower = before.followers()[0]
    cluster.stop(follower)
    cluster.start(follower)
    cluster.wait_for_leader(30)
    cluster.wait_ready(timeout=60)
    after = View(cluster)
    assert after.term < 1_000


def test_forged_digests_fence_no_replica(cluster: LocalCluster) -> None:
    before = View(cluster)
    for i in ids(cluster):
        index = before.st(i)["applied_index"]
        bogus = Digest(index, b"\x00" * 32)
        for claimed in ids(cluster):
            if claimed != i:  # "both other voters contradict you"
                send(cluster, i, claimed, digests=[bogus])
        send(cluster, i, STRANGER, digests=[bogus])
        send(cluster, i, i, digests=[bogus])
    time.sleep(CONFIRM_WAIT_S)
    for i in ids(cluster):
        code, doc = cluster.request(i, "GET", "/readyz")
        assert code == 200, f"node {i} is not ready: {doc}"
        assert not cluster.status(i)["diverged"]
        assert refused(cluster, i, "digest_not_voter") >= 2
        assert logged(cluster, i, "refused a peer message (digest_not_voter)")
    assert_harmless(cluster, before)


def test_forged_acknowledgements_from_frozen_followers_commit_nothing(
    cluster: LocalCluster,
) -> None:
    """The lost-acknowledged-order attack: both followers frozen (SIGSTOP), an order
    sent to the leader, acknowledgements forged in the followers' own names and a
    stranger's. Without the leader's nonce (raft/README.md, "Nonces") none counts."""
    before = View(cluster)
    leader = before.leader
    followers = before.followers()
    for f in followers:
        cluster.pause(f)
    try:
        coid = f"unacked-{uuid.uuid4().hex[:8]}"
        result: dict[str, Any] = {}

        async def order_and_forge() -> None:
            ordering = asyncio.get_running_loop().run_in_executor(
                None, lambda: result.update(answer=place(cluster, leader, "alice", coid))
            )
            await asyncio.sleep(0.3)
            last = before.st(leader)["commit_index"]
            for frm in (STRANGER, *followers):
                forged = [
                    Message(
                        MessageType.APP_RESP,
                        leader,
                        frm,
                        before.term,
                        nonce=guess,
                        index=last + k,
                    )
                    for k in range(1, 6)
                    for guess in (0, 1, 2**61)
                ]
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda frm=frm, forged=forged: send(cluster, leader, frm, forged)
                )
            await ordering

        asyncio.run(order_and_forge())
        code, _ = result["answer"]
        assert code != 200, "an order was acknowledged while no follower could store it"
    finally:
        for f in followers:
            cluster.resume(f)
    assert refused(cluster, leader, "not_member") >= 15
    # The order may commit once the followers are back: its client heard "unknown".
    cluster.wait_for_leader(30)
    cluster.wait_converged(ids(cluster), timeout=30)
    assert_no_forged_effects(cluster)


def test_timeout_now_and_transfer_votes_move_no_leader_even_in_members_names(
    cluster: LocalCluster,
) -> None:
    """The 31-leader-changes-in-10-s attack, in every form, including the leader's own
    id in its own term (without TLS anyone can claim it): only the leader's nonce,
    which travels on no stream the attacker sees, makes a TIMEOUT_NOW count."""
    before = View(cluster)
    leader, term = before.leader, before.term
    followers = before.followers()
    for _ in range(10):
        for f in followers:
            other = next(x for x in followers if x != f)
            last = before.st(f)["commit_index"]
            send(
                cluster,
                f,
                other,
                [
                    # TIMEOUT_NOW from a stranger, from a member that does not lead us,
                    # and from our leader's id in a term that is not ours.
                    Message(MessageType.TIMEOUT_NOW, f, STRANGER, term),
                    Message(MessageType.TIMEOUT_NOW, f, other, term),
                    Message(MessageType.TIMEOUT_NOW, f, leader, term + 1),
                    # Our leader's id, our term: the real thing but for the secret.
                    Message(MessageType.TIMEOUT_NOW, f, leader, term, index=f),
                    Message(MessageType.TIMEOUT_NOW, f, leader, term, index=f, nonce=f + 1),
                    # A "notice" in the leader's name, then a well-formed transfer vote.
                    Message(MessageType.TIMEOUT_NOW, f, leader, term, index=other),
                    Message(
                        MessageType.VOTE,
                        f,
                        other,
                        term + 1,
                        log_term=term,
                        index=last,
                        context=b"transfer",
                    ),
                    # Votes claiming the transfer context that no real transfer sends:
                    # a pre-vote, a term jump, a stale last log term.
                    Message(
                        MessageType.PRE_VOTE,
                        f,
                        other,
                        term + 1,
                        log_term=term,
                        index=last,
                        context=b"transfer",
                    ),
                    Message(
                        MessageType.VOTE,
                        f,
                        other,
                        term + 2,
                        log_term=term,
                        index=last,
                        context=b"transfer",
                    ),
                    Message(
                        MessageType.VOTE,
                        f,
                        other,
                        term + 1,
                        log_term=term - 1,
                        index=last,
                        context=b"transfer",
                    ),
                ],
            )
        time.sleep(0.1)
    assert_harmless(cluster, before)


def test_strangers_snapshots_answers_and_own_id_are_refused(cluster: LocalCluster) -> None:
    before = View(cluster)
    counted = {i: refused(cluster, i, "not_member") for i in ids(cluster)}
    own = {i: refused(cluster, i, "self") for i in ids(cluster)}
    empty = wrap_snapshot({}, b"")
    for i in ids(cluster):
        snap = Message(
            MessageType.SNAP,
            i,
            STRANGER,
            before.term + 1,
            snapshot=Snapshot(SnapshotMeta(10**6, before.term + 1, ConfState((STRANGER,))), empty),
        )

        async def install(to: int = i, msg: Message = snap) -> None:
            async with grpc.aio.insecure_channel(cluster.member(to).grpc) as channel:
                call = pb_grpc.PeerStub(channel).InstallSnapshot(timeout=5)
                for chunk in snapshot_chunks(msg, 1, 1 << 16, cluster.spec.cluster_id):
                    await call.write(chunk)
                await call.done_writing()
                await call

        asyncio.run(install())
        flood = [
            Message(MessageType.VOTE_RESP, i, STRANGER, before.term + 1) for _ in range(50)
        ] + [
            Message(MessageType.APP, i, STRANGER, before.term, index=0, commit=10**12),
            Message(MessageType.HEARTBEAT_RESP, i, STRANGER, before.term + 3),
        ]
        send(cluster, i, STRANGER, flood)
        # A "duplicate" of the node's own id.
        send(cluster, i, i, [Message(MessageType.HEARTBEAT, i, i, before.term + 1)])
    assert_harmless(cluster, before)
    for i in ids(cluster):
        assert refused(cluster, i, "not_member") >= counted[i] + 53
        assert refused(cluster, i, "self") >= own[i] + 1


# ---- with peer TLS the same frames never reach a node ------------------------------


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = start_cluster(tmp_path_factory.mktemp("mtls"), peer_tls=True)
    yield c
    c.stop_all(10)


def test_with_peer_tls_impersonation_without_a_certificate_never_reaches_a_node(
    tls_cluster: LocalCluster,
) -> None:
    cluster = tls_cluster
    before = View(cluster)
    leader, term = before.leader, before.term
    follower = before.followers()[0]
    reasons = ("not_member", "self", "digest_not_voter", "digest_conflict")
    counted = {(i, r): refused(cluster, i, r) for i in ids(cluster) for r in reasons}
    # What only authentication can stop: frames in real members' names.
    attacks: list[tuple[int, int, list[Message], list[Digest]]] = [
        (follower, leader, [fake_append(follower, leader, before, forged_batch(0, 0), term)], []),
        (follower, leader, [Message(MessageType.TIMEOUT_NOW, follower, leader, term)], []),
        (leader, follower, [Message(MessageType.APP_RESP, leader, follower, term, index=10)], []),
        (follower, leader, [Message(MessageType.HEARTBEAT, follower, leader, MAX_TERM)], []),
        (leader, follower, [], [Digest(before.st(leader)["applied_index"], b"\x00" * 32)]),
        (leader, STRANGER, [Message(MessageType.HEARTBEAT, leader, STRANGER, term + 1)], []),
    ]
    for to, frm, messages, digests in attacks:
        with pytest.raises(grpc.aio.AioRpcError) as refusal:
            send(cluster, to, frm, messages, digests)
        assert refusal.value.code() == grpc.StatusCode.UNAVAILABLE
    time.sleep(1.0)
    assert_harmless(cluster, before)
    for (i, r), value in counted.items():
        assert refused(cluster, i, r) == value, f"a frame reached node {i} ({r})"

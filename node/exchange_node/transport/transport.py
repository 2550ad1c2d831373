"""``PeerTransport``: Raft messages between nodes over gRPC (asyncio, ``grpc.aio``).

Shape (one process, one event loop):

- A gRPC server (service ``exchange.peer.v1.Peer``) receives envelopes and
  snapshot chunks from the other members and hands every Raft message to
  ``on_message`` in the order it was sent.
- Per peer, one channel, one long-lived ``Replicate`` stream and one sender
  task. ``send()`` never blocks: it appends to the peer's bounded queue and
  wakes the sender, which coalesces everything queued into as few envelopes
  as the size budget allows. Python gRPC moves about 3,000 messages per
  second on one stream, so batching is what makes replication fast.
- Per peer, one snapshot task: SNAP messages leave through a separate
  ``InstallSnapshot`` call in chunks, so a large transfer never holds up
  heartbeats and votes on the replication stream. A SNAP message may
  therefore overtake or trail the messages around it; Raft's term and index
  checks make that safe, and ``on_snapshot_status`` tells the core when the
  transfer ended.
- Streams are client-streaming, one per direction: each node dials each
  peer, and answers (APP_RESP, VOTE_RESP, ...) travel on the peer's own
  stream back. One writer per stream, no coupling between the directions.

Failure policy (Raft tolerates lost messages; it does not tolerate stalls):

- A broken stream discards what is queued for that peer, reports the peer
  unreachable (the core falls back to probing) and reconnects with
  exponential backoff and jitter, capped at ``max_backoff`` seconds.
- A full queue drops the new messages and reports the peer unreachable.
- A broken or failed stream to a peer, or the end of the peer's stream to us,
  is followed by one plain TCP connect to the peer's address: refused means
  nobody listens there any more (the process died and the kernel closed its
  sockets), reported with ``on_peer_gone`` so a follower of that peer
  campaigns without waiting out its election timeout. Any other outcome says
  nothing (a partition or a frozen process gives no refusal) and is not
  reported.
- A frame whose CRC does not match is dropped and counted, never applied.
- A peer that stops answering (``answer_timeout``): a follower answers every APP
  and HEARTBEAT on its own stream back, so when we have written some to a peer
  and no APP_RESP or HEARTBEAT_RESP came from it for that long, one of the two
  streams between us is wedged (without TLS a bit flipped in a gRPC length
  prefix leaves the receiver waiting for a message that never completes, while
  HTTP/2 keepalives still pass). Both are reset: our stream to the peer is
  cancelled and reconnected over a new connection with the usual backoff (a run
  of such resets backs off further), and the peer's stream to us is ended so
  that it reconnects. Only a leader sends APP and HEARTBEAT, so a cluster
  without one, or a follower whose votes go unanswered, never resets anything.
  Every channel has a connection of its own (no shared subchannel pool), and a
  stream that does not open within ``connect_timeout`` also gets a new one:
  new streams on a wedged connection were seen never to open.

Callbacks run on the event loop. ``on_message`` is called directly from the
receiving coroutine and must not block. ``on_unreachable``,
``on_snapshot_status``, ``on_peer_gone`` and ``on_digest`` are scheduled with ``call_soon`` so
they never re-enter the caller in the middle of ``send()``.

gRPC metadata: ``metadata`` given to the constructor is attached, unchanged,
to every outgoing call; the server neither reads nor rewrites what callers or
interceptors (for example OpenTelemetry's gRPC instrumentation) put there.
Trace context for an order travels inside the entry data itself.

Authentication (``tls``, see ``transport/tls.py``): the server requires a client
certificate signed by the cluster CA and reads, per call, the member it names
(URI SAN ``spiffe://raft-exchange/cluster/<cluster>/member/<id>``). A frame whose
``from_node``, any message's ``frm`` or a snapshot chunk's sender is not that member
is dropped and counted; so ``on_message`` and ``on_digest`` only ever see the
authenticated sender's id. Dialing, a node checks that the peer's certificate names
the member it meant (TLS target name ``member_dns_name(cluster, peer)``). The
certificate files are re-read when they change: by the server at each handshake,
by the channels every ``tls_check_interval`` seconds and before each reconnect.
Every envelope and snapshot chunk carries the cluster id; another cluster's is
refused, with or without TLS.

Incoming snapshots: at most ``max_incoming_snapshots`` at once, each bounded by
``max_snapshot_bytes`` (memory grows with the chunks received, never with the
size a header announces), aborted when no chunk came for ``snapshot_stall_timeout``
seconds or the whole transfer takes longer than ``snapshot_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from exchange_node.limits import (
    PEER_CONNECT_TIMEOUT_S,
    PEER_ENVELOPE_BYTES,
    PEER_KEEPALIVE_S,
    PEER_MAX_BACKOFF_S,
    PEER_MAX_INCOMING_SNAPSHOTS,
    PEER_MAX_MESSAGE_BYTES,
    PEER_MAX_SNAPSHOT_BYTES,
    PEER_MIN_BACKOFF_S,
    PEER_QUEUE_BYTES,
    PEER_QUEUE_LIMIT,
    PEER_SHUTDOWN_WAIT_S,
    PEER_SNAPSHOT_CHUNK_BYTES,
    PEER_SNAPSHOT_QUEUE_LIMIT,
    PEER_SNAPSHOT_STALL_S,
    PEER_SNAPSHOT_TIMEOUT_S,
)
from exchange_node.raft.types import Message, MessageType
from exchange_node.security.certs import member_dns_name, parse_member_uri, validate_cluster_id
from exchange_node.transport import peer_pb2 as pb
from exchange_node.transport import peer_pb2_grpc as pb_grpc
from exchange_node.transport.codec import (
    ENVELOPE_OVERHEAD_BYTES,
    ChecksumError,
    Digest,
    OversizedError,
    SnapshotAssembler,
    SnapshotTooLargeError,
    decode_digests,
    decode_messages,
    encode_envelope,
    estimated_size,
    open_chunk,
    open_envelope,
    snapshot_chunks,
    split_message,
)
from exchange_node.transport.tls import PeerCredentials, PeerTLS

log = logging.getLogger(__name__)

OnMessage = Callable[[Message], None]
OnDigest = Callable[[int, int, bytes], None]
"""``on_digest(peer, applied_index, state_hash)``."""
OnSnapshotStatus = Callable[[int, bool], None]
"""``on_snapshot_status(peer, ok)``: the SNAP message reached the peer or did not."""
OnUnreachable = Callable[[int], None]
"""``on_unreachable(peer)``: messages to ``peer`` were lost; probe it again."""
OnPeerGone = Callable[[int], None]
"""``on_peer_gone(peer)``: our stream to ``peer`` broke and a new connection was
refused: its process is gone (``RaftCore.leader_unreachable``)."""

Metadata = Sequence[tuple[str, str | bytes]]

DEFAULT_MAX_MESSAGE_BYTES = PEER_MAX_MESSAGE_BYTES
DEFAULT_QUEUE_LIMIT = PEER_QUEUE_LIMIT
"""Messages waiting per peer. A leader sends a few per Ready, so a full queue
means the peer (or the network to it) has stopped keeping up."""
DEFAULT_QUEUE_BYTES = PEER_QUEUE_BYTES
"""Estimated bytes waiting per peer (entries dominate)."""
DEFAULT_ENVELOPE_BYTES = PEER_ENVELOPE_BYTES
"""Target envelope size (a single larger message still travels whole, up to
``max_message_bytes``). Large enough to amortise gRPC's cost per message
(about 90 us of sender CPU per envelope, measured by ``bench``), small
enough that the two processes overlap encoding and decoding, and that
encoding one envelope (about 0.5 ms) never stalls the event loop."""
DEFAULT_SNAPSHOT_CHUNK_BYTES = PEER_SNAPSHOT_CHUNK_BYTES
DEFAULT_MAX_SNAPSHOT_BYTES = PEER_MAX_SNAPSHOT_BYTES
DEFAULT_SNAPSHOT_STALL_S = PEER_SNAPSHOT_STALL_S
"""An incoming transfer with no chunk for this long is aborted."""
DEFAULT_MAX_INCOMING_SNAPSHOTS = PEER_MAX_INCOMING_SNAPSHOTS
DEFAULT_CLUSTER_ID = "exchange"
TLS_CHECK_INTERVAL_S = 5.0
REJECT_LOG_INTERVAL_S = 10.0
"""At most one warning per (reason, peer address) in this many seconds."""
DIGEST_SIZE_BYTES = 80
SNAPSHOT_QUEUE_LIMIT = PEER_SNAPSHOT_QUEUE_LIMIT
SHUTDOWN_WAIT_S = PEER_SHUTDOWN_WAIT_S
"""How long stopping waits for one peer's tasks, a channel or the server."""
_EXPECT_ANSWER = frozenset((MessageType.APP, MessageType.HEARTBEAT))
"""Messages a live peer always answers (see ``answer_timeout``)."""
_ANSWERS = frozenset((MessageType.APP_RESP, MessageType.HEARTBEAT_RESP))


@dataclass(slots=True)
class PeerStats:
    """What one peer's sender has done; ``connected`` is live state."""

    address: str
    connected: bool = False
    queued: int = 0
    messages_sent: int = 0
    envelopes_sent: int = 0
    dropped: int = 0
    reconnects: int = 0
    stream_failures: int = 0
    silent_resets: int = 0
    """Streams reset because the peer stopped answering (see ``answer_timeout``)."""


@dataclass(slots=True)
class TransportStats:
    """Counters since start; the server exports them as metrics."""

    messages_sent: int = 0
    messages_received: int = 0
    entries_sent: int = 0
    entries_received: int = 0
    envelopes_sent: int = 0
    envelopes_received: int = 0
    bytes_sent: int = 0
    """Envelope and snapshot chunk body bytes written to streams."""
    bytes_received: int = 0
    digests_sent: int = 0
    digests_received: int = 0
    dropped_queue_full: int = 0
    """Messages refused because the peer's queue was full."""
    dropped_disconnected: int = 0
    """Messages discarded because their peer's stream broke or had no address."""
    dropped_oversized: int = 0
    """Messages that could not be split under the message size limit."""
    checksum_failures: int = 0
    """Envelopes and snapshot chunks received with a CRC mismatch (dropped)."""
    decode_failures: int = 0
    """Frames with a good CRC that still did not parse (dropped)."""
    misdirected: int = 0
    """Frames addressed to another node id (dropped)."""
    sender_mismatch: int = 0
    """Frames whose sender (``from_node``, a message's ``frm``, a chunk's sender) is not
    the member the TLS handshake authenticated (dropped)."""
    wrong_cluster: int = 0
    """Frames or calls of another cluster id (dropped)."""
    unauthenticated: int = 0
    """Calls whose certificate names no member (refused)."""
    snapshot_busy: int = 0
    """Incoming transfers refused because ``max_incoming_snapshots`` were running."""
    snapshot_timeouts: int = 0
    """Incoming transfers aborted: stalled, or past the snapshot timeout."""
    snapshot_oversized: int = 0
    """Incoming transfers announcing more than ``max_snapshot_bytes``."""
    tls_enabled: bool = False
    tls_reloads: int = 0
    """Times new certificate files were loaded."""
    sequence_gaps: int = 0
    """Envelopes never seen on a stream (sequence numbers skipped; dropped frames are
    counted by the counters above, not here)."""
    callback_errors: int = 0
    encode_failures: int = 0
    """Outgoing messages the codec rejected (dropped; a bug upstream)."""
    connects: int = 0
    peers_gone: int = 0
    """Broken streams after which the peer refused a new connection (``on_peer_gone``)."""
    reconnects: int = 0
    """Streams established after a peer's first one."""
    stream_failures: int = 0
    silent_resets: int = 0
    """Times both streams with a peer were reset because it answered no APP or
    HEARTBEAT for ``answer_timeout`` seconds (each is also a stream failure and,
    once it reconnects, a reconnect)."""
    snapshots_sent: int = 0
    snapshots_received: int = 0
    snapshot_failures: int = 0
    """Outgoing transfers that failed plus incoming transfers rejected."""
    peers: dict[int, PeerStats] = field(default_factory=dict)


class _Peer:
    """One remote member: its channel, queues and tasks."""

    __slots__ = (
        "address",
        "awaiting_answer_since",
        "call",
        "channel",
        "closed",
        "node_id",
        "queue",
        "queued_bytes",
        "sender",
        "silenced",
        "silent_run",
        "snapshot_call",
        "snapshot_sender",
        "snapshot_wake",
        "snapshots",
        "stats",
        "stub",
        "tls_version",
        "wake",
    )

    def __init__(
        self, node_id: int, address: str, channel: grpc.aio.Channel, tls_version: int
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.channel = channel
        self.tls_version = tls_version
        """The certificate version the channel was built with (0 without TLS)."""
        self.stub = pb_grpc.PeerStub(channel)  # type: ignore[no-untyped-call]
        self.queue: deque[tuple[Message | Digest, int]] = deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.snapshots: deque[Message] = deque()
        self.snapshot_wake = asyncio.Event()
        self.stats = PeerStats(address)
        self.sender: asyncio.Task[None] | None = None
        self.snapshot_sender: asyncio.Task[None] | None = None
        self.call: Any = None
        self.snapshot_call: Any = None
        self.closed = asyncio.Event()
        self.awaiting_answer_since: float | None = None
        """When we first wrote an APP or HEARTBEAT on this stream that no answer has
        followed (monotonic seconds), or None."""
        self.silenced = False
        """The current stream is being reset because the peer stopped answering."""
        self.silent_run = 0
        """Silent resets since the peer last answered: the backoff attempt to start at."""


class _StreamBroken(Exception):
    pass


class _InboundStream:
    """A running ``Replicate`` call from a peer, which we may end from outside it."""

    __slots__ = ("context", "ending", "sender")

    def __init__(self, context: grpc.aio.ServicerContext, sender: int | None) -> None:
        self.context = context
        self.sender = sender
        self.ending: asyncio.Task[None] | None = None

    def end(self) -> None:
        """Finish the call with UNAVAILABLE: the peer's client sees its stream end (a
        cancelled handler task would not tell it) and reconnects."""
        if self.ending is None:
            self.ending = asyncio.create_task(self._abort())

    async def _abort(self) -> None:
        with contextlib.suppress(Exception):
            await self.context.abort(grpc.StatusCode.UNAVAILABLE, SILENCE_DETAILS)


SILENCE_DETAILS = "no answers reached this node on your stream"
"""The status details of a stream ended by ``_reset_silent_peer``: its sender then
reconnects over a new connection too."""


async def _ended_for_silence(call: Any) -> bool:
    """Whether the server ended ``call`` because our answers stopped reaching it."""
    if not call.done() or call.cancelled():
        return False
    try:
        return bool(await call.details() == SILENCE_DETAILS)
    except Exception:
        return False


def _consume_result(future: asyncio.Future[Any]) -> None:
    """Retrieve a helper future's outcome so asyncio never logs it as unhandled."""
    if not future.cancelled():
        future.exception()


def backoff_delay(attempt: int, minimum: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): doubling from
    ``minimum``, capped at ``maximum``, times a jitter in [0.5, 1) so that peers
    that lost each other at the same moment do not retry in lockstep."""
    return min(maximum, minimum * (2 ** min(attempt, 30))) * (0.5 + 0.5 * rng.random())


class PeerTransport:
    """Raft peer messaging over gRPC; see the module docstring for the policy."""

    def __init__(
        self,
        node_id: int,
        listen_address: str,
        on_message: OnMessage,
        *,
        cluster_id: str = DEFAULT_CLUSTER_ID,
        tls: PeerTLS | None = None,
        on_digest: OnDigest | None = None,
        on_snapshot_status: OnSnapshotStatus | None = None,
        on_unreachable: OnUnreachable | None = None,
        on_peer_gone: OnPeerGone | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        queue_limit_bytes: int = DEFAULT_QUEUE_BYTES,
        envelope_bytes: int = DEFAULT_ENVELOPE_BYTES,
        snapshot_chunk_bytes: int = DEFAULT_SNAPSHOT_CHUNK_BYTES,
        max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
        snapshot_timeout: float = PEER_SNAPSHOT_TIMEOUT_S,
        snapshot_stall_timeout: float = DEFAULT_SNAPSHOT_STALL_S,
        max_incoming_snapshots: int = DEFAULT_MAX_INCOMING_SNAPSHOTS,
        tls_check_interval: float = TLS_CHECK_INTERVAL_S,
        connect_timeout: float = PEER_CONNECT_TIMEOUT_S,
        min_backoff: float = PEER_MIN_BACKOFF_S,
        max_backoff: float = PEER_MAX_BACKOFF_S,
        keepalive_seconds: float = PEER_KEEPALIVE_S,
        answer_timeout: float | None = None,
        metadata: Metadata = (),
        rng: random.Random | None = None,
    ) -> None:
        if node_id < 1:
            raise ValueError("node ids are >= 1")
        if max_message_bytes < 4096:
            raise ValueError("max_message_bytes below 4 KiB leaves no room for entries")
        self.node_id = node_id
        self.cluster_id = validate_cluster_id(cluster_id)
        self.listen_address = listen_address
        # Raises PeerTLSError for unusable files or a certificate of another member.
        self._credentials = PeerCredentials(tls, cluster_id, node_id) if tls else None
        self._tls_check_interval = tls_check_interval
        self._on_message = on_message
        self._on_digest = on_digest
        self._on_snapshot_status = on_snapshot_status
        self._on_unreachable = on_unreachable
        self._on_peer_gone = on_peer_gone
        self.max_message_bytes = max_message_bytes
        self.queue_limit = queue_limit
        self.queue_limit_bytes = queue_limit_bytes
        # Room for the envelope framing, so a full envelope never trips the limit.
        self._message_budget = max_message_bytes - 2 * ENVELOPE_OVERHEAD_BYTES - 1024
        self._envelope_budget = max(1, min(envelope_bytes, self._message_budget))
        self._chunk_bytes = max(1, min(snapshot_chunk_bytes, max_message_bytes // 2))
        self._max_snapshot_bytes = max_snapshot_bytes
        self._snapshot_timeout = snapshot_timeout
        self._snapshot_stall_timeout = snapshot_stall_timeout
        self._max_incoming_snapshots = max_incoming_snapshots
        self._incoming_snapshots = 0
        self._connect_timeout = connect_timeout
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        if answer_timeout is not None and answer_timeout <= 0:
            raise ValueError(f"answer_timeout must be positive seconds, not {answer_timeout}")
        self._answer_timeout = answer_timeout
        self._inbound: dict[asyncio.Task[Any], _InboundStream] = {}
        """Running ``Replicate`` handlers (with ``answer_timeout``), by handler task."""
        self._metadata: tuple[tuple[str, str | bytes], ...] = tuple(metadata)
        self._rng = rng or random.Random()
        keepalive_ms = int(keepalive_seconds * 1000)
        self._channel_options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", keepalive_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", int(min_backoff * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(min_backoff * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(max_backoff * 1000)),
            ("grpc.enable_retries", 0),
            # Each channel its own connection: a rebuilt channel must not reuse a wedged one.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self._server_options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", keepalive_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", min(keepalive_ms, 1000)),
            ("grpc.http2.max_ping_strikes", 0),
        ]
        self.stats = TransportStats(tls_enabled=tls is not None)
        self._reject_logged: dict[tuple[str, str], float] = {}
        self._served_tls_version = 0
        self.port = 0
        """The bound gRPC port (useful with port 0 in ``listen_address``)."""
        self._server: grpc.aio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._peers: dict[int, _Peer] = {}
        self._wanted_peers: dict[int, str] = {}
        self._transfer_ids = 0
        self._background: set[asyncio.Task[None]] = set()
        self._tls_watch: asyncio.Task[None] | None = None
        self._answer_watch: asyncio.Task[None] | None = None
        self._closed = False

    # ---- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; connect to the peers given to ``set_peers`` so far."""
        if self._server is not None:
            raise RuntimeError("PeerTransport already started")
        self._loop = asyncio.get_running_loop()
        server = grpc.aio.server(options=self._server_options)
        pb_grpc.add_PeerServicer_to_server(_PeerService(self), server)  # type: ignore[no-untyped-call]
        try:
            if self._credentials is None:
                port = server.add_insecure_port(self.listen_address)
            else:
                port = server.add_secure_port(self.listen_address, self._server_credentials())
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.listen_address}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot listen on {self.listen_address}")
        self.port = port
        await server.start()
        self._server = server
        if self._credentials is not None:
            self._tls_watch = asyncio.create_task(self._watch_tls_files(), name="peer-tls-watch")
        if self._answer_timeout is not None:
            self._answer_watch = asyncio.create_task(
                self._watch_answers(self._answer_timeout), name="peer-answer-watch"
            )
        self.set_peers(self._wanted_peers)

    async def stop(self, grace: float | None = None) -> None:
        """Close every stream and the server. Queued messages are dropped.

        ``grace``: seconds the server lets incoming calls run on. Replication
        streams never end by themselves, so the default ends them at once.
        """
        if self._closed:
            return
        self._closed = True
        if self._tls_watch is not None:
            self._tls_watch.cancel()
        if self._answer_watch is not None:
            self._answer_watch.cancel()
        await asyncio.gather(*(self._close_peer(node_id) for node_id in list(self._peers)))
        if self._background:
            await asyncio.wait(set(self._background), timeout=SHUTDOWN_WAIT_S)
        if self._server is not None:
            await self._bounded(self._server.stop(grace), "stopping the gRPC server")

    @property
    def address(self) -> str:
        """``host:port`` actually bound (the host part of ``listen_address``)."""
        host = self.listen_address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def set_peers(self, peers: dict[int, str]) -> None:
        """Replace the peer set (node id -> "host:port"); this node's own id is ignored.

        New peers get a channel and sender tasks; removed peers are closed;
        a peer whose address changed is reconnected to the new one.
        """
        wanted = {node_id: addr for node_id, addr in peers.items() if node_id != self.node_id}
        self._wanted_peers = dict(wanted)
        if self._server is None or self._closed:
            return
        for node_id in list(self._peers):
            if wanted.get(node_id) != self._peers[node_id].address:
                self._close_peer_soon(node_id)
        for node_id, address in wanted.items():
            if node_id not in self._peers:
                self._open_peer(node_id, address)

    def peer_connected(self, peer: int) -> bool:
        """Whether the replication stream to ``peer`` is established right now."""
        state = self._peers.get(peer)
        return state is not None and state.stats.connected

    # ---- sending -----------------------------------------------------------------

    def send(self, messages: Iterable[Message]) -> None:
        """Queue messages for their destinations (``msg.to``); never blocks.

        Messages to one peer are delivered in the order given (SNAP messages
        travel on their own call and end with ``on_snapshot_status``).
        """
        unreachable: set[int] = set()
        stats = self.stats
        for msg in messages:
            state = self._peers.get(msg.to)
            if state is None:
                stats.dropped_disconnected += 1
                unreachable.add(msg.to)
                continue
            if msg.type == MessageType.SNAP:
                self._queue_snapshot(state, msg)
                continue
            size = estimated_size(msg)
            if size > self._message_budget:
                try:
                    pieces = split_message(msg, self._message_budget)
                except OversizedError as exc:
                    log.error("dropping a message to %d: %s", msg.to, exc)
                    stats.dropped_oversized += 1
                    state.stats.dropped += 1
                    unreachable.add(msg.to)
                    continue
            else:
                pieces = [msg]
            for piece in pieces:
                piece_size = size if piece is msg else estimated_size(piece)
                if not self._has_room(state, piece_size):
                    stats.dropped_queue_full += 1
                    state.stats.dropped += 1
                    unreachable.add(msg.to)
                    continue
                state.queue.append((piece, piece_size))
                state.queued_bytes += piece_size
            state.stats.queued = len(state.queue)
            state.wake.set()
        for peer in unreachable:
            self._report_unreachable(peer)

    def send_digest(self, peer: int, applied_index: int, state_hash: bytes) -> None:
        """Queue a state digest for ``peer`` (after the messages queued before it)."""
        state = self._peers.get(peer)
        if state is None:
            return
        if not self._has_room(state, DIGEST_SIZE_BYTES):
            self.stats.dropped_queue_full += 1
            state.stats.dropped += 1
            return
        state.queue.append((Digest(applied_index, state_hash), DIGEST_SIZE_BYTES))
        state.queued_bytes += DIGEST_SIZE_BYTES
        state.wake.set()

    def _has_room(self, state: _Peer, size: int) -> bool:
        queue = state.queue
        if len(queue) >= self.queue_limit:
            return False
        # One message larger than the byte limit still goes through an empty queue.
        return not queue or state.queued_bytes + size <= self.queue_limit_bytes

    def _queue_snapshot(self, state: _Peer, msg: Message) -> None:
        if msg.snapshot is None:
            log.error("SNAP message to %d without a snapshot: dropped", msg.to)
            self._schedule(self._on_snapshot_status, msg.to, False)
            return
        if len(state.snapshots) >= SNAPSHOT_QUEUE_LIMIT:
            self.stats.snapshot_failures += 1
            self._schedule(self._on_snapshot_status, msg.to, False)
            return
        state.snapshots.append(msg)
        state.snapshot_wake.set()

    # ---- peers ---------------------------------------------------------------------

    # ---- TLS ---------------------------------------------------------------------

    def _server_credentials(self) -> grpc.ServerCredentials:
        assert self._credentials is not None
        first = self._credentials.material
        self._served_tls_version = first.version

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC before each handshake: a new certificate is used from the
            # next connection on, without a restart. None keeps the current one.
            try:
                creds = self._credentials
                assert creds is not None
                if creds.refresh():
                    self.stats.tls_reloads += 1
                material = creds.material
                if material.version == self._served_tls_version:
                    return None
                self._served_tls_version = material.version
                return grpc.ssl_server_certificate_configuration(
                    [(material.key_pem, material.cert_pem)], root_certificates=material.ca_pem
                )
            except Exception:
                log.exception("reloading the peer TLS certificate failed")
                return None

        return grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration(
                [(first.key_pem, first.cert_pem)], root_certificates=first.ca_pem
            ),
            fetch,
            require_client_authentication=True,
        )

    def _make_channel(self, node_id: int, address: str) -> tuple[grpc.aio.Channel, int]:
        if self._credentials is None:
            return grpc.aio.insecure_channel(address, options=self._channel_options), 0
        material = self._credentials.material
        creds = grpc.ssl_channel_credentials(
            root_certificates=material.ca_pem,
            private_key=material.key_pem,
            certificate_chain=material.cert_pem,
        )
        # Verify that the peer is the member we meant, whatever its address.
        options = [
            *self._channel_options,
            ("grpc.ssl_target_name_override", member_dns_name(self.cluster_id, node_id)),
        ]
        return grpc.aio.secure_channel(address, creds, options=options), material.version

    def _refresh_tls(self) -> None:
        """Reload changed files; move every channel built on older ones to a new one."""
        creds = self._credentials
        if creds is None or self._closed:
            return
        if creds.refresh():
            self.stats.tls_reloads += 1
        version = creds.material.version
        for state in list(self._peers.values()):
            if state.tls_version != version:
                self._rebuild_channel(state)

    def _rebuild_channel(self, state: _Peer) -> None:
        old = state.channel
        state.channel, state.tls_version = self._make_channel(state.node_id, state.address)
        state.stub = pb_grpc.PeerStub(state.channel)  # type: ignore[no-untyped-call]
        # The stream reconnects over the new channel; a snapshot in flight on the old
        # one gets a grace period before the old channel closes.
        if state.call is not None:
            state.call.cancel()
        task = asyncio.create_task(
            self._bounded(old.close(grace=SHUTDOWN_WAIT_S), "closing a replaced channel")
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_tls_files(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._tls_check_interval)
            try:
                self._refresh_tls()
            except Exception:
                log.exception("checking the peer TLS files failed")

    def _reject(self, reason: str, peer: str, detail: str) -> None:
        """Log a refused frame or call, at most once per reason and address per interval."""
        now = time.monotonic()
        key = (reason, peer)
        last = self._reject_logged.get(key)
        if last is not None and now - last < REJECT_LOG_INTERVAL_S:
            return
        if len(self._reject_logged) > 1024:
            self._reject_logged.clear()
        self._reject_logged[key] = now
        log.warning(
            "peer frame rejected (%s) from %s: %s",
            reason,
            peer,
            detail,
            extra={"reason": reason, "peer_address": peer},
        )

    def _authenticate(self, context: grpc.aio.ServicerContext) -> tuple[int | None, str | None]:
        """``(member id, None)`` for an authenticated member of this cluster, ``(None, None)``
        without TLS, ``(None, refusal)`` otherwise (counted and logged)."""
        if self._credentials is None:
            return None, None
        peer = context.peer()
        uris = context.auth_context().get("peer_uri", [])
        members = {m for m in map(parse_member_uri, uris) if m is not None}
        if len(members) != 1:
            self.stats.unauthenticated += 1
            detail = f"certificate names {len(members)} members ({uris!r})"
            self._reject("unauthenticated", peer, detail)
            return None, detail
        ((cluster_id, member_id),) = members
        if cluster_id != self.cluster_id:
            self.stats.wrong_cluster += 1
            detail = f"certificate of member {member_id} of cluster {cluster_id!r}"
            self._reject("wrong_cluster", peer, detail)
            return None, detail
        return member_id, None

    # ---- peers ---------------------------------------------------------------------

    def _open_peer(self, node_id: int, address: str) -> None:
        if self._credentials is not None:
            # Before a new channel is built, so it starts with the current files.
            with contextlib.suppress(Exception):
                self._refresh_tls()
        channel, tls_version = self._make_channel(node_id, address)
        state = _Peer(node_id, address, channel, tls_version)
        self._peers[node_id] = state
        self.stats.peers[node_id] = state.stats
        state.sender = asyncio.create_task(
            self._run_sender(state), name=f"peer-{self.node_id}->{node_id}"
        )
        state.snapshot_sender = asyncio.create_task(
            self._run_snapshot_sender(state), name=f"snapshots-{self.node_id}->{node_id}"
        )

    def _close_peer_soon(self, node_id: int) -> None:
        """Detach the peer now (``send`` stops queueing to it) and close it in the background."""
        state = self._peers.pop(node_id, None)
        if state is None:
            return
        self.stats.peers.pop(node_id, None)
        task = asyncio.create_task(self._shutdown_peer(state))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close_peer(self, node_id: int) -> None:
        state = self._peers.pop(node_id, None)
        if state is not None:
            await self._shutdown_peer(state)

    async def _shutdown_peer(self, state: _Peer) -> None:
        # Cancelling a task while it awaits inside grpc.aio (initial metadata,
        # a write) can leave it hanging; ending the calls lets the tasks return
        # by themselves. Task cancellation is only the fallback.
        state.closed.set()
        for call in (state.call, state.snapshot_call):
            if call is not None:
                call.cancel()
        state.wake.set()
        state.snapshot_wake.set()
        tasks = {t for t in (state.sender, state.snapshot_sender) if t is not None}
        _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_S) if tasks else ((), ())
        for task in pending:
            log.warning("peer %d task %s did not stop; cancelling it", state.node_id, task)
            task.cancel()
        await self._bounded(
            state.channel.close(grace=None), f"closing the channel to {state.node_id}"
        )
        state.stats.connected = False

    async def _bounded(self, coro: Any, what: str) -> None:
        """Await ``coro`` for at most ``SHUTDOWN_WAIT_S``; past that, leave it running."""
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_WAIT_S)
        if not done:
            log.warning("%s takes longer than %.1f s; not waiting for it", what, SHUTDOWN_WAIT_S)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # ---- the replication stream --------------------------------------------------

    async def _run_sender(self, state: _Peer) -> None:
        """Keep one stream to the peer open and feed it; reconnect with backoff."""
        attempt = 0
        established_before = False
        while not state.closed.is_set():
            if attempt and self._credentials is not None:
                self._refresh_tls()  # reconnecting: pick up rotated certificates first
            call = state.stub.Replicate(metadata=self._metadata)
            state.call = call
            call.add_done_callback(lambda _call: state.wake.set())
            established = False
            try:
                # The server answers with its initial metadata at once: that is
                # "connected". Not asyncio.wait_for: cancelling grpc.aio's
                # initial_metadata() can hang; cancelling the call cannot.
                metadata = asyncio.ensure_future(call.initial_metadata())
                metadata.add_done_callback(_consume_result)
                done, _ = await asyncio.wait({metadata}, timeout=self._connect_timeout)
                if not done:
                    # A new connection too: after a wedge (see ``answer_timeout``) new
                    # streams on the old connection were seen never to open.
                    self._rebuild_channel(state)
                    raise _StreamBroken
                if call.done() or state.closed.is_set():
                    raise _StreamBroken
                established = True
                attempt = state.silent_run
                state.awaiting_answer_since = None
                state.stats.connected = True
                self.stats.connects += 1
                if established_before:
                    self.stats.reconnects += 1
                    state.stats.reconnects += 1
                established_before = True
                await self._pump(state, call)
            except asyncio.CancelledError:
                call.cancel()
                raise
            except (_StreamBroken, grpc.RpcError, asyncio.InvalidStateError, TimeoutError) as exc:
                log.debug("stream %d->%d broke: %r", self.node_id, state.node_id, exc)
            except Exception:
                log.exception("stream %d->%d failed", self.node_id, state.node_id)
            finally:
                state.stats.connected = False
            if established and not state.silenced and await _ended_for_silence(call):
                # The peer heard none of our answers: the wedge may be in our connection
                # (e.g. a corrupted flow-control update), so reconnect over a new one.
                log.warning(
                    "peer %d ended our stream (no answers reached it): new connection",
                    state.node_id,
                )
                self._rebuild_channel(state)
            call.cancel()
            state.call = None
            state.awaiting_answer_since = None
            if state.closed.is_set():
                return
            if state.silenced:
                state.silenced = False
                attempt = state.silent_run  # a peer silent again and again: back off further
            if established:
                self.stats.stream_failures += 1
                state.stats.stream_failures += 1
            dropped = self._discard_queue(state)
            if established or dropped:
                self._report_unreachable(state.node_id)
            if self._on_peer_gone is not None:
                # Before the backoff: a dead process is worth knowing about at once.
                await self._probe_gone(state)
            delay = backoff_delay(attempt, self._min_backoff, self._max_backoff, self._rng)
            attempt = min(attempt + 1, 30)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.closed.wait(), delay)

    async def _pump(self, state: _Peer, call: Any) -> None:
        queue = state.queue
        stats = self.stats
        sequence = 0
        while True:
            if not queue:
                state.wake.clear()
                if call.done() or state.closed.is_set():
                    raise _StreamBroken
                await state.wake.wait()
                continue
            messages: list[Message] = []
            digests: list[Digest] = []
            size = ENVELOPE_OVERHEAD_BYTES
            budget = self._envelope_budget
            while queue:
                item, item_size = queue[0]
                if size + item_size > budget and (messages or digests):
                    break
                queue.popleft()
                state.queued_bytes -= item_size
                size += item_size
                if type(item) is Digest:
                    digests.append(item)
                else:
                    messages.append(item)  # type: ignore[arg-type]
            try:
                envelope = encode_envelope(
                    self.node_id, state.node_id, sequence + 1, messages, digests, self.cluster_id
                )
            except Exception:
                # A message the codec cannot carry (e.g. a str where bytes belong)
                # is a bug upstream; drop the batch, keep the stream.
                log.exception("cannot encode %d messages for %d", len(messages), state.node_id)
                stats.encode_failures += len(messages) + len(digests)
                state.stats.dropped += len(messages) + len(digests)
                self._report_unreachable(state.node_id)
                continue
            sequence += 1
            if state.awaiting_answer_since is None:
                # Before the write: a wedged peer may also stop taking our bytes.
                for m in messages:
                    if m.type in _EXPECT_ANSWER:
                        state.awaiting_answer_since = time.monotonic()
                        break
            await call.write(envelope)
            stats.envelopes_sent += 1
            stats.messages_sent += len(messages)
            stats.entries_sent += sum([len(m.entries) for m in messages])
            stats.digests_sent += len(digests)
            stats.bytes_sent += len(envelope.body)
            state.stats.envelopes_sent += 1
            state.stats.messages_sent += len(messages)
            state.stats.queued = len(queue)

    def _probe_gone_soon(self, peer: int | None) -> None:
        state = self._peers.get(peer) if peer is not None else None
        if state is None or self._on_peer_gone is None or self._closed:
            return
        task = asyncio.create_task(self._probe_gone(state))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _probe_gone(self, state: _Peer) -> None:
        """One TCP connect to the peer: refused means its process is gone."""
        host, _, port = state.address.rpartition(":")
        host = host.strip("[]")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port)), self._connect_timeout
            )
        except ConnectionRefusedError:
            self.stats.peers_gone += 1
            log.info("peer %d refuses connections: its process is gone", state.node_id)
            self._schedule(self._on_peer_gone, state.node_id)
            return
        except (OSError, TimeoutError, ValueError):
            return  # unreachable, slow or unresolvable: no sign either way
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    def _discard_queue(self, state: _Peer) -> int:
        dropped = len(state.queue)
        if dropped:
            self.stats.dropped_disconnected += dropped
            state.stats.dropped += dropped
            state.queue.clear()
            state.queued_bytes = 0
        state.stats.queued = 0
        return dropped

    # ---- peers that stop answering ------------------------------------------------

    def _answered(self, state: _Peer) -> None:
        state.awaiting_answer_since = None
        if state.silent_run:
            log.info(
                "peer %d answers again after %d stream resets", state.node_id, state.silent_run
            )
            state.silent_run = 0

    async def _watch_answers(self, timeout: float) -> None:
        # Checked a few times per timeout, so a wedge is reset within 1.25 timeouts.
        while not self._closed:
            await asyncio.sleep(timeout / 4)
            now = time.monotonic()
            for state in list(self._peers.values()):
                since = state.awaiting_answer_since
                if since is not None and now - since > timeout and not state.silenced:
                    self._reset_silent_peer(state, now - since)

    def _reset_silent_peer(self, state: _Peer, silent_for: float) -> None:
        state.silenced = True
        state.silent_run += 1
        state.awaiting_answer_since = None
        self.stats.silent_resets += 1
        state.stats.silent_resets += 1
        if state.silent_run == 1:
            log.warning(
                "peer %d answered nothing for %.1f s while we sent to it: "
                "resetting both streams with it",
                state.node_id,
                silent_for,
                extra={"peer": state.node_id},
            )
        # A new connection, not only a new stream: new streams on the old one were
        # seen never to open after a wedge (the sender reconnects after its backoff).
        self._rebuild_channel(state)
        for inbound in list(self._inbound.values()):
            if inbound.sender == state.node_id:
                inbound.end()  # the peer's call ends; it reconnects to us

    # ---- snapshots -------------------------------------------------------------------

    async def _run_snapshot_sender(self, state: _Peer) -> None:
        while not state.closed.is_set():
            if not state.snapshots:
                state.snapshot_wake.clear()
                await state.snapshot_wake.wait()
                continue
            msg = state.snapshots.popleft()
            ok = await self._send_snapshot(state, msg)
            if ok:
                self.stats.snapshots_sent += 1
            else:
                self.stats.snapshot_failures += 1
            self._schedule(self._on_snapshot_status, state.node_id, ok)

    async def _send_snapshot(self, state: _Peer, msg: Message) -> bool:
        self._transfer_ids += 1
        transfer_id = self._transfer_ids
        call = state.stub.InstallSnapshot(metadata=self._metadata, timeout=self._snapshot_timeout)
        state.snapshot_call = call
        try:
            for chunk in snapshot_chunks(msg, transfer_id, self._chunk_bytes, self.cluster_id):
                await call.write(chunk)
                self.stats.bytes_sent += len(chunk.body)
            await call.done_writing()
            result: pb.SnapshotResult = await call
        except asyncio.CancelledError:
            call.cancel()
            raise
        except (grpc.RpcError, asyncio.InvalidStateError) as exc:
            log.warning("snapshot to %d failed: %r", state.node_id, exc)
            return False
        except Exception:
            log.exception("snapshot to %d failed", state.node_id)
            return False
        finally:
            state.snapshot_call = None
        if not result.ok:
            log.warning("snapshot to %d refused: %s", state.node_id, result.reason)
        return result.ok

    # ---- receiving -----------------------------------------------------------------

    def _receive_envelope(
        self,
        envelope: pb.Envelope,
        expected_sequence: int,
        member: int | None = None,
        peer: str = "",
    ) -> int:
        """Deliver one envelope; returns its sequence number (0 if dropped).

        ``member``: the authenticated sender (None without TLS); ``peer``: its address.
        """
        stats = self.stats
        try:
            body = open_envelope(envelope)
        except ChecksumError:
            stats.checksum_failures += 1
            return 0
        except Exception:
            stats.decode_failures += 1
            return 0
        if body.to_node not in (0, self.node_id):
            stats.misdirected += 1
            return 0
        if body.cluster_id != self.cluster_id:
            stats.wrong_cluster += 1
            self._reject("wrong_cluster", peer, f"envelope of cluster {body.cluster_id!r}")
            return 0
        sender = body.from_node
        if member is not None and sender != member:
            stats.sender_mismatch += 1
            self._reject("sender_mismatch", peer, f"member {member} claims to be {sender}")
            return 0
        try:
            messages = decode_messages(body)
            digests = decode_digests(body) if body.digests else []
        except Exception:
            stats.decode_failures += 1
            return 0
        for msg in messages:
            if msg.frm != sender:
                stats.sender_mismatch += 1
                self._reject(
                    "sender_mismatch",
                    peer,
                    f"envelope from {sender} carries a message from {msg.frm}",
                )
                return 0
        if expected_sequence and body.sequence > expected_sequence:
            stats.sequence_gaps += body.sequence - expected_sequence
        elif not expected_sequence:
            # The first envelope of a stream names its sender: the handler is the task
            # to end if that peer stops answering (see ``_reset_silent_peer``).
            task = asyncio.current_task()
            inbound = self._inbound.get(task) if task is not None else None
            if inbound is not None:
                inbound.sender = sender
        state = self._peers.get(sender)
        if state is not None and state.awaiting_answer_since is not None:
            for msg in messages:
                if msg.type in _ANSWERS:
                    self._answered(state)
                    break
        stats.envelopes_received += 1
        stats.bytes_received += len(envelope.body)
        stats.messages_received += len(messages)
        on_message = self._on_message
        for msg in messages:
            stats.entries_received += len(msg.entries)
            try:
                on_message(msg)
            except Exception:
                stats.callback_errors += 1
                log.exception("on_message failed for a %s message", msg.type.name)
        if digests:
            stats.digests_received += len(digests)
            for digest in digests:
                self._schedule(
                    self._on_digest, body.from_node, digest.applied_index, digest.state_hash
                )
        return body.sequence

    def _deliver_snapshot(self, msg: Message) -> None:
        self.stats.snapshots_received += 1
        try:
            self._on_message(msg)
        except Exception:
            self.stats.callback_errors += 1
            log.exception("on_message failed for a SNAP message")

    # ---- helpers ---------------------------------------------------------------------

    def _report_unreachable(self, peer: int) -> None:
        self._schedule(self._on_unreachable, peer)

    def _schedule(self, callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is None or self._loop is None or self._closed:
            return
        self._loop.call_soon(self._run_callback, callback, args)

    def _run_callback(self, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self._closed:
            return
        try:
            callback(*args)
        except Exception:
            self.stats.callback_errors += 1
            log.exception("transport callback %r failed", callback)


class _PeerService(pb_grpc.PeerServicer):
    """The server side: thin, everything happens in the transport."""

    def __init__(self, transport: PeerTransport) -> None:
        self._transport = transport

    async def Replicate(
        self, request_iterator: AsyncIterator[pb.Envelope], context: grpc.aio.ServicerContext
    ) -> pb.ReplicateSummary:
        transport = self._transport
        member, refusal = transport._authenticate(context)
        if refusal is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        peer = context.peer()
        # Tell the client the stream is up before any envelope arrives.
        await context.send_initial_metadata(())
        accepted = dropped = 0
        expected = 0
        receive = transport._receive_envelope
        task = asyncio.current_task()
        if task is not None and transport._answer_timeout is not None:
            # Its sender: the authenticated member, or without TLS its first envelope's.
            transport._inbound[task] = _InboundStream(context, member)
        try:
            async for envelope in request_iterator:
                sequence = receive(envelope, expected, member, peer)
                if sequence:
                    accepted += 1
                    expected = sequence + 1
                else:
                    dropped += 1
                    if expected:
                        expected += 1
        finally:
            if task is not None:
                transport._inbound.pop(task, None)
            # The sender's stream ended: if its process died, say so now (our own
            # stream to it may be between attempts and notice only later).
            transport._probe_gone_soon(member)
        return pb.ReplicateSummary(envelopes=accepted, dropped=dropped)

    async def InstallSnapshot(
        self, request_iterator: AsyncIterator[pb.SnapshotChunk], context: grpc.aio.ServicerContext
    ) -> pb.SnapshotResult:
        transport = self._transport
        stats = transport.stats
        if transport._incoming_snapshots >= transport._max_incoming_snapshots:
            stats.snapshot_busy += 1
            stats.snapshot_failures += 1
            reason = (
                f"{transport._incoming_snapshots} snapshot transfers already running "
                f"(limit {transport._max_incoming_snapshots})"
            )
            transport._reject("snapshot_busy", context.peer(), reason)
            return pb.SnapshotResult(ok=False, reason=reason)
        transport._incoming_snapshots += 1
        try:
            result, msg = await self._receive_snapshot(context)
        finally:
            transport._incoming_snapshots -= 1
        if msg is not None:
            transport._deliver_snapshot(msg)
        return result

    async def _receive_snapshot(
        self, context: grpc.aio.ServicerContext
    ) -> tuple[pb.SnapshotResult, Message | None]:
        transport = self._transport
        stats = transport.stats
        member, refusal = transport._authenticate(context)
        if refusal is not None:
            stats.snapshot_failures += 1
            return pb.SnapshotResult(ok=False, reason=refusal), None
        peer = context.peer()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + transport._snapshot_timeout
        assembler: SnapshotAssembler | None = None
        try:
            while True:
                left = deadline - loop.time()
                wait = min(transport._snapshot_stall_timeout, left)
                try:
                    if wait <= 0:
                        raise TimeoutError
                    chunk = await asyncio.wait_for(context.read(), wait)
                except TimeoutError:
                    stats.snapshot_timeouts += 1
                    stats.snapshot_failures += 1
                    received = assembler.received if assembler else 0
                    reason = (
                        f"snapshot transfer took longer than {transport._snapshot_timeout:g} s"
                        if left <= transport._snapshot_stall_timeout
                        else f"no snapshot chunk for {transport._snapshot_stall_timeout:g} s"
                    )
                    transport._reject("snapshot_timeout", peer, f"{reason} ({received} bytes)")
                    return pb.SnapshotResult(ok=False, reason=reason), None
                if chunk is grpc.aio.EOF:
                    break
                stats.bytes_received += len(chunk.body)
                body = open_chunk(chunk)
                refused = self._check_chunk(body, member, peer)
                if refused is not None:
                    stats.snapshot_failures += 1
                    return pb.SnapshotResult(ok=False, reason=refused), None
                if assembler is None:
                    assembler = SnapshotAssembler(body, transport._max_snapshot_bytes)
                else:
                    assembler.add(body)
            if assembler is None:
                raise ValueError("empty snapshot transfer")
            msg = assembler.finish()
        except ChecksumError as exc:
            stats.checksum_failures += 1
            stats.snapshot_failures += 1
            return pb.SnapshotResult(ok=False, reason=str(exc)), None
        except SnapshotTooLargeError as exc:
            stats.snapshot_oversized += 1
            stats.snapshot_failures += 1
            transport._reject("snapshot_too_large", peer, str(exc))
            return pb.SnapshotResult(ok=False, reason=str(exc)), None
        except (ValueError, DecodeError) as exc:
            stats.decode_failures += 1
            stats.snapshot_failures += 1
            return pb.SnapshotResult(ok=False, reason=str(exc)), None
        return pb.SnapshotResult(ok=True), msg

    def _check_chunk(self, body: pb.SnapshotChunkBody, member: int | None, peer: str) -> str | None:
        """Why a chunk is refused (counted and logged), or None."""
        transport = self._transport
        stats = transport.stats
        if body.to_node not in (0, transport.node_id):
            stats.misdirected += 1
            return f"snapshot for node {body.to_node}"
        if body.cluster_id != transport.cluster_id:
            stats.wrong_cluster += 1
            transport._reject("wrong_cluster", peer, f"snapshot of cluster {body.cluster_id!r}")
            return f"snapshot of cluster {body.cluster_id!r}, this is {transport.cluster_id!r}"
        if member is not None and body.from_node != member:
            stats.sender_mismatch += 1
            detail = f"member {member} sends a snapshot as {body.from_node}"
            transport._reject("sender_mismatch", peer, detail)
            return detail
        if body.HasField("header") and body.header.frm != body.from_node:
            stats.sender_mismatch += 1
            detail = f"snapshot from {body.from_node} carries a message from {body.header.frm}"
            transport._reject("sender_mismatch", peer, detail)
            return detail
        return None

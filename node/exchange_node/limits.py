"""Every fixed numeric limit of the node in one place, each with the reason for its value.

Queues, batches, windows, sizes and timeouts that the code enforces. The modules
that enforce them import the names from here (flags may override some defaults
at start-up; the flag's help names the limit). Plain constants: no I/O, safe to
import from the deterministic packages (``raft/``, ``engine/``).

Limits still defined in their own modules (their owners switch them here):
``server/shell.py`` (Ready batching, digests), ``api/forwarding.py`` (leader
watch, connection pool), ``transport/transport.py`` (TLS file check).
"""

from __future__ import annotations

from typing import Final

# ---------------------------------------------------------------- consensus core (raft/)

RAFT_ELECTION_TICKS: Final = 10
"""Ticks without a leader before campaigning: ten heartbeats, so one lost one never starts a vote."""
RAFT_HEARTBEAT_TICKS: Final = 1
"""A leader heartbeats every tick: the tick is the heartbeat interval."""
RAFT_MAX_MSG_ENTRIES: Final = 4096
"""Entries per APP message: one carries a whole busy Ready (gRPC costs per message, not per byte)."""
RAFT_MAX_MSG_BYTES: Final = 1 << 20
"""Entry bytes per APP message: bounds a follower's allocation, keeps batches large."""
RAFT_MAX_INFLIGHT: Final = 64
"""Unacknowledged APP messages per follower: fills a LAN link, bounds the leader's memory."""

# ---------------------------------------------------------------- engine

ENGINE_DEDUP_HORIZON_NS: Final = 24 * 3600 * 1_000_000_000
"""Exactly-once horizon in replicated entry time: a client retries within a trading day."""
ENGINE_DEDUP_MAX_KEYS: Final = 262_144
"""Cap on remembered exactly-once keys, the horizon's memory bound: about 0.7 KB each (a
result and its events), so about 190 MB; 24 h at a sustained high rate would not fit, and
then the cap shortens the horizon (``exactly_once_evicted_by_cap`` counts it)."""
ENGINE_FINISHED_WINDOW: Final = 65_536
"""Finished orders still answered by queries: a client polling an order sees its end state."""
ENGINE_RETENTION_MAX_HORIZON_NS: Final = 366 * 24 * 3600 * 1_000_000_000
"""Longest exactly-once horizon SetRetention accepts: a year; the cap bounds memory anyway."""
ENGINE_RETENTION_MAX_ENTRIES: Final = (1 << 32) - 1
"""Largest exactly-once cap or finished-order window: the snapshot stores them as u32."""
ENGINE_TRADE_HISTORY: Final = 1_000
"""Recent trades kept per symbol: what a trade tape shows; older trades are in the log."""
ENGINE_CANDLE_INTERVALS_NS: Final = (1_000_000_000, 60_000_000_000)
"""Candle intervals: 1 s for a live chart, 1 min for the session's shape."""
ENGINE_CANDLE_HISTORY: Final = 720
"""Candles kept per interval: 12 minutes of 1 s candles, 12 hours of 1 min candles."""
ENGINE_MAX_BATCH_COMMANDS: Final = 1 << 20
"""Commands in one log entry's batch: a decoder never allocates for a hostile count."""
ENGINE_MAX_STRING_BYTES: Final = 255
"""Bytes in an id or symbol: one length byte on the wire."""

# ---------------------------------------------------------------- storage

WAL_SEGMENT_BYTES: Final = 64 << 20
"""A WAL segment rotates past this size: compaction deletes whole segments, so not too large."""
WAL_KEEP_SNAPSHOTS: Final = 3
"""Snapshot files kept: the newest plus two fallbacks if the newest turns out damaged."""
WAL_TAIL_CACHE_ENTRIES: Final = 8192
"""Recent entries kept in memory: followers catching up read them without a disk read."""
WAL_READ_CHUNK_BYTES: Final = 8 << 20
"""Recovery reads segments in chunks of this size: bounded memory for any segment size."""

# ---------------------------------------------------------------- peer transport

PEER_MAX_MESSAGE_BYTES: Final = 16 << 20
"""Largest gRPC frame between peers: above one envelope and one snapshot chunk."""
PEER_QUEUE_LIMIT: Final = 8192
"""Messages waiting per peer: a full queue means the peer (or its network) stopped keeping up."""
PEER_QUEUE_BYTES: Final = 64 << 20
"""Estimated bytes waiting per peer (entries dominate): bounds memory while a peer is slow."""
PEER_ENVELOPE_BYTES: Final = 256 << 10
"""Envelope size: amortises gRPC's ~90 us per message; encoding one (~0.5 ms) never stalls."""
PEER_SNAPSHOT_CHUNK_BYTES: Final = 1 << 20
"""Snapshot transfer chunk: large enough to stream fast, small enough to interleave with appends."""
PEER_MAX_SNAPSHOT_BYTES: Final = 1 << 30
"""Largest incoming snapshot: memory grows with chunks received, never with a header's claim."""
PEER_SNAPSHOT_STALL_S: Final = 30.0
"""An incoming transfer with no chunk for this long is aborted (the sender died or stalled)."""
PEER_MAX_INCOMING_SNAPSHOTS: Final = 2
"""Concurrent incoming snapshot transfers: one plus a retry, never a pile-up."""
PEER_SNAPSHOT_QUEUE_LIMIT: Final = 2
"""Outgoing snapshot sends queued per peer: a newer snapshot supersedes an older one."""
PEER_SHUTDOWN_WAIT_S: Final = 2.0
"""How long stopping waits for one peer's tasks, a channel or the server."""
PEER_SNAPSHOT_TIMEOUT_S: Final = 300.0
"""A whole incoming snapshot transfer: 1 GiB at a few MB/s, never a transfer held forever."""
PEER_CONNECT_TIMEOUT_S: Final = 5.0
"""A stream not open by then gets a new connection (streams on a wedged one never open)."""
PEER_MIN_BACKOFF_S: Final = 0.05
"""First reconnect delay: a restarted peer is back within a few election timeouts."""
PEER_MAX_BACKOFF_S: Final = 1.0
"""Reconnect delay cap: a healed partition is used again within about a second."""
PEER_KEEPALIVE_S: Final = 2.0
"""HTTP/2 keepalive ping interval: a dead connection is noticed within a few seconds."""

# ---------------------------------------------------------------- proposals

FAIR_QUANTUM_COMMANDS: Final = 500
"""Commands a client may have proposed per round-robin turn: one full batch request."""

# ---------------------------------------------------------------- client API (api/)
# Defaults of ApiConfig; the ``--api-*`` flags override most of them (docs/api.md).

API_MAX_BATCH: Final = 500
"""Orders in one batch request: one fair-queue quantum, one log entry's worth of work."""
API_MAX_BODY_BYTES: Final = 1 << 20
"""Largest request body: a full batch with long ids fits about four times over."""
API_RATE_LIMIT: Final = 1_000.0
"""A retail key's orders (or requests) per second: one key at this limit leaves the others'
latency within 2x (docs/performance.md); market makers and benches get their own in the keys file."""
API_RATE_BURST: Final = 2_000
"""A key's token bucket: two seconds of its rate at once after being idle."""
API_MAX_IN_FLIGHT_PER_CLIENT: Final = 500
"""Commands of one client being validated, proposed or answered: one full batch."""
API_FORWARD_TIMEOUT_S: Final = 6.0
"""A write forwarded to the leader: above the node's own 5 s write timeout, so its 504 comes back."""
API_MAX_FORWARD_HOPS: Final = 1
"""Forwards per request: a follower's forward that reaches another follower is an election."""
API_RETRY_AFTER_S: Final = 1.0
"""Retry-After of a 503 (no leader, unavailable): one election timeout (1 s by default)."""
API_HTTP_IDLE_TIMEOUT_S: Final = 30.0
"""An idle connection, or one whose headers do not complete, is closed (slowloris)."""
API_HTTP_BODY_TIMEOUT_S: Final = 30.0
"""A request body not in within this time answers 408: a slow sender holds no slot for long."""
API_AUTH_FAILURE_RATE: Final = 1.0
"""Failed authentications per second per remote address: a key guesser gets one try a second."""
API_AUTH_FAILURE_BURST: Final = 20
"""Failed authentications at once: a misconfigured client's first burst still gets 401s."""
API_PENALTY_FIRST_S: Final = 0.25
"""Shut-out of a key that ignored a 429's Retry-After; it doubles with each further early try."""
API_PENALTY_MAX_S: Final = 10.0
"""Longest shut-out for ignoring Retry-After: a broken client is back within seconds once fixed."""
API_TARPIT_MAX_S: Final = 1.0
"""A shut-out key's refusal is answered after its Retry-After, this long at most: each of its
connections then carries about one request a second, not hundreds (each cost the loop a parse)."""
API_TARPIT_MAX_HELD: Final = 256
"""Shut-out refusals held at once, all keys together (a socket and a sleeping task each); more
are answered at once, as before."""
API_MAX_TOLD_TO_WAIT: Final = 10_000
"""Connections remembered as told to wait by a 429: bounded memory under a flood of them."""
API_MAX_DEPTH: Final = 1_000
"""Book levels per side in one ``/v1/book`` answer: bounds one read's size."""
API_MAX_TRADES: Final = 1_000
"""Trades in one ``/v1/trades`` answer: the engine keeps ENGINE_TRADE_HISTORY per symbol."""
API_BATCH_YIELD_EVERY: Final = 100
"""A batch gives the event loop back every this many orders: others wait a slice, not the batch.
It is also the size of the pieces a paced batch is proposed in (``API_PACE_MAX_SPAN_S``)."""
API_PACE_MAX_SPAN_S: Final = 1.0
"""A batch of a key that has spent half its burst is proposed in pieces of
``API_BATCH_YIELD_EVERY`` orders, spaced at the key's rate, so that a key at its limit
loads the cluster evenly instead of in bursts of its whole batch (docs/api.md); the pieces
of one batch span at most this long whatever the key's rate (its bucket's debt still holds
it to its rate in the long run), so that no batch waits for its pace beyond it."""
API_MEMBER_STATUS_TIMEOUT_S: Final = 0.5
"""``/v1/cluster/members``: one member's own ``/v1/cluster``; a dead member costs this, no more."""
API_MEMBER_STATUS_CACHE_S: Final = 0.25
"""``/v1/cluster/members`` answers shared this long: a dashboard's polls cost one round of fetches."""
API_MAX_MEMBERS_ASKED: Final = 16
"""Members ``/v1/cluster/members`` asks at once; more are listed unasked (clusters are 3 to 7)."""
API_MAX_MEMBER_ANSWER_BYTES: Final = 256 << 10
"""Largest member ``/v1/cluster`` answer read: a broken member cannot make this node allocate."""

API_WS_SEND_QUEUE: Final = 1_000
"""Messages queued for one WebSocket before it is closed 4008 (slow consumer)."""
API_WS_SEND_QUEUE_BYTES: Final = 4 << 20
"""Bytes one WebSocket may have waiting (queue plus kernel-refused): its cost is this plus a constant."""
API_WS_HEARTBEAT_S: Final = 15.0
"""WebSocket ping interval: a dead peer is noticed well within a load balancer's idle timeout."""
API_WS_MAX_MESSAGE_BYTES: Final = 1 << 16
"""Largest incoming WebSocket message: an order or a subscription list, never more."""
API_WS_MAX_SUBSCRIPTIONS: Final = 100
"""Subscriptions of one keyed connection: a trader's symbols, bounded fan-out per socket."""
API_WS_ANONYMOUS_MAX_SUBSCRIPTIONS: Final = 10
"""Subscriptions of one connection without a key: public market data costs less per stranger."""
API_WS_MAX_CONNECTIONS: Final = 10_000
"""Open WebSockets per node; one more answers 503 + Retry-After."""
API_WS_MAX_CONNECTIONS_PER_KEY: Final = 64
"""Open WebSockets per API key: one client cannot take the node's connections."""
API_WS_MAX_CONNECTIONS_PER_ADDRESS: Final = 256
"""Open WebSockets per remote address (a NAT may hide several clients), keys or not."""
API_WS_MAX_ANONYMOUS_PER_ADDRESS: Final = 16
"""Open WebSockets without a key per remote address."""
API_WS_MAX_IN_FLIGHT: Final = 1_000
"""Orders and cancels of one WebSocket waiting for their ack; more answer 429."""
API_WS_CLOSE_TIMEOUT_S: Final = 5.0
"""How long a WebSocket close handshake may take before the socket is dropped."""
API_WS_SLOW_CLOSE_S: Final = 1.0
"""How long a slow consumer's close frame may take before its transport is aborted."""
API_WS_STATS_INTERVAL_S: Final = 1.0
"""How often the ``stats`` channel publishes: the live view's once-a-second chart."""
API_WS_RESUBSCRIBE_S: Final = 0.05
"""Pause before the hub resubscribes after the service dropped it (too slow, or stopping)."""

# ---------------------------------------------------------------- admin API (server/admin.py)

ADMIN_AUDIT_RECENT: Final = 256
"""Admin actions kept in memory for ``GET /v1/admin/audit``; the ``exchange.audit`` log has all."""

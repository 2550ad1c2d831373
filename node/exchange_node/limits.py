"""Every fixed numeric limit of the node in one place, each with the reason for its value.

Queues, batches, windows, sizes and timeouts that the code enforces. The modules
that enforce them import the names from here (flags may override some defaults
at start-up; the flag's help names the limit). Plain constants: no I/O, safe to
import from the deterministic packages (``raft/``, ``engine/``).

Limits still defined in their own modules (their owners switch them here):
``server/shell.py`` (Ready batching, digests), ``api/`` (batch, body, rate and
WebSocket limits), ``server/admin.py`` (audit ring).
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

ENGINE_DEDUP_WINDOW: Final = 65_536
"""Retained results for exactly-once: far more commands than a client retries within seconds."""
ENGINE_FINISHED_WINDOW: Final = 65_536
"""Finished orders still answered by queries: a client polling an order sees its end state."""
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

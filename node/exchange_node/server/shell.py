"""The node's I/O shell: one asyncio loop around the Ready driver.

The ordering policy (what is persisted, what may leave before the local fsync,
when entries are applied, how requests and reads are answered) lives in the
sans-I/O ``server.driver.Driver``, which the simulator drives too. This shell
gives it a disk thread, gRPC, a clock and the engine, in one task, so the core
never sees two callers at once::

    inputs (ticks, peer messages, client proposals, reads, admin ops)
        -> driver.tick / step / propose / read / ...
    while (batch := driver.ready(now)):
        send batch.send_now                       # a leader's appends: during the fsync
        storage.save(batch.write) in the disk thread (one fsync)
        driver.apply_now(batch)                   # entries durable before this Ready
        await the fsync
        send driver.persisted(batch)              # votes, acks: only now
        driver.finish(batch)                      # snapshot, apply, answer, serve reads

While a Ready's fsync runs in the dedicated disk thread the loop keeps
accepting requests; they are proposed together in the next Ready, so one
fsync covers everything that arrived meanwhile (group commit).

A waiting client request is keyed by the (term, index) its entry got when
proposed. If the entry applied at that index has another term, the leader
lost that entry (a new leader overwrote it): the request fails as
``Unavailable`` and is safe to retry (client order ids make it exactly-once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import pathlib
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from exchange_node.engine.commands import (
    AddSymbol,
    RejectReason,
    SetOrderLimits,
    SetRetention,
    SetRiskLimits,
    Side,
    encode_batch,
)
from exchange_node.limits import (
    ENGINE_DEDUP_HORIZON_NS,
    ENGINE_DEDUP_MAX_KEYS,
    ENGINE_FINISHED_WINDOW,
)
from exchange_node.raft.config import RaftConfig
from exchange_node.raft.core import RaftCore
from exchange_node.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    Role,
    Snapshot,
    SnapshotMeta,
)
from exchange_node.server import logs, tracing
from exchange_node.server.config import NodeConfig, PeerSpec
from exchange_node.server.disk import DiskThread
from exchange_node.server.divergence import (
    DIGEST_INTERVAL_S,
    IDLE_HASH_SECONDS,
    DivergenceWatch,
    ProgressWatch,
    state_digest,
)
from exchange_node.server.driver import Batch, Driver, Failure
from exchange_node.server.envelope import (
    KIND_ENGINE_BATCH,
    EnvelopeError,
    MemberInfo,
    unwrap_entry,
    unwrap_snapshot,
    wrap_entry,
)
from exchange_node.server.fairqueue import FairQueue
from exchange_node.server.identity import resolve_node_id
from exchange_node.server.membership import PeerGate, RateLimitedLog, apply_change
from exchange_node.server.metrics import NodeMetrics
from exchange_node.server.requests import Proposal, Requests, Token
from exchange_node.server.snapshots import (
    ENTRY_MEMORY_OVERHEAD,
    MODE_CHECKPOINT,
    MODE_FILE,
    MODE_PIPE,
    SnapshotKeeper,
    SnapshotPolicy,
    can_put_written,
    fork_child,
    latest_snapshot_path,
    snapshot_dir,
    wait_child,
)
from exchange_node.server.stalls import GcPauseObserver
from exchange_node.server.subscriptions import Publisher, Subscription
from exchange_node.service import (
    MemberStatus,
    NodeStatus,
    NotLeader,
    Overloaded,
    ServiceError,
    Timeout,
    Unavailable,
)

if TYPE_CHECKING:
    from exchange_node.engine.engine import Engine
    from exchange_node.engine.events import CancelReason, CommandResult
    from exchange_node.raft.status import PeerProgress
    from exchange_node.storage.interface import RaftStorage
    from exchange_node.transport import PeerTransport

log = logging.getLogger("exchange.node")

ROLE_NAMES = {
    Role.FOLLOWER: "follower",
    Role.PRE_CANDIDATE: "pre_candidate",
    Role.CANDIDATE: "candidate",
    Role.LEADER: "leader",
}

READY_LAG = 1_000
"""/readyz: commit - applied must be below this."""
MAX_PROPOSALS_PER_READY = 4_096
"""Client requests (entries) proposed in one Ready; the rest wait for the next."""
MAX_COMMANDS_PER_READY = 4_096
"""Commands proposed in one Ready (a larger single request goes alone): beyond it the
clients' queues take turns (server/fairqueue.py), so a backlog is shared fairly."""


class Node:
    """One exchange replica: implements ``exchange_node.service.ExchangeService``."""

    def __init__(
        self,
        config: NodeConfig,
        metrics: NodeMetrics | None = None,
        *,
        engine_factory: Callable[[], Engine] | None = None,
        storage_factory: Callable[[NodeConfig, Callable[[str, float], None]], RaftStorage]
        | None = None,
    ) -> None:
        """``engine_factory`` and ``storage_factory`` replace the real engine and
        WAL (tests of the shell alone); by default ``Engine()`` and ``open_storage``."""
        self.config = config
        self._engine_factory = engine_factory
        self._storage_factory = storage_factory
        self.metrics = metrics or NodeMetrics()
        self._gc_pauses = GcPauseObserver(self.metrics.gc_pause)
        self.metrics.watch_transport(lambda: self.transport.stats if self.transport else None)
        self.node_id = 0
        self.name = config.name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._disk = DiskThread("wal")
        """Every storage call, in order (server/disk.py)."""
        self._wakeup = asyncio.Event()
        self._inbox: list[Message] = []
        self._proposals: FairQueue = FairQueue()
        """Waiting proposals, one FIFO per client, taken by deficit round robin."""
        self.requests = Requests(self.metrics, self._not_leader_error)
        """Waiting requests: answers, errors, metrics (server/requests.py)."""
        self._read_batch: list[asyncio.Future[None]] = []
        self._ops: deque[Callable[[], None]] = deque()
        self._ticks = 0
        self._publisher = Publisher()
        self.members: dict[int, MemberInfo] = {}
        self.conf_state = ConfState()
        self.term = 0
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.commit_index = 0
        self.applied_index = 0
        self._applied_term = 0
        self.snapshots = SnapshotKeeper()
        """The newest snapshot and its save (server/snapshots.py)."""
        self.snapshot_policy = SnapshotPolicy(
            config.snapshot_bytes, config.snapshot_threshold, config.checkpoint_entries
        )
        """When to snapshot and when to hash a checkpoint (server/snapshots.py)."""
        self._snapshot_wait = concurrent.futures.ThreadPoolExecutor(
            2, thread_name_prefix="snapshot-wait"
        )
        """Threads that wait for forked snapshot and checkpoint children."""
        self._children: set[int] = set()
        """Pids of the snapshot and checkpoint children still running."""
        self.metrics.watch_memory(self.memory_report)
        self._release_timer: asyncio.TimerHandle | None = None
        self.divergence = DivergenceWatch(
            0,
            lambda: self.conf_state.voters,
            reject=self._reject_peer,
            log_due=self._log_due,
            on_diverged=self.metrics.divergence.inc,
            on_fenced=self._on_fenced,
        )
        self.progress = ProgressWatch(0)
        """Members stuck behind (server/divergence.py)."""
        self._gate = PeerGate(0, ())
        """Which senders' messages reach the core (server/membership.py)."""
        self._reject_log = RateLimitedLog()
        self._hand_over_task: asyncio.Future[None] | None = None
        self._hash_cache: tuple[int, bytes] = (-1, b"")
        self._hashing = -1
        """The index the one hashing child (a checkpoint's or an idle node's) is
        hashing (-1: none)."""
        self._applied_conf = ConfState()
        """The configuration as of ``applied_index`` (the core's may be ahead of it)."""
        self._last_applied_seen = -1
        self._orders_seen: dict[tuple[str, Side], int] = {}
        self._fills_seen: dict[str, int] = {}
        self._rejects_seen: dict[RejectReason | CancelReason, int] = {}
        """Counts by the reason of a Rejected event (the only kind counted here)."""
        self._last_apply_time = 0.0
        self._last_heard: dict[int, float] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stopped = asyncio.Event()
        self._started_at = time.monotonic()
        self._last_loop_beat = time.monotonic()
        self._symbols_checked_term = -1
        self._read_seq = 0
        # Read contexts carry a per-process nonce: a late answer to a read from a
        # previous run of this node (same leader term) must not answer a new read.
        self._read_nonce = os.urandom(6).hex()
        self._storage: RaftStorage | None = None
        self._core: RaftCore | None = None
        self._driver: Driver[Token, list[CommandResult]] | None = None
        self._engine: Engine | None = None
        self.transport: PeerTransport | None = None

    # Built by ``open()``; reading one before is a programming error.

    @property
    def core(self) -> RaftCore:
        assert self._core is not None, "open() the node first"
        return self._core

    @property
    def driver(self) -> Driver[Token, list[CommandResult]]:
        """The Ready policy around ``core`` (server/driver.py)."""
        assert self._driver is not None, "open() the node first"
        return self._driver

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "open() the node first"
        return self._engine

    @property
    def storage(self) -> RaftStorage:
        assert self._storage is not None, "open() the node first"
        return self._storage

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Open storage, recover state and build the core (synchronous, before ``start``)."""
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.node_id = resolve_node_id(
            data_dir=cfg.data_dir,
            name=cfg.name,
            explicit=cfg.node_id,
            cluster_state=cfg.cluster_state,
            initial_size=len(cfg.peers),
        )
        self.divergence.node_id = self.progress.node_id = self.node_id
        self._gate = PeerGate(self.node_id, [p.node_id for p in cfg.peers])
        logs.CONTEXT.node_id = self.node_id
        logs.CONTEXT.name = cfg.name
        if self._storage_factory is not None:
            self._storage = self._storage_factory(cfg, self._on_disk_timing)
        else:
            self._storage = _open_wal(cfg, self._on_disk_timing)
        recovered = self._storage.recover()
        # The simulator's and tests' storages have no verdict: they never lose a tail.
        verdict = getattr(self._storage, "recovery_verdict", None)
        if callable(verdict):  # the simulator's disk computes it (sim/disk.py)
            verdict = verdict()
        self.recovery_verdict = verdict.kind.value if verdict is not None else "clean"
        self._engine = self._engine_factory() if self._engine_factory else _new_engine()
        if recovered.snapshot is not None:
            self._restore_snapshot(recovered.snapshot)
            # This replica's own snapshot: its phase among the replicas stays.
            self.snapshot_policy.reset(staggered=False)
        fresh = (
            recovered.snapshot is None and not recovered.entries and recovered.hard_state.term == 0
        )
        bootstrap: list[ConfChange] = []
        if fresh and cfg.cluster_state == "new":
            peers = cfg.peers or []
            if not peers:
                # A lone node with no --peers forms a single-member cluster.
                bootstrap = [
                    ConfChange(
                        ConfChangeType.PROMOTE,
                        self.node_id,
                        MemberInfo(
                            cfg.name, cfg.advertise_address, cfg.advertise_http
                        ).to_context(),
                    )
                ]
            elif any(p.node_id == self.node_id for p in peers):
                # Every initial member writes the same bootstrap entries (the log's
                # first N entries must be equal on every replica): names and addresses
                # come from --peers alone, never from this node's own flags.
                bootstrap = [
                    ConfChange(
                        ConfChangeType.PROMOTE,
                        p.node_id,
                        bootstrap_member(
                            p, cfg.advertise_http if p.node_id == self.node_id else ""
                        ).to_context(),
                    )
                    for p in peers
                ]
            else:
                log.warning(
                    "node %d is not among --peers; waiting to be added by the leader",
                    self.node_id,
                )
        ticks = max(2, round(cfg.election_ms / cfg.heartbeat_ms))
        self._core = RaftCore(
            RaftConfig(
                node_id=self.node_id,
                election_tick=ticks,
                heartbeat_tick=1,
                seed=random.SystemRandom().randrange(1 << 62),
            ),
            hard_state=recovered.hard_state,
            snapshot=recovered.snapshot,
            entries=recovered.entries,
            bootstrap=bootstrap,
        )
        if verdict is not None and verdict.must_recover:
            # Protocol-aware recovery (docs/recovery.md): what this node once promised
            # is not all on its disk; it neither campaigns nor helps elect a leader
            # without those entries until a leader has brought it back.
            self._core.start_recovering(
                verdict.promised_index, verdict.promised_term, verdict.promised_last_term
            )
            log.warning(
                "recovering: %s; not campaigning until a leader restores index %d",
                verdict.message,
                verdict.promised_index,
                extra={"verdict": self.recovery_verdict},
            )
        hs = recovered.hard_state
        self._driver = Driver(
            self._core,
            _Machine(self),
            self.requests,
            node_id=self.node_id,
            read_nonce=self._read_nonce,
            hold=cfg.commit_hold_ms / 1000.0,
            persisted_term_vote=(hs.term, hs.vote),
            applied_index=self.applied_index,
        )
        self.term = recovered.hard_state.term
        self.conf_state = self.core.conf_state
        self.commit_index = self.core.commit_index
        self._gate.note(e for e in recovered.entries if e.index > self.commit_index)
        self._refresh_peer_ids()
        self._update_member_gauges()
        self._place_in_snapshot_order()
        logs.CONTEXT.term = self.term
        log.info(
            "opened",
            extra={
                "data_dir": str(cfg.data_dir),
                "snapshot_index": self.snapshots.index,
                "entries": len(recovered.entries),
                "bootstrap": [cc.node_id for cc in bootstrap],
            },
        )

    async def start(self) -> None:
        from exchange_node.transport import PeerTransport

        if self._core is None:
            self.open()
        self._loop = asyncio.get_running_loop()
        self.transport = transport = PeerTransport(
            self.node_id,
            self.config.grpc_listen,
            self._on_message,
            cluster_id=self.config.cluster_id,
            tls=self.config.peer_tls,
            max_snapshot_bytes=self.config.max_snapshot_bytes,
            on_digest=self._on_digest,
            on_snapshot_status=self._on_snapshot_status,
            on_unreachable=self._on_unreachable,
            on_peer_gone=self._on_peer_gone,
            # Two election timeouts (>= 4 heartbeats): a follower answers every
            # heartbeat, so silence that long means a wedged stream, not a slow peer.
            answer_timeout=2 * self.config.election_ms / 1000,
        )
        await transport.start()
        self._set_transport_peers()
        self._gc_pauses.install()
        self._loop_task = asyncio.create_task(self._drive(), name="raft-driver")
        self._timers = [
            asyncio.create_task(self._tick_timer(), name="raft-tick"),
            asyncio.create_task(self._digest_timer(), name="digest"),
        ]
        self._wakeup.set()
        # Replay what this node already knows is committed before serving anything,
        # so a restarted replica never answers from an empty engine.
        known_committed = self.commit_index
        while self.applied_index < known_committed:
            await asyncio.sleep(0.005)

    async def stop(self, grace_seconds: float | None = None) -> None:
        """SIGTERM path: hand leadership over, flush in-flight work, stop everything."""
        if self._stopping:
            await self._stopped.wait()
            return
        grace = self.config.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        deadline = time.monotonic() + grace
        if self.role == Role.LEADER and len(self.conf_state.voters) > 1:
            try:
                target = await asyncio.wait_for(
                    self.transfer_leadership(None), timeout=max(0.1, grace * 0.5)
                )
                log.info("leadership handed over on shutdown", extra={"target": target})
            except (TimeoutError, Exception) as exc:
                log.warning("leadership transfer on shutdown failed: %s", exc)
        self._stopping = True
        # Let waiting requests whose entries are in flight finish (or fail) within the grace.
        while self.driver.waiting and time.monotonic() < deadline - 0.2:
            await asyncio.sleep(0.02)
        for timer in self._timers:
            timer.cancel()
        self._gc_pauses.uninstall()
        self.driver.notices.discard()
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        self._wakeup.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        self._fail_everything(Unavailable("node is shutting down"))
        self._publisher.close_all()
        if self.transport is not None:
            try:
                await asyncio.wait_for(
                    self.transport.stop(), timeout=max(0.1, deadline - time.monotonic())
                )
            except (TimeoutError, Exception) as exc:
                log.warning("transport stop: %s", exc)
        for pid in list(self._children):
            # Our own forked children (a snapshot not yet durable is simply not taken).
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._snapshot_wait.shutdown(wait=True)
        if self._storage is not None:
            await self._disk.run(self._storage.close)
        self._disk.close()
        self._stopped.set()
        log.info("stopped")

    # ------------------------------------------------------------------ inputs

    def _on_message(self, message: Message) -> None:
        frm = message.frm
        if frm not in self._gate.ids:
            reason = self._gate.refuse(message, self.leader, bool(self.core.conf_state.voters))
            if reason is not None:
                self._reject_peer(reason, frm, str(getattr(message.type, "name", message.type)))
                return
        self._last_heard[frm] = time.monotonic()
        self._inbox.append(message)
        self._wakeup.set()

    def _log_due(self, kind: str, peer: int) -> bool:
        return self._reject_log.due(kind, peer, time.monotonic())

    def _reject_peer(self, reason: str, frm: int, what: str) -> None:
        self.metrics.peer_messages_rejected.labels(reason=reason).inc()
        if not self._log_due(reason, frm):
            return
        log.warning(
            "refused a peer message (%s): %s from id %d",
            reason,
            what,
            frm,
            extra={"reason": reason, "peer": frm, "message_type": what},
        )

    def _refresh_peer_ids(self) -> None:
        self._gate.refresh(self.core.conf_state, self.applied_index)

    def _send(self, messages: list[Message]) -> None:
        transport = self.transport
        assert transport is not None
        transport.send(messages)
        if self.driver.notices.release_at is not None and self._release_timer is None:
            self._arm_release()

    def _arm_release(self) -> None:
        release_at = self.driver.notices.release_at
        if release_at is None:
            return
        loop = self._loop
        assert loop is not None
        delay = max(0.0, release_at - time.monotonic())
        self._release_timer = loop.call_later(delay, self._release_notices)

    def _release_notices(self) -> None:
        """Held commit notices leave when their time is up (not a core input)."""
        self._release_timer = None
        held = self.driver.release_notices(time.monotonic())
        if held and self.transport is not None:
            self.transport.send(held)
        self._arm_release()

    def _on_snapshot_status(self, peer: int, ok: bool) -> None:
        self._ops.append(lambda: self.core.report_snapshot(peer, ok))
        self._wakeup.set()

    def _on_unreachable(self, peer: int) -> None:
        self._ops.append(lambda: self.core.report_unreachable(peer))
        self._wakeup.set()

    def _on_peer_gone(self, peer: int) -> None:
        # The peer's process died: if we follow it, campaign without waiting out the
        # election timeout (a hint only; docs/elections.md).
        self._ops.append(lambda: self.core.leader_unreachable(peer))
        self._wakeup.set()

    def _on_disk_timing(self, kind: str, seconds: float) -> None:
        # Called from the disk thread; prometheus_client's histograms are thread-safe.
        if kind == "append":
            self.metrics.wal_append.observe(seconds)
        elif kind == "fsync":
            self.metrics.wal_fsync.observe(seconds)

    async def _tick_timer(self) -> None:
        interval = self.config.heartbeat_ms / 1000.0
        next_at = time.monotonic() + interval
        lag = self.metrics.loop_lag.observe
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            now = time.monotonic()
            self._last_loop_beat = now
            lag(max(0.0, now - next_at))
            # Catch up missed ticks (a paused process) but never burst more than a few.
            missed = min(3, max(1, int((now - next_at) / interval) + 1))
            next_at += missed * interval
            if next_at < now:
                next_at = now + interval
            self._ticks += missed
            self._wakeup.set()

    # ------------------------------------------------------------------ the driver

    async def _drive(self) -> None:
        driver = self.driver
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                self._feed_core()
                while (batch := driver.ready(time.monotonic())) is not None:
                    await self._run_batch(batch)
                    self._after_advance()
                    # Everything that arrived during the fsync goes into the next Ready.
                    self._feed_core()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("driver step failed; the node stops to stay safe")
                os._exit(70)

    def _feed_core(self) -> None:
        driver = self.driver
        ticks, self._ticks = self._ticks, 0
        for _ in range(ticks):
            driver.tick()
        if ticks:
            driver.expire(time.monotonic())
            self._flush_deferred_hard_state()
        if self._inbox:
            inbox, self._inbox = self._inbox, []
            for message in inbox:
                try:
                    driver.step(message)
                except Exception as exc:
                    log.warning("dropped a peer message: %s", exc, extra={"type": message.type})
        while self._ops:
            op = self._ops.popleft()
            try:
                op()
            except Exception as exc:
                log.warning("operation failed: %s", exc)
        if self._proposals:
            self._propose_pending()
        if self._read_batch:
            self._start_read()

    def _flush_deferred_hard_state(self) -> None:
        """Persist a commit-only hard state nothing else carried (idle cluster)."""
        write = self.driver.flush_deferred()
        if write is None:
            return
        future = self._disk.run(_save, self.storage, [], write.hard_state, None)
        future.add_done_callback(_log_failure)

    def _propose_pending(self) -> None:
        if self.role != Role.LEADER:
            error = self._not_leader_error()
            while self._proposals:
                p = self._proposals.popleft()
                self.requests.finish_early(p, error, "not_leader")
            return
        batch: list[Proposal] = self._proposals.take(
            MAX_COMMANDS_PER_READY, MAX_PROPOSALS_PER_READY
        )
        now_ns = time.time_ns()
        datas = []
        for p in batch:
            trace = tracing.carrier_from_span(p.span) if p.span is not None else b""
            datas.append(wrap_entry(encode_batch(now_ns, p.commands), trace))
        self.driver.propose(batch, datas, [p.deadline for p in batch])
        if len(self._proposals):
            self._wakeup.set()

    @property
    def _pending_commands(self) -> int:
        return self.requests.pending_commands

    @_pending_commands.setter
    def _pending_commands(self, value: int) -> None:
        self.requests.pending_commands = value

    def _start_read(self) -> None:
        futures, self._read_batch = self._read_batch, []
        self.driver.read(futures, time.monotonic() + self.config.request_timeout_ms / 1000.0)

    async def _run_batch(self, batch: Batch) -> None:
        """One Ready, in the order the driver planned (see server/driver.py)."""
        rd = batch.ready
        driver = self.driver
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role, batch.lost_leadership)
        if rd.entries and _CONF_CHANGE in map(_entry_type, rd.entries):
            self._gate.note(rd.entries)
            self._refresh_peer_ids()
        hs = rd.hard_state
        if hs is not None:
            if hs.term != self.term:
                self.term = hs.term
                logs.CONTEXT.term = hs.term
                self.metrics.term.set(hs.term)
            self.commit_index = hs.commit
        if batch.send_now:
            self._send(batch.send_now)
        write = batch.write
        if write is not None:
            saving = self._disk.run(
                _save, self.storage, write.entries, write.hard_state, write.snapshot
            )
            driver.apply_now(batch)
            await saving
        else:
            driver.apply_now(batch)
        after = driver.persisted(batch, time.monotonic())
        if after:
            self._send(after)
        driver.finish(batch)

    def _after_advance(self) -> None:
        self.metrics.commit_index.set(self.commit_index)
        self.metrics.applied_index.set(self.applied_index)
        if self._last_applied_seen != self.applied_index:
            self._last_applied_seen = self.applied_index
            self._last_apply_time = time.monotonic()
        if self.role == Role.LEADER:
            self._maybe_list_configured_symbols()

    # ------------------------------------------------------------------ role changes

    def _on_soft_state(self, leader: int, role: Role, lost_leadership: bool) -> None:
        if leader != self.leader:
            self.metrics.leader_changes.inc()
            log.info("leader changed", extra={"leader": leader, "previous": self.leader})
        self.leader = leader
        self.role = role
        name = self._role_name()
        logs.CONTEXT.role = name
        self.metrics.set_role(name)
        if lost_leadership:
            log.info("lost leadership")
            self.metrics.follower_lag.clear()
            error = self._not_leader_error()
            while self._proposals:
                self.requests.finish_early(self._proposals.popleft(), error, "not_leader")

    def _role_name(self) -> str:
        if self.role == Role.FOLLOWER and self.node_id in self.conf_state.learners:
            return "learner"
        return ROLE_NAMES.get(self.role, "follower")

    def _not_leader_error(self) -> Exception:
        if self.leader == NONE or self.leader == self.node_id:
            return Unavailable("no leader is known")
        info = self.members.get(self.leader)
        return NotLeader(self.leader, info.http if info else None)

    # ------------------------------------------------------------------ apply

    def _apply_entry(self, entry: Entry) -> list[CommandResult] | None:
        """Apply one committed entry (the driver's state machine; see ``_Machine``)."""
        index = entry.index
        results: list[CommandResult] | None = None
        if entry.type == EntryType.CONF_CHANGE:
            self._apply_conf_change(entry)
        elif entry.data:
            try:
                kind, trace, payload = unwrap_entry(entry.data)
            except EnvelopeError as exc:
                log.error("unreadable log entry %d: %s", index, exc)
                kind, trace, payload = 0, b"", b""
            if kind == KIND_ENGINE_BATCH:
                engine = self.engine
                if trace and tracing.enabled():
                    with tracing.tracer().start_as_current_span(
                        "apply",
                        context=tracing.context_from_bytes(trace),
                        attributes={"exchange.log_index": index, "exchange.node": self.node_id},
                    ):
                        results = engine.apply_entry(index, payload)
                else:
                    results = engine.apply_entry(index, payload)
                self._count_results(results)
                self._publisher.publish(index, results)
        self.applied_index = index
        self._applied_term = entry.term
        due = self.snapshot_policy.applied(index, len(entry.data) + ENTRY_MEMORY_OVERHEAD)
        if due.snapshot or due.checkpoint:
            # A forked child serialises the state as of this index (server/snapshots.py).
            self._take_snapshot(snapshot=due.snapshot, checkpoint=due.checkpoint)
        return results

    def _count_results(self, results: list[CommandResult]) -> None:
        # Plain dict counts here; prometheus_client's labels() costs microseconds per
        # call, so the counters are brought up to date when /metrics is scraped.
        orders, fills, rejects = self._orders_seen, self._fills_seen, self._rejects_seen
        for result in results:
            # Dispatch on the event's kind string: measured 10-40% cheaper per event
            # than class checks; each kind names exactly one event class.
            for event in result.events:
                kind = event.kind
                if kind == "accepted":
                    key = (event.symbol, event.side)  # type: ignore[union-attr]
                    orders[key] = orders.get(key, 0) + 1
                elif kind == "fill":
                    fills[event.symbol] = fills.get(event.symbol, 0) + 1  # type: ignore[union-attr]
                elif kind == "rejected":
                    reason = event.reason  # type: ignore[union-attr]
                    rejects[reason] = rejects.get(reason, 0) + 1

    def _flush_result_counts(self) -> None:
        m = self.metrics
        for (symbol, side), n in self._orders_seen.items():
            m.orders.labels(symbol=symbol, side=side.name.lower()).inc(n)
        for symbol, n in self._fills_seen.items():
            m.fills.labels(symbol=symbol).inc(n)
        for reason, n in self._rejects_seen.items():
            m.rejects.labels(reason=reason.name.lower()).inc(n)
        self._orders_seen.clear()
        self._fills_seen.clear()
        self._rejects_seen.clear()

    def _apply_conf_change(self, entry: Entry) -> None:
        cc = ConfChange.decode(entry.data)
        self._applied_conf = apply_change(self._applied_conf, cc)
        if cc.type == ConfChangeType.REMOVE:
            self.members.pop(cc.node_id, None)
        elif cc.context:
            try:
                self.members[cc.node_id] = MemberInfo.from_context(cc.context, cc.node_id)
            except EnvelopeError as exc:
                log.error("%s", exc)
        self.conf_state = self.core.conf_state
        self._refresh_peer_ids()
        self._update_member_gauges()
        self._set_transport_peers()
        self._place_in_snapshot_order()
        log.info(
            "configuration changed",
            extra={
                "change": ConfChangeType(cc.type).name,
                "member": cc.node_id,
                "voters": list(self.conf_state.voters),
                "learners": list(self.conf_state.learners),
            },
        )
        if cc.type == ConfChangeType.REMOVE and cc.node_id == self.node_id:
            log.warning("this node was removed from the cluster")

    def _update_member_gauges(self) -> None:
        self.metrics.members.labels(kind="voter").set(len(self.conf_state.voters))
        self.metrics.members.labels(kind="learner").set(len(self.conf_state.learners))

    def _set_transport_peers(self) -> None:
        if self.transport is None:
            return
        peers = {
            node_id: info.grpc
            for node_id, info in self.members.items()
            if node_id != self.node_id and info.grpc
        }
        if not peers:
            # A member that joins empty knows nobody until the log or a snapshot
            # tells it; the initial voters (--peers) are where its leader is.
            peers = {p.node_id: p.grpc_address for p in self.config.peers}
        self.transport.set_peers(peers)

    # ------------------------------------------------------------------ snapshots

    def _restore_snapshot(self, snapshot: Snapshot) -> None:
        members, engine_state = unwrap_snapshot(snapshot.data)
        # ``restore`` is a constructor (a classmethod): the engine object is replaced.
        self._engine = type(self.engine).restore(engine_state)
        self._hash_cache = (-1, b"")
        self.members = members
        self.conf_state = snapshot.meta.conf_state
        self._applied_conf = snapshot.meta.conf_state
        self.applied_index = snapshot.meta.index
        self._applied_term = snapshot.meta.term
        self.snapshots.restored(snapshot.meta)
        self._update_member_gauges()

    def _install_snapshot(self, snapshot: Snapshot) -> None:
        """A leader's snapshot arrived (and is persisted): replace the engine's state."""
        started = time.monotonic()
        self._restore_snapshot(snapshot)
        # The leader's phase: this replica's next threshold is its staggered first one.
        self.snapshot_policy.reset(staggered=True)
        self._refresh_peer_ids()
        self._set_transport_peers()
        self._place_in_snapshot_order()
        # Requests waiting at covered indexes fail in the driver (outcome unknown).
        self.metrics.snapshots.inc()
        self.metrics.snapshot_seconds.observe(time.monotonic() - started)
        log.info("installed snapshot", extra={"index": snapshot.meta.index})

    async def snapshot_now(self) -> tuple[int, int]:
        """Take a snapshot at the applied index now; return its (index, term) once durable.

        When the newest snapshot is already at the applied index, that one is
        returned (after its save completes). Saves run in the disk thread in order,
        so the snapshot lands after every Ready already queued.
        """
        if self._stopping:
            raise Unavailable("node is shutting down")
        if self._engine is None or self._loop is None:
            raise Unavailable("node is not started")
        if self.applied_index == 0:
            raise Unavailable("nothing applied yet")
        if self.snapshots.in_flight:
            # One snapshot child at a time: let the one in flight finish first.
            with contextlib.suppress(Exception):
                await self.snapshots.durable()
        self._take_snapshot(snapshot=True)
        return await self.snapshots.durable()

    def latest_snapshot_path(self) -> pathlib.Path | None:
        """The file of the newest durable snapshot, or None (none yet, or not a WAL)."""
        return latest_snapshot_path(self._storage, self.config.data_dir)

    def _take_snapshot(self, *, snapshot: bool, checkpoint: bool = False) -> None:
        """Fork a child that serialises the state as of the applied index: a snapshot
        (when one is due and none is in flight) and/or a divergence checkpoint."""
        loop = self._loop
        if loop is None or self._stopping:
            return
        index, term = self.applied_index, self._applied_term
        snapshot = snapshot and self.snapshots.due(index) and not self.snapshots.in_flight
        if checkpoint and not snapshot and self._hashing >= 0:
            # One hashing child at a time (besides a snapshot's): when hashing takes
            # longer than the entries between checkpoints, children would pile up.
            # This replica then has no digest at this index; the next one is compared.
            self.metrics.checkpoints.labels(outcome="skipped").inc()
            if self._reject_log.due("checkpoint_skipped", self.node_id, time.monotonic()):
                log.warning(
                    "divergence checkpoint at %d skipped: the hash of %d is still running. "
                    "While every checkpoint is skipped this replica's state is compared with "
                    "no one's; if this repeats, raise --checkpoint-entries "
                    '(exchange_divergence_checkpoints_total{outcome="skipped"}, '
                    "logged at most every 10 s)",
                    index,
                    self._hashing,
                )
            checkpoint = False
        if not snapshot and not checkpoint:
            return
        storage = self.storage
        data_dir: str | None = None
        if not snapshot:
            mode = MODE_CHECKPOINT
            self._hashing = index
        elif can_put_written(storage):
            mode, data_dir = MODE_FILE, snapshot_dir(storage)
        else:
            mode = MODE_PIPE
        meta = SnapshotMeta(index, term, self._applied_conf)
        started = time.monotonic()
        try:
            pid, read_fd = fork_child(self.engine, self.members, meta, mode, data_dir)
        except OSError as exc:
            log.error("could not fork for a snapshot at %d: %s", index, exc)
            self.metrics.snapshot_failures.inc()
            return
        self.metrics.snapshot_fork_seconds.observe(time.monotonic() - started)
        self._children.add(pid)
        job = loop.create_task(
            self._finish_child(pid, read_fd, meta, mode, checkpoint, started),
            name=f"snapshot-{index}",
        )
        job.add_done_callback(_log_snapshot_failure)
        if mode != MODE_CHECKPOINT:
            self.snapshot_policy.started()
            self.snapshots.started(index, term, job)
            self.metrics.snapshot_in_progress.set(1)

    async def _finish_child(
        self,
        pid: int,
        read_fd: int,
        meta: SnapshotMeta,
        mode: int,
        checkpoint: bool,
        started: float,
    ) -> None:
        """The child's result: record the digest; a snapshot is put in force in the disk
        thread (after every Ready queued there) and only then is the log compacted."""
        loop = asyncio.get_running_loop()
        index = meta.index
        try:
            try:
                result = await loop.run_in_executor(self._snapshot_wait, wait_child, pid, read_fd)
            finally:
                self._children.discard(pid)
                if mode == MODE_CHECKPOINT and self._hashing == index:
                    self._hashing = -1
            if checkpoint:
                # A shared index: every replica hashes its state there (divergence.py).
                self.divergence.record(index, result.digest, time.monotonic())
                self.metrics.checkpoints.labels(outcome="hashed").inc()
            if index > self._hash_cache[0]:
                # The newest known hash, with the index it is of (status_hash).
                self._hash_cache = (index, result.digest)
            if mode == MODE_CHECKPOINT:
                return
            if mode == MODE_FILE:
                put = self.storage.save_written_snapshot  # type: ignore[attr-defined]
                snapshot: Snapshot = await self._disk.run(put, index, meta.term)
            else:
                assert result.data is not None
                snapshot = Snapshot(meta, result.data)
                await self._disk.run(self.storage.save_snapshot, snapshot)
        except BaseException:
            if mode != MODE_CHECKPOINT:
                self.snapshot_policy.failed()
                self.metrics.snapshot_in_progress.set(0)
            self.metrics.snapshot_failures.inc()
            raise
        self.snapshot_policy.taken()
        self.metrics.snapshot_in_progress.set(0)
        self._ops.append(lambda: self.core.compact(snapshot))
        self._wakeup.set()
        self.metrics.snapshots.inc()
        self.metrics.snapshot_seconds.observe(time.monotonic() - started)
        log.info("snapshot taken", extra={"index": index, "bytes": result.size})

    def _place_in_snapshot_order(self) -> None:
        """This member's rank among the voters staggers its snapshots (snapshots.py)."""
        voters = sorted(self.conf_state.voters)
        if self.node_id in voters:
            self.snapshot_policy.place(voters.index(self.node_id), len(voters))
        else:
            self.snapshot_policy.place(len(voters), len(voters) + 1)

    def memory_report(self) -> dict[str, float]:
        """What this node holds in memory against its configured bounds (the
        ``exchange_memory_*`` gauges, docs/snapshots.md)."""
        report: dict[str, float] = {
            "log_bytes": self.snapshot_policy.bytes_since,
            "log_limit_bytes": self.config.snapshot_bytes,
        }
        if self._core is not None:
            raft_log = self._core.log
            report["log_entries"] = raft_log.last_index() - raft_log.offset
        stats = getattr(self._engine, "retention_stats", None)
        if callable(stats):  # engine/engine.py: O(1) sizes of the retention tables
            held = stats()
            for name, key in (
                ("exactly_once_keys", "exactly_once_keys"),
                ("exactly_once_keys_limit", "exactly_once_max_keys"),
                ("finished_orders", "finished_orders"),
                ("finished_orders_limit", "finished_max_orders"),
            ):
                if key in held:
                    report[name] = held[key]
        return report

    # ------------------------------------------------------------------ divergence

    def _state_hash_bytes(self) -> bytes:
        """The state hash at ``applied_index`` (cached: it costs a full engine snapshot)."""
        if self._hash_cache[0] == self.applied_index:
            return self._hash_cache[1]
        digest = state_digest(self.engine.snapshot())
        self._hash_cache = (self.applied_index, digest)
        return digest

    def status_hash(self) -> tuple[int, str]:
        """(index, hex hash) for status documents: the newest known. When idle (or none
        is known) a child hashes the applied index, so a later call has it fresh; the
        index says which state the hash is of (``state_hash_index``)."""
        idle = time.monotonic() - self._last_apply_time >= IDLE_HASH_SECONDS
        if self._engine is not None and (idle or self._hash_cache[0] < 0):
            if self._loop is None:
                self._state_hash_bytes()  # not started: nothing else runs
            else:
                self._request_hash()
        return self._hash_cache[0], self._hash_cache[1].hex()

    def _request_hash(self) -> None:
        """Hash the state at the applied index in a forked child (never on the loop: a
        deep book takes seconds); the digest is recorded as a checkpoint when it comes."""
        index = self.applied_index
        if index == 0 or self._hash_cache[0] == index or self._hashing >= 0:
            # One hash child at a time: under load the applied index moves on before a
            # child finishes, and a child per status call piled up dozens of forks.
            return
        self._take_snapshot(snapshot=False, checkpoint=True)

    @property
    def diverged(self) -> bool:
        """A replica's state hash differed from a peer's at the same index (alarm)."""
        return self.divergence.diverged

    @property
    def fenced(self) -> bool:
        """A majority of voters contradict this replica's state: it serves nothing."""
        return self.divergence.fenced

    @property
    def digests_compared(self) -> int:
        return self.divergence.compared

    def _on_digest(self, peer: int, applied_index: int, state_hash: bytes) -> None:
        self.divergence.on_digest(
            peer, applied_index, state_hash, self.applied_index, time.monotonic()
        )

    def _on_fenced(self) -> None:
        if self.role == Role.LEADER:
            self._hand_over_task = asyncio.ensure_future(self._hand_over_after_fence())

    async def _hand_over_after_fence(self) -> None:
        try:
            await self.transfer_leadership(None)
        except (ServiceError, ValueError) as exc:
            log.error("a fenced leader could not hand leadership over: %s", exc)

    def _check_progress(self, now: float) -> None:
        leader = self.role == Role.LEADER and self._core is not None
        progress = self.core.status().progress if leader else {}
        self.progress.check(
            now,
            commit_index=self.commit_index,
            applied_index=self.applied_index,
            members=set(self.conf_state.voters) | set(self.conf_state.learners),
            leader=leader,
            match={peer: pr.match for peer, pr in progress.items()},
            heard=self._last_heard,
            digests=self.divergence.digest_at,
        )

    async def _digest_timer(self) -> None:
        while True:
            await asyncio.sleep(DIGEST_INTERVAL_S)
            self._last_loop_beat = time.monotonic()
            self.divergence.check(self._last_loop_beat)
            self._check_progress(self._last_loop_beat)
            index = self.applied_index
            if index == 0:
                continue
            # The newest digest goes out again every interval even when unchanged: a
            # live voter's own digests are what refute forged ones (see DivergenceWatch.compare).
            if time.monotonic() - self._last_apply_time < IDLE_HASH_SECONDS:
                # Busy: send the newest checkpoint (--checkpoint-entries: an index
                # every replica hashes, in a child; server/snapshots.py).
                ring = self.divergence.hash_ring
                index = max(ring, default=0)
                if index == 0:
                    continue
                digest = ring[index]
            else:
                # Idle: the applied index's hash, computed by a child (it records it).
                found = self.divergence.hash_ring.get(index)
                if found is None:
                    self._request_hash()
                    continue
                digest = found
            transport = self.transport
            assert transport is not None
            for peer in self.members:
                if peer != self.node_id:
                    try:
                        transport.send_digest(peer, index, digest)
                    except Exception as exc:
                        log.debug("digest to %d not sent: %s", peer, exc)

    # ------------------------------------------------------------------ timeouts

    def _fail_everything(self, error: Exception) -> None:
        while self._proposals:
            self.requests.finish_early(self._proposals.popleft(), error, "dropped")
        self.driver.fail_everything(Failure.STOPPED, str(error))
        for f in self._read_batch:
            if not f.done():
                f.set_exception(error)
        self._read_batch = []

    # ------------------------------------------------------------------ configured symbols

    def _maybe_list_configured_symbols(self) -> None:
        """A new leader lists the configured symbols the engine does not know yet.

        Symbols enter the engine only through the log (AddSymbol), so every
        replica lists them at the same index. Runs once per term, after the
        leader has applied its own no-op (everything before it is applied).
        """
        if self._symbols_checked_term == self.term or self.applied_index < self.commit_index:
            return
        if self._applied_term != self.term:
            return
        self._symbols_checked_term = self.term
        listed = set(self.engine.symbols())
        commands: list[Any] = [
            AddSymbol(s.name, s.tick_size, s.lot_size, s.price_band_bps, s.reference_price)
            for s in self.config.symbols
            if s.name not in listed
        ]
        risk = self.config.risk
        if commands:
            commands.append(
                SetRiskLimits(None, risk.max_order_qty, risk.max_notional, risk.max_position)
            )
        # The resting-order cap follows the configuration at every new leader (so an
        # existing cluster gets it too); the engine keeps the last one set.
        engine_max_open = getattr(self.engine, "max_open_orders", None)
        if engine_max_open is not None and engine_max_open() != risk.max_open_orders:
            commands.append(SetOrderLimits(None, risk.max_open_orders))
        # So do the retention settings given as flags (those left unset keep the
        # cluster's value, which PUT /v1/admin/retention may have changed).
        retention = getattr(self.engine, "retention_stats", None)
        if retention is not None:
            stats = retention()
            current = (
                stats["exactly_once_horizon_ns"],
                stats["exactly_once_max_keys"],
                stats["finished_max_orders"],
            )
            wanted = self.config.retention.wanted(current)
            if wanted != current:
                commands.append(SetRetention(*wanted))
                _log_retention_override(current, wanted)
        if not commands:
            return
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[list[Any]] = loop.create_future()
        future.add_done_callback(lambda f: f.exception())
        now = time.monotonic()
        self._proposals.append(Proposal(commands, future, now + 30.0, now))
        self._pending_commands += len(commands)
        self._wakeup.set()
        symbols = [c.symbol for c in commands if isinstance(c, AddSymbol)]
        log.info("listing configured symbols and limits", extra={"symbols": symbols})

    # ================================================================== ExchangeService

    async def submit(
        self, commands: Sequence[Any], *, trace_carrier: dict[str, str] | None = None
    ) -> list[Any]:
        if self._stopping:
            raise Unavailable("node is shutting down")
        if self.fenced:
            raise Unavailable("this replica's state diverged from the majority")
        if self.role != Role.LEADER:
            self.metrics.proposals.labels(outcome="not_leader").inc()
            raise self._not_leader_error()
        if self._pending_commands + len(commands) > self.config.max_pending_proposals:
            self.metrics.proposals.labels(outcome="overloaded").inc()
            raise Overloaded(retry_after_seconds=0.05)
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[list[Any]] = loop.create_future()
        now = time.monotonic()
        span = None
        if tracing.enabled():
            span = tracing.tracer().start_span(
                "propose",
                context=tracing.context_from_carrier(trace_carrier),
                attributes={"exchange.commands": len(commands), "exchange.node": self.node_id},
            )
        self._proposals.append(
            Proposal(commands, future, now + self.config.request_timeout_ms / 1000.0, now, span)
        )
        self._pending_commands += len(commands)
        self._wakeup.set()
        return await future

    def leads(self) -> bool:
        return self.role == Role.LEADER and not self._stopping and not self.fenced

    async def read_barrier(self) -> None:
        if self._stopping:
            raise Unavailable("node is shutting down")
        if self.fenced:
            raise Unavailable("this replica's state diverged from the majority")
        if self.leader == NONE:
            raise Unavailable("no leader is known")
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[None] = loop.create_future()
        self._read_batch.append(future)
        self._wakeup.set()
        await future

    def subscribe(self, max_queue: int = 10_000) -> Subscription:
        return self._publisher.subscribe(max_queue)

    def status(self) -> NodeStatus:
        progress: dict[int, PeerProgress] = {}
        last_index = self.commit_index
        recovering = 0
        if self._core is not None:
            st = self._core.status()
            progress = st.progress
            last_index = st.last_index
            recovering = st.recovering
        now = time.monotonic()
        heard_window = 2 * self.config.election_ms / 1000.0
        members: list[MemberStatus] = []
        for node_id in sorted(set(self.conf_state.voters) | set(self.conf_state.learners)):
            info = self.members.get(node_id) or MemberInfo(f"node-{node_id}", "", "")
            pr = progress.get(node_id)
            if node_id == self.node_id:
                match = last_index if self.role == Role.LEADER else self.applied_index
                healthy = True
            else:
                match = pr.match if pr is not None else 0
                healthy = now - self._last_heard.get(node_id, -1e9) < heard_window
                # A follower whose log went backwards is unhealthy until it is back.
                healthy = healthy and (pr is None or pr.healthy)
            members.append(
                MemberStatus(
                    id=node_id,
                    name=info.name,
                    grpc_address=info.grpc,
                    http_address=info.http,
                    voter=node_id in self.conf_state.voters,
                    match_index=match,
                    lag=max(0, last_index - match)
                    if pr is not None or node_id == self.node_id
                    else 0,
                    healthy=healthy,
                    regressions=pr.regressions if pr is not None else 0,
                    stuck=stuck.reason if (stuck := self.progress.stuck.get(node_id)) else "",
                )
            )
        return NodeStatus(
            node_id=self.node_id,
            name=self.name,
            role=self._role_name(),
            term=self.term,
            leader=self.leader,
            commit_index=self.commit_index,
            applied_index=self.applied_index,
            state_hash=self.status_hash()[1],
            diverged=self.diverged,
            members=members,
            recovering=recovering,
            recovery_verdict=self.recovery_verdict,
        )

    def refresh_gauges(self) -> None:
        """Gauges read at scrape time (lag per peer, book depth)."""
        m = self.metrics
        self._flush_result_counts()
        m.commit_index.set(self.commit_index)
        m.applied_index.set(self.applied_index)
        m.term.set(self.term)
        if self.role == Role.LEADER and self._core is not None:
            st = self.core.status()
            for peer, pr in st.progress.items():
                if peer != self.node_id:
                    m.follower_lag.labels(peer=str(peer)).set(max(0, st.last_index - pr.match))
                    m.follower_regressions.labels(peer=str(peer)).set(pr.regressions)
                    m.follower_healthy.labels(peer=str(peer)).set(1 if pr.healthy else 0)
        m.member_stuck.clear()
        for member in set(self.conf_state.voters) | set(self.conf_state.learners):
            m.member_stuck.labels(member=str(member)).set(member in self.progress.stuck)
        if self._core is not None:
            m.recovering.set(self._core.status().recovering)
        engine = self._engine
        if engine is not None and hasattr(engine, "live_orders_in_priority"):
            for symbol in engine.symbols():
                bids, asks = engine.live_orders_in_priority(symbol)
                m.book_depth.labels(symbol=symbol, side="buy").set(len(bids))
                m.book_depth.labels(symbol=symbol, side="sell").set(len(asks))

    def healthy(self) -> bool:
        return not self._stopping and time.monotonic() - self._last_loop_beat < 5.0

    def ready(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "shutting down"
        if self.fenced:
            return False, "state diverged from a majority of voters"
        if (
            self.node_id not in self.conf_state.voters
            and self.node_id not in self.conf_state.learners
        ):
            return False, "not a member of the configuration"
        if self.leader == NONE:
            return False, "no known leader"
        recovering = self._core.status().recovering if self._core is not None else 0
        if recovering:
            return False, f"recovering a lost log tail: catching up to index {recovering}"
        lag = self.commit_index - self.applied_index
        if lag >= READY_LAG:
            return False, f"applied index {lag} entries behind commit"
        return True, "ok"

    # ------------------------------------------------------------------ membership

    def _require_leader(self) -> None:
        if self.role != Role.LEADER:
            raise self._not_leader_error()

    async def _conf_change(self, cc: ConfChange) -> None:
        self._require_leader()
        loop = self._loop
        assert loop is not None
        done: asyncio.Future[None] = loop.create_future()

        deadline = time.monotonic() + self.config.request_timeout_ms / 1000.0

        def op() -> None:
            if self.role != Role.LEADER:
                done.set_exception(self._not_leader_error())
                return
            self.driver.propose_conf_change(done, cc, deadline)

        self._ops.append(op)
        self._wakeup.set()
        try:
            await asyncio.wait_for(done, timeout=self.config.request_timeout_ms / 1000.0)
        except TimeoutError:
            raise Timeout("configuration change not applied in time") from None

    async def add_member(self, node_id: int, grpc_address: str, http_address: str) -> None:
        if node_id < 1:
            raise ValueError("node id must be >= 1")
        if node_id in self.conf_state.voters or node_id in self.conf_state.learners:
            raise ValueError(f"node {node_id} is already a member")
        info = bootstrap_member(PeerSpec(node_id, grpc_address, http_address))
        await self._conf_change(ConfChange(ConfChangeType.ADD_LEARNER, node_id, info.to_context()))

    async def promote_member(self, node_id: int) -> None:
        if node_id not in self.conf_state.learners:
            raise ValueError(f"node {node_id} is not a learner")
        self._require_leader()
        st = self.core.status()
        pr = st.progress.get(node_id)
        if pr is None or st.last_index - pr.match > READY_LAG:
            raise ValueError(f"learner {node_id} has not caught up yet")
        info = self.members.get(node_id)
        await self._conf_change(
            ConfChange(ConfChangeType.PROMOTE, node_id, info.to_context() if info else b"")
        )

    async def remove_member(self, node_id: int) -> None:
        if node_id not in self.conf_state.voters and node_id not in self.conf_state.learners:
            raise ValueError(f"node {node_id} is not a member")
        await self._conf_change(ConfChange(ConfChangeType.REMOVE, node_id))

    async def transfer_leadership(self, target: int | None) -> int:
        self._require_leader()
        st = self.core.status()
        if target is None:
            candidates = [
                (pr.match, peer)
                for peer, pr in st.progress.items()
                if peer != self.node_id and peer in st.conf_state.voters
            ]
            if not candidates:
                raise ValueError("no other voter to hand leadership to")
            target = max(candidates)[1]
        elif target not in st.conf_state.voters:
            raise ValueError(f"node {target} is not a voter")
        if target == self.node_id:
            return target
        self._ops.append(lambda: self.core.transfer_leadership(target))
        self._wakeup.set()
        deadline = time.monotonic() + 2 * self.config.election_ms / 1000.0
        while time.monotonic() < deadline:
            await asyncio.sleep(self.config.heartbeat_ms / 4000.0)
            if self.leader == target:
                return target
        raise Timeout(f"leadership did not move to {target} in time")


_CONF_CHANGE = int(EntryType.CONF_CHANGE)
_entry_type = attrgetter("type")


def _log_snapshot_failure(job: asyncio.Task[None]) -> None:
    if not job.cancelled() and job.exception() is not None:
        log.error("%s failed: %s", job.get_name(), job.exception())


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("saving the hard state failed: %s", future.exception())


def _save(
    storage: RaftStorage,
    entries: list[Entry],
    hard_state: HardState | None,
    snapshot: Snapshot | None,
) -> None:
    storage.save(entries=entries, hard_state=hard_state, snapshot=snapshot)


def _open_wal(cfg: NodeConfig, on_timing: Callable[[str, float], None]) -> RaftStorage:
    from exchange_node.storage.wal import SaveStats, open_storage

    def on_save(stats: SaveStats) -> None:
        on_timing("append", stats.append_seconds)
        on_timing("fsync", stats.fsync_seconds)

    # A damaged last segment is cut back (the cut bytes kept beside it) and the node
    # recovers from its peers instead of refusing to start (docs/recovery.md).
    return open_storage(cfg.data_dir, on_save=on_save, repair_corruption=True)


def bootstrap_member(peer: PeerSpec, own_http: str = "") -> MemberInfo:
    """A member as every node names it, from its peer address alone (``--peers`` for
    the initial members, the admin request for one added later): its name is the first label of its peer host when that is a DNS name (a pod's
    ``<cluster>-<i>.<cluster>-peers.<ns>.svc`` gives ``<cluster>-<i>``), else
    ``node-<id>``. ``own_http`` fills in this node's HTTP address only when
    ``--peer-http`` names none."""
    host = peer.grpc_address.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
        name = f"node-{peer.node_id}"
    except ValueError:
        name = host.split(".", 1)[0] or f"node-{peer.node_id}"
    return MemberInfo(name, peer.grpc_address, peer.http_address or own_http)


def _new_engine() -> Engine:
    from exchange_node.engine.engine import Engine

    return Engine()


class _Machine:
    """The driver's state machine: the engine, the membership and the publisher."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    def apply(self, entry: Entry) -> list[CommandResult] | None:
        return self.node._apply_entry(entry)

    def restore(self, snapshot: Snapshot) -> None:
        self.node._install_snapshot(snapshot)


_ENGINE_RETENTION = (ENGINE_DEDUP_HORIZON_NS, ENGINE_DEDUP_MAX_KEYS, ENGINE_FINISHED_WINDOW)


def _log_retention_override(current: tuple[int, int, int], wanted: tuple[int, int, int]) -> None:
    """Say that this leader's retention flags replace the cluster's setting.

    From the engine's defaults (a new cluster) that is expected. From anything else it
    means that members were started with different flags (each leader then sets its
    own, at every election) or that ``PUT /v1/admin/retention`` changed a setting that
    this member's flags name: the operator should know."""
    names = ("exactly_once_horizon_ns", "exactly_once_max_keys", "finished_orders")
    changed = {
        name: {"from": old, "to": new}
        for name, old, new in zip(names, current, wanted, strict=True)
        if old != new
    }
    if current == _ENGINE_RETENTION:
        log.info("setting the retention from this member's flags", extra={"changed": changed})
        return
    log.warning(
        "this leader's retention flags replace the cluster's retention: %s. Members "
        "started with different flags set their own at each election, and a flag wins "
        "over PUT /v1/admin/retention whenever this member leads (docs/api.md)",
        ", ".join(f"{n} {c['from']} -> {c['to']}" for n, c in changed.items()),
        extra={"changed": changed},
    )

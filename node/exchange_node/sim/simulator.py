"""One simulated cluster on virtual time, driven by one seed.

Everything that happens is an event on a heap ordered by virtual time
(milliseconds); one popped event is one *step*: a node's clock ticks, a
message is delivered or dropped, a client proposes or reads, the nemesis
injects a fault, a crashed node restarts. Every random choice comes from
one ``random.Random(seed)``, so a seed replays exactly.

The run alternates between *chaos* and *calm*. During chaos the nemesis
crashes nodes (at random, just after they vote or win an election, or
between a write and its sync, leaving a torn tail; messages still in a
crashed process's buffers may die with it; the peers that can reach it see
its connections refused and tell their cores, ``leader_unreachable``), cuts an acknowledged tail off a
crashed node's durable log (a disk fault: recovery must tell it from a torn
write and keep the node from voting until a leader has restored it, as the
node's shell does with ``RaftCore.start_recovering``), pauses processes, partitions
the network (symmetric, one-way, isolated leader, bridge), drops,
duplicates and delays messages, breaks snapshot transfers, changes the
membership (add a learner, promote it, remove a member, the leader
included) and moves leadership, while clients keep proposing (single
entries and batches) and reading, and nodes keep compacting their logs, so
snapshots are installed in the middle of it all. Clocks drift per node.
At the end of chaos everything heals: crashed nodes restart, links return,
the weather clears. Then a liveness probe proposes marker entries until
one commits; if none has committed within ``liveness_bound_ms()`` of the
heal (25 election timeouts), that is a violation; and every member must
then apply what was committed within a bound (catch-up), before the next
round of chaos.

The invariants of ``checkers.Checker`` are checked as each node persists,
sends and applies, that is after every step.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from exchange_node.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    Role,
    Snapshot,
    SnapshotMeta,
)
from exchange_node.sim.app import HashChainApp
from exchange_node.sim.checkers import Checker, NodeWatch, Violation
from exchange_node.sim.disk import SimStorage
from exchange_node.sim.network import Network

_NEVER = float("inf")
"""Simulated clients wait as long as it takes (liveness is checked on its own)."""

TICK_MS = 10
"""Nominal interval between two ticks of a node's clock (each node drifts a little)."""


def liveness_bound_ms(election_tick: int) -> int:
    """After a heal, some proposal must commit within this much virtual time."""
    return max(2_000, 25 * election_tick * TICK_MS)


PROBE_INTERVAL_MS = 60
CATCH_UP_BASE_MS = 3_000
CATCH_UP_PER_ENTRY_MS = 25
"""After a commit following a heal, every member must apply up to that commit
within CATCH_UP_BASE_MS plus this much per entry it was behind."""
MAX_MEMBERS = 7
MAX_READY_ROUNDS = 64

# Event kinds (small ints keep heap entries cheap to compare and build).
_TICK = 0
_DELIVER = 1
_CLIENT = 2
_NEMESIS = 3
_RESTART = 4
_HEAL = 5
_CHAOS = 6
_PROBE = 7
_DEADLINE = 8
_START = 9
_RETIRE = 10
_COMPACT = 11
_CRASH = 12
_CATCH_UP = 13
_SYNCED = 14
_RELEASE = 15
_PEER_GONE = 16

_EVENT_NAMES = (
    "tick",
    "deliver",
    "client",
    "nemesis",
    "restart",
    "heal",
    "chaos",
    "liveness probe",
    "liveness deadline",
    "start",
    "retire",
    "compact",
    "crash",
    "catch-up check",
    "fsync done",
    "release commit notices",
    "peer gone",
)

_LEADER = Role.LEADER
_SNAP = MessageType.SNAP
_APP = MessageType.APP
_HEARTBEAT = MessageType.HEARTBEAT
_VOTE = MessageType.VOTE
_PRE_VOTE = MessageType.PRE_VOTE
_VOTE_ANSWERS = (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP)
_TRANSFER = b"transfer"
"""``raft.core.TRANSFER_CONTEXT`` (a planted copy of the core has its own module)."""
_CONF_CHANGE = EntryType.CONF_CHANGE
_ROLE_CHAR = {0: "F", 1: "p", 2: "C", 3: "L"}


@dataclass(frozen=True)
class SimSettings:
    """What one seed's cluster looks like; derived from the seed."""

    nodes: int
    election_tick: int
    heartbeat_tick: int
    max_msg_entries: int
    max_msg_bytes: int
    max_inflight: int
    pre_vote: bool
    check_quorum: bool
    hold_ms: int = 0
    """The driver holds commit-only appends this long (0: never)."""

    @classmethod
    def for_seed(cls, rng: random.Random, nodes: int) -> SimSettings:
        heartbeat_tick = rng.choice((1, 1, 2, 3))
        return cls(
            nodes=nodes,
            election_tick=max(rng.choice((4, 8, 10, 10, 12, 20)), 2 * heartbeat_tick + 1),
            heartbeat_tick=heartbeat_tick,
            max_msg_entries=rng.choice((1, 2, 4, 16, 256)),
            max_msg_bytes=rng.choice((64, 512, 1 << 20)),
            max_inflight=rng.choice((1, 2, 4, 64)),
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
            hold_ms=rng.choice((0, 0, 2, 5)),
        )


@dataclass
class SeedResult:
    seed: int
    nodes: int
    steps: int
    virtual_ms: int
    violation: str | None = None
    violation_step: int | None = None
    digest: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = field(default=0.0, compare=False)
    """Process CPU time the seed took (speed is measured, never part of the result)."""


class SimNode:
    """One member: its disk survives crashes; its core and application do not."""

    __slots__ = (
        "alive",
        "app",
        "batch",
        "core",
        "counting_conf",
        "crash_on_write",
        "driver",
        "id",
        "incarnation",
        "initial",
        "leader",
        "lease",
        "lost_outboxes",
        "lost_tail",
        "paused_until",
        "queued",
        "retired",
        "role",
        "storage",
        "term",
        "tick_ms",
        "ticks",
        "told_gone",
        "torn",
        "watch",
    )

    def __init__(
        self, node_id: int, tick_ms: int, initial: bool, storage: SimStorage | None = None
    ) -> None:
        self.id = node_id
        self.storage = storage if storage is not None else SimStorage()
        self.watch = NodeWatch(node_id)
        self.core: Any = None
        self.driver: Any = None
        """The node's ``server.driver.Driver`` (the production Ready policy)."""
        self.batch: Any = None
        self.counting_conf = ConfState()
        """The configuration the core counted replicas in before the current Ready."""
        """The Batch whose write is in flight on the simulated disk (None: idle)."""
        self.queued: list[Callable[[], None]] = []
        """Inputs that arrived while a write was in flight: the driver takes them after."""
        self.app = HashChainApp()
        self.alive = False
        self.retired = False
        self.initial = initial
        self.incarnation = 0
        self.role = Role.FOLLOWER
        self.leader = 0
        self.term = 0
        self.tick_ms = tick_ms
        self.crash_on_write = False
        self.torn = False
        self.lost_tail = False
        """A disk fault cut synced entries off this (crashed) node's log."""
        self.paused_until = 0
        """A paused process (a long GC, SIGSTOP) neither ticks nor reads until then."""
        self.lost_outboxes: set[int] = set()
        """Incarnations whose messages still in flight died with the process."""
        self.ticks = 0
        """Ticks this node's clock gave its cores, over all incarnations."""
        self.lease: tuple[int, int, int] = (0, 0, 0)
        """(term, leader, ticks): when this node last accepted a message from its leader."""
        self.told_gone: tuple[int, int] = (0, 0)
        """(term, leader): the transport told this node that leader's process is gone."""


class _SimMachine:
    """The driver's state machine: the hash chain, checked as each entry applies."""

    __slots__ = ("checker", "node")

    def __init__(self, node: SimNode, checker: Checker) -> None:
        self.node = node
        self.checker = checker

    def apply(self, entry: Entry) -> int:
        self.checker.on_apply(self.node.watch, (entry,))
        self.node.app.apply(entry)
        return entry.term

    def restore(self, snapshot: Snapshot) -> None:
        self.checker.on_snapshot(self.node.watch, snapshot)
        self.node.app.restore(snapshot.data)


class _SimReplies:
    """What clients see: each answer the driver gives is checked when it is given."""

    __slots__ = ("node", "sim")

    def __init__(self, sim: Simulation, node: SimNode) -> None:
        self.sim = sim
        self.node = node

    def resolved(self, token: bytes, index: int, result: int | None) -> None:
        sim = self.sim
        node = self.node
        assert result is not None
        # The leader counted replicas in the configuration it had before this Ready (a
        # change takes effect as its entry is handed out for applying).
        nodes = sim.nodes
        best: tuple[int, int] | None = None
        for conf in (node.counting_conf, node.core.conf_state):
            voters = conf.voters
            durable = sum(
                1 for v in voters if v in nodes and nodes[v].storage.holds_or_owes(index, result)
            )
            if best is None or durable - len(voters) // 2 > best[0] - best[1] // 2:
                best = (durable, len(voters))
        assert best is not None
        sim.checker.on_ack(node.id, token, index, result, best[0], best[1])
        sim.stats["acks"] += 1

    def failed(self, token: bytes, failure: Any, detail: str) -> None:
        return None

    def read_ready(self, token: bytes, index: int) -> None:
        self.sim.stats["reads_answered"] += 1
        self.sim.checker.on_read_answer(self.node.id, token, index, self.node.app.applied)


def _default_core() -> ModuleType:
    import exchange_node.raft

    return exchange_node.raft


def _default_driver() -> ModuleType:
    import exchange_node.server.driver

    return exchange_node.server.driver


def nodes_for_seed(seed: int, nodes: str | int) -> int:
    """``mixed`` alternates 3- and 5-node clusters by seed."""
    if nodes == "mixed":
        return 3 if seed % 2 == 0 else 5
    return int(nodes)


class Simulation:
    def __init__(
        self,
        seed: int,
        nodes: int = 3,
        *,
        raft: ModuleType | None = None,
        trace: Callable[[str], None] | None = None,
        commit_rule: bool = True,
        settings: SimSettings | None = None,
        driver: ModuleType | None = None,
        disk: ModuleType | None = None,
    ) -> None:
        self.raft: ModuleType = raft if raft is not None else _default_core()
        self.disk_module: ModuleType | None = disk
        """A copy of ``sim.disk`` with a planted bug (None: the real one)."""
        self.driver_module: ModuleType = driver if driver is not None else _default_driver()
        self.seed = seed
        self.rng = random.Random(seed)
        self._gone_rng = random.Random(seed ^ 0x5EED_60E5)
        """When a dead process's peers notice (``_connections_break``)."""
        self.settings = SimSettings.for_seed(self.rng, nodes)
        if settings is not None:
            self.settings = settings
        self.liveness_bound_ms = liveness_bound_ms(self.settings.election_tick)
        self.trace = trace
        self._trace_event: str | None = None
        self._trace_notes: list[str] = []
        self.now = 0
        self.step = 0
        self.heap: list[tuple[Any, ...]] = []
        self._seq = 0
        self.network = Network()
        self.checker = Checker(on_commit=self._on_commit)
        self.checker.commit_rule = commit_rule
        self.nodes: dict[int, SimNode] = {}
        self._release_pending: set[int] = set()
        self.next_node_id = nodes + 1
        self.bootstrap = [ConfChange(ConfChangeType.PROMOTE, i, b"") for i in range(1, nodes + 1)]
        self.chaos = False
        self.heal_round = 0
        self.healed_at = 0
        self.markers: dict[bytes, int] = {}
        self.live_rounds: set[int] = set()
        self.proposals = 0
        self.reads = 0
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "ticks",
                "delivered",
                "dropped",
                "duplicated",
                "crashes",
                "torn_writes",
                "restarts",
                "partitions",
                "pauses",
                "elections",
                "snapshots_sent",
                "snapshots_installed",
                "snapshots_broken",
                "compactions",
                "conf_changes",
                "members_added",
                "members_promoted",
                "members_removed",
                "leaders_removed",
                "transfers",
                "reads_answered",
                "acks",
                "power_losses",
                "lost_tails",
                "lost_tail_entries",
                "recovering_starts",
                "heals",
                "max_recovery_ms",
                "max_catch_up_ms",
                "peer_gone_hints",
                "leader_gone_hints",
            ),
            0,
        )
        for node_id in range(1, nodes + 1):
            self.nodes[node_id] = SimNode(
                node_id, self._tick_interval(), initial=True, storage=self._new_storage()
            )
        for node in list(self.nodes.values()):
            self._boot(node)
        self._heal()
        self._push(self.rng.randint(1, 30), _CLIENT, None)
        self._push(self.rng.randint(1, 200), _COMPACT, None)

    # -- the event loop ---------------------------------------------------------

    def _push(self, at: int, kind: int, arg: Any, arg2: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (at, self._seq, kind, arg, arg2))

    def run(self, steps: int) -> SeedResult:
        heap = self.heap
        pop = heapq.heappop
        handlers = (
            self._on_tick,
            self._on_deliver,
            self._on_client,
            self._on_nemesis,
            self._on_restart,
            self._on_heal,
            self._on_chaos,
            self._on_probe,
            self._on_deadline,
            self._on_start,
            self._on_retire,
            self._on_compact,
            self._on_crash,
            self._on_catch_up,
            self._on_synced,
            self._on_release,
            self._on_peer_gone,
        )
        violation = None
        traced = self.trace is not None
        try:
            while self.step < steps and heap:
                at, _, kind, arg, arg2 = pop(heap)
                self.now = at
                if handlers[kind](arg, arg2) is False:
                    continue  # a stale event (a tick of a crashed node): not a step
                if traced:
                    self._flush_trace(f"{_EVENT_NAMES[kind]}: nothing to do")
                self.step += 1
        except Violation as exc:
            violation = str(exc)
        except Exception as exc:  # the core failed an assertion or raised: also a bug
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            violation = (
                f"{type(exc).__name__} raised at {frame.filename.rsplit('/', 1)[-1]}:"
                f"{frame.lineno} ({frame.name}): {exc}"
            )
        result = SeedResult(
            seed=self.seed,
            nodes=self.settings.nodes,
            steps=self.step,
            virtual_ms=self.now,
            digest=self.digest(),
            stats=dict(self.stats),
        )
        if violation is not None:
            result.violation = violation
            result.violation_step = self.step + 1
            if self.trace:
                self._flush_trace("(interrupted)")
                self.trace(f"VIOLATION at step {self.step + 1}: {violation}")
        return result

    def digest(self) -> int:
        """A fingerprint of the whole run: equal digests mean identical runs."""
        state = [self.step, self.now, self.checker.commit_index, self.checker.chains[-1]]
        for node in self.nodes.values():
            hard = node.storage.hard_state
            state.extend((node.id, hard.term, hard.vote, hard.commit, node.storage.last_index()))
        for name in sorted(self.stats):
            state.append(self.stats[name])
        return hash(tuple(state)) & 0xFFFFFFFFFFFF

    # -- nodes ------------------------------------------------------------------

    def _tick_interval(self) -> int:
        """Each node's clock runs a little fast or slow (skew is a fault too)."""
        return TICK_MS + self.rng.randint(-2, 3)

    def _config(self, node_id: int) -> Any:
        s = self.settings
        return self.raft.RaftConfig(
            node_id,
            election_tick=s.election_tick,
            heartbeat_tick=s.heartbeat_tick,
            max_msg_entries=s.max_msg_entries,
            max_msg_bytes=s.max_msg_bytes,
            max_inflight=s.max_inflight,
            pre_vote=s.pre_vote,
            check_quorum=s.check_quorum,
            seed=self.rng.getrandbits(32),
        )

    def _new_storage(self) -> SimStorage:
        if self.disk_module is not None:
            storage: SimStorage = self.disk_module.SimStorage()
            return storage
        return SimStorage()

    def _boot(self, node: SimNode) -> None:
        """Start (or restart) a node from whatever its disk holds."""
        recovered = node.storage.recover()
        verdict = node.storage.recovery_verdict()
        lost_tail = verdict.must_recover
        bootstrap = self.bootstrap if node.initial and node.storage.is_empty() else None
        node.core = self.raft.RaftCore(
            self._config(node.id),
            hard_state=recovered.hard_state,
            snapshot=recovered.snapshot,
            entries=recovered.entries,
            bootstrap=bootstrap,
        )
        if lost_tail:
            # As the node's shell does: a lost acknowledged tail is owed back before
            # this node votes or campaigns again (protocol-aware recovery).
            node.core.start_recovering(
                verdict.promised_index, verdict.promised_term, verdict.promised_last_term
            )
            self.stats["recovering_starts"] += 1
            if self.trace is not None:
                self._note(f"node {node.id} recovering: {verdict.message}")
        self.checker.on_restart(node.watch, node.storage, torn=node.torn, lost_tail=node.lost_tail)
        node.lost_tail = False
        node.torn = False
        node.app = HashChainApp()
        if recovered.snapshot is not None:
            node.app.restore(recovered.snapshot.data)
        hard = recovered.hard_state
        node.driver = self.driver_module.Driver(
            node.core,
            _SimMachine(node, self.checker),
            _SimReplies(self, node),
            node_id=node.id,
            read_nonce=str(node.incarnation),
            hold=self.settings.hold_ms,
            persisted_term_vote=(hard.term, hard.vote),
            applied_index=node.app.applied,
        )
        node.batch = None
        node.queued = []
        node.alive = True
        node.incarnation += 1
        node.role = Role.FOLLOWER
        node.leader = 0
        node.term = recovered.hard_state.term
        node.crash_on_write = False
        self._push(self.now + self.rng.randint(1, node.tick_ms), _TICK, node, node.incarnation)
        self._process(node)

    def _crash(self, node: SimNode, torn: bool) -> None:
        """Power fails: unsynced writes are lost (``torn``: a prefix of them survives)."""
        self.stats["crashes"] += 1
        node.storage.crash(self.rng if torn else None)
        if self.rng.random() < 0.5:
            # Messages still in user-space send buffers die with the process.
            node.lost_outboxes.add(node.incarnation)
        node.torn = torn
        node.paused_until = 0
        node.core = None
        node.driver = None
        node.batch = None
        node.queued = []
        node.alive = False
        node.incarnation += 1
        node.role = Role.FOLLOWER
        node.leader = 0
        self._connections_break(node)

    def _connections_break(self, node: SimNode) -> None:
        """The kernel closes a dead process's sockets: every live peer it was
        connected to sees its stream break and, reconnecting, is refused. A peer
        cut off from it by a partition sees nothing (no reset crosses the cut), nor
        does anyone when a process is paused. The transport then tells the core
        (``RaftCore.leader_unreachable``) a few milliseconds later, if the node is
        still down by then (a restarted one accepts the reconnect). The delays come
        from a stream of their own, so the rest of a seed's choices stay put."""
        rng = self._gone_rng
        for peer in self.nodes.values():
            if peer is node or not peer.alive:
                continue
            if self.network.is_cut(peer.id, node.id) or self.network.is_cut(node.id, peer.id):
                continue
            at = self.now + rng.randint(1, 25)
            self._push(at, _PEER_GONE, peer, (peer.incarnation, node, node.incarnation))

    def _on_peer_gone(self, peer: SimNode, arg: tuple[int, SimNode, int]) -> bool | None:
        incarnation, gone, gone_incarnation = arg
        if peer.incarnation != incarnation or not peer.alive:
            return False
        if gone.alive or gone.incarnation != gone_incarnation:
            return False  # back up before the reconnect: it is accepted
        if peer.paused_until > self.now:
            self._push(peer.paused_until + self._gone_rng.randint(0, 3), _PEER_GONE, peer, arg)
            return False
        if self.trace is not None:
            self._trace_step(f"{peer.id} sees {gone.id}'s process gone")
        self.stats["peer_gone_hints"] += 1
        self._input(peer, lambda: self._peer_gone_now(peer, gone.id))
        return None

    def _peer_gone_now(self, peer: SimNode, gone: int) -> None:
        core = peer.core
        if core.role is Role.FOLLOWER and core.leader == gone:
            self.stats["leader_gone_hints"] += 1
            peer.told_gone = (core.term, gone)
        core.leader_unreachable(gone)

    def _input(self, node: SimNode, action: Callable[[], object]) -> None:
        """Give the core an input now, or (a write in flight) once the write is durable."""
        if node.driver.busy:
            node.queued.append(action)  # type: ignore[arg-type]
            return
        action()
        self._process(node)

    def _process(self, node: SimNode) -> None:
        """Drain the driver's Batches: the simulated disk takes virtual time to sync."""
        driver = node.driver
        checker = self.checker
        storage = node.storage
        watch = node.watch
        for _ in range(MAX_READY_ROUNDS):
            if node.batch is not None:
                return  # the next Ready waits for the write in flight
            node.counting_conf = node.core.conf_state
            batch = driver.ready(self.now)
            if batch is None:
                return
            rd = batch.ready
            soft = rd.soft_state
            role = soft.role if soft is not None else node.role
            if role == _LEADER and node.role != _LEADER:
                self.stats["elections"] += 1
                term = node.core.status().term
                self._note(f"node {node.id} becomes leader of term {term}")
                checker.on_leader(watch, storage, term)
                if self.chaos:
                    self._maybe_crash_soon(node, 0.3)
            if rd.read_states:
                checker.on_read_states(node.id, rd.read_states)
            write = batch.write
            if batch.send_now:
                self._send_checked(node, batch.send_now)
            if write is not None:
                checker.on_persist(
                    watch,
                    storage,
                    entries=write.entries,
                    hard_state=write.hard_state,
                    snapshot=write.snapshot,
                    is_leader=role == _LEADER,
                )
                storage.write(
                    entries=write.entries, hard_state=write.hard_state, snapshot=write.snapshot
                )
                if node.crash_on_write:
                    # Power fails between write and sync: the write is lost, or
                    # (torn) some prefix of it reached the disk.
                    torn = self.rng.random() < 0.7
                    self.stats["torn_writes"] += 1
                    self._note(f"node {node.id} crashes before its write is synced")
                    self._crash(node, torn=torn)
                    self._schedule_restart(node)
                    return
            hard = rd.hard_state
            if hard is not None:
                # The commit index is known (in memory) before it is durable: what is
                # applied and answered from here on must be in the committed history.
                checker.on_commit_known(watch, storage, hard.commit, hard.term)
            if soft is not None:
                # After the commit is known: a leader whose own removal commits in this
                # Ready still led when it committed it.
                node.role = soft.role
                node.leader = soft.leader
            if write is not None and write.snapshot is not None:
                self.stats["snapshots_installed"] += 1
            driver.apply_now(batch)
            if write is None:
                self._complete(node, batch)
                continue
            node.batch = batch
            self._push(self.now + self._disk_latency(), _SYNCED, node, node.incarnation)
            return
        raise Violation(f"node {node.id} still has work after {MAX_READY_ROUNDS} Ready rounds")

    def _disk_latency(self) -> int:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            return 0
        if roll < 0.95:
            return rng.randint(1, 4)
        return rng.randint(5, 40)  # a slow fsync

    def _on_synced(self, node: SimNode, incarnation: int) -> bool | None:
        if node.incarnation != incarnation or not node.alive or node.batch is None:
            return False
        if self.trace is not None:
            self._trace_step(f"fsync done at {node.id}")
        batch, node.batch = node.batch, None
        self._complete(node, batch)
        queued, node.queued = node.queued, []
        for action in queued:
            if node.driver is None:
                break
            action()
        if node.driver is not None:
            self._process(node)
        return None

    def _complete(self, node: SimNode, batch: Any) -> None:
        """The Batch's write is durable: send what waited, apply, serve reads, advance."""
        write = batch.write
        if write is not None:
            node.storage.sync()
            self.checker.after_persist(
                node.watch,
                node.storage,
                entries=write.entries,
                hard_state=write.hard_state,
                is_leader=node.role == _LEADER,
            )
            if write.hard_state is not None:
                node.term = write.hard_state.term
        after = node.driver.persisted(batch, self.now)
        if after:
            self._send_checked(node, after)
        node.driver.finish(batch)
        self._release_later(node)

    def _send_checked(self, node: SimNode, messages: list[Any]) -> None:
        if self.checker.on_messages(node.id, messages) and self.chaos:
            self._maybe_crash_soon(node, 0.15)
        self._send(messages, node.incarnation)
        self._release_later(node)

    def _release_later(self, node: SimNode) -> None:
        notices = node.driver.notices
        if notices.release_at is not None and node.id not in self._release_pending:
            self._release_pending.add(node.id)
            self._push(int(notices.release_at), _RELEASE, node, node.incarnation)

    def _on_release(self, node: SimNode, incarnation: int) -> bool | None:
        self._release_pending.discard(node.id)
        if node.incarnation != incarnation or not node.alive:
            return False
        held = node.driver.release_notices(self.now)
        if held:
            self._send(held, node.incarnation)
        self._release_later(node)
        return None

    def _flush_deferred(self, node: SimNode) -> None:
        """Rule 4: a commit-only hard state goes to disk on a tick (nothing waits on it)."""
        write = node.driver.flush_deferred()
        if write is not None:
            self.checker.on_persist(
                node.watch,
                node.storage,
                entries=(),
                hard_state=write.hard_state,
                snapshot=None,
                is_leader=node.role == _LEADER,
            )
            node.storage.save(hard_state=write.hard_state)
            self.checker.after_persist(
                node.watch,
                node.storage,
                entries=(),
                hard_state=write.hard_state,
                is_leader=node.role == _LEADER,
            )

    def _send(self, messages: list[Any], incarnation: int) -> None:
        network = self.network
        rng = self.rng
        now = self.now
        push = self._push
        for message in messages:
            push(now + network.latency(rng), _DELIVER, message, incarnation)
            if network.duplicate_rate and rng.random() < network.duplicate_rate:
                self.stats["duplicated"] += 1
                push(now + network.latency(rng), _DELIVER, message, incarnation)

    def _leader(self) -> SimNode | None:
        """The live node that believes it leads the newest term, if any."""
        best = None
        now = self.now
        for node in self.nodes.values():
            if (
                node.alive
                and node.role == _LEADER
                and node.paused_until <= now
                and (best is None or node.term > best.term)
            ):
                best = node
        return best

    def _live_nodes(self) -> list[SimNode]:
        """Nodes that are up and not paused: they answer a request at once."""
        now = self.now
        return [node for node in self.nodes.values() if node.alive and node.paused_until <= now]

    def _note(self, text: str) -> None:
        if self.trace is not None:
            self._trace_notes.append(f"      {text}")

    def _trace_step(self, event: str) -> None:
        """Name the current step's event (printed once the step is done)."""
        if self._trace_event is None:
            self._trace_event = event
        else:
            self._trace_notes.append(f"      {event}")

    def _flush_trace(self, default_event: str) -> None:
        """Print the step: its event and the cluster after it, then its notes."""
        assert self.trace is not None
        event = self._trace_event or default_event
        parts = []
        for node in self.nodes.values():
            if node.retired:
                continue
            if not node.alive:
                parts.append(f"{node.id}:down")
                continue
            status = node.core.status()
            parts.append(
                f"{node.id}:{_ROLE_CHAR[int(status.role)]}{status.term}"
                f" c{status.commit} a{node.app.applied} l{status.last_index}"
            )
        self.trace(f"{self.step + 1:6d} t={self.now:<7d} {event:<44s} | {' '.join(parts)}")
        for note in self._trace_notes:
            self.trace(note)
        self._trace_event = None
        self._trace_notes = []

    # -- event handlers (return False for a stale event that is not a step) ------

    def _on_tick(self, node: SimNode, incarnation: int) -> bool | None:
        if node.incarnation != incarnation or not node.alive:
            return False
        if node.paused_until > self.now:
            self._push(node.paused_until, _TICK, node, incarnation)
            return False
        if self.trace is not None:
            self._trace_step(f"tick {node.id}")
        self.stats["ticks"] += 1
        self._push(self.now + node.tick_ms, _TICK, node, incarnation)
        self._input(node, lambda: self._tick_now(node))
        return None

    def _tick_now(self, node: SimNode) -> None:
        node.ticks += 1
        node.driver.tick()
        self._flush_deferred(node)

    def _on_deliver(self, message: Any, sent_by: int) -> bool | None:
        node = self.nodes.get(message.to)
        if node is not None and node.paused_until > self.now and node.alive:
            # A paused process reads its socket when it wakes up.
            self._push(node.paused_until + self.rng.randint(0, 3), _DELIVER, message, sent_by)
            return False
        sender = self.nodes.get(message.frm)
        arrives = (
            (sender is None or sent_by not in sender.lost_outboxes)
            and node is not None
            and node.alive
            and self.network.passes(message.frm, message.to, self.rng)
        )
        is_snapshot = message.type == _SNAP
        if is_snapshot and arrives and self.rng.random() < (0.3 if self.chaos else 0.1):
            # A snapshot is a long transfer: its stream breaks more often than a message.
            arrives = False
            self.stats["snapshots_broken"] += 1
        if self.trace is not None:
            verb = "deliver" if arrives else "drop"
            if message.entries:
                first = message.entries[0].index
                detail = f" e{first}-{first + len(message.entries) - 1} c{message.commit}"
            elif message.type == _APP:
                detail = f" prev{message.index} c{message.commit}"
            else:
                detail = f" i{message.index}" if message.index else ""
            self._trace_step(
                f"{verb} {MessageType(message.type).name} {message.frm}->{message.to} "
                f"t{message.term}{detail}{' reject' if message.reject else ''}"
            )
        if not arrives:
            self.stats["dropped"] += 1
            if sender is not None and sender.alive and sender.role == _LEADER:
                # The transport notices a broken stream (sometimes): tell the leader.
                if is_snapshot:
                    self._input(sender, lambda: sender.core.report_snapshot(message.to, False))
                elif message.type == _APP and self.rng.random() < 0.5:
                    self._input(sender, lambda: sender.core.report_unreachable(message.to))
            return None
        assert node is not None
        self.stats["delivered"] += 1
        self._input(node, lambda: self._step_checked(node, message))
        if is_snapshot:
            self.stats["snapshots_sent"] += 1
            if sender is not None and sender.alive:
                self._input(sender, lambda: sender.core.report_snapshot(message.to, True))
        return None

    def _step_checked(self, node: SimNode, message: Any) -> None:
        """Step ``message``, checking the leader lease (dissertation 4.2.3): with
        check-quorum, a follower that accepted a message from its leader fewer than
        an election timeout ago (its own ticks) and was not told that leader's
        process is gone grants no vote or pre-vote for a higher term, except the
        forced vote of a leadership transfer (checked by the core's own rules)."""
        core = node.core
        kind = message.type
        if kind is _VOTE or kind is _PRE_VOTE:
            term, leader, heard_at = node.lease
            held = (
                self.settings.check_quorum
                and message.context != _TRANSFER
                and message.term > core.term
                and core.role is Role.FOLLOWER
                and leader != 0
                and (term, leader) == (core.term, core.leader)
                and node.ticks - heard_at < self.settings.election_tick
                and node.told_gone != (term, leader)
            )
            before = len(core.msgs)
            node.driver.step(message)
            if held:
                for m in core.msgs[before:]:
                    if m.to == message.frm and not m.reject and m.type in _VOTE_ANSWERS:
                        raise Violation(
                            f"node {node.id} grants a {kind.name} to {message.frm} for term "
                            f"{message.term} while in the lease of its leader {leader} "
                            f"(term {term}, heard {node.ticks - heard_at} ticks ago), "
                            "which no one reported gone"
                        )
            return
        node.driver.step(message)
        if (kind is _APP or kind is _HEARTBEAT or kind is _SNAP) and (
            core.role is Role.FOLLOWER
            and core.leader == message.frm
            and core.term == message.term
            and core.election_elapsed == 0
        ):
            node.lease = (message.term, message.frm, node.ticks)

    def _on_client(self, _: Any, __: Any) -> None:
        rng = self.rng
        self._push(self.now + rng.randint(3, 40), _CLIENT, None)
        roll = rng.random()
        if roll < 0.8:
            count = 1 if roll < 0.5 else rng.randint(2, 12)
            self._propose(count)
        else:
            self._read_index()

    def _target(self) -> SimNode | None:
        """Where a client sends a request: usually the leader, sometimes anyone."""
        leader = self._leader()
        if leader is not None and self.rng.random() < 0.85:
            return leader
        live = self._live_nodes()
        return self.rng.choice(live) if live else None

    def _propose(self, count: int, marker: bytes | None = None) -> None:
        node = self._target()
        if node is None:
            if self.trace is not None:
                self._trace_step("propose: no live node")
            return
        rng = self.rng
        if marker is not None:
            datas = [marker]
        else:
            datas = []
            for _ in range(count):
                self.proposals += 1
                pad = b"." * rng.choice((0, 0, 0, 40, 300))
                datas.append(b"c%d%s" % (self.proposals, pad))
        for data in datas:
            self.checker.on_propose(data)
        for _attempt in range(2):
            if self.trace is not None:
                self._trace_step(f"propose {len(datas)} at {node.id} ({datas[0][:12]!r})")
            if node.driver.role != _LEADER:
                hinted = self.nodes.get(node.driver.leader)
                if hinted is None or not hinted.alive or hinted is node:
                    return
                node = hinted  # follow the hint once, as a client would
                continue
            driver = node.driver
            self._input(node, lambda d=driver: d.propose(datas, datas, [_NEVER] * len(datas)))
            return

    def _read_index(self) -> None:
        node = self._target()
        if node is None:
            return
        self.reads += 1
        context = b"r%d" % self.reads
        if self.trace is not None:
            self._trace_step(f"read_index at {node.id} ({context!r})")
        self.checker.on_read(context)
        driver = node.driver
        self._input(node, lambda: driver.read([context], _NEVER, context))

    def _on_compact(self, _: Any, __: Any) -> None:
        """A node snapshots its application at the applied index and compacts its log."""
        rng = self.rng
        self._push(self.now + rng.randint(20, 250), _COMPACT, None)
        live = [n for n in self._live_nodes() if n.app.applied > n.storage.snapshot_index]
        if not live:
            return
        node = rng.choice(live)
        if self.trace is not None:
            self._trace_step(f"compact {node.id} at {node.app.applied}")
        self._input(node, lambda: self._compact_now(node))

    def _compact_now(self, node: SimNode) -> None:
        index = node.app.applied
        if index <= node.storage.snapshot_index:
            return
        snapshot = Snapshot(
            SnapshotMeta(index, self.checker.terms[index], self.checker.conf_at(index)),
            node.app.snapshot_data(),
        )
        self.stats["compactions"] += 1
        node.storage.save_snapshot(snapshot)
        node.core.compact(snapshot)

    # -- chaos and calm ------------------------------------------------------------

    def _heal(self) -> None:
        """End of chaos: every crashed node restarts and the network recovers."""
        self.chaos = False
        self.network.heal()
        self.heal_round += 1
        self.healed_at = self.now
        self.stats["heals"] += 1
        for node in list(self.nodes.values()):
            node.crash_on_write = False
            node.paused_until = 0
            if not node.alive and not node.retired and node.incarnation > 0:
                self.stats["restarts"] += 1
                self._boot(node)
        self._push(self.now + 1, _PROBE, self.heal_round)
        self._push(self.now + self.liveness_bound_ms, _DEADLINE, self.heal_round)

    def _on_heal(self, _: Any, __: Any) -> None:
        if self.trace is not None:
            self._trace_step("heal: restart all, reconnect, clear weather")
        self._heal()

    def _on_chaos(self, _: Any, __: Any) -> None:
        rng = self.rng
        self.chaos = True
        if self.trace is not None:
            self._trace_step("chaos begins")
        self._push(self.now + rng.randint(200, 1500), _HEAL, None)
        self._push(self.now + rng.randint(1, 30), _NEMESIS, None)

    def _on_probe(self, heal_round: int, _: Any) -> bool | None:
        if heal_round != self.heal_round or heal_round in self.live_rounds:
            return False
        self._push(self.now + PROBE_INTERVAL_MS, _PROBE, heal_round)
        marker = b"live%d.%d" % (heal_round, self.now)
        self.markers[marker] = heal_round
        self._propose(1, marker)
        return None

    def _on_deadline(self, heal_round: int, _: Any) -> bool | None:
        if heal_round in self.live_rounds or heal_round != self.heal_round:
            return False
        raise Violation(
            f"liveness: nothing proposed after the heal at t={self.healed_at}ms committed "
            f"within {self.liveness_bound_ms}ms"
        )

    def _on_commit(self, entry: Entry) -> None:
        """The global history grew by ``entry`` (called by the checker)."""
        if entry.type == _CONF_CHANGE:
            self.stats["conf_changes"] += 1
            change = ConfChange.decode(entry.data)
            node = self.nodes.get(change.node_id)
            if entry.index > self.settings.nodes:  # past the bootstrap configuration
                if change.type == ConfChangeType.ADD_LEARNER:
                    self.stats["members_added"] += 1
                elif change.type == ConfChangeType.PROMOTE:
                    self.stats["members_promoted"] += 1
                else:
                    self.stats["members_removed"] += 1
                    if node is not None and node.alive and node.role == _LEADER:
                        self.stats["leaders_removed"] += 1
            if change.type == ConfChangeType.REMOVE:
                if node is not None and not node.retired:
                    # The operator deletes the pod some time after the removal commits.
                    self._push(self.now + self.rng.randint(0, 300), _RETIRE, node)
            elif node is None:
                # A new member's process starts once the leader has added it.
                fresh = SimNode(
                    change.node_id,
                    self._tick_interval(),
                    initial=False,
                    storage=self._new_storage(),
                )
                self.nodes[change.node_id] = fresh
                self._push(self.now + self.rng.randint(0, 50), _START, fresh)
            return
        heal_round = self.markers.get(entry.data)
        if heal_round == self.heal_round and heal_round not in self.live_rounds:
            self.live_rounds.add(heal_round)
            recovery = self.now - self.healed_at
            self.stats["max_recovery_ms"] = max(self.stats["max_recovery_ms"], recovery)
            self._note(f"liveness: committed {recovery}ms after the heal")
            target = self.checker.commit_index
            behind = max(
                (target - applied for applied in self._member_applied().values()), default=0
            )
            deadline = self.now + CATCH_UP_BASE_MS + CATCH_UP_PER_ENTRY_MS * behind
            self._push(self.now + 20, _CATCH_UP, (target, self.now), deadline)

    def _member_applied(self) -> dict[int, int]:
        """Applied index of every member of the committed configuration (0 if down)."""
        conf = self.checker.conf_state
        applied = {}
        for member in (*conf.voters, *conf.learners):
            node = self.nodes.get(member)
            applied[member] = node.app.applied if node is not None and node.alive else 0
        return applied

    def _on_catch_up(self, goal: tuple[int, int], deadline: int) -> bool | None:
        """Calm continues until every member has applied what was committed."""
        target, since = goal
        lagging = {m: a for m, a in self._member_applied().items() if a < target}
        if not lagging:
            caught_up = self.now - since
            self.stats["max_catch_up_ms"] = max(self.stats["max_catch_up_ms"], caught_up)
            if self.trace is not None:
                self._trace_step(f"every member applied {target} ({caught_up}ms)")
            self._push(self.now + self.rng.randint(50, 400), _CHAOS, None)
            return None
        if self.now >= deadline:
            raise Violation(
                f"liveness: members {sorted(lagging)} (applied {sorted(lagging.values())}) did "
                f"not apply the commit index {target} within {deadline - since}ms of calm"
            )
        self._push(self.now + 20, _CATCH_UP, goal, deadline)
        return False

    def _on_start(self, node: SimNode, _: Any) -> bool | None:
        if node.retired or node.alive:
            return False
        if self.trace is not None:
            self._trace_step(f"start new member {node.id}")
        self._boot(node)
        return None

    def _on_retire(self, node: SimNode, _: Any) -> bool | None:
        if node.retired:
            return False
        if self.trace is not None:
            self._trace_step(f"retire removed member {node.id}")
        node.retired = True
        node.alive = False
        node.core = None
        node.incarnation += 1
        return None

    def _on_restart(self, node: SimNode, incarnation: int) -> bool | None:
        if node.alive or node.retired or node.incarnation != incarnation:
            return False
        if self.trace is not None:
            self._trace_step(f"restart {node.id}")
        self.stats["restarts"] += 1
        self._boot(node)
        return None

    def _maybe_crash_soon(self, node: SimNode, probability: float) -> None:
        """Aim a crash at an interesting moment: just after a vote or an election."""
        rng = self.rng
        if rng.random() < probability:
            self._push(self.now + rng.randint(0, 12), _CRASH, node, node.incarnation)

    def _on_crash(self, node: SimNode, incarnation: int) -> bool | None:
        if not node.alive or node.incarnation != incarnation or not self.chaos:
            return False
        if self.trace is not None:
            self._trace_step(f"crash {node.id} (aimed)")
        self._crash(node, torn=False)
        self._schedule_restart(node)
        return None

    def _schedule_restart(self, node: SimNode) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            downtime = rng.randint(1, 30)
        elif roll < 0.8:
            downtime = rng.randint(50, 600)
        else:
            return  # stays down until the heal
        self._push(self.now + downtime, _RESTART, node, node.incarnation)

    def _on_nemesis(self, _: Any, __: Any) -> bool | None:
        if not self.chaos:
            return False
        rng = self.rng
        self._push(self.now + rng.randint(5, 80), _NEMESIS, None)
        action = rng.choices(_NEMESIS_ACTIONS, _NEMESIS_WEIGHTS)[0]
        action(self)
        return None

    # -- the nemesis' repertoire ------------------------------------------------

    def _members(self) -> list[int]:
        return [
            node.id for node in self.nodes.values() if not node.retired and node.incarnation > 0
        ]

    def _nemesis_crash(self) -> None:
        live = self._live_nodes()
        if not live:
            return
        leader = self._leader()
        node = leader if leader is not None and self.rng.random() < 0.4 else self.rng.choice(live)
        if self.trace is not None:
            self._trace_step(f"crash {node.id}")
        self._crash(node, torn=False)
        self._schedule_restart(node)

    def _nemesis_power_loss(self) -> None:
        """Power fails on several nodes at once (half the time on all of them)."""
        live = self._live_nodes()
        if not live:
            return
        rng = self.rng
        victims = live if rng.random() < 0.5 else rng.sample(live, rng.randint(1, len(live)))
        self.stats["power_losses"] += 1
        if self.trace is not None:
            self._trace_step(f"power loss on {sorted(n.id for n in victims)}")
        for node in victims:
            self._crash(node, torn=rng.random() < 0.5)
            self._schedule_restart(node)

    def _nemesis_lost_tail(self) -> None:
        """The issue's reproduction, in the small: a node's disk loses the end of its
        log (entries it acknowledged, perhaps committed) across a power cut, sometimes
        while the leader crashes too; the node restarts from what is left."""
        live = self._live_nodes()
        if not live or any(n.storage.owes for n in self.nodes.values() if not n.retired):
            # One lost tail at a time: two at once (on two of three voters) can lose
            # what no quorum holds any more, beyond the fault model; recovery then
            # rightly waits for an operator, and the liveness check would fail.
            return
        rng = self.rng
        leader = self._leader()
        followers = [n for n in live if n is not leader]
        node = rng.choice(followers or live)
        self._crash(node, torn=False)
        cut = node.storage.lose_tail(rng.randint(1, 40))
        node.lost_tail = node.lost_tail or cut > 0
        self.stats["lost_tails"] += 1
        self.stats["lost_tail_entries"] += cut
        if self.trace is not None:
            self._trace_step(f"lost tail: {cut} entries cut off node {node.id}'s log")
        self._schedule_restart(node)
        if leader is not None and leader is not node and rng.random() < 0.5:
            if self.trace is not None:
                self._trace_step(f"crash {leader.id} (with the lost tail)")
            self._crash(leader, torn=False)
            self._schedule_restart(leader)

    def _nemesis_crash_on_write(self) -> None:
        live = self._live_nodes()
        if live:
            node = self.rng.choice(live)
            if self.trace is not None:
                self._trace_step(f"arm crash of {node.id} at its next write")
            node.crash_on_write = True

    def _nemesis_pause(self) -> None:
        live = self._live_nodes()
        if not live:
            return
        leader = self._leader()
        node = leader if leader is not None and self.rng.random() < 0.4 else self.rng.choice(live)
        node.paused_until = self.now + self.rng.randint(30, 600)
        self.stats["pauses"] += 1
        if self.trace is not None:
            self._trace_step(f"pause {node.id} until t={node.paused_until}")

    def _nemesis_restart(self) -> None:
        down = [n for n in self.nodes.values() if not n.alive and not n.retired and n.incarnation]
        if down:
            node = self.rng.choice(down)
            if self.trace is not None:
                self._trace_step(f"restart {node.id}")
            self.stats["restarts"] += 1
            self._boot(node)

    def _nemesis_partition(self) -> None:
        kind = self.rng.choice(("split", "one-way", "isolate-leader", "bridge"))
        leader = self._leader()
        self.network.partition(self._members(), self.rng, kind, leader.id if leader else 0)
        self.stats["partitions"] += 1
        if self.trace is not None:
            self._trace_step(f"partition: {self.network.description}")

    def _nemesis_heal_links(self) -> None:
        self.network.heal_links()
        if self.trace is not None:
            self._trace_step("links healed")

    def _nemesis_weather(self) -> None:
        self.network.set_weather(self.rng)
        if self.trace is not None:
            self._trace_step(f"weather: {self.network.description}")

    def _nemesis_membership(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        rng = self.rng
        conf = self.checker.conf_state
        members = len(conf.voters) + len(conf.learners)
        choices = []
        if members < MAX_MEMBERS:
            choices.append("add")
        if conf.learners:
            choices.append("promote")
        if len(conf.voters) > 3 or conf.learners:
            choices.append("remove")
        if not choices:
            return
        kind = rng.choice(choices)
        if kind == "add":
            change = ConfChange(ConfChangeType.ADD_LEARNER, self.next_node_id, b"")
        elif kind == "promote":
            change = ConfChange(ConfChangeType.PROMOTE, rng.choice(conf.learners), b"")
        else:
            pool = list(conf.learners)
            if len(conf.voters) > 3:
                pool.extend(conf.voters)
            victim = leader.id if leader.id in pool and rng.random() < 0.3 else rng.choice(pool)
            change = ConfChange(ConfChangeType.REMOVE, victim, b"")
        if self.trace is not None:
            self._trace_step(
                f"propose {ConfChangeType(change.type).name} {change.node_id} at {leader.id}"
            )
        driver = leader.driver
        self._input(leader, lambda: driver.propose_conf_change(b"", change, _NEVER))
        if kind == "add":
            self.next_node_id += 1

    def _nemesis_transfer(self) -> None:
        live = self._live_nodes()
        voters = self.checker.conf_state.voters
        if not live or len(voters) < 2:
            return
        node = self._leader() if self.rng.random() < 0.8 else self.rng.choice(live)
        if node is None:
            return
        target = self.rng.choice([v for v in voters if v != node.id] or list(voters))
        if self.trace is not None:
            self._trace_step(f"transfer leadership {node.id} -> {target}")
        self.stats["transfers"] += 1
        self._input(node, lambda: _quietly(node.core.transfer_leadership, target))


def _quietly(call: Callable[[int], None], arg: int) -> None:
    with contextlib.suppress(NotLeaderError, ProposalDroppedError):
        call(arg)


_NEMESIS_TABLE: tuple[tuple[Callable[[Simulation], None], int], ...] = (
    (Simulation._nemesis_crash, 10),
    (Simulation._nemesis_crash_on_write, 4),
    (Simulation._nemesis_restart, 6),
    (Simulation._nemesis_pause, 4),
    (Simulation._nemesis_partition, 8),
    (Simulation._nemesis_heal_links, 5),
    (Simulation._nemesis_weather, 5),
    (Simulation._nemesis_membership, 7),
    (Simulation._nemesis_transfer, 5),
    (Simulation._nemesis_power_loss, 3),
    (Simulation._nemesis_lost_tail, 3),
)
_NEMESIS_ACTIONS = [action for action, _ in _NEMESIS_TABLE]
_NEMESIS_WEIGHTS = [weight for _, weight in _NEMESIS_TABLE]


def run_seed(
    seed: int,
    steps: int,
    nodes: str | int = "mixed",
    *,
    raft: ModuleType | None = None,
    trace: Callable[[str], None] | None = None,
    commit_rule: bool = True,
    driver: ModuleType | None = None,
    disk: ModuleType | None = None,
) -> SeedResult:
    """Run one seed for ``steps`` steps and report what happened.

    ``commit_rule=False`` leaves out the direct check of the commit rule, so
    that a core breaking it is caught only by what it leads to (figure 8).
    """
    simulation = Simulation(
        seed,
        nodes_for_seed(seed, nodes),
        raft=raft,
        trace=trace,
        commit_rule=commit_rule,
        driver=driver,
        disk=disk,
    )
    started = time.process_time()
    result = simulation.run(steps)
    result.cpu_seconds = time.process_time() - started
    return result


def print_trace(line: str) -> None:
    sys.stdout.write(line + "\n")

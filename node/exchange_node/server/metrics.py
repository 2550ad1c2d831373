"""The node's Prometheus metrics, in their own registry.

Names, types and labels are exactly the table in docs/node-contract.md (the
operator's dashboards and alerts use only those); a test scrapes a live node
and checks every one. A dedicated ``CollectorRegistry`` keeps two nodes in
one test process (or a library's default collectors) from colliding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

ROLES = ("follower", "pre_candidate", "candidate", "leader", "learner")
PROPOSAL_OUTCOMES = ("committed", "dropped", "not_leader", "overloaded")
PEER_REJECT_REASONS = ("not_member", "joining", "self", "digest_not_voter", "digest_conflict")
"""Why the node refused a peer message before its consensus core (server/shell.py)."""
CHECKPOINT_OUTCOMES = ("hashed", "skipped")
"""What became of a divergence checkpoint on this replica (server/shell.py)."""

# Latency buckets from 50 us (an fsync on a fast disk) to 10 s.
_FAST_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


class NodeMetrics:
    """Every metric of the contract's table, registered in ``self.registry``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # ``*_created`` series double the exposition and no dashboard uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = self.registry = CollectorRegistry(auto_describe=True)
        # The standard collectors every Python exporter serves (process_*, python_*),
        # in this registry so two nodes in one test process do not collide.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        from exchange_node import version

        self.build_info = Gauge(
            "exchange_build_info",
            "1, labelled with the build: package version, git commit, Python version",
            ["version", "git_sha", "python"],
            registry=r,
        )
        self.build_info.labels(
            version=version.version(), git_sha=version.git_sha(), python=version.python_version()
        ).set(1)
        self.role = Gauge(
            "exchange_raft_role", "1 on the node's current role", ["role"], registry=r
        )
        self.is_leader = Gauge("exchange_raft_is_leader", "1 when this node leads", registry=r)
        self.term = Gauge("exchange_raft_term", "current Raft term", registry=r)
        self.commit_index = Gauge("exchange_raft_commit_index", "commit index", registry=r)
        self.applied_index = Gauge("exchange_raft_applied_index", "applied index", registry=r)
        self.leader_changes = Counter(
            "exchange_raft_leader_changes", "times the known leader changed", registry=r
        )
        self.members = Gauge(
            "exchange_raft_members", "members of the configuration", ["kind"], registry=r
        )
        self.proposals = Counter(
            "exchange_raft_proposals", "client proposals by outcome", ["outcome"], registry=r
        )
        self.commit_latency = Histogram(
            "exchange_raft_commit_latency_seconds",
            "proposal to applied, on the proposing leader",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.follower_regressions = Gauge(
            "exchange_raft_follower_regressions",
            "times the leader found the peer's log shorter than it believed (a lost tail)",
            ["peer"],
            registry=r,
        )
        self.member_stuck = Gauge(
            "exchange_member_stuck",
            "1 while the member is stuck behind: short of an index committed "
            "STUCK_S ago (server/divergence.py), judged by the leader for its peers "
            "and by every member for itself",
            ["member"],
            registry=r,
        )
        self.follower_healthy = Gauge(
            "exchange_raft_follower_healthy",
            "1 unless the peer's log went backwards and has not caught up again",
            ["peer"],
            registry=r,
        )
        self.recovering = Gauge(
            "exchange_raft_recovering_index",
            "nonzero while this node recovers a lost log tail: the index it must get back",
            registry=r,
        )
        self.follower_lag = Gauge(
            "exchange_raft_follower_lag_entries",
            "leader's last index minus the peer's match index",
            ["peer"],
            registry=r,
        )
        self.wal_append = Histogram(
            "exchange_wal_append_seconds",
            "WAL write of one Ready (without fsync)",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.wal_fsync = Histogram(
            "exchange_wal_fsync_seconds", "WAL fsync", buckets=_FAST_BUCKETS, registry=r
        )
        self.snapshots = Counter("exchange_snapshots", "snapshots taken or installed", registry=r)
        self.snapshot_seconds = Histogram(
            "exchange_snapshot_seconds",
            "time to take and persist a snapshot",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.snapshot_fork_seconds = Histogram(
            "exchange_snapshot_fork_seconds",
            "the event loop's share of taking a snapshot or checkpoint: the fork() call",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "exchange_event_loop_lag_seconds",
            "how late the event loop woke up for each Raft tick: a garbage collection, a"
            " fork(), a long callback or a starved CPU held it (server/stalls.py)",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.gc_pause = Histogram(
            "exchange_gc_pause_seconds",
            "cyclic garbage collections of the process, by generation: each one holds"
            " every thread, the event loop included (server/stalls.py)",
            ["generation"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.snapshot_in_progress = Gauge(
            "exchange_snapshot_in_progress",
            "1 while a snapshot this node started is not durable yet",
            registry=r,
        )
        self.snapshot_failures = Counter(
            "exchange_snapshot_failures",
            "snapshots or checkpoints whose child or save failed (nothing put in force)",
            registry=r,
        )
        self.divergence = Counter(
            "exchange_state_divergence",
            "peer state hash differed from ours at the same applied index",
            registry=r,
        )
        self.checkpoints = Counter(
            "exchange_divergence_checkpoints",
            "divergence checkpoints by outcome: hashed (this replica's digest at the index "
            "was recorded) or skipped (a hash of an earlier index was still running, so "
            "this replica has no digest there; the next checkpoint is compared)",
            ["outcome"],
            registry=r,
        )
        self.peer_messages_rejected = Counter(
            "exchange_peer_messages_rejected",
            "peer messages and state digests refused before the consensus core: not_member, "
            "joining, self, digest_not_voter, digest_conflict",
            ["reason"],
            registry=r,
        )
        self.http_request = Histogram(
            "exchange_http_request_seconds",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.orders = Counter(
            "exchange_orders", "new orders applied", ["symbol", "side"], registry=r
        )
        self.fills = Counter("exchange_fills", "fills applied", ["symbol"], registry=r)
        self.rejects = Counter("exchange_rejects", "commands rejected", ["reason"], registry=r)
        self.book_depth = Gauge(
            "exchange_book_depth", "resting orders per book side", ["symbol", "side"], registry=r
        )
        self.ws_subscribers = Gauge(
            "exchange_ws_subscribers", "live event subscribers (WebSocket streams)", registry=r
        )
        for role in ROLES:
            self.role.labels(role=role).set(0)
        for outcome in PROPOSAL_OUTCOMES:
            self.proposals.labels(outcome=outcome)
        for outcome in CHECKPOINT_OUTCOMES:
            self.checkpoints.labels(outcome=outcome)
        for kind in ("voter", "learner"):
            self.members.labels(kind=kind).set(0)
        for reason in PEER_REJECT_REASONS:
            self.peer_messages_rejected.labels(reason=reason)

    def watch_transport(self, stats: Callable[[], Any]) -> None:
        """Export the peer transport's counters, read at scrape time from ``stats()``
        (a ``TransportStats``, or None before the transport exists)."""
        self.registry.register(_TransportCollector(stats))

    def watch_api(self, refusals: Callable[[], Mapping[str, int]]) -> None:
        """Export the public API's refusals per limit (``exchange_api_refusals_total``),
        read at scrape time; a second call (a rebuilt application) replaces the source."""
        collector = getattr(self, "_api_collector", None)
        if collector is None:
            collector = self._api_collector = _ApiRefusalsCollector(refusals)
            self.registry.register(collector)
        collector.refusals = refusals

    def watch_storage(self, data_dir: Path | str) -> None:
        """Export the bytes on disk of the WAL segments and of the newest snapshot in
        ``data_dir`` (``exchange_wal_bytes``, ``exchange_snapshot_bytes``), read at
        scrape time; a second call replaces the directory."""
        collector = getattr(self, "_storage_collector", None)
        if collector is None:
            collector = self._storage_collector = _StorageCollector(Path(data_dir))
            self.registry.register(collector)
        collector.data_dir = Path(data_dir)

    def watch_memory(self, report: Callable[[], Mapping[str, float]]) -> None:
        """Export the ``exchange_memory_*`` gauges: what the node holds against its
        configured bounds, read at scrape time from ``report()`` (server/shell.py,
        ``Node.memory_report``) and the WebSocket hub (``watch_ws``)."""
        collector = getattr(self, "_memory_collector", None)
        if collector is None:
            collector = self._memory_collector = _MemoryCollector()
            self.registry.register(collector)
        collector.report = report

    def watch_ws(self, hub: Callable[[], Any], limit_bytes: int) -> None:
        """The WebSocket hub whose send queues ``exchange_memory_ws_buffer_bytes`` sums
        (api/ws.py ``WsHub``: its ``connections``, each with ``pending_bytes()``), and
        their bound (connections times the per-connection cap); a second call (a
        rebuilt application) replaces both."""
        collector = getattr(self, "_memory_collector", None)
        if collector is None:
            collector = self._memory_collector = _MemoryCollector()
            self.registry.register(collector)
        collector.hub = hub
        collector.ws_limit_bytes = limit_bytes

    def set_role(self, role: str) -> None:
        for name in ROLES:
            self.role.labels(role=name).set(1 if name == role else 0)
        self.is_leader.set(1 if role == "leader" else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ApiRefusalsCollector(Collector):
    """``exchange_api_refusals_total{limit}``: requests and connections a per-client
    limit refused (docs/api.md, "Bounded resources per client")."""

    def __init__(self, refusals: Callable[[], Mapping[str, int]]) -> None:
        self.refusals = refusals

    def describe(self) -> Iterator[Metric]:
        return iter([self._family()])

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for limit, count in sorted(self.refusals().items()):
            family.add_metric([limit], count)
        return iter([family])

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "exchange_api_refusals", "requests refused by a per-client limit", labels=["limit"]
        )


MEMORY_GAUGES = {
    "log_bytes": "log entries applied since the newest snapshot: data plus 150 bytes each",
    "log_entries": "entries in the in-memory Raft log (after the newest snapshot)",
    "log_limit_bytes": "--snapshot-bytes: a snapshot is taken once log_bytes reaches it",
    "exactly_once_keys": "results the engine keeps for exactly-once (client order ids)",
    "exactly_once_keys_limit": "the engine's bound on exactly_once_keys",
    "finished_orders": "finished orders the engine keeps for queries",
    "finished_orders_limit": "the engine's bound on finished_orders",
    "ws_buffer_bytes": "bytes queued for WebSocket clients (send queues and socket buffers)",
    "ws_buffer_limit_bytes": "the bound on ws_buffer_bytes: connections times their queue cap",
    "ws_connections": "open WebSocket connections",
}
"""``exchange_memory_<name>`` gauges (docs/observability.md, "Memory")."""


class _MemoryCollector(Collector):
    """``exchange_memory_*``: see ``MEMORY_GAUGES``. A value its source cannot give
    (no engine yet, no HTTP application) is left out rather than reported as 0."""

    def __init__(self) -> None:
        self.report: Callable[[], Mapping[str, float]] = dict
        self.hub: Callable[[], Any] = lambda: None
        self.ws_limit_bytes: int | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(
            [GaugeMetricFamily(f"exchange_memory_{n}", h) for n, h in MEMORY_GAUGES.items()]
        )

    def collect(self) -> Iterator[Metric]:
        values = dict(self.report())
        hub = self.hub()
        connections = getattr(hub, "connections", None)
        if connections is not None:
            live = list(connections)
            values["ws_connections"] = len(live)
            values["ws_buffer_bytes"] = sum(c.pending_bytes() for c in live)
            if self.ws_limit_bytes is not None:
                values["ws_buffer_limit_bytes"] = self.ws_limit_bytes
        families = []
        for name, help_text in MEMORY_GAUGES.items():
            if name in values:
                family = GaugeMetricFamily(f"exchange_memory_{name}", help_text)
                family.add_metric([], values[name])
                families.append(family)
        return iter(families)


class _StorageCollector(Collector):
    """``exchange_wal_bytes`` and ``exchange_snapshot_bytes``: the sizes of the files
    storage/wal.py keeps (``wal-*.log`` segments, ``snap-<index>-<term>.snap``)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        wal, wal_segments, snapshot = families = self._families()
        wal_bytes = segments = 0
        newest: tuple[str, int] | None = None
        try:
            entries = list(os.scandir(self.data_dir))
        except OSError:
            entries = []
        for entry in entries:
            try:
                if entry.name.startswith("wal-") and entry.name.endswith(".log"):
                    wal_bytes += entry.stat().st_size
                    segments += 1
                elif (
                    entry.name.startswith("snap-")
                    and entry.name.endswith(".snap")
                    # names sort by index (fixed-width hex): the largest is the newest
                    and (newest is None or entry.name > newest[0])
                ):
                    newest = (entry.name, entry.stat().st_size)
            except OSError:  # compaction deleted it between listing and stat
                continue
        wal.add_metric([], wal_bytes)
        wal_segments.add_metric([], segments)
        snapshot.add_metric([], newest[1] if newest else 0)
        return iter(families)

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("exchange_wal_bytes", "bytes of the WAL's segment files on disk"),
            GaugeMetricFamily("exchange_wal_segments", "WAL segment files on disk"),
            GaugeMetricFamily(
                "exchange_snapshot_bytes", "bytes of the newest snapshot file (0 without one)"
            ),
        ]


class _TransportCollector(Collector):
    """``exchange_peer_*``: what the gRPC peer transport did, per peer where it knows."""

    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        sent, received, dropped, reconnects, connected, rejected, tls, gone = families
        stats = self._stats()
        if stats is not None:
            for peer, p in sorted(stats.peers.items()):
                label = [str(peer)]
                sent.add_metric(label, p.messages_sent)
                dropped.add_metric(label, p.dropped)
                reconnects.add_metric(label, p.reconnects)
                connected.add_metric(label, 1 if p.connected else 0)
            received.add_metric([], stats.messages_received)
            rejected.add_metric(["checksum"], stats.checksum_failures)
            rejected.add_metric(["decode"], stats.decode_failures)
            rejected.add_metric(["misdirected"], stats.misdirected)
            rejected.add_metric(["sender_mismatch"], stats.sender_mismatch)
            rejected.add_metric(["wrong_cluster"], stats.wrong_cluster)
            rejected.add_metric(["unauthenticated"], stats.unauthenticated)
            rejected.add_metric(["snapshot_busy"], stats.snapshot_busy)
            rejected.add_metric(["snapshot_timeout"], stats.snapshot_timeouts)
            rejected.add_metric(["snapshot_too_large"], stats.snapshot_oversized)
            tls.add_metric([], 1 if stats.tls_enabled else 0)
            gone.add_metric([], stats.peers_gone)
        return iter(families)

    @staticmethod
    def _families() -> list[Any]:
        return [
            CounterMetricFamily(
                "exchange_peer_messages_sent",
                "Raft messages written to a peer's stream",
                labels=["peer"],
            ),
            CounterMetricFamily(
                "exchange_peer_messages_received", "Raft messages received from all peers"
            ),
            CounterMetricFamily(
                "exchange_peer_messages_dropped",
                "messages to a peer dropped (queue full, stream broken, unencodable)",
                labels=["peer"],
            ),
            CounterMetricFamily(
                "exchange_peer_reconnects",
                "replication streams to a peer re-established after a break",
                labels=["peer"],
            ),
            GaugeMetricFamily(
                "exchange_peer_connected", "1 while the stream to a peer is up", labels=["peer"]
            ),
            CounterMetricFamily(
                "exchange_peer_frames_rejected",
                "received frames or calls dropped unread: checksum, decode, misdirected, "
                "sender_mismatch (not the member its certificate names), wrong_cluster, "
                "unauthenticated, snapshot_busy, snapshot_timeout, snapshot_too_large",
                labels=["reason"],
            ),
            GaugeMetricFamily(
                "exchange_peer_tls_enabled",
                "1 when the peer port requires mutual TLS, 0 with --insecure-peers",
            ),
            CounterMetricFamily(
                "exchange_peer_gone",
                "broken peer streams after which the peer refused a new connection (its "
                "process died): a follower of it campaigns at once (docs/elections.md)",
            ),
        ]

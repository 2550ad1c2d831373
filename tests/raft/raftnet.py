"""A tiny in-test network: cores, their "disks", and a message queue.

Delivery is explicit so tests read like transcripts: who sent what to whom,
what was dropped, what committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from exchange_node.raft import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    RaftConfig,
    RaftCore,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)


@dataclass
class Disk:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def save(
        self, entries: list[Entry], hard_state: HardState | None, snapshot: Snapshot | None
    ) -> None:
        if snapshot is not None:
            self.snapshot = snapshot
            self.entries = [e for e in self.entries if e.index > snapshot.meta.index]
            if self.entries and self.entries[0].index != snapshot.meta.index + 1:
                self.entries = []
        if entries:
            first = entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + list(entries)
        if hard_state is not None:
            self.hard_state = hard_state


def bootstrap_changes(ids: Iterable[int]) -> list[ConfChange]:
    return [ConfChange(ConfChangeType.PROMOTE, i, f"node-{i}".encode()) for i in ids]


class Network:
    def __init__(self, ids: Iterable[int], *, bootstrap: bool = True, **config: object) -> None:
        self.ids = list(ids)
        self.config = config
        self.cores: dict[int, RaftCore] = {}
        self.disks: dict[int, Disk] = {}
        self.applied: dict[int, list[Entry]] = {}
        self.read_states: dict[int, list[ReadState]] = {}
        self.sent: list[Message] = []
        """Every message handed out by a Ready, delivered or not (for transcripts)."""
        self.queue: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.drop: Callable[[Message], bool] = lambda m: False
        self.snapshot_reports: bool = True
        self.defer_advance: Callable[[], bool] = lambda: False
        self.unadvanced: dict[int, list[Ready]] = {}
        self.bootstrap = bootstrap
        changes = bootstrap_changes(self.ids) if bootstrap else None
        for i in self.ids:
            self.add_node(i, bootstrap=changes)

    def add_node(self, node_id: int, *, bootstrap: list[ConfChange] | None = None) -> RaftCore:
        core = RaftCore(self._config(node_id), bootstrap=bootstrap)
        self.cores[node_id] = core
        self.disks[node_id] = Disk()
        self.applied[node_id] = []
        self.read_states[node_id] = []
        return core

    def _config(self, node_id: int) -> RaftConfig:
        return RaftConfig(node_id=node_id, **self.config)  # type: ignore[arg-type]

    # -- driving -------------------------------------------------------------

    def process(self, node_id: int) -> None:
        core = self.cores[node_id]
        while core.has_ready():
            rd = core.ready()
            self.disks[node_id].save(rd.entries, rd.hard_state, rd.snapshot)
            for m in rd.messages:
                self.sent.append(m)
                if (m.frm, m.to) in self.cut or self.drop(m) or m.to not in self.cores:
                    continue
                self.queue.append(m)
            if rd.snapshot is not None:
                # The application restores its state from the snapshot's data.
                restored = [d for d in rd.snapshot.data.split(b"|") if d]
                self.applied[node_id] = [Entry(0, 0, d) for d in restored]
            self.applied[node_id].extend(rd.committed_entries)
            self.read_states[node_id].extend(rd.read_states)
            held = self.unadvanced.setdefault(node_id, [])
            held.append(rd)
            if not self.defer_advance():
                # advance() may lag behind ready(): acknowledge in order, later.
                for done in held:
                    core.advance(done)
                held.clear()

    def process_all(self) -> None:
        for i in list(self.cores):
            self.process(i)

    def deliver(self, limit: int = 100_000) -> int:
        """Run until no node has work and no message is queued; returns messages delivered."""
        delivered = 0
        self.process_all()
        while self.queue:
            assert delivered < limit, "network did not settle"
            m = self.queue.pop(0)
            if m.to in self.cores:
                self.cores[m.to].step(m)
                if m.type is MessageType.SNAP and self.snapshot_reports:
                    leader = self.cores.get(m.frm)
                    if leader is not None:
                        leader.report_snapshot(m.to, True)
            delivered += 1
            self.process_all()
        return delivered

    def deliver_batched(self, rounds: int = 1000) -> None:
        """Like ``deliver``, but each node steps every message queued for it before
        its next Ready, as a server draining its inbox does."""
        self.process_all()
        for _ in range(rounds):
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for m in batch:
                if m.to in self.cores:
                    self.cores[m.to].step(m)
            self.process_all()
        raise AssertionError("network did not settle")

    def tick(self, node_id: int, times: int = 1) -> None:
        for _ in range(times):
            self.cores[node_id].tick()
        self.process(node_id)

    def tick_all(self, times: int = 1) -> None:
        for _ in range(times):
            for i in self.cores:
                self.cores[i].tick()
            self.deliver()

    def campaign(self, node_id: int) -> None:
        """Make ``node_id``'s election timer fire (others are not ticked), then settle."""
        core = self.cores[node_id]
        core.election_elapsed = max(core.election_elapsed, core.randomized_election_timeout - 1)
        core.tick()
        self.deliver()

    def elect(self, node_id: int, attempts: int = 3) -> RaftCore:
        """Campaign until ``node_id`` leads (a lost election is retried in the next term)."""
        for _ in range(attempts):
            self.campaign(node_id)
            if self.cores[node_id].role is Role.LEADER:
                break
        assert self.cores[node_id].role is Role.LEADER
        return self.cores[node_id]

    def isolate(self, node_id: int) -> None:
        for other in self.ids + list(self.cores):
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def heal(self) -> None:
        self.cut.clear()
        self.drop = lambda m: False

    def crash_and_restart(self, node_id: int) -> RaftCore:
        """Lose everything not persisted through a Ready, rebuild from the disk."""
        disk = self.disks[node_id]
        # An initial member that crashed before persisting anything bootstraps again.
        changes = bootstrap_changes(self.ids) if self.bootstrap and node_id in self.ids else None
        core = RaftCore(
            self._config(node_id),
            hard_state=disk.hard_state,
            snapshot=disk.snapshot,
            entries=list(disk.entries),
            bootstrap=changes,
        )
        self.cores[node_id] = core
        self.queue = [m for m in self.queue if m.to != node_id]
        self.unadvanced.pop(node_id, None)
        self.applied[node_id] = []
        return core

    def take_snapshot(self, node_id: int) -> Snapshot:
        """What the application does: snapshot at its applied index, then compact."""
        core = self.cores[node_id]
        index = core.log.applied_index
        term = core.log.term(index)
        assert term is not None
        state = b"|".join(self.data_applied(node_id))
        snapshot = Snapshot(SnapshotMeta(index, term, core.conf_state), state)
        core.compact(snapshot)
        disk = self.disks[node_id]
        disk.snapshot = snapshot
        disk.entries = [e for e in disk.entries if e.index > index]
        return snapshot

    # -- observing -----------------------------------------------------------

    def leaders(self) -> list[int]:
        return [i for i, c in self.cores.items() if c.role is Role.LEADER]

    def data_applied(self, node_id: int) -> list[bytes]:
        return [e.data for e in self.applied[node_id] if e.type == EntryType.NORMAL and e.data]

    def log_terms(self, node_id: int) -> list[tuple[int, int]]:
        log = self.cores[node_id].log
        return [(e.index, e.term) for e in log.entries]

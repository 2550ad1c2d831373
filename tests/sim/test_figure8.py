"""Figure 8 of the Raft paper, scripted step by step on the simulator's cluster.

The random search catches a core that commits an earlier term's entry by
counting through the direct commit-rule check. This transcript shows that
the *consequence* of that bug (a committed entry that a later leader does
not have, and overwrites) is caught by the safety checkers alone, with the
commit-rule check switched off; and that the real core goes through the
same schedule without any violation.

Cluster: S1, S2, S3; one entry per APP message; no pre-vote, no check-quorum,
so elections are driven by ticks alone. The network holds every message
until the script delivers or drops it.
"""

from __future__ import annotations

import importlib

import pytest
from exchange_node.raft.types import MessageType, Role
from exchange_node.sim.checkers import Violation
from exchange_node.sim.mutation import load_mutant
from exchange_node.sim.simulator import _DELIVER, _SYNCED, SimSettings, Simulation

SETTINGS = SimSettings(
    nodes=3,
    election_tick=10,
    heartbeat_tick=1,
    max_msg_entries=1,
    max_msg_bytes=1 << 20,
    max_inflight=4,
    pre_vote=False,
    check_quorum=False,
)


class Script:
    """Drives a ``Simulation`` by hand: nothing happens unless the script says so."""

    def __init__(self, raft_package: str | None) -> None:
        raft = importlib.import_module(raft_package) if raft_package else None
        self.sim = Simulation(0, 3, raft=raft, commit_rule=False, settings=SETTINGS)
        self.in_flight: list = []
        self._collect()

    def _collect(self) -> None:
        """Take the messages out of the event queue; complete every write in flight
        (its fsync); drop every other event."""
        while self.sim.heap:
            events, self.sim.heap = sorted(self.sim.heap), []
            for event in events:
                if event[2] == _DELIVER:
                    self.in_flight.append(event[3])
                elif event[2] == _SYNCED:
                    self.sim._on_synced(event[3], event[4])

    def node(self, node_id: int):
        return self.sim.nodes[node_id]

    def deliver(self, frm: int, to: int, kind: MessageType | None = None) -> int:
        """Deliver the held messages from ``frm`` to ``to`` (of ``kind``), oldest first."""
        delivered = 0
        while True:
            match = next(
                (
                    m
                    for m in self.in_flight
                    if m.frm == frm and m.to == to and (kind is None or m.type == kind)
                ),
                None,
            )
            if match is None:
                return delivered
            self.in_flight.remove(match)
            target = self.node(to)
            if target.alive:
                self.sim._input(target, lambda t=target, m=match: t.driver.step(m))
                self._collect()
            delivered += 1

    def settle(self) -> None:
        """Deliver everything between live nodes until the network is quiet."""
        for _ in range(200):
            live = [m for m in self.in_flight if self.node(m.to).alive and self.node(m.frm).alive]
            if not live:
                return
            self.deliver(live[0].frm, live[0].to)
        raise AssertionError("the network never went quiet")

    def drop_from(self, node_id: int) -> None:
        self.in_flight = [m for m in self.in_flight if m.frm != node_id]

    def campaign(self, node_id: int) -> None:
        """Tick ``node_id`` alone until its election timer fires and it asks for votes."""
        node = self.node(node_id)
        term = node.core.status().term
        for _ in range(100):
            self.sim._input(node, node.driver.tick)
            self._collect()
            status = node.core.status()
            if status.role == Role.CANDIDATE and status.term > term:
                return
        raise AssertionError(f"S{node_id} never campaigned")

    def elect(self, node_id: int, voter: int) -> None:
        """Campaign until ``voter`` grants its vote (a restarted node's first
        campaign may land in a term the voter already voted in)."""
        for _ in range(3):
            self.campaign(node_id)
            self.deliver(node_id, voter, MessageType.VOTE)
            self.deliver(voter, node_id, MessageType.VOTE_RESP)
            if self.node(node_id).role == Role.LEADER:
                return
        raise AssertionError(f"S{node_id} did not win S{voter}'s vote")

    def propose(self, node_id: int, data: bytes) -> None:
        self.sim.checker.on_propose(data)
        node = self.node(node_id)
        self.sim._input(node, lambda: node.driver.propose([data], [data], [float("inf")]))
        self._collect()

    def crash(self, node_id: int) -> None:
        self.sim._crash(self.node(node_id), torn=False)
        self.drop_from(node_id)

    def restart(self, node_id: int) -> None:
        self.sim._boot(self.node(node_id))
        self._collect()

    def log_terms(self, node_id: int) -> list[int]:
        storage = self.node(node_id).storage
        return [storage.term_at(i) for i in range(1, storage.last_index() + 1)]


def figure_8(script: Script) -> None:
    s = script
    # (a) S1 leads term 2; its no-op (index 4) reaches everyone and commits.
    s.elect(1, voter=2)
    s.settle()
    assert s.log_terms(2) == [1, 1, 1, 2]
    # S1 appends index 5 in term 2, but crashes before sending it anywhere.
    s.propose(1, b"x")
    s.crash(1)
    # (b) S3 leads term 3 with S2's vote and appends its no-op at index 5; it
    # crashes before the no-op leaves.
    s.elect(3, voter=2)
    assert s.log_terms(3) == [1, 1, 1, 2, 3]
    s.crash(3)
    # (c) S1 comes back and leads term 4 (S2's log is not newer than S1's).
    s.restart(1)
    s.elect(1, voter=2)
    assert s.log_terms(1) == [1, 1, 1, 2, 2, 4]
    # S1 repairs S2 one entry at a time: the probe is rejected, then index 5
    # (term 2) alone goes out and is acknowledged. Index 5 is now on a majority,
    # but it is not of S1's term: a correct leader must not count it committed.
    for _ in range(3):
        s.deliver(1, 2, MessageType.APP)
        s.deliver(2, 1, MessageType.APP_RESP)
        if s.log_terms(2)[4:5] == [2]:
            break
    assert s.log_terms(2) == [1, 1, 1, 2, 2]
    # S1 crashes before its own no-op (index 6, term 4) reaches S2.
    s.crash(1)
    # (d) S3 comes back and wins term 5 with S2's vote: its last term 3 beats
    # S2's last term 2. It overwrites index 5 on S2 with its own entry.
    s.restart(3)
    s.elect(3, voter=2)
    s.settle()
    assert s.log_terms(2)[4] == 3


def test_the_real_core_survives_figure_8():
    script = Script(None)
    figure_8(script)
    # Index 5 of term 2 was never committed, so replacing it broke nothing:
    # the history holds S3's entries there.
    assert script.sim.checker.terms[5:7] == [3, 5]


def test_counting_an_old_term_entry_as_committed_is_caught_by_leader_completeness():
    script = Script(load_mutant("commit-previous-term"))
    with pytest.raises(Violation, match="leader completeness: leader 3 of term 5 lacks"):
        figure_8(script)
    assert script.sim.checker.terms[5] == 2  # the mutant committed S1's term-2 entry

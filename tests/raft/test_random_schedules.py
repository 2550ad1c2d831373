"""Randomized fault schedules with safety checks after every step.

Not the deterministic simulator (that lives in ``exchange_node.sim``); a quick
in-folder guard that the core stays safe when messages are dropped,
duplicated and reordered while nodes crash, restart, compact, change
membership and transfer leadership.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

import pytest
from exchange_node.raft import (
    ConfChange,
    ConfChangeType,
    EntryType,
    NotLeaderError,
    ProposalDroppedError,
    Role,
)
from raftnet import Network


class ChaosNet(Network):
    def __init__(self, ids: list[int], rng: random.Random, **config: object) -> None:
        self.rng = rng
        self.committed: dict[int, tuple[int, bytes]] = {}
        """index -> (term, data) of every entry any node applied."""
        self.committed_by: dict[int, int] = {}
        self.leader_of_term: dict[int, int] = {}
        super().__init__(ids, **config)

    def process(self, node_id: int) -> None:
        before = len(self.applied[node_id])
        super().process(node_id)
        for e in self.applied[node_id][before:]:
            if e.index == 0:
                continue  # restored from a snapshot
            seen = self.committed.setdefault(e.index, (e.term, e.data))
            assert seen == (e.term, e.data), f"index {e.index} applied differently"
            # An upper bound of the term it was committed in.
            self.committed_by.setdefault(e.index, max(c.term for c in self.cores.values()))

    def deliver_some(self) -> None:
        self.process_all()
        for _ in range(self.rng.randint(0, 6)):
            if not self.queue:
                return
            m = self.queue.pop(self.rng.randrange(len(self.queue)))
            roll = self.rng.random()
            if roll < 0.1:
                continue  # dropped
            if roll < 0.15:
                self.queue.append(m)  # duplicated
            if m.to in self.cores:
                self.cores[m.to].step(m)
            self.process(m.to)

    def check(self) -> None:
        for i, core in self.cores.items():
            if core.role is Role.LEADER:
                assert self.leader_of_term.setdefault(core.term, i) == i, "two leaders in a term"
                # Leader completeness: a leader of a later term than an entry's
                # commit holds that entry (a stale leader of an older term may not).
                for index, (term, _) in self.committed.items():
                    if index > core.log.offset and core.term > self.committed_by[index]:
                        assert core.log.term(index) == term, "leader lacks a committed entry"
        # Log matching: same index and term means the same entry in every log.
        by_position: dict[tuple[int, int], bytes] = {}
        for core in self.cores.values():
            for e in core.log.entries:
                assert by_position.setdefault((e.index, e.term), e.data) == e.data


def run_schedule(
    seed: int, nodes: int, steps: int, after_step: Callable[[ChaosNet], None] | None = None
) -> ChaosNet:
    rng = random.Random(seed)
    ids = list(range(1, nodes + 1))
    net = ChaosNet(ids, rng, seed=seed, max_msg_entries=rng.choice([1, 3, 64]), max_inflight=4)
    if seed % 2:
        # Odd seeds also hold Readies unacknowledged across later steps.
        net.defer_advance = lambda: rng.random() < 0.3
    next_id = nodes + 1
    proposals = 0
    kinds = ["tick", "propose", "crash", "partition", "snapshot", "conf", "transfer", "read"]
    weights = [50, 25, 1, 3, 2, 3, 1, 1]
    for step in range(steps):
        kind = rng.choices(kinds, weights)[0]
        leaders = sorted(net.leaders(), key=lambda i: net.cores[i].term)
        leader = net.cores[leaders[-1]] if leaders else None
        if kind == "tick":
            net.cores[rng.choice(list(net.cores))].tick()
        elif kind == "propose" and leader is not None:
            with contextlib.suppress(ProposalDroppedError):
                leader.propose_many([f"{seed}-{proposals}".encode()] * 2)
                proposals += 1
        elif kind == "crash":
            net.crash_and_restart(rng.choice(list(net.cores)))
        elif kind == "partition":
            net.cut.clear()
            if rng.random() < 0.7:
                net.isolate(rng.choice(list(net.cores)))
        elif kind == "snapshot":
            node = net.cores[rng.choice(list(net.cores))]
            if node.log.applied_index > node.log.offset:
                net.take_snapshot(node.node_id)
        elif kind == "conf" and leader is not None:
            conf = leader.conf_state
            try:
                if conf.learners and rng.random() < 0.5:
                    leader.propose_conf_change(ConfChange(ConfChangeType.PROMOTE, conf.learners[0]))
                elif len(conf.voters) > 3 and rng.random() < 0.5:
                    leader.propose_conf_change(
                        ConfChange(ConfChangeType.REMOVE, rng.choice(conf.voters))
                    )
                elif len(net.cores) < nodes + 3:
                    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, next_id))
                    net.add_node(next_id)
                    next_id += 1
            except ProposalDroppedError:
                pass
        elif kind == "transfer" and leader is not None:
            leader.transfer_leadership(rng.choice(list(net.cores)))
        elif kind == "read":
            with contextlib.suppress(NotLeaderError):
                net.cores[rng.choice(list(net.cores))].read_index(f"r{step}".encode())
        net.deliver_some()
        if after_step is not None:
            after_step(net)  # e.g. a forger (test_hostile_schedules.py)
        net.check()
    return net


def heal_and_commit(net: ChaosNet, seed: int) -> None:
    """Liveness: after the faults stop, a proposal commits on every voter."""
    net.heal()
    for _ in range(400):
        net.tick_all(1)
        voters = [i for i, c in net.cores.items() if c.role is Role.LEADER]
        if voters:
            break
    leaders = net.leaders()
    assert leaders, f"seed {seed}: no leader after healing"
    leader = net.cores[leaders[-1]]
    for _ in range(100):
        try:
            _, index = leader.propose(b"final")
            break
        except ProposalDroppedError:
            net.tick_all(1)
    else:
        raise AssertionError(f"seed {seed}: proposals keep being dropped")
    # Generous: a lost snapshot is only resent after up to two election timeouts.
    for _ in range(300):
        net.tick_all(1)
        net.check()
        if all(net.cores[v].commit_index >= index for v in leader.conf_state.voters):
            break
    for voter in leader.conf_state.voters:
        assert net.cores[voter].commit_index >= index, f"seed {seed}: {voter} did not commit"


@pytest.mark.parametrize("nodes", [3, 5])
def test_random_fault_schedules_stay_safe_and_live(nodes: int):
    for seed in range(15):
        net = run_schedule(seed, nodes, 400)
        heal_and_commit(net, seed)


def test_applied_histories_are_prefixes_of_one_history():
    net = run_schedule(99, 3, 600)
    heal_and_commit(net, 99)
    histories = []
    for i in net.cores:
        applied = [e for e in net.applied[i] if e.index > 0 and e.type == EntryType.NORMAL]
        histories.append([(e.index, e.data) for e in applied])
    longest = max(histories, key=len)
    lookup = dict(longest)
    for history in histories:
        assert all(lookup.get(index, data) == data for index, data in history)

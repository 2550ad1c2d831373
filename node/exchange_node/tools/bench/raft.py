"""`exchange bench raft`: commit throughput of three in-process cores.

Instant delivery, no I/O: the figure is the cost of the consensus core
alone (leader and both followers run on this one Python thread), for
100-byte entries proposed in batches with ``propose_many``. Each round
starts a fresh cluster; the best round is reported (like ``timeit``: other
load on the machine only ever makes a round slower), together with the CPU
time of that round, which is what the core itself costs.
"""

from __future__ import annotations

import argparse
import time
from collections import deque

from exchange_node.raft.config import RaftConfig
from exchange_node.raft.core import RaftCore
from exchange_node.raft.types import ConfChange, ConfChangeType, Message, Role
from exchange_node.tools.bench.format import BenchResult, report


class _Cluster:
    """Three cores wired together with instant, in-order delivery."""

    def __init__(self, size: int, seed: int) -> None:
        changes = [ConfChange(ConfChangeType.PROMOTE, i) for i in range(1, size + 1)]
        self.cores = {
            i: RaftCore(RaftConfig(node_id=i, seed=seed), bootstrap=changes)
            for i in range(1, size + 1)
        }
        self.queue: deque[Message] = deque()
        self.applied = dict.fromkeys(self.cores, 0)
        self.messages = 0

    def pump(self) -> None:
        """Persist (a no-op here), send, apply and advance until nothing moves."""
        cores = self.cores
        queue = self.queue
        while True:
            for node_id, core in cores.items():
                if core.has_ready():
                    rd = core.ready()
                    queue.extend(rd.messages)
                    self.messages += len(rd.messages)
                    if rd.committed_entries:
                        self.applied[node_id] = rd.committed_entries[-1].index
                    core.advance(rd)
            if not queue:
                return
            while queue:
                m = queue.popleft()
                cores[m.to].step(m)

    def elect(self) -> RaftCore:
        first = self.cores[1]
        while first.role is not Role.LEADER:
            first.tick()
            self.pump()
        return first


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entries", type=int, default=400_000, help="entries per round")
    parser.add_argument("--batch", type=int, default=1024, help="entries per propose_many call")
    parser.add_argument("--entry-size", type=int, default=100, help="bytes per entry")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best is reported")
    parser.add_argument("--seed", type=int, default=1)


def _round(entries: int, batch: int, entry_size: int, seed: int) -> tuple[float, float, int]:
    """One fresh cluster committing ``entries``: (wall seconds, CPU seconds, messages)."""
    cluster = _Cluster(3, seed)
    leader = cluster.elect()
    payloads = [bytes([i % 256]) * entry_size for i in range(batch)]
    target = leader.log.last_index() + entries
    cluster.messages = 0
    proposed = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while proposed < entries:
        chunk = payloads if entries - proposed >= batch else payloads[: entries - proposed]
        leader.propose_many(chunk)
        proposed += len(chunk)
        cluster.pump()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if min(cluster.applied.values()) < target:
        raise RuntimeError("not every entry was committed and applied on every core")
    return wall, cpu, cluster.messages


def run(entries: int, batch: int, entry_size: int, seed: int, rounds: int = 3) -> list[BenchResult]:
    results = [_round(entries, batch, entry_size, seed) for _ in range(max(1, rounds))]
    wall, cpu, messages = min(results)
    batches = -(-entries // batch)
    return [
        BenchResult("commit_throughput", round(entries / wall, 1), "entries/s"),
        BenchResult("commit_throughput_cpu", round(entries / max(cpu, 1e-9), 1), "entries/s"),
        BenchResult("commit_bytes", round(entries * entry_size / wall / 1e6, 2), "MB/s"),
        BenchResult("batch_latency", round(wall / batches * 1e6, 1), "us"),
        BenchResult("messages_per_batch", round(messages / batches, 2), "msgs"),
        BenchResult("entries", entries, "entries"),
        BenchResult("batch", batch, "entries"),
        BenchResult("seconds", round(wall, 3), "s"),
    ]


def main(args: argparse.Namespace) -> int:
    results = run(args.entries, args.batch, args.entry_size, args.seed, args.rounds)
    report("raft", results, as_json=args.json)
    return 0

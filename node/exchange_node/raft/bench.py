"""`exchange bench raft`: commit throughput of three in-process cores.

Instant delivery, no I/O: the figure is the cost of the consensus core
alone (leader and both followers run on this one Python thread), for
100-byte entries proposed in batches with ``propose_many``.
"""

from __future__ import annotations

import argparse
import time
from collections import deque

from exchange_node.benchfmt import BenchResult, report

from .config import RaftConfig
from .core import RaftCore
from .types import ConfChange, ConfChangeType, Message, Role


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
    parser.add_argument("--entries", type=int, default=400_000, help="entries to commit")
    parser.add_argument("--batch", type=int, default=1024, help="entries per propose_many call")
    parser.add_argument("--entry-size", type=int, default=100, help="bytes per entry")
    parser.add_argument("--seed", type=int, default=1)


def run(entries: int, batch: int, entry_size: int, seed: int) -> list[BenchResult]:
    cluster = _Cluster(3, seed)
    leader = cluster.elect()
    payloads = [bytes([i % 256]) * entry_size for i in range(batch)]
    start_index = leader.log.last_index()
    target = start_index + entries
    cluster.messages = 0
    proposed = 0
    began = time.perf_counter()
    while proposed < entries:
        chunk = payloads if entries - proposed >= batch else payloads[: entries - proposed]
        leader.propose_many(chunk)
        proposed += len(chunk)
        cluster.pump()
    seconds = time.perf_counter() - began
    assert all(index >= target for index in cluster.applied.values()), "not all committed"
    return [
        BenchResult("commit_throughput", round(entries / seconds, 1), "entries/s"),
        BenchResult("commit_bytes", round(entries * entry_size / seconds / 1e6, 2), "MB/s"),
        BenchResult("batch_latency", round(seconds / (entries / batch) * 1e6, 1), "us"),
        BenchResult("messages_per_batch", round(cluster.messages / (entries / batch), 2), "msgs"),
        BenchResult("entries", entries, "entries"),
        BenchResult("seconds", round(seconds, 3), "s"),
    ]


def main(args: argparse.Namespace) -> int:
    results = run(args.entries, args.batch, args.entry_size, args.seed)
    report("raft", results, as_json=args.json)
    return 0

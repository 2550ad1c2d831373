"""Run as a script: 200 ping-pongs between two transports in this process, then print
how many context switches gRPC's EventEngine threads made meanwhile (Linux /proc)."""

from __future__ import annotations

import asyncio
import os
import sys

from exchange_node.grpc_io import prefer_classic_io

if sys.argv[1:] == ["--classic"]:
    prefer_classic_io()

from exchange_node.raft.types import Message, MessageType
from exchange_node.transport import PeerTransport

ROUNDS = 200


def event_engine_switches() -> int:
    total = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                if not f.read().startswith("event_engine"):
                    continue
            with open(f"/proc/self/task/{task}/status") as f:
                total += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except FileNotFoundError:
            continue
    return total


async def main() -> None:
    got = asyncio.Event()
    a = PeerTransport(1, "127.0.0.1:0", lambda m: None)
    b = PeerTransport(2, "127.0.0.1:0", lambda m: got.set())
    await a.start()
    await b.start()
    a.set_peers({2: b.address})
    while not a.peer_connected(2):
        await asyncio.sleep(0.01)
    before = event_engine_switches()
    for _ in range(ROUNDS):
        got.clear()
        a.send([Message(MessageType.HEARTBEAT, 2, 1, term=1)])
        await asyncio.wait_for(got.wait(), 10)
    print(event_engine_switches() - before, os.environ.get("GRPC_EXPERIMENTS", ""))
    await a.stop()
    await b.stop()


asyncio.run(main())

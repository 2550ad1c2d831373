"""A PeerTransport in its own process for the cross-process tests.

Usage: python echo_peer.py NODE_ID PEER_ID PEER_ADDRESS [asyncio|uvloop]

Prints ``PORT <n>`` once serving, then echoes every Raft message back to its
sender (``to`` and ``frm`` swapped, everything else unchanged) and every state
digest back as a digest with the same values. Exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys

from exchange_node.raft.types import Message
from exchange_node.transport import PeerTransport


async def main(node_id: int, peer_id: int, peer_address: str) -> None:
    loop = asyncio.get_running_loop()
    transport: PeerTransport

    def on_message(msg: Message) -> None:
        transport.send([dataclasses.replace(msg, to=msg.frm, frm=msg.to)])

    def on_digest(peer: int, applied_index: int, state_hash: bytes) -> None:
        transport.send_digest(peer, applied_index, state_hash)

    transport = PeerTransport(node_id, "127.0.0.1:0", on_message, on_digest=on_digest)
    await transport.start()
    transport.set_peers({peer_id: peer_address})
    print(f"PORT {transport.port}", flush=True)
    stdin_closed = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: stdin_closed.done() or _check_eof(stdin_closed))
    await stdin_closed
    await transport.stop()


def _check_eof(done: asyncio.Future[None]) -> None:
    if not sys.stdin.buffer.read1(4096):
        done.set_result(None)


if __name__ == "__main__":
    coro = main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
    if sys.argv[4:] == ["uvloop"]:
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)

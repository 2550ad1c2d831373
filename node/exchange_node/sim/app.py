"""The simulated application: a hash chain over everything applied.

Deterministic and cheap, with snapshot and restore, so that "every replica
applies the same sequence" can be checked across restarts and snapshot
installs by comparing one number: the chain value at an index.
"""

from __future__ import annotations

import struct
import zlib

from exchange_node.raft.types import Entry

_SNAPSHOT = struct.Struct(">QQI")


def chain_step(chain: int, term: int, index: int, data: bytes) -> int:
    """The chain value after applying one entry on top of ``chain``."""
    return zlib.crc32(data, (chain * 31 + term * 1_000_003 + index) & 0xFFFFFFFF)


class HashChainApp:
    """Applies committed entries in order; its whole state is (index, term, chain)."""

    __slots__ = ("applied", "applied_term", "chain")

    def __init__(self) -> None:
        self.applied = 0
        self.applied_term = 0
        self.chain = 0

    def apply(self, entry: Entry) -> None:
        self.chain = zlib.crc32(
            entry.data, (self.chain * 31 + entry.term * 1_000_003 + entry.index) & 0xFFFFFFFF
        )
        self.applied = entry.index
        self.applied_term = entry.term

    def snapshot_data(self) -> bytes:
        return _SNAPSHOT.pack(self.applied, self.applied_term, self.chain)

    def restore(self, data: bytes) -> None:
        self.applied, self.applied_term, self.chain = _SNAPSHOT.unpack(data)


def decode_snapshot(data: bytes) -> tuple[int, int, int]:
    """(index, term, chain) of a snapshot the application produced."""
    index, term, chain = _SNAPSHOT.unpack(data)
    return index, term, chain

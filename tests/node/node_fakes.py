"""Stand-ins for the engine, for tests of the I/O shell on its own.

``RecordingEngine`` keeps the decoded commands it applied; its state hash is
a SHA-256 chain over every applied entry (each link hashes the previous one and
the entry), so replicas that applied the same log agree and any difference
shows. The chain's value is in the snapshot, so a replica restored from one goes
on with the same chain as a replica that applied every entry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from exchange_node.engine.commands import AddSymbol, NewOrder, decode_batch


@dataclass
class FakeResult:
    command: Any
    events: list[Any] = field(default_factory=list)


class RecordingEngine:
    def __init__(self) -> None:
        self.applied: list[tuple[int, str]] = []
        self.listed: set[str] = set()
        self.chain = bytes(32)
        self.last_index = 0

    def apply_entry(self, log_index: int, data: bytes) -> list[FakeResult]:
        assert log_index > self.last_index, (log_index, self.last_index)
        self.last_index = log_index
        _ts, commands = decode_batch(data)
        self.chain = hashlib.sha256(self.chain + log_index.to_bytes(8, "big") + data[9:]).digest()
        results = []
        for command in commands:
            if isinstance(command, AddSymbol):
                self.listed.add(command.symbol)
            if isinstance(command, NewOrder):
                self.applied.append((log_index, command.client_order_id))
            results.append(FakeResult(command))
        return results

    def symbols(self) -> list[str]:
        return sorted(self.listed)

    def snapshot(self) -> bytes:
        return json.dumps(
            {
                "applied": self.applied,
                "listed": sorted(self.listed),
                "chain": self.chain.hex(),
                "last": self.last_index,
            }
        ).encode()

    @classmethod
    def restore(cls, data: bytes) -> RecordingEngine:
        self = cls()
        doc = json.loads(data)
        self.applied = [tuple(x) for x in doc["applied"]]
        self.listed = set(doc["listed"])
        self.chain = bytes.fromhex(doc["chain"])
        self.last_index = doc["last"]
        return self

    def state_hash(self) -> bytes:
        return self.chain

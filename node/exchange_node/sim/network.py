"""The simulated network: latency, loss, duplication and partitions.

Messages are not queued here: the simulator turns each send into a
delivery event on its virtual clock (random latency reorders them). This
object only holds the fault settings and decides, per message, when it
arrives, whether a duplicate follows and whether the link lets it through.
"""

from __future__ import annotations

import random
from collections.abc import Iterable


class Network:
    __slots__ = ("blocked", "description", "drop_rate", "duplicate_rate", "slow_rate")

    def __init__(self) -> None:
        self.blocked: dict[int, set[int]] = {}
        """frm -> the nodes that cannot hear from ``frm`` (one-way links)."""
        self.drop_rate = 0.0
        self.duplicate_rate = 0.0
        self.slow_rate = 0.0
        self.description = "healthy"

    # -- per message ----------------------------------------------------------

    def latency(self, rng: random.Random) -> int:
        if self.slow_rate and rng.random() < self.slow_rate:
            if rng.random() < 0.05:
                # A zombie: delivered long after, terms and leaders later.
                return rng.randint(500, 5_000)
            return rng.randint(20, 300)
        return rng.randint(1, 5)

    def passes(self, frm: int, to: int, rng: random.Random) -> bool:
        """Does a message sent on this link arrive (checked at delivery time)?"""
        blocked = self.blocked.get(frm)
        if blocked is not None and to in blocked:
            return False
        return not (self.drop_rate and rng.random() < self.drop_rate)

    def is_cut(self, frm: int, to: int) -> bool:
        blocked = self.blocked.get(frm)
        return blocked is not None and to in blocked

    # -- faults -----------------------------------------------------------------

    def heal(self) -> None:
        self.blocked.clear()
        self.drop_rate = self.duplicate_rate = self.slow_rate = 0.0
        self.description = "healthy"

    def heal_links(self) -> None:
        self.blocked.clear()
        self.description = "links healed"

    def cut(self, frm: int, to: int) -> None:
        self.blocked.setdefault(frm, set()).add(to)

    def split(self, side_a: Iterable[int], side_b: Iterable[int]) -> None:
        """A symmetric partition between two groups."""
        side_b = list(side_b)
        for a in side_a:
            for b in side_b:
                self.cut(a, b)
                self.cut(b, a)

    def partition(self, members: list[int], rng: random.Random, kind: str, leader: int) -> None:
        """Replace the partition with a new one of ``kind`` over ``members``."""
        self.blocked.clear()
        members = sorted(members)
        if len(members) < 2:
            self.description = "links healed"
            return
        if kind == "isolate-leader" and leader in members:
            self.split([leader], [m for m in members if m != leader])
            self.description = f"leader {leader} isolated"
        elif kind == "one-way":
            cuts = []
            for _ in range(rng.randint(1, len(members))):
                frm, to = rng.sample(members, 2)
                self.cut(frm, to)
                cuts.append(f"{frm}->{to}")
            self.description = "one-way cuts " + ",".join(cuts)
        elif kind == "bridge" and len(members) >= 3:
            shuffled = members[:]
            rng.shuffle(shuffled)
            bridge = shuffled[0]
            cut_at = rng.randint(2, len(shuffled) - 1)
            side_a, side_b = shuffled[1:cut_at], shuffled[cut_at:]
            self.split(side_a, side_b)
            self.description = f"bridge {bridge} between {sorted(side_a)} and {sorted(side_b)}"
        else:
            shuffled = members[:]
            rng.shuffle(shuffled)
            cut_at = rng.randint(1, len(shuffled) - 1)
            side_a, side_b = shuffled[:cut_at], shuffled[cut_at:]
            self.split(side_a, side_b)
            self.description = f"split {sorted(side_a)} | {sorted(side_b)}"

    def set_weather(self, rng: random.Random) -> None:
        """New loss, duplication and slow-link rates."""
        self.drop_rate = rng.choice((0.0, 0.0, 0.02, 0.1, 0.3))
        self.duplicate_rate = rng.choice((0.0, 0.0, 0.05, 0.2))
        self.slow_rate = rng.choice((0.0, 0.0, 0.05, 0.2))
        self.description = (
            f"drop {self.drop_rate:.2f} dup {self.duplicate_rate:.2f} slow {self.slow_rate:.2f}"
        )

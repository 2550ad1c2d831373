"""A deterministic storage workload and the model of what it should leave on disk.

``Workload(seed)`` yields the same sequence of ``Op`` (one ``save`` or
``save_snapshot`` each) in every process, and keeps a ``Model`` of the durable
state after each op. Entry data is derived from (index, term), so any entry
read back can be checked against what was written.

The crash child (``crash_child.py``) and the tests import this module.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from exchange_node.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMeta,
)


def entry_data(index: int, term: int) -> bytes:
    """The content every entry (index, term) carries: verifiable, varied in size."""
    if index % 17 == 0:
        return b""  # a leader's no-op
    digest = hashlib.blake2b(f"{index}:{term}".encode(), digest_size=32).digest()
    return digest * (1 + (index * 7 + term) % 5)


def make_entry(index: int, term: int) -> Entry:
    kind = EntryType.CONF_CHANGE if index % 29 == 0 else EntryType.NORMAL
    return Entry(term, index, entry_data(index, term), kind)


@dataclass
class Op:
    kind: str
    """append | overwrite | hard_state | snapshot (the application's) | install (leader's)."""
    entries: list[Entry] = field(default_factory=list)
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None

    def apply(self, storage: Any) -> None:
        if self.kind == "snapshot":
            assert self.snapshot is not None
            storage.save_snapshot(self.snapshot)
        else:
            storage.save(entries=self.entries, hard_state=self.hard_state, snapshot=self.snapshot)


@dataclass
class Model:
    """The durable state the storage contract promises after each op."""

    hard_state: HardState = HardState()  # noqa: RUF009 (immutable)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    @property
    def base(self) -> int:
        return self.snapshot.meta.index if self.snapshot else 0

    @property
    def last(self) -> int:
        return self.base + len(self.entries)

    def term_at(self, index: int) -> int:
        if index == self.base:
            return self.snapshot.meta.term if self.snapshot else 0
        return self.entries[index - self.base - 1].term

    def apply(self, op: Op) -> None:
        if op.kind == "snapshot":
            assert op.snapshot is not None
            index = op.snapshot.meta.index
            if self.snapshot is not None and index <= self.snapshot.meta.index:
                return
            self.entries = self.entries[index - self.base :]
            self.snapshot = op.snapshot
            return
        if op.snapshot is not None:
            self.snapshot = op.snapshot
            self.entries = []
        if op.entries:
            start = op.entries[0].index - self.base - 1
            self.entries = self.entries[:start] + list(op.entries)
        if op.hard_state is not None:
            self.hard_state = op.hard_state

    def copy(self) -> Model:
        return Model(self.hard_state, self.snapshot, list(self.entries))

    def key(self) -> tuple[object, ...]:
        return state_key(self.hard_state, self.snapshot, self.entries)


def state_key(
    hard_state: HardState, snapshot: Snapshot | None, entries: list[Entry]
) -> tuple[object, ...]:
    """A comparable image of a durable state (a model's or a recovered one)."""
    snap = None
    if snapshot is not None:
        meta = snapshot.meta
        snap = (meta.index, meta.term, meta.conf_state, bytes(snapshot.data))
    return (
        tuple(hard_state),
        snap,
        tuple((e.index, e.term, int(e.type), bytes(e.data)) for e in entries),
    )


class Workload:
    """The op sequence for ``seed``; ``model`` is the state after the ops so far."""

    def __init__(self, seed: int, *, big_snapshots: bool = True) -> None:
        self.rng = random.Random(seed)
        self.model = Model()
        self.term = 1
        self.count = 0
        self.big_snapshots = big_snapshots

    def next_op(self) -> Op:
        op = self._generate()
        self.model.apply(op)
        self.count += 1
        return op

    def clone(self) -> Workload:
        """An independent copy: the same ops follow from it."""
        other = Workload.__new__(Workload)
        other.rng = random.Random()
        other.rng.setstate(self.rng.getstate())
        other.model = self.model.copy()
        other.term = self.term
        other.count = self.count
        other.big_snapshots = self.big_snapshots
        return other

    def ops(self, count: int) -> list[Op]:
        return [self.next_op() for _ in range(count)]

    def _generate(self) -> Op:
        rng, model = self.rng, self.model
        roll = rng.random()
        commit = model.hard_state.commit
        if roll < 0.08 and model.last > max(commit, model.base):
            # A new leader overwrites an uncommitted suffix.
            self.term += 1
            start = rng.randint(max(commit, model.base) + 1, model.last)
            count = rng.randint(1, 20)
            entries = [make_entry(i, self.term) for i in range(start, start + count)]
            vote = rng.randint(1, 5)
            return Op("overwrite", entries, HardState(self.term, vote, commit))
        if roll < 0.15:
            if rng.random() < 0.5:
                self.term += 1
                return Op("hard_state", hard_state=HardState(self.term, rng.randint(0, 5), commit))
            new_commit = rng.randint(commit, model.last)
            return Op(
                "hard_state", hard_state=HardState(self.term, model.hard_state.vote, new_commit)
            )
        if roll < 0.22 and commit > model.base:
            index = rng.randint(model.base + 1, commit)
            return Op("snapshot", snapshot=self._snapshot(index, model.term_at(index)))
        if roll < 0.25:
            # The leader's snapshot, ahead of this log: replaces all of it.
            index = model.last + rng.randint(1, 40)
            self.term += rng.randint(0, 1)
            snapshot = self._snapshot(index, self.term)
            count = rng.randint(0, 8)
            entries = [make_entry(i, self.term) for i in range(index + 1, index + 1 + count)]
            return Op("install", entries, HardState(self.term, 0, index), snapshot)
        count = rng.choice((1, 1, 4, 16, 64, 200))
        entries = [make_entry(i, self.term) for i in range(model.last + 1, model.last + 1 + count)]
        hard_state = None
        if rng.random() < 0.7:
            new_commit = rng.randint(commit, model.last + count)
            hard_state = HardState(self.term, model.hard_state.vote, new_commit)
        return Op("append", entries, hard_state)

    def _snapshot(self, index: int, term: int) -> Snapshot:
        rng = self.rng
        size = rng.choice((0, 100, 5_000, 200_000 if self.big_snapshots else 20_000))
        voters = tuple(sorted(rng.sample(range(1, 8), rng.randint(1, 5))))
        learners = tuple(sorted(set(rng.sample(range(8, 12), rng.randint(0, 2)))))
        return Snapshot(SnapshotMeta(index, term, ConfState(voters, learners)), rng.randbytes(size))


def states_after(seed: int, counts: list[int], **kwargs: Any) -> dict[int, tuple[object, ...]]:
    """The model's state key after each of ``counts`` ops (ascending)."""
    workload = Workload(seed, **kwargs)
    keys: dict[int, tuple[object, ...]] = {}
    for count in sorted(set(counts)):
        while workload.count < count:
            workload.next_op()
        keys[count] = workload.model.key()
    return keys

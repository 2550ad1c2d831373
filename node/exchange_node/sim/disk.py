"""The simulator's disk: the ``RaftStorage`` contract in memory, with crashes.

A ``save()`` is modelled as a *write* (the page cache sees it at once, reads
return it) followed by a *sync* (it becomes durable). The simulator may call
``write()`` and ``crash()`` without the ``sync()`` in between; ``crash()``
then throws away every write that was not synced, exactly as a power cut
throws away dirty pages, and ``recover()`` returns only the durable state.

Within one ``save()`` the writes happen in the order a careful WAL issues
them: snapshot, then entries (with the truncation of a conflicting suffix),
then the hard state last. With an ``rng``, ``crash()`` may keep a random
prefix of those unsynced writes (a torn tail: some pages reached the platter
before the power went) instead of none. Either way what survives is a state
the real storage may recover to; nothing that was synced is lost by a crash.

A disk fault may lose synced writes too: ``lose_tail()`` cuts the end off the
durable log (a power loss on a disk that lied about its flush, a restored old
copy). Like the real store's promise (``storage/promise.py``), each sync
records what the node has durably promised (its term and the end of its log),
apart from the log; ``recovery_verdict()`` compares the recovered log with it,
as ``WalStorage.recovery_verdict`` does: a log that ends below the promise is a
lost acknowledged tail, and the node owes a catch-up up to the promised index
(kept across restarts until the log reaches it again).

The same semantics are checked against the real WAL by the shared storage
conformance suite (``tests/storage/test_contract.py``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from exchange_node.raft.types import Entry, HardState, Snapshot
from exchange_node.storage.interface import RecoveredState
from exchange_node.storage.verdict import RecoveryVerdict, VerdictKind

_EMPTY_HARD_STATE = HardState()


class StorageError(Exception):
    """A caller broke the storage contract (for example a gap in the log)."""


class SimStorage:
    """In-memory ``RaftStorage`` whose unsynced writes vanish on ``crash()``.

    The log is a list of entries that starts right after ``snapshot_index``
    (the index covered by the newest snapshot, 0 when there is none).
    Unsynced writes are applied at once and remembered in an undo journal,
    so the common path (write, then sync) costs no copying at all.
    """

    __slots__ = (
        "_closed",
        "_entries",
        "_hard_state",
        "_journal",
        "_lost",
        "_owed",
        "_promise",
        "_snapshot",
        "_snapshot_index",
        "_torn_batch",
    )

    def __init__(self) -> None:
        self._hard_state: HardState = _EMPTY_HARD_STATE
        self._snapshot: Snapshot | None = None
        self._snapshot_index = 0
        self._entries: list[Entry] = []
        # One undo record per unsynced write, oldest first. Each record is a
        # tuple whose first item says what to undo (see ``_undo``).
        self._journal: list[tuple[object, ...]] = []
        self._closed = False
        self._promise: tuple[int, int, int] = (0, 0, 0)
        """(term, last index, last term) as of the last sync: what the node promised."""
        self._owed: tuple[int, int, int] = (0, 0, 0)
        """(index, term, last term) a leader must bring the log back to (0: nothing owed)."""
        self._lost: dict[int, int] = {}
        """index -> term of entries a disk fault cut off, until the log is back there."""
        self._torn_batch = False
        """The last crash kept part of a batch never synced (its promise was never made)."""

    # -- the RaftStorage protocol ------------------------------------------

    def recover(self) -> RecoveredState:
        if self._journal:
            raise StorageError("recover() with unsynced writes: call sync() or crash() first")
        return RecoveredState(
            hard_state=self._hard_state, snapshot=self._snapshot, entries=list(self._entries)
        )

    def save(
        self,
        *,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
    ) -> None:
        self.write(entries=entries, hard_state=hard_state, snapshot=snapshot)
        self.sync()

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Persist an application snapshot and compact the log it covers."""
        index = snapshot.meta.index
        if self._snapshot is not None and index <= self._snapshot_index:
            return
        if index > self.last_index():
            raise StorageError(f"snapshot at {index} is beyond the last stored index")
        self._journal.append(("snap", self._snapshot, self._snapshot_index, self._entries))
        self._entries = self._entries[index - self._snapshot_index :]
        self._snapshot = snapshot
        self._snapshot_index = index
        self.sync()

    def entries(self, lo: int, hi: int) -> list[Entry]:
        offset = self._snapshot_index + 1
        if lo < offset:
            raise StorageError(f"entries from {lo} are compacted (first index {offset})")
        return self._entries[lo - offset : hi - offset]

    def first_index(self) -> int:
        return self._snapshot_index + 1

    def last_index(self) -> int:
        return self._snapshot_index + len(self._entries)

    def close(self) -> None:
        self._closed = True

    # -- the write/sync split and crashes -------------------------------------

    def write(
        self,
        *,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
    ) -> None:
        """Issue the writes of one ``save()`` without syncing them."""
        if snapshot is not None:
            # A snapshot from the leader replaces the whole log.
            self._journal.append(("snap", self._snapshot, self._snapshot_index, self._entries))
            self._snapshot = snapshot
            self._snapshot_index = snapshot.meta.index
            self._entries = []
        if entries:
            first = entries[0].index
            log = self._entries
            start = first - self._snapshot_index - 1
            if start < 0 or start > len(log):
                raise StorageError(
                    f"append at {first} leaves a gap or overwrites the snapshot "
                    f"(first index {self._snapshot_index + 1}, last {self.last_index()})"
                )
            removed = log[start:]
            if removed:
                del log[start:]
            log.extend(entries)
            self._journal.append(("append", start, removed, len(entries)))
        if hard_state is not None and hard_state != self._hard_state:
            self._journal.append(("hard", self._hard_state))
            self._hard_state = hard_state

    def sync(self) -> None:
        """Make every issued write durable (and the promise that goes with them)."""
        self._journal.clear()
        last = self.last_index()
        self._promise = (self._hard_state.term, last, self.term_at(last) or 0)
        if self._owed[0] and last >= self._owed[0]:
            self._owed = (0, 0, 0)
        if self._lost and last >= max(self._lost):
            self._lost.clear()

    def lose_tail(self, count: int) -> int:
        """A disk fault: the last ``count`` durable entries are gone (never below the
        snapshot), the promise is not. Returns how many were cut. Call it on a crashed
        node (no unsynced writes)."""
        if self._journal:
            raise StorageError("lose_tail() with unsynced writes: call crash() first")
        count = min(count, len(self._entries))
        if count <= 0:
            return 0
        for entry in self._entries[len(self._entries) - count :]:
            self._lost[entry.index] = entry.term
        del self._entries[len(self._entries) - count :]
        # The hard state recorded with the lost entries is lost with them: the commit
        # index falls back (term and vote survive in the promise, as in the real store).
        last = self.last_index()
        commit = max(self._snapshot_index, min(self._hard_state.commit, last))
        self._hard_state = self._hard_state._replace(commit=commit)
        return count

    def recovery_verdict(self) -> RecoveryVerdict:
        """What recovery concludes (see the module docstring); called once per start."""
        last = self.last_index()
        torn, self._torn_batch = self._torn_batch, False
        if not self._owed[0] and last < self._promise[1] and not torn:
            term, index, last_term = self._promise
            self._owed = (index, term, last_term)
        owed_index, owed_term, owed_last_term = self._owed
        if owed_index:
            return RecoveryVerdict(
                VerdictKind.LOST,
                f"lost acknowledged tail: the log ends at {last}, the promise at {owed_index}",
                last,
                owed_index,
                owed_term,
                owed_last_term or None,
            )
        if torn:
            return RecoveryVerdict(VerdictKind.TORN, "torn batch, never acknowledged", last)
        return RecoveryVerdict(VerdictKind.CLEAN, "clean", last)

    @property
    def unsynced(self) -> int:
        """How many writes a crash now would lose."""
        return len(self._journal)

    def crash(self, rng: random.Random | None = None) -> None:
        """Lose what was never synced: all of it, or (with ``rng``) a random suffix of it.

        Appends are torn per entry: a crash may keep the first few entries
        of a batch whose tail never reached the disk.
        """
        journal = self._journal
        keep = rng.randint(0, len(journal)) if rng is not None and journal else 0
        self._torn_batch = keep > 0
        for position in range(len(journal) - 1, keep - 1, -1):
            record = journal[position]
            if position == keep and record[0] == "append" and rng is not None:
                keep_new = rng.randint(0, record[3])  # type: ignore[call-overload]
                self._torn_batch = self._torn_batch or keep_new > 0
                self._undo_append(record, keep_new=keep_new)
            else:
                self._undo(record)
        journal.clear()
        self._closed = False

    def _undo(self, record: tuple[object, ...]) -> None:
        kind = record[0]
        if kind == "hard":
            self._hard_state = record[1]  # type: ignore[assignment]
        elif kind == "append":
            self._undo_append(record, keep_new=0)
        else:
            self._snapshot = record[1]  # type: ignore[assignment]
            self._snapshot_index = record[2]  # type: ignore[assignment]
            self._entries = record[3]  # type: ignore[assignment]

    def _undo_append(self, record: tuple[object, ...], *, keep_new: int) -> None:
        _, start, removed, _added = record
        log = self._entries
        del log[start + keep_new :]  # type: ignore[operator]
        if keep_new == 0:
            log.extend(removed)  # type: ignore[arg-type]

    # -- fast reads for the simulator's checkers ------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def snapshot_index(self) -> int:
        return self._snapshot_index

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index`` (or of the snapshot there); None if unknown."""
        offset = index - self._snapshot_index - 1
        if offset >= 0:
            log = self._entries
            return log[offset].term if offset < len(log) else None
        if offset == -1:
            snapshot = self._snapshot
            return snapshot.meta.term if snapshot is not None else 0
        return None

    def durable_holds(self, index: int, term: int) -> bool:
        """Would the entry (index, term) survive a power cut now (synced writes only)?

        An index covered by the durable snapshot counts as held. No copying: the
        durable log is the current one with the unsynced writes undone, oldest undo
        outermost, so the entry at one offset is found by walking the journal from
        its oldest record: an append that replaced that offset answers from what it
        removed, and the oldest snapshot write resets everything to what it replaced.
        """
        journal = self._journal
        base_index = self._snapshot_index
        base: list[Entry] = self._entries
        appends = journal
        for position, record in enumerate(journal):
            if record[0] == "snap":
                base_index = record[2]  # type: ignore[assignment]
                base = record[3]  # type: ignore[assignment]
                appends = journal[:position]
                break
        if index <= base_index:
            return base_index > 0
        offset = index - base_index - 1
        for record in appends:
            if record[0] != "append":
                continue
            start: int = record[1]  # type: ignore[assignment]
            if offset >= start:
                removed: list[Entry] = record[2]  # type: ignore[assignment]
                at = offset - start
                return at < len(removed) and removed[at].term == term
        return offset < len(base) and base[offset].term == term

    @property
    def owes(self) -> bool:
        """A lost tail is not restored yet (the node owes, or will at its next start)."""
        return bool(self._owed[0] or self._lost)

    def holds_or_owes(self, index: int, term: int) -> bool:
        """``durable_holds``, or the entry is in a tail this disk lost but still owes: the
        promise covers it, so recovery keeps this node from voting as if it never had it
        (the entry counts towards what a power cut cannot lose)."""
        return self.durable_holds(index, term) or self._lost.get(index) == term

    def entry_at(self, index: int) -> Entry | None:
        offset = index - self._snapshot_index - 1
        log = self._entries
        return log[offset] if 0 <= offset < len(log) else None

    def is_empty(self) -> bool:
        return (
            self._snapshot is None and not self._entries and self._hard_state == _EMPTY_HARD_STATE
        )

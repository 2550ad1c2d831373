"""The in-memory Raft log since the last snapshot.

Indexes are 1-based. ``offset`` is the index of the snapshot the log starts
after (0 when nothing was compacted); ``entries[i]`` has index
``offset + 1 + i``. Everything is kept in memory; what the caller has made
durable is tracked by indexes, not by separate lists:

    offset < ... stable_index <= persisting_index <= last_index
    offset <= applied_index <= applying_index <= commit_index <= last_index

``persisting_index`` and ``applying_index`` mark what has been handed out in
a ``Ready`` but not yet acknowledged by ``advance``, so that a second
``ready()`` never hands the same work out twice.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from operator import attrgetter

from .types import Entry, Snapshot

_data = attrgetter("data")


class RaftLog:
    __slots__ = (
        "_batch_cache",
        "applied_index",
        "applying_index",
        "commit_index",
        "entries",
        "offset",
        "offset_term",
        "pending_snapshot",
        "persisting_index",
        "snapshot",
        "snapshot_in_progress",
        "stable_index",
    )

    def __init__(
        self, snapshot: Snapshot | None, entries: Sequence[Entry], commit_index: int
    ) -> None:
        self.snapshot = snapshot
        """The newest snapshot this node holds: what it sends to followers behind ``offset``."""
        self.offset = snapshot.meta.index if snapshot else 0
        self.offset_term = snapshot.meta.term if snapshot else 0
        # Storage may hand back entries the snapshot already covers; skip them.
        self.entries: list[Entry] = [e for e in entries if e.index > self.offset]
        for i, e in enumerate(self.entries):
            assert e.index == self.offset + 1 + i, "stored entries are not contiguous"
        last = self.last_index()
        assert commit_index <= last, "commit index beyond the stored log"
        self.commit_index = max(commit_index, self.offset)
        self.applied_index = self.offset
        self.applying_index = self.offset
        self.stable_index = last
        self.persisting_index = last
        self.pending_snapshot: Snapshot | None = None
        """A snapshot received from the leader, not yet handed out to persist."""
        self.snapshot_in_progress: Snapshot | None = None
        self._batch_cache: tuple[int, list[Entry]] | None = None
        """The last APP batch built, by first index; dropped whenever the log changes."""

    # -- queries ---------------------------------------------------------

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def first_index(self) -> int:
        return self.offset + 1

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.offset_term

    def term(self, index: int) -> int | None:
        """The term of the entry at ``index``; None when compacted or beyond the end."""
        offset = self.offset
        if index > offset:
            pos = index - offset - 1
            if pos < len(self.entries):
                return self.entries[pos].term
            return None
        if index == offset:
            return self.offset_term
        return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Election restriction (paper 5.4.1): is a candidate's log at least as new as ours?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= index < hi``; ``lo`` must not be compacted."""
        assert lo > self.offset, "slice of compacted entries"
        base = self.offset + 1
        return self.entries[lo - base : hi - base]

    def slice_limited(self, lo: int, max_entries: int, max_bytes: int) -> list[Entry]:
        """Entries from ``lo`` for one APP message: at most ``max_entries``,
        and at most ``max_bytes`` of data unless a single entry is larger."""
        cached = self._batch_cache
        if cached is not None and cached[0] == lo:
            # Followers in step ask for the same batch: build (and measure) it once.
            return cached[1]
        batch = self.slice(lo, lo + max_entries)
        if len(batch) > 1 and sum(map(len, map(_data, batch))) > max_bytes:
            # Find the cut with C-level loops, never a Python loop per entry.
            sizes = list(accumulate(map(len, map(_data, batch))))
            batch = batch[: max(1, bisect_right(sizes, max_bytes))]
        self._batch_cache = (lo, batch)
        return batch

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, and that term.

        Used both by a follower to build its rejection hint and by the leader
        to skip a whole term of the follower's log at once.
        """
        index = min(index, self.last_index())
        while index > self.offset:
            t = self.term(index)
            assert t is not None
            if t <= term:
                return index, t
            index -= 1
        return index, self.offset_term if index == self.offset else 0

    def committed_to_apply(self) -> list[Entry]:
        """Committed entries not yet handed out for applying."""
        lo = max(self.applying_index, self.offset) + 1
        if lo > self.commit_index:
            return []
        return self.slice(lo, self.commit_index + 1)

    def unstable_entries(self) -> list[Entry]:
        """Entries not yet handed out for persisting."""
        if self.persisting_index >= self.last_index():
            return []
        return self.entries[self.persisting_index - self.offset :]

    # -- changes ---------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, replacing any suffix starting at ``entries[0].index``."""
        if not entries:
            return
        self._batch_cache = None
        first = entries[0].index
        assert first > self.commit_index, "appending at or below the commit index"
        last = self.last_index()
        assert first <= last + 1, "appending leaves a gap in the log"
        if first <= last:
            del self.entries[first - self.offset - 1 :]
            if self.stable_index >= first:
                self.stable_index = first - 1
            if self.persisting_index >= first:
                self.persisting_index = first - 1
        self.entries.extend(entries)

    def maybe_append(
        self, prev_index: int, prev_term: int, leader_commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Handle the payload of an APP; the last index it proves we share, or None."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        if entries:
            conflict = self._find_conflict(entries)
            if conflict:
                assert conflict > self.commit_index, "a leader contradicts a committed entry"
                self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(leader_commit, last_new))
        return last_new

    def _find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or differs from ours; 0 if none."""
        last = self.last_index()
        first = entries[0].index
        if first > last:
            return first
        # Overlap only happens on retransmission or after a leader change.
        for e in entries:
            if e.index > last:
                return e.index
            if e.index > self.offset and self.term(e.index) != e.term:
                return e.index
        return 0

    def commit_to(self, index: int) -> None:
        if index > self.commit_index:
            assert index <= self.last_index(), "committing beyond the log"
            self.commit_index = index

    def stable_to(self, index: int, term: int) -> None:
        """The caller made entries up to ``index`` durable (unless they were replaced since)."""
        if index > self.stable_index and self.term(index) == term:
            self.stable_index = index
            if self.persisting_index < index:
                self.persisting_index = index

    def applied_to(self, index: int) -> None:
        assert index <= self.commit_index, "applied beyond the commit index"
        if index > self.applied_index:
            self.applied_index = index
            if self.applying_index < index:
                self.applying_index = index

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        meta = snapshot.meta
        assert meta.index > self.commit_index, "restoring a snapshot below the commit index"
        self._batch_cache = None
        self.snapshot = snapshot
        self.pending_snapshot = snapshot
        self.offset = meta.index
        self.offset_term = meta.term
        self.entries = []
        self.commit_index = meta.index
        self.stable_index = meta.index
        self.persisting_index = meta.index

    def compact(self, snapshot: Snapshot) -> None:
        """Drop entries the application's snapshot covers; keep it to send to followers."""
        index = snapshot.meta.index
        if index <= self.offset:
            return  # older than what we hold (e.g. a leader's snapshot arrived meanwhile)
        # The application may snapshot before advance(): entries handed out count.
        if index > self.applying_index:
            raise ValueError(f"snapshot at {index} is beyond the applied index")
        term = self.term(index)
        if term != snapshot.meta.term:
            raise ValueError(f"snapshot term {snapshot.meta.term} disagrees with the log")
        self._batch_cache = None
        del self.entries[: index - self.offset]
        self.offset = index
        self.offset_term = term
        self.snapshot = snapshot

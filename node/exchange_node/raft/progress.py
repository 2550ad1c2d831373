"""What a leader knows about each follower's log, and how fast it may send.

A follower is in one of three states:

* PROBE: the leader does not know where the logs agree; it sends one APP at
  a time and waits for the answer (or a heartbeat response) before the next.
* REPLICATE: the logs agree up to ``match_index``; the leader streams APPs
  optimistically, at most ``max_inflight`` unacknowledged at once.
* SNAPSHOT: the follower needs entries the leader has compacted; the leader
  sent a snapshot and sends nothing else until it is reported or acked.
"""

from __future__ import annotations

from collections import deque
from enum import Enum


class ProgressState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last index of each APP sent but not yet acknowledged, oldest first."""

    __slots__ = ("_last_indexes", "capacity")

    def __init__(self, capacity: int) -> None:
        assert capacity >= 1, "an inflight window of zero would never send"
        self.capacity = capacity
        self._last_indexes: deque[int] = deque()

    def add(self, last_index: int) -> None:
        assert len(self._last_indexes) < self.capacity, "inflight window overflow"
        self._last_indexes.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every message whose entries are all acknowledged by ``index``."""
        pending = self._last_indexes
        while pending and pending[0] <= index:
            pending.popleft()

    def free_first(self) -> None:
        if self._last_indexes:
            self._last_indexes.popleft()

    def reset(self) -> None:
        self._last_indexes.clear()

    def full(self) -> bool:
        return len(self._last_indexes) >= self.capacity

    def __len__(self) -> int:
        return len(self._last_indexes)


class Progress:
    __slots__ = (
        "heartbeat_floor",
        "inflights",
        "match_index",
        "next_index",
        "pending_snapshot",
        "previous_heartbeat_floor",
        "probe_sent",
        "recent_active",
        "regressed_from",
        "regressions",
        "snapshot_rounds",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        """PROBE: an APP is outstanding; wait for its answer or a heartbeat response."""
        self.pending_snapshot = 0
        """SNAPSHOT: index of the snapshot sent."""
        self.recent_active = False
        """Heard from since the last check-quorum round."""
        self.snapshot_rounds = 0
        """SNAPSHOT: election timeouts since the snapshot was sent."""
        self.inflights = Inflights(max_inflight)
        self.regressions = 0
        """Times the follower's log was found behind ``match_index`` (see ``regress``)."""
        self.regressed_from = 0
        """The match index before the latest regression, until the follower is back there."""
        self.heartbeat_floor = 0
        """The commit index the latest heartbeat told it (min(match, commit) then)."""
        self.previous_heartbeat_floor = 0
        """The same for the heartbeat before: an answer to it or to a newer one, from a
        follower that holds what it acknowledged, reports at least this commit index."""

    def _reset_state(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_rounds = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        # Coming out of SNAPSHOT, the follower has at least the snapshot.
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next_index = max(self.match_index + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next_index = self.match_index + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next_index = self.match_index + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def regress(self, match_index: int, next_index: int) -> None:
        """The follower's log went backwards (it restarted with a shorter log): what it
        holds is only known up to ``match_index``; probe again from ``next_index``.
        Lowering a match index is always safe: commit only ever counts it upwards."""
        self.regressions += 1
        self.regressed_from = max(self.regressed_from, self.match_index)
        self.heartbeat_floor = self.previous_heartbeat_floor = 0
        self._reset_state(ProgressState.PROBE)
        self.match_index = min(match_index, self.match_index)
        self.next_index = max(next_index, self.match_index + 1)

    @property
    def healthy(self) -> bool:
        return not self.regressed_from

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``; False when it tells nothing new."""
        updated = False
        if self.match_index < index:
            self.match_index = index
            updated = True
            self.probe_sent = False
            if self.regressed_from and index >= self.regressed_from:
                self.regressed_from = 0
        if self.next_index < index + 1:
            self.next_index = index + 1
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the APP whose previous index was ``rejected``.

        ``match_hint`` is the highest index the logs may agree on (from the
        follower's hint). Returns False for stale rejections.
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match_index:
                return False
            # Optimistic sends went wrong: restart right after the known match.
            self.next_index = self.match_index + 1
            return True
        if self.next_index - 1 != rejected:
            return False
        self.next_index = max(min(rejected, match_hint + 1), self.match_index + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

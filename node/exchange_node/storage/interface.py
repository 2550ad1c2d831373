"""What the I/O shell (and the simulator) need from durable storage, and no more.

Two implementations honour this contract: the real WAL-backed store in this
package, and the simulator's in-memory disk model (``exchange_node.sim``),
whose unsynced writes vanish on a simulated crash. One conformance suite
(``tests/storage/test_contract.py``) runs against both, so the simulator's
idea of durability is the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from exchange_node.raft.types import Entry, HardState, Snapshot


@dataclass(slots=True)
class RecoveredState:
    """Everything durable, as found at open: what the core is rebuilt from."""

    hard_state: HardState = HardState()  # noqa: RUF009 (an immutable NamedTuple)
    snapshot: Snapshot | None = None
    """The newest valid snapshot, or None."""
    entries: list[Entry] = field(default_factory=list)
    """Every stored entry after ``snapshot`` (or from index 1), contiguous."""


class RaftStorage(Protocol):
    def recover(self) -> RecoveredState:
        """The durable state; called once after opening."""
        ...

    def save(
        self,
        *,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one ``Ready``: durable when this returns (one fsync group).

        ``snapshot`` (received from a leader) replaces the whole log up to its
        index. ``entries[0].index`` may be at or below the last stored index:
        the stored suffix from there is durably replaced.

        Shared by every implementation (``tests/storage/test_contract.py``):
        after a ``snapshot`` the whole previous log is gone, even entries past
        the snapshot's index; an append that would leave a gap or overwrite the
        snapshot raises and changes nothing; an unchanged ``hard_state`` costs
        nothing. Only what a ``save`` that returned wrote survives a crash.
        """
        ...

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Persist a snapshot the application took; compacts covered log.

        Entries after its index stay. A snapshot at or below the one in force is
        ignored; one beyond the last stored index raises.
        """
        ...

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Stored entries with ``lo <= index < hi`` (fast: no full scan).

        ``hi`` past the end is clamped; ``lo`` below ``first_index()`` raises.
        """
        ...

    def first_index(self) -> int:
        """Index of the first stored entry (snapshot index + 1 when compacted)."""
        ...

    def last_index(self) -> int:
        """Index of the last stored entry (or of the snapshot, if the log is empty)."""
        ...

    def close(self) -> None: ...

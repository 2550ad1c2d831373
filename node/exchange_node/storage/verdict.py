"""What recovery concluded about a data directory, for the node to act on.

``WalStorage.recovery_verdict`` says one of four things (``docs/recovery.md``):

* ``CLEAN``: the log holds everything the node ever promised.
* ``TORN``: a batch at the end was cut short by a crash; it was never
  acknowledged (no acknowledgement or vote leaves before its batch and its
  promise are both durable) and was dropped.
* ``LOST``: the log ends below what the node durably promised (or the promise
  file itself is gone): acknowledged entries, perhaps committed ones, are missing.
* ``CORRUPTION``: a record in the log could not be trusted; the log was cut back
  to the last batch before it (only when the store was opened with
  ``repair_corruption=True``; otherwise opening raises ``StorageCorruptionError``).

After ``LOST`` and ``CORRUPTION`` the node must not vote or campaign until a
leader has brought its log back to ``promised_index``
(``RaftCore.start_recovering``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class VerdictKind(Enum):
    CLEAN = "clean"
    TORN = "torn_unacknowledged"
    LOST = "lost_acknowledged_tail"
    CORRUPTION = "corruption"


@dataclass(frozen=True, slots=True)
class RecoveryVerdict:
    kind: VerdictKind
    message: str
    """One line for the log: what was found, with indexes and batch numbers."""
    log_last_index: int
    """The last index of the log as recovered."""
    promised_index: int = 0
    """The highest index the node may have acknowledged (0: nothing known)."""
    promised_term: int = 0
    """The node's term when it made that promise."""
    promised_last_term: int | None = None
    """The term of the entry at ``promised_index`` then (None: unknown; the core then
    uses ``promised_term``, which bounds it)."""

    @property
    def must_recover(self) -> bool:
        """The node must catch up from a leader before it votes or campaigns again."""
        return self.kind is VerdictKind.LOST or self.kind is VerdictKind.CORRUPTION

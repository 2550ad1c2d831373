"""This replica's snapshots: which one is newest, the save in flight, and its file.

Every replica snapshots at the same applied indexes (``--snapshot-threshold``),
so a snapshot's state hash doubles as a divergence checkpoint. A snapshot is
saved in the disk thread after every Ready already queued there (one job at a
time, in order); the loop does not wait for it, except ``durable()`` (the admin
API's on-demand snapshot), which waits for that save.
"""

from __future__ import annotations

import asyncio
import pathlib

from exchange_node.raft.types import ConfState, Snapshot, SnapshotMeta
from exchange_node.server.envelope import MemberInfo, wrap_snapshot
from exchange_node.storage.interface import RaftStorage


class SnapshotKeeper:
    """See the module docstring."""

    def __init__(self) -> None:
        self.index = 0
        """Index of the newest snapshot taken or restored (0: none)."""
        self.term = 0
        self._saving: tuple[int, int, asyncio.Future[None]] | None = None
        """(index, term, save) of the newest snapshot this process took."""

    def restored(self, meta: SnapshotMeta) -> None:
        """A durable snapshot (recovered, or installed from the leader) is in force."""
        self.index = meta.index
        self.term = meta.term
        self._saving = None

    def due(self, applied_index: int) -> bool:
        """Is there anything applied past the newest snapshot?"""
        return applied_index > self.index

    def build(
        self,
        index: int,
        term: int,
        conf: ConfState,
        members: dict[int, MemberInfo],
        engine_state: bytes,
    ) -> Snapshot:
        """The snapshot of the state at applied (index, term); it becomes the newest."""
        self.index = index
        self.term = term
        return Snapshot(SnapshotMeta(index, term, conf), wrap_snapshot(members, engine_state))

    def saving(self, future: asyncio.Future[None]) -> None:
        """The newest snapshot's save has started in the disk thread."""
        self._saving = (self.index, self.term, future)

    async def durable(self) -> tuple[int, int]:
        """(index, term) of the newest snapshot, once its save completed."""
        saving = self._saving
        if saving is None:
            # Only a restored snapshot, never saved by this process: it is durable.
            return self.index, self.term
        index, term, future = saving
        await asyncio.shield(future)
        return index, term


def latest_snapshot_path(
    storage: RaftStorage | None, data_dir: pathlib.Path
) -> pathlib.Path | None:
    """The file of the newest durable snapshot, or None (none yet, or not the WAL)."""
    meta = getattr(storage, "snapshot_meta", None)
    if meta is None:
        return None
    from exchange_node.storage.files import snapshot_name

    path = data_dir / snapshot_name(meta.index, meta.term)
    return path if path.exists() else None

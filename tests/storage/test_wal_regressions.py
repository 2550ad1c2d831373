"""Review findings on storage/: real files, the real WAL, no mocks.

Each test was ``xfail(strict=True)`` until the owner fixed the bug it shows; now they
are regression tests and must pass.
"""

from __future__ import annotations

import os

from exchange_node.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from exchange_node.storage import format as fmt
from exchange_node.storage import open_storage


def _entry(index: int, term: int = 1) -> Entry:
    return Entry(term, index, b"x" * 100)


def _segments(data_dir) -> list[str]:
    return sorted(n for n in os.listdir(data_dir) if n.startswith("wal-"))


def test_a_data_dir_survives_two_restarts_after_a_snapshot_marker_closes_a_segment(tmp_path):
    data_dir = tmp_path / "wal"
    # 1. A log of 20 entries in one segment (the limit is far away).
    with open_storage(data_dir, segment_bytes=1 << 20) as wal:
        for i in range(1, 21):
            wal.save(entries=[_entry(i)], hard_state=HardState(1, 1, i))
    (segment,) = _segments(data_dir)
    size = os.path.getsize(data_dir / segment)

    # 2. Reopened with a segment limit that the next (tiny) batch crosses: the node
    #    snapshots at its last entry (an idle replica, applied == last index), the
    #    KEEP marker goes into segment 1 and pushes it past the limit, so the very
    #    next save rotates; segment 1 then holds no entry beyond the snapshot.
    limit = size - fmt.slot_area(fmt.SEGMENT_VERSION_SLOTS) + 10  # slots do not count
    with open_storage(data_dir, segment_bytes=limit) as wal:
        wal.save_snapshot(Snapshot(SnapshotMeta(20, 1, ConfState((1,), ())), b"state"))
        wal.save(entries=[_entry(21)], hard_state=HardState(1, 1, 21))
    assert len(_segments(data_dir)) == 2

    # 3. A restart: fine, and it "finishes the compaction" (segment 1 is covered).
    with open_storage(data_dir, segment_bytes=limit) as wal:
        assert (wal.first_index(), wal.last_index()) == (21, 21)

    # 4. Another restart must see the same durable state.
    with open_storage(data_dir, segment_bytes=limit) as wal:
        recovered = wal.recover()
        assert recovered.snapshot is not None and recovered.snapshot.meta.index == 20
        assert [e.index for e in recovered.entries] == [21]

"""The snapshot-marker scenario, and a child that runs it until a SIGKILL at a chosen point.

    python marker_crash_child.py DATA_DIR MODE SEGMENT_BYTES START KILL

The scenario (``scenario_ops``): a log prepared by ``prepare`` whose active segment is
just short of ``SEGMENT_BYTES``; a SNAPSHOT marker (MODE ``keep``: the application's
snapshot at the last index, an idle replica; ``reset``: the leader's snapshot) that takes
the segment past the limit, so the next save rotates before any entry past the snapshot
lands in it; then appends, reopens (each one a recovery that finishes compactions), a
second marker, more appends and reopens.

The child opens the store (a recovery), checks it holds the state after START ops
(``START?``: after START or START + 1 ops, whichever it finds), prints ``READY k``
(k: the ops it found done), then runs ops START+1.. printing ``BEGIN k KIND`` before and ``ACK k``
after each (a ``reopen`` op closes the store and opens it again, checking the state).
KILL is ``none`` or ``POINT:N``: the child SIGKILLs itself at the Nth time (counted over
the whole run, recoveries included) it reaches POINT:

* ``snap_file``: a snapshot file is durable, its marker not yet written;
* ``marker_torn``: half of a marker batch is written;
* ``before_sync``: a batch is written, not yet fdatasynced;
* ``segment_file``: a new segment file is durable, ``NEWEST_SEGMENT`` not yet updated;
* ``newest_file``: ``NEWEST_SEGMENT`` updated, the batch that rotated not yet written;
* ``unlink``: just before a file is deleted (compaction, at save or at recovery);
* ``after_unlink``: just after a file is deleted, before the directory fsync.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from exchange_node.raft.types import ConfState, HardState, Snapshot, SnapshotMeta
from exchange_node.storage import format as fmt
from exchange_node.storage import open_storage, wal
from storage_workload import Model, Op, make_entry, state_key

PREPARED_LAST = 60


def write(line: str) -> None:
    os.write(1, (line + "\n").encode())


def snap(index: int, term: int) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState((1, 2, 3), ())), b"app state %d" % index)


def append(first: int, last: int, term: int, vote: int) -> Op:
    entries = [make_entry(i, term) for i in range(first, last + 1)]
    return Op("append", entries, HardState(term, vote, last))


def prepare(data_dir: str) -> int:
    """Entries 1..PREPARED_LAST over several segments; returns the segment limit the
    scenario runs with: the active segment is 10 bytes short of it, so the marker batch
    takes it past the limit and the save after the marker rotates."""
    with open_storage(data_dir, segment_bytes=2048) as storage:
        for first in range(1, PREPARED_LAST + 1, 6):
            op = append(first, first + 5, 1, 1)
            storage.save(entries=op.entries, hard_state=op.hard_state)
        assert len(storage._segments) > 2
        active = storage._segments[-1]
        return active.size - fmt.slot_area(active.version) + 10


def prepared_model() -> Model:
    model = Model()
    for first in range(1, PREPARED_LAST + 1, 6):
        model.apply(append(first, first + 5, 1, 1))
    return model


def scenario_ops(mode: str) -> list[Op]:
    last = PREPARED_LAST
    if mode == "keep":
        return [
            Op("snapshot", snapshot=snap(last, 1)),  # fills the segment
            append(last + 1, last + 1, 1, 1),  # rotates
            Op("reopen"),
            Op("reopen"),
            append(last + 2, last + 10, 1, 1),
            Op("reopen"),
            Op("snapshot", snapshot=snap(last + 6, 1)),
            append(last + 11, last + 11, 1, 1),
            Op("reopen"),
        ]
    assert mode == "reset"
    return [
        Op("install", [], HardState(2, 0, last + 5), snap(last + 5, 2)),  # fills the segment
        append(last + 6, last + 6, 2, 0),  # rotates
        Op("reopen"),
        Op("reopen"),
        append(last + 7, last + 15, 2, 0),
        Op("reopen"),
        Op("install", [], HardState(3, 0, last + 20), snap(last + 20, 3)),
        append(last + 21, last + 21, 3, 0),
        Op("reopen"),
    ]


def states(mode: str) -> list[tuple[object, ...]]:
    """The durable state after 0, 1, 2, ... scenario ops."""
    model = prepared_model()
    keys = [model.key()]
    for op in scenario_ops(mode):
        model.apply(op)  # a reopen changes nothing
        keys.append(model.key())
    return keys


def install_kill(point: str, nth: int) -> None:
    count = 0

    def reached(name: str) -> None:
        nonlocal count
        if name == point:
            count += 1
            if count == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    durably: Callable[..., str] = wal.write_file_durably
    write_all: Callable[..., None] = wal._write_all
    fdatasync: Callable[[int], None] = wal._fdatasync
    unlink: Callable[..., None] = os.unlink

    def write_file_durably(directory: str, name: str, pieces: Any) -> str:
        path = durably(directory, name, pieces)
        if name.startswith("snap-"):
            reached("snap_file")
        elif name.startswith("wal-"):
            reached("segment_file")
        elif name == wal.NEWEST_SEGMENT_FILE:
            reached("newest_file")
        return path

    def write_all_pieces(fd: int, buf: Any) -> None:
        view = memoryview(buf)
        if len(view) > fmt.RECORD_HEAD_SIZE and view[8] == fmt.RT_SNAPSHOT:
            half = len(view) // 2
            os.write(fd, view[:half])
            reached("marker_torn")
            view = view[half:]
        write_all(fd, view)

    def fdatasync_then(fd: int) -> None:
        reached("before_sync")
        fdatasync(fd)

    def unlink_between(path: Any, *args: Any, **kwargs: Any) -> None:
        reached("unlink")
        unlink(path, *args, **kwargs)
        reached("after_unlink")

    wal.write_file_durably = write_file_durably  # type: ignore[assignment]
    wal._write_all = write_all_pieces
    wal._fdatasync = fdatasync_then
    os.unlink = unlink_between  # type: ignore[assignment]


def main() -> int:
    data_dir, mode, segment_bytes, start, kill = sys.argv[1:6]
    limit, first = int(segment_bytes), int(start.rstrip("?"))
    if kill != "none":
        point, nth = kill.split(":")
        install_kill(point, int(nth))
    ops, expected = scenario_ops(mode), states(mode)

    def opened() -> Any:
        storage = open_storage(data_dir, segment_bytes=limit)
        state = storage.recover()
        return storage, state_key(state.hard_state, state.snapshot, state.entries)

    storage, found = opened()
    if start.endswith("?") and first < len(ops) and found == expected[first + 1]:
        first += 1  # the op in flight at the previous kill did reach the disk
    if found != expected[first]:
        write(f"MISMATCH at open after op {first}")
        return 3
    write(f"READY {first}")
    for k in range(first + 1, len(ops) + 1):
        op = ops[k - 1]
        write(f"BEGIN {k} {op.kind}")
        if op.kind == "reopen":
            storage.close()
            storage, found = opened()
            if found != expected[k]:
                write(f"MISMATCH at reopen {k}")
                return 3
        else:
            op.apply(storage)
        write(f"ACK {k}")
    storage.close()
    write("FINISHED")
    return 0


if __name__ == "__main__":
    sys.exit(main())

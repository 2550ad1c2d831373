"""The SNAPSHOT marker in force survives compaction, restarts and crashes.

The marker is the only record of which snapshot is in force. When the marker batch
itself takes its segment past ``segment_bytes`` (an idle replica snapshots at its last
index, or the leader's snapshot arrives), the next save rotates and that segment holds
no entry past the snapshot. Compaction (at save or, finishing an interrupted one, at
recovery) must still keep it, or the open after next refuses the directory ("the log
starts after index N but no snapshot covers the entries before it").
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from exchange_node.storage import open_storage, wal
from marker_crash_child import (
    PREPARED_LAST,
    prepare,
    scenario_ops,
    states,
)
from storage_workload import state_key

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "marker_crash_child.py")
RESTARTS = 3


def segment_names(data_dir: str) -> list[str]:
    return sorted(n for n in os.listdir(data_dir) if n.startswith("wal-"))


def recovered(data_dir: str, limit: int) -> tuple[object, ...]:
    with open_storage(data_dir, segment_bytes=limit) as storage:
        state = storage.recover()
        return state_key(state.hard_state, state.snapshot, state.entries)


def same_after_restarts(data_dir: str, limit: int) -> tuple[object, ...]:
    """Open the directory RESTARTS times: every open must succeed and agree."""
    first = recovered(data_dir, limit)
    for _ in range(RESTARTS - 1):
        assert recovered(data_dir, limit) == first
    return first


@pytest.mark.parametrize("mode", ["keep", "reset"])
def test_the_segment_a_marker_filled_survives_every_restart(tmp_path, mode):
    data_dir = str(tmp_path / "data")
    limit = prepare(data_dir)
    expected = states(mode)
    storage = open_storage(data_dir, segment_bytes=limit)
    try:
        for k, op in enumerate(scenario_ops(mode), start=1):
            if op.kind == "reopen":
                storage.close()
                storage = open_storage(data_dir, segment_bytes=limit)
            else:
                op.apply(storage)
            if k == 2:
                # The marker batch filled segment n, the append rotated to n + 1: segment n
                # holds no entry past the snapshot, yet holds the marker in force.
                assert len(segment_names(data_dir)) == 2
            storage.close()
            assert same_after_restarts(data_dir, limit) == expected[k], f"after op {k}"
            storage = open_storage(data_dir, segment_bytes=limit)
    finally:
        storage.close()
    # Compaction still happens: the second marker (op 7) sits in a newer segment, so
    # the segment that held the first one is gone, and with it every prepared entry.
    names = segment_names(data_dir)
    first_indexes = [int(name.split("-")[2].split(".")[0], 16) for name in names]
    assert min(first_indexes) > PREPARED_LAST and len(names) <= 3


def test_compaction_makes_each_segment_deletion_durable_before_the_next(tmp_path, monkeypatch):
    data_dir = str(tmp_path / "data")
    limit = prepare(data_dir)
    calls: list[str] = []
    unlink, fsync_dir = os.unlink, wal.fsync_dir

    def recording_unlink(path, *args, **kwargs):
        calls.append("unlink " + os.path.basename(path))
        unlink(path, *args, **kwargs)

    def recording_fsync_dir(path):
        calls.append("fsync")
        fsync_dir(path)

    with open_storage(data_dir, segment_bytes=limit) as storage:
        covered = len(storage._segments) - 1
        monkeypatch.setattr(wal.os, "unlink", recording_unlink)
        monkeypatch.setattr(wal, "fsync_dir", recording_fsync_dir)
        storage._write_batch((), None, scenario_ops("keep")[0].snapshot, wal.fmt.SNAPSHOT_KEEP)
        monkeypatch.undo()
    segment_calls = [c for c in calls if c.startswith("unlink wal-") or c == "fsync"]
    assert covered >= 2
    # Each deletion is followed by a directory fsync before the next one (and the
    # snapshot file's own write_file_durably fsync comes first).
    deletions = [i for i, c in enumerate(segment_calls) if c.startswith("unlink")]
    assert len(deletions) == covered
    for i in deletions:
        assert segment_calls[i + 1] == "fsync"


# -- the same scenario, SIGKILLed at every interesting point ---------------------------

KILLS = [
    "snap_file:1",
    "snap_file:2",
    "marker_torn:1",
    "marker_torn:2",
    "before_sync:1",
    "before_sync:2",
    "before_sync:3",
    "segment_file:1",
    "segment_file:2",
    "newest_file:1",
    "unlink:1",
    "unlink:2",
    "after_unlink:1",
    "after_unlink:3",
    "unlink:4",
    # A second writer recovers the directory the first left mid-compaction, and is killed
    # while its recovery finishes that compaction (or at its first deletion after it).
    "unlink:1,unlink:1",
    "after_unlink:1,after_unlink:1",
    "unlink:2,unlink:2",
    "snap_file:2,unlink:1",
    "marker_torn:2,after_unlink:1",
]


def run_child(data_dir: str, mode: str, limit: int, start: str, kill: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, CHILD, data_dir, mode, str(limit), str(start), kill],
        cwd=HERE,
        capture_output=True,
        timeout=120,
    )
    lines = done.stdout.decode().splitlines()
    assert not any(line.startswith("MISMATCH") for line in lines), lines
    if kill == "none":
        assert done.returncode == 0 and lines[-1] == "FINISHED", (lines, done.stderr[-2000:])
    else:
        # Every listed kill point is reached: the writer always dies by the SIGKILL.
        assert done.returncode == -9, (done.returncode, lines, done.stderr[-2000:])
    return lines


@pytest.mark.parametrize("kill", KILLS)
@pytest.mark.parametrize("mode", ["keep", "reset"])
def test_sigkill_around_a_marker_that_fills_its_segment(tmp_path, mode, kill):
    """Kill the writer at one point of the scenario; every later open must succeed and
    give the same state, which is the state after the last acknowledged op or after the
    one in flight; a new writer then finishes the scenario from there (itself reopening
    several times), and the directory still opens, restart after restart."""
    data_dir = str(tmp_path / "data")
    limit = prepare(data_dir)
    expected = states(mode)
    ops = scenario_ops(mode)

    acked = 0
    for k, point in enumerate(kill.split(",")):
        # The first writer starts from the prepared log; a second one from whatever
        # the first left (no open in between: its recovery is the first one).
        lines = run_child(data_dir, mode, limit, "0" if k == 0 else f"{acked}?", point)
        ready = [int(line.split()[1]) for line in lines if line.startswith("READY")]
        if ready:  # (a writer killed during its recovery prints nothing)
            acked = ready[0]
        acks = [int(line.split()[1]) for line in lines if line.startswith("ACK ")]
        acked = acks[-1] if acks else acked
        if acked == len(ops):
            break
    found = same_after_restarts(data_dir, limit)
    if acked == len(ops):
        assert found == expected[acked]
        return
    assert found in (expected[acked], expected[acked + 1]), (
        f"after acknowledging op {acked} ({lines[-3:]}) the recovered state is neither "
        f"the state after op {acked} nor after op {acked + 1}"
    )
    resume = acked + 1 if found == expected[acked + 1] else acked

    run_child(data_dir, mode, limit, str(resume), "none")
    assert same_after_restarts(data_dir, limit) == expected[-1]

"""server/snapshots.py: the snapshot policy (bytes, entries, staggering, checkpoints)
and the forked child, whose snapshot must equal a synchronous one at the same index
even while the parent goes on changing the engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from exchange_node.engine.commands import (
    AddSymbol,
    NewOrder,
    OrderType,
    Side,
    TimeInForce,
)
from exchange_node.engine.engine import Engine
from exchange_node.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from exchange_node.server.divergence import state_digest
from exchange_node.server.envelope import MemberInfo, wrap_snapshot
from exchange_node.server.snapshots import (
    MODE_CHECKPOINT,
    MODE_FILE,
    MODE_PIPE,
    SnapshotError,
    SnapshotPolicy,
    fork_child,
    snapshot_dir,
    wait_child,
)
from exchange_node.storage import format as fmt
from exchange_node.storage.files import snapshot_name
from exchange_node.storage.wal import open_storage

MEMBERS = {1: MemberInfo("n1", "127.0.0.1:1", "127.0.0.1:2")}
CONF = ConfState((1,), ())


# ---------------------------------------------------------------------- policy


def test_bytes_trigger_counts_from_the_snapshot_taken() -> None:
    policy = SnapshotPolicy(snapshot_bytes=1_000, snapshot_entries=0, checkpoint_entries=0)
    policy.reset(staggered=False)
    assert not policy.applied(1, 600).snapshot
    assert policy.applied(2, 400).snapshot  # 1,000 bytes since the last snapshot
    policy.started()
    # Applying goes on while the child runs: those bytes count for the next one.
    assert policy.applied(3, 300).snapshot  # still due: the shell skips (one in flight)
    policy.taken()
    assert policy.bytes_since == 300
    assert not policy.applied(4, 600).snapshot
    assert policy.applied(5, 100).snapshot


def test_a_failed_snapshot_stays_due() -> None:
    policy = SnapshotPolicy(snapshot_bytes=100, snapshot_entries=0, checkpoint_entries=0)
    policy.reset(staggered=False)
    assert policy.applied(1, 100).snapshot
    policy.started()
    policy.failed()
    policy.taken()  # nothing in flight: no effect
    assert policy.bytes_since == 100
    assert policy.applied(2, 0).snapshot


def test_entry_trigger_is_optional() -> None:
    bytes_only = SnapshotPolicy(snapshot_bytes=10**9, snapshot_entries=0, checkpoint_entries=0)
    bytes_only.reset(staggered=False)
    assert not any(bytes_only.applied(i, 10).snapshot for i in range(1, 10_000))
    entries = SnapshotPolicy(snapshot_bytes=10**9, snapshot_entries=5, checkpoint_entries=0)
    entries.reset(staggered=False)
    due = [i for i in range(1, 6) if entries.applied(i, 10).snapshot]
    assert due == [5]


def _first_snapshot_bytes(slot: int, slots: int) -> int:
    policy = SnapshotPolicy(snapshot_bytes=3_000, snapshot_entries=0, checkpoint_entries=0)
    policy.place(slot, slots)
    applied = 0
    for index in range(1, 10_000):
        applied += 10
        if policy.applied(index, 10).snapshot:
            return applied
    raise AssertionError("never due")


def test_replicas_stagger_their_first_snapshot_and_keep_the_phase() -> None:
    firsts = [_first_snapshot_bytes(slot, 3) for slot in range(3)]
    assert firsts == [1_000, 2_000, 3_000]  # a third of the threshold apart, none above it
    # After the first, every replica waits the full threshold: phases stay apart.
    policy = SnapshotPolicy(snapshot_bytes=3_000, snapshot_entries=0, checkpoint_entries=0)
    policy.place(0, 3)
    for index in range(1, 101):
        if policy.applied(index, 10).snapshot:
            policy.started()
            policy.taken()
    assert policy.threshold_bytes() == 3_000
    # A leader's snapshot installed: staggered again; a restart from its own: not.
    policy.reset(staggered=True)
    assert policy.threshold_bytes() == 1_000
    policy.reset(staggered=False)
    assert policy.threshold_bytes() == 3_000


def _snapshot_indexes(slot: int, slots: int, entries: int, up_to: int) -> list[int]:
    policy = SnapshotPolicy(snapshot_bytes=10**12, snapshot_entries=entries, checkpoint_entries=0)
    policy.place(slot, slots)
    due = []
    for index in range(1, up_to + 1):
        if policy.applied(index, 10).snapshot:
            due.append(index)
            policy.started()
            policy.taken()
    return due


def test_replicas_stagger_the_entry_trigger_too() -> None:
    # --snapshot-threshold alone (bytes never reached): the first snapshot of each
    # voter a third of the count apart, then the full count, so no two fork together.
    seen = [_snapshot_indexes(slot, 3, 300, 1_000) for slot in range(3)]
    assert seen == [[100, 400, 700, 1_000], [200, 500, 800], [300, 600, 900]]
    # A single member is not staggered.
    assert _snapshot_indexes(0, 1, 300, 700) == [300, 600]
    policy = SnapshotPolicy(snapshot_bytes=10**12, snapshot_entries=300, checkpoint_entries=0)
    policy.place(1, 3)
    assert policy.threshold_entries() == 200
    policy.reset(staggered=False)  # a restart from its own snapshot keeps its phase
    assert policy.threshold_entries() == 300
    policy.reset(staggered=True)  # a leader's snapshot installed: staggered again
    assert policy.threshold_entries() == 200
    off = SnapshotPolicy(snapshot_bytes=10**12, snapshot_entries=0, checkpoint_entries=0)
    off.place(1, 3)
    assert off.threshold_entries() == 0


def test_checkpoints_fall_at_the_same_indexes_on_every_replica() -> None:
    seen = []
    for slot in range(3):
        policy = SnapshotPolicy(snapshot_bytes=500, snapshot_entries=0, checkpoint_entries=40)
        policy.place(slot, 3)
        seen.append([i for i in range(1, 201) if policy.applied(i, 7).checkpoint])
    assert seen[0] == seen[1] == seen[2] == [40, 80, 120, 160, 200]


# ---------------------------------------------------------------------- the child


def _engine(orders: int) -> Engine:
    engine = Engine([AddSymbol("BTC-USD", 1, 1, 2_000, 50_000)])
    for n in range(orders):
        _rest(engine, n, index=n + 1)
    return engine


def _rest(engine: Engine, n: int, index: int) -> None:
    buy = n % 2 == 0
    price = 50_000 - 1 - n % 500 if buy else 50_000 + 1 + n % 500
    engine.apply(
        NewOrder(
            f"c{n % 7}",
            f"o{n}",
            "BTC-USD",
            Side.BUY if buy else Side.SELL,
            OrderType.LIMIT,
            TimeInForce.GTC,
            price,
            10,
        ),
        index,
        1_700_000_000_000_000_000 + index,
    )


@pytest.mark.parametrize("mode", [MODE_FILE, MODE_PIPE, MODE_CHECKPOINT])
def test_the_child_snapshot_equals_a_synchronous_one_while_the_parent_changes(
    tmp_path: Path, mode: int
) -> None:
    engine = _engine(3_000)
    meta = SnapshotMeta(3_000, 2, CONF)
    # What a synchronous snapshot at this index is.
    state = engine.snapshot()
    expected = Snapshot(meta, wrap_snapshot(MEMBERS, state))
    data_dir = str(tmp_path) if mode == MODE_FILE else None
    pid, read_fd = fork_child(engine, MEMBERS, meta, mode, data_dir)
    # The parent goes on at once: the child must not see any of this.
    for n in range(3_000, 4_000):
        _rest(engine, n, index=n + 1)
    assert engine.snapshot() != state
    result = wait_child(pid, read_fd)
    assert result.digest == state_digest(state)
    if mode == MODE_CHECKPOINT:
        assert result.size == 0 and result.data is None
        assert not list(tmp_path.iterdir())
        return
    assert result.size == len(expected.data)
    if mode == MODE_PIPE:
        assert result.data == expected.data
        return
    written = (tmp_path / snapshot_name(meta.index, meta.term)).read_bytes()
    assert written == b"".join(fmt.encode_snapshot(expected))
    assert [p.name for p in tmp_path.iterdir()] == [snapshot_name(meta.index, meta.term)]


class _Broken:
    def snapshot(self) -> bytes:
        raise RuntimeError("cannot serialise")


class _Slow:
    def snapshot(self) -> bytes:
        time.sleep(60)
        return b""


def test_a_child_that_fails_says_why(tmp_path: Path) -> None:
    pid, read_fd = fork_child(
        _Broken(), MEMBERS, SnapshotMeta(1, 1, CONF), MODE_FILE, str(tmp_path)
    )
    with pytest.raises(SnapshotError, match="RuntimeError: cannot serialise"):
        wait_child(pid, read_fd)
    assert not list(tmp_path.iterdir())


def test_a_child_that_dies_is_a_failure(tmp_path: Path) -> None:
    pid, read_fd = fork_child(_Slow(), MEMBERS, SnapshotMeta(1, 1, CONF), MODE_FILE, str(tmp_path))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(SnapshotError, match="died"):
        wait_child(pid, read_fd)


_NODE_THAT_DIES = """
import sys, time
from exchange_node.raft.types import ConfState, SnapshotMeta
from exchange_node.server.snapshots import MODE_FILE, fork_child

class Slow:
    def snapshot(self):
        time.sleep(60)
        return b""

pid, _ = fork_child(Slow(), {}, SnapshotMeta(1, 1, ConfState([1])), MODE_FILE, sys.argv[1])
print(pid, flush=True)
time.sleep(60)
"""


def test_a_child_dies_with_its_node(tmp_path: Path) -> None:
    """A kill -9 of the node ends its snapshot child: one that lived on held the data
    directory's lock and kept writing into it while the node restarted."""
    node = subprocess.Popen(
        [sys.executable, "-c", _NODE_THAT_DIES, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert node.stdout is not None
        child = int(node.stdout.readline())
        os.kill(node.pid, signal.SIGKILL)
        node.wait(timeout=10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and _state(child) != "Z":
            assert time.monotonic() < deadline, "the snapshot child outlived its node"
            time.sleep(0.05)
    finally:
        if node.poll() is None:
            node.kill()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


# ---------------------------------------------------------------------- the WAL


def test_the_wal_puts_a_written_snapshot_in_force_and_compacts(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path), segment_bytes=4096)
    for lo in range(1, 201, 20):  # a segment rotates between batches
        entries = [Entry(1, i, b"x" * 200) for i in range(lo, lo + 20)]
        storage.save(entries=entries, hard_state=HardState(1, 1, lo + 19), snapshot=None)
    segments_before = len([p for p in tmp_path.iterdir() if p.name.startswith("wal-")])
    engine = _engine(50)
    meta = SnapshotMeta(150, 1, CONF)
    pid, read_fd = fork_child(engine, MEMBERS, meta, MODE_FILE, snapshot_dir(storage))
    wait_child(pid, read_fd)
    snapshot = storage.save_written_snapshot(150, 1)
    assert snapshot.data == wrap_snapshot(MEMBERS, engine.snapshot())
    assert storage.first_index() == 151
    segments_after = len([p for p in tmp_path.iterdir() if p.name.startswith("wal-")])
    assert segments_after < segments_before
    storage.close()
    reopened = open_storage(str(tmp_path), segment_bytes=4096)
    recovered = reopened.recover()
    assert recovered.snapshot is not None and recovered.snapshot.meta.index == 150
    assert recovered.snapshot.data == snapshot.data
    reopened.close()

"""faultfs on real FUSE mounts: what a power cut keeps and drops, and each disk fault
as the writer sees it (errno, delay, stall), and that unmounting leaves nothing."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from exchange_node.chaos.faultfs import (
    FaultFS,
    FaultFSError,
    FaultFSHandle,
    leftover_mounts,
    unavailable_reason,
    unmount_leftovers,
)
from exchange_node.chaos.target import DiskFault


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "faultfs tests mount FUSE filesystems: run as root"
    return unavailable_reason()


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FaultFSHandle]:
    handle = FaultFS.mount(tmp_path / "backing", tmp_path / "mnt")
    try:
        yield handle
    finally:
        handle.unmount()


def _write(path: Path, data: bytes, *, sync: bool, flags: int = os.O_CREAT | os.O_WRONLY) -> None:
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mnt(fs: FaultFSHandle) -> Path:
    return Path(fs.mountpoint)


def test_fsynced_write_survives_power_cut_and_unsynced_write_is_gone(fs: FaultFSHandle) -> None:
    mnt, backing = _mnt(fs), Path(fs.backing_dir)
    _write(mnt / "wal", b"durable", sync=True)
    _fsync_dir(mnt)
    fd = os.open(mnt / "wal", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"+pending")
    # Readers see it; the backing file does not (it lives in faultfs's memory).
    assert (mnt / "wal").read_bytes() == b"durable+pending"
    assert (backing / "wal").read_bytes() == b"durable"
    assert fs.unsynced_bytes() == len(b"+pending")
    os.fdatasync(fd)
    assert (backing / "wal").read_bytes() == b"durable+pending"
    os.write(fd, b"+lost")
    with pytest.raises(FaultFSError, match="still open"):
        fs.drop_unsynced(wait_closed=0.2)  # the writer must be dead first
    os.close(fd)  # close is no sync point

    report = fs.drop_unsynced()
    assert report.bytes == len(b"+lost")
    assert (mnt / "wal").read_bytes() == b"durable+pending"
    assert fs.unsynced_bytes() == 0


def test_a_torn_power_cut_keeps_a_seeded_strict_prefix(fs: FaultFSHandle) -> None:
    mnt = _mnt(fs)
    _write(mnt / "wal", b"durable", sync=True)
    _fsync_dir(mnt)
    kept = []
    for seed in (1, 2, 1):
        _write(mnt / "wal", b"0123456789", sync=False, flags=os.O_WRONLY | os.O_APPEND)
        report = fs.drop_unsynced(torn_seed=seed)
        content = (mnt / "wal").read_bytes()
        assert 1 <= report.torn_bytes < 10, report
        assert content == b"durable" + b"0123456789"[: report.torn_bytes]
        kept.append(report.torn_bytes)
        _write(mnt / "wal", b"", sync=False, flags=os.O_WRONLY | os.O_TRUNC)
        _write(mnt / "wal", b"durable", sync=True, flags=os.O_WRONLY)
    assert kept[0] == kept[2], "the same seed must tear at the same byte"


def test_unsynced_truncation_is_undone_and_truncated_bytes_read_as_zeros(
    fs: FaultFSHandle,
) -> None:
    mnt = _mnt(fs)
    _write(mnt / "f", b"abcdefgh", sync=True)
    _fsync_dir(mnt)
    with open(mnt / "f", "r+b") as f:
        f.truncate(2)
        f.seek(5)
        f.write(b"X")
        f.flush()
        # bytes 2..4 were cut away: they come back as zeros, not as the old "cde"
        assert (mnt / "f").read_bytes() == b"ab\0\0\0X"
    fs.drop_unsynced()
    assert (mnt / "f").read_bytes() == b"abcdefgh"


def test_names_need_a_directory_fsync(fs: FaultFSHandle) -> None:
    mnt = _mnt(fs)
    # The node's durable write: temp file, fsync, rename over the old file, directory fsync.
    _write(mnt / "NEWEST", b"1", sync=True)
    _fsync_dir(mnt)
    _write(mnt / "NEWEST.tmp", b"2", sync=True)
    os.rename(mnt / "NEWEST.tmp", mnt / "NEWEST")
    _write(mnt / "created", b"x", sync=True)
    _write(mnt / "doomed", b"d", sync=True)
    _fsync_dir(mnt)
    os.unlink(mnt / "doomed")
    # Not made durable: the unlink, a temp file's creation and its rename over, a creation.
    _write(mnt / "NEWEST.tmp", b"3", sync=True)
    os.rename(mnt / "NEWEST.tmp", mnt / "NEWEST")
    _write(mnt / "orphan", b"o", sync=True)
    assert (mnt / "NEWEST").read_bytes() == b"3"
    assert sorted(os.listdir(mnt)) == ["NEWEST", "created", "orphan"]

    report = fs.drop_unsynced()
    assert report.names == 4
    # The rename is undone (the replaced file is back), the creations and unlink too.
    assert (mnt / "NEWEST").read_bytes() == b"2"
    assert not (mnt / "NEWEST.tmp").exists()
    assert (mnt / "doomed").read_bytes() == b"d"
    assert not (mnt / "orphan").exists()
    assert (mnt / "created").read_bytes() == b"x"


def test_eio_on_write_and_fsync_reach_the_writer(fs: FaultFSHandle) -> None:
    mnt = _mnt(fs)
    _write(mnt / "f", b"before", sync=True)
    _fsync_dir(mnt)
    fs.set_fault(DiskFault("eio_write"))
    with pytest.raises(OSError) as caught:
        _write(mnt / "f", b"x", sync=False, flags=os.O_WRONLY | os.O_APPEND)
    assert caught.value.errno == errno.EIO

    fs.set_fault(DiskFault("eio_fsync"))
    fd = os.open(mnt / "f", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"+unlucky")
        with pytest.raises(OSError) as caught:
            os.fdatasync(fd)
        assert caught.value.errno == errno.EIO
        fs.set_fault(None)
        # As Linux after a writeback error: still readable, and a later fsync
        # succeeds without writing it; a power cut then loses it.
        assert (mnt / "f").read_bytes() == b"before+unlucky"
        os.fdatasync(fd)
    finally:
        os.close(fd)
    fs.drop_unsynced()
    assert (mnt / "f").read_bytes().rstrip(b"\0") == b"before"


def test_full_disk_refuses_growth_with_enospc(fs: FaultFSHandle) -> None:
    mnt = _mnt(fs)
    _write(mnt / "f", b"0123456789", sync=True)
    fs.set_fault(DiskFault("full"))
    with pytest.raises(OSError) as caught:
        _write(mnt / "f", b"more", sync=False, flags=os.O_WRONLY | os.O_APPEND)
    assert caught.value.errno == errno.ENOSPC
    assert os.statvfs(mnt).f_bavail == 0
    # Overwriting inside the file needs no space.
    with open(mnt / "f", "r+b") as f:
        f.write(b"AB")
        f.flush()
        os.fsync(f.fileno())
    fs.set_fault(None)
    _write(mnt / "f", b"more", sync=True, flags=os.O_WRONLY | os.O_APPEND)
    assert (mnt / "f").read_bytes() == b"AB23456789more"


def _time_fsyncs(path: Path, count: int) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        started = time.perf_counter()
        for _ in range(count):
            os.write(fd, b"x" * 64)
            os.fdatasync(fd)
        return time.perf_counter() - started
    finally:
        os.close(fd)


def test_slow_fsync_adds_its_delay(fs: FaultFSHandle) -> None:
    mnt = _mnt(fs)
    plain = _time_fsyncs(mnt / "f", 5)
    fs.set_fault(DiskFault("slow_fsync", delay_ms=100))
    slow = _time_fsyncs(mnt / "f", 5)
    assert slow >= 0.5, slow
    assert slow > plain + 0.4, (plain, slow)


def test_stalled_fsync_blocks_until_healed(fs: FaultFSHandle) -> None:
    mnt = _mnt(fs)
    fs.set_fault(DiskFault("stall_fsync"))
    done = threading.Event()

    def writer() -> None:
        _time_fsyncs(mnt / "f", 1)
        done.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert not done.wait(1.0), "fsync returned while stalled"
    assert fs.stats()["stalled"] == 1
    # Reads and other calls still work while an fsync is stalled.
    assert (mnt / "f").read_bytes() == b"x" * 64
    fs.set_fault(None)
    assert done.wait(5.0), "fsync still blocked after healing"
    assert fs.unsynced_bytes() == 0


def test_unmount_with_an_open_file_leaves_nothing(tmp_path: Path) -> None:
    handle = FaultFS.mount(tmp_path / "backing", tmp_path / "mnt")
    fd = os.open(tmp_path / "mnt" / "held", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"unsynced but cleanly unmounted")
    try:
        handle.unmount(timeout=2.0)
        assert handle.proc.poll() is not None
        assert leftover_mounts(tmp_path) == []
        # A clean unmount writes through, as a clean shutdown does.
        assert (tmp_path / "backing" / "held").read_bytes() == b"unsynced but cleanly unmounted"
        assert os.listdir(tmp_path / "backing") == ["held"]
        handle.unmount()  # twice is harmless
    finally:
        # The file outlived its filesystem: closing it reports the lost connection.
        with pytest.raises(OSError):
            os.close(fd)


def test_leftover_mount_of_a_dead_faultfs_is_found_and_removed(tmp_path: Path) -> None:
    handle = FaultFS.mount(tmp_path / "backing", tmp_path / "mnt")
    os.kill(handle.pid, signal.SIGKILL)
    handle.proc.wait()
    mnt = str(tmp_path / "mnt")
    assert leftover_mounts(tmp_path) == [mnt]
    with pytest.raises(OSError) as caught:
        os.listdir(mnt)
    assert caught.value.errno == errno.ENOTCONN
    live = FaultFS.mount(tmp_path / "backing2", tmp_path / "live")
    try:
        # A live mount (another run's, say) is left alone when only the dead are asked for.
        assert unmount_leftovers(tmp_path, only_dead=True) == [mnt]
        assert leftover_mounts(tmp_path) == [str(tmp_path / "live")]
    finally:
        live.unmount()
    assert leftover_mounts(tmp_path) == []
    assert os.listdir(mnt) == []
    handle.unmount()


def test_a_killed_controller_leaves_no_mount_and_no_process(tmp_path: Path) -> None:
    """The process that mounted faultfs dies (kill -9 of a chaos run): the filesystem
    syncs, unmounts itself and exits."""
    script = (
        "import os, sys\n"
        "from exchange_node.chaos.faultfs import FaultFS\n"
        "h = FaultFS.mount(sys.argv[1] + '/backing', sys.argv[1] + '/mnt')\n"
        "fd = os.open(sys.argv[1] + '/mnt/f', os.O_CREAT | os.O_WRONLY, 0o644)\n"
        "os.write(fd, b'unsynced'); os.close(fd)\n"
        "print(h.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    fs_pid = int(run.stdout.split()[0])
    deadline = time.monotonic() + 10
    while leftover_mounts(tmp_path) or _running(fs_pid):
        assert time.monotonic() < deadline, (leftover_mounts(tmp_path), _running(fs_pid))
        time.sleep(0.1)
    assert (tmp_path / "backing" / "f").read_bytes() == b"unsynced"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_mount_refuses_a_mountpoint_inside_the_backing_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mountpoint"):
        FaultFS.mount(tmp_path, tmp_path / "inside")


def test_mount_refuses_a_mountpoint_a_live_faultfs_holds(fs: FaultFSHandle, tmp_path: Path) -> None:
    with pytest.raises(FaultFSError, match=r"mountpoint.*live"):
        FaultFS.mount(tmp_path / "other", fs.mountpoint)
    assert leftover_mounts(tmp_path) == [fs.mountpoint]


def test_an_unknown_fault_kind_is_refused_by_name(fs: FaultFSHandle) -> None:
    with pytest.raises(ValueError, match="kind"):
        fs.set_fault(DiskFault("melt"))  # type: ignore[arg-type]


def _fsyncs(directory: Path, seconds: float) -> int:
    fd = os.open(directory / "rate", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            os.write(fd, b"x" * 256)  # about one WAL batch of a light load
            os.fdatasync(fd)
            count += 1
        return count
    finally:
        os.close(fd)


def test_fsync_rate_through_faultfs_is_enough_for_a_node(fs: FaultFSHandle, tmp_path: Path) -> None:
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    # Interleaved slices: the disk is shared with other work, whose load comes and goes.
    raw = through = 0
    for _ in range(10):
        raw += _fsyncs(raw_dir, 0.15)
        through += _fsyncs(_mnt(fs), 0.15)
    print(f"256-byte append + fdatasync: raw disk {raw / 1.5:.0f}/s, faultfs {through / 1.5:.0f}/s")
    # The fsync of the disk below dominates; faultfs adds a FUSE round trip and a copy.
    assert through >= raw / 4, (raw, through)


def test_a_batch_whose_fsync_failed_does_not_come_back_after_a_restart(
    fs: FaultFSHandle,
) -> None:
    """fsyncgate: after a failed fdatasync the batch may still be in the page cache; the WAL
    cuts it off, so a restart without a power cut never acts on a vote the disk never stored
    (found by faultfs; failed as a strict xfail before WalStorage._fail cut it back)."""
    from exchange_node.raft.types import Entry, HardState
    from exchange_node.storage.wal import open_storage

    data = Path(fs.mountpoint) / "data"
    storage = open_storage(data)
    storage.save(entries=[Entry(1, 1, b"a")], hard_state=HardState(1, 2, 1))
    fs.set_fault(DiskFault("eio_fsync"))
    with pytest.raises(OSError):
        storage.save(entries=[Entry(2, 2, b"b")], hard_state=HardState(2, 3, 1))
    storage.close()
    fs.set_fault(None)
    # The node stops and starts again on the same machine (no power cut).
    storage = open_storage(data)
    after_restart = (storage.last_index(), storage.recover().hard_state)
    storage.close()
    fs.drop_unsynced()
    storage = open_storage(data)
    after_power_cut = (storage.last_index(), storage.recover().hard_state)
    storage.close()
    assert after_power_cut == (1, HardState(1, 2, 1))
    # What a restarted node acts on must be what a power cut leaves.
    assert after_restart == after_power_cut


_TORN_WRITER = """
import sys
from exchange_node.raft.types import Entry, HardState
from exchange_node.storage.wal import open_storage
storage = open_storage(sys.argv[1])
storage.save(entries=[Entry(1, i, b"x" * 100) for i in range(1, 11)], hard_state=HardState(1, 1, 5))
print("saved", flush=True)
sys.stdin.readline()
storage.save(entries=[Entry(1, i, b"y" * 100) for i in range(11, 31)], hard_state=HardState(1, 1, 9))
print("the second save returned through a stalled fsync", flush=True)
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_wal_recovers_from_a_torn_power_cut_mid_batch(fs: FaultFSHandle, seed: int) -> None:
    """A real process dies in the middle of a WAL batch's fdatasync; part of the batch
    reached the disk. Recovery cuts the torn tail and keeps the batch before it."""
    from exchange_node.raft.types import HardState
    from exchange_node.storage.wal import open_storage

    data = Path(fs.mountpoint) / "data"
    writer = subprocess.Popen(
        [sys.executable, "-c", _TORN_WRITER, str(data)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "saved"
        (segment,) = Path(fs.backing_dir, "data").glob("wal-*.log")
        first_batch_end = segment.stat().st_size
        fs.set_fault(DiskFault("stall_fsync"))
        writer.stdin.write("go\n")
        writer.stdin.flush()
        deadline = time.monotonic() + 10
        while fs.stats()["stalled"] < 1:
            assert time.monotonic() < deadline, "the second batch never reached its fsync"
            time.sleep(0.01)
        # Killable although its fsync is stalled (faultfs answers EINTR once the kernel
        # reports the caller interrupted; else it would sleep uninterruptibly).
        writer.kill()
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            fs.set_fault(None)  # unstick it, then make sure it is gone
            writer.kill()
            writer.wait()
    report = fs.drop_unsynced(torn_seed=seed)
    fs.set_fault(None)
    # Part of the second batch (never the whole of it) is on disk.
    assert segment.stat().st_size > first_batch_end, report

    storage = open_storage(data)
    try:
        recovered = storage.recover()
        assert storage.last_index() == 10
        assert recovered.hard_state == HardState(1, 1, 5)
        assert [e.data for e in recovered.entries] == [b"x" * 100] * 10
    finally:
        storage.close()

"""The FUSE side of ``faultfs``: a passthrough filesystem that keeps what was never
made durable in memory, so that a power cut can be played, plus injected disk faults.

The model (what a power cut loses)
----------------------------------
* File data. ``write`` and ``truncate`` (``ftruncate``, ``open(O_TRUNC)``) go to an
  in-memory overlay of the file (keyed by the backing inode, so renames keep it);
  reads see backing bytes + overlay, the backing file sees nothing. ``fsync`` and
  ``fdatasync`` (the same here) write the overlay through and fsync the backing file.
* Names. ``create``, ``rename`` (also over an existing file), ``unlink`` and ``link``
  are applied to the backing directory at once, and an undo step is journalled.
  ``fsync`` of a directory makes every journalled step touching that directory
  durable. A power cut undoes the rest, newest first (a replaced or unlinked file
  comes back from a hidden hard link in ``TRASH``). An fsync of a file does *not*
  make its name durable: POSIX does not promise it (ext4 happens to).
* ``drop_unsynced()`` is the power cut: every overlay is discarded and the journal
  undone. ``drop_unsynced(torn_seed=N)`` instead lets a seeded strict prefix of each
  file's pending writes reach the disk first (a torn write). The node must have been killed first (its open files would otherwise see
  the old contents under them).

What it does not capture: reordered writes (a torn cut keeps a prefix in write
order, never a later write without an earlier one), ``mkdir``/``rmdir``/``chmod``/``utimens`` (durable
at once), ``mmap`` (``direct_io``: the kernel caches nothing), and a crash of the
faultfs process itself (the overlay dies with it, but the journal is not undone:
names stay as they were).

Faults (``set_fault``): ``slow_fsync`` sleeps ``delay_ms`` before each fsync (file
or directory); ``stall_fsync`` blocks every fsync until the fault is cleared or
changed; ``eio_write`` fails every write with EIO; ``eio_fsync`` fails every fsync
with EIO and, as Linux does after a writeback error, forgets the file's pending
writes (still readable, never written, lost by a power cut); ``full`` fails with
ENOSPC every write that grows a file and reports no free blocks.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import mfusepy

log = logging.getLogger(__name__)

TRASH = ".faultfs-trash"
"""Hidden directory in the backing root holding links to files a power cut may restore."""

FAULT_KINDS = ("slow_fsync", "stall_fsync", "eio_write", "eio_fsync", "full")


@dataclass(slots=True)
class Overlay:
    """A file's writes and truncations since its last fsync."""

    fd: int
    """The overlay's own backing descriptor: writes go through with it, also after the
    writer closed the file, and it keeps the inode (and so the key) from being reused."""
    size: int
    """The size readers see."""
    floor: int
    """Backing bytes at or past this offset are not visible (truncated away)."""
    extents: list[tuple[int, bytearray]] = field(default_factory=list)
    forgotten: list[tuple[int, bytearray]] = field(default_factory=list)
    """Writes a failed fsync dropped from writeback: readable, never written through."""

    def pending_bytes(self) -> int:
        return sum(len(d) for _, d in self.extents) + sum(len(d) for _, d in self.forgotten)

    def write(self, offset: int, data: bytes) -> None:
        if self.extents:
            last_at, last = self.extents[-1]
            if last_at + len(last) == offset:  # an append: one growing extent
                last += data
                self.size = max(self.size, offset + len(data))
                return
        self.extents.append((offset, bytearray(data)))
        self.size = max(self.size, offset + len(data))

    def truncate(self, length: int) -> None:
        self.size = length
        self.floor = min(self.floor, length)
        self.extents = _clip(self.extents, length)
        self.forgotten = _clip(self.forgotten, length)

    def read(self, fd: int, size: int, offset: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        buf = bytearray(end - offset)
        base_end = min(end, self.floor)
        if base_end > offset:
            base = os.pread(fd, base_end - offset, offset)
            buf[: len(base)] = base
        for at, data in (*self.forgotten, *self.extents):
            lo, hi = max(at, offset), min(at + len(data), end)
            if lo < hi:
                buf[lo - offset : hi - offset] = data[lo - at : hi - at]
        return bytes(buf)


def _clip(extents: list[tuple[int, bytearray]], length: int) -> list[tuple[int, bytearray]]:
    return [(at, data[: length - at]) for at, data in extents if at < length]


@dataclass(slots=True)
class JournalStep:
    """One namespace change not yet made durable, and how to undo it."""

    op: str  # "create" | "rename" | "unlink"
    dirs: frozenset[str]
    """Backing directories it touched: an fsync of any of them makes it durable."""
    path: str
    new_path: str = ""
    trash: str = ""
    """Hard link to the file it removed or replaced, if any."""


class FaultOps(mfusepy.Operations):  # type: ignore[misc]  # mfusepy ships no types
    """Passthrough to ``backing`` with an in-memory overlay and injected faults.

    Thread-safe: libfuse calls from several threads. ``_lock`` guards the overlays,
    the journal and the fault; no fsync of the backing disk happens under it."""

    use_ns = True

    def __init__(self, backing: str) -> None:
        self.backing = os.path.realpath(backing)
        self.trash_dir = os.path.join(self.backing, TRASH)
        # A trash left by an earlier faultfs process belongs to a journal that died with it.
        if os.path.isdir(self.trash_dir):
            for name in os.listdir(self.trash_dir):
                os.unlink(os.path.join(self.trash_dir, name))
        else:
            os.mkdir(self.trash_dir)
        self._lock = threading.Lock()
        self._overlays: dict[tuple[int, int], Overlay] = {}
        self._open: dict[int, tuple[int, int]] = {}  # fd -> inode key
        self._journal: list[JournalStep] = []
        self._trash_seq = 0
        self._fault: tuple[str, float] | None = None
        self._healed = threading.Condition(self._lock)
        self._fault_epoch = 0
        self.fsyncs = 0
        self.stalled = 0
        self.mounted = threading.Event()

    # -- control (called from the control thread) ------------------------------

    def set_fault(self, kind: str | None, delay_ms: float = 0.0) -> None:
        if kind is not None and kind not in FAULT_KINDS:
            raise ValueError(f"kind: unknown disk fault {kind!r} (one of {', '.join(FAULT_KINDS)})")
        if delay_ms < 0:
            raise ValueError(f"delay_ms: must be >= 0, got {delay_ms}")
        with self._lock:
            self._fault = None if kind is None else (kind, float(delay_ms))
            self._fault_epoch += 1
            self._healed.notify_all()

    def unsynced(self) -> dict[str, int]:
        with self._lock:
            return {
                "bytes": sum(o.pending_bytes() for o in self._overlays.values()),
                "files": sum(1 for o in self._overlays.values()),
                "names": len(self._journal),
                "fsyncs": self.fsyncs,
                "stalled": self.stalled,
                "open": len(self._open),
            }

    def drop_unsynced(self, torn_seed: int | None = None) -> dict[str, int]:
        """The power cut: forget every overlay, undo the journal newest first.

        With ``torn_seed``, each file's pending writes instead reach the disk in part:
        a seeded prefix of them in the order they were written, cut mid-write (a
        torn write, as a disk that wrote some sectors before losing power)."""
        rng = random.Random(torn_seed)
        with self._lock:
            dropped = {
                "bytes": sum(o.pending_bytes() for o in self._overlays.values()),
                "files": len(self._overlays),
                "names": len(self._journal),
                "torn_bytes": 0,
            }
            for key in list(self._overlays):
                if torn_seed is not None:
                    dropped["torn_bytes"] += self._tear(self._overlays[key], rng)
                self._discard(key)
            for step in reversed(self._journal):
                try:
                    self._undo(step)
                except OSError as exc:  # keep going: undo as much as can be undone
                    log.warning("faultfs: cannot undo %s: %s", step, exc)
            self._journal.clear()
            return dropped

    def _tear(self, overlay: Overlay, rng: random.Random) -> int:
        """Write a strict prefix (at least one byte short) of the pending writes."""
        total = sum(len(data) for _, data in overlay.extents)
        if total < 2:
            return 0
        keep = rng.randrange(1, total)
        left = keep
        for at, data in overlay.extents:
            piece = data[:left]
            _pwrite_all(overlay.fd, piece, at)
            left -= len(piece)
            if not left:
                break
        return keep

    def sync_all(self) -> dict[str, int]:
        """What a clean shutdown does: write every overlay through, make every name durable."""
        with self._lock:
            synced = {"bytes": sum(o.pending_bytes() for o in self._overlays.values())}
            fds = [self._write_through(key) for key in list(self._overlays)]
            dirs = {d for step in self._journal for d in step.dirs}
            for step in self._journal:
                if step.trash:
                    os.unlink(step.trash)
            self._journal.clear()
        for fd in fds:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for directory in dirs:
            with contextlib.suppress(FileNotFoundError):
                dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        return synced

    def init(self, path: str) -> None:
        self.mounted.set()

    def _undo(self, step: JournalStep) -> None:
        if step.op == "create":
            if os.path.lexists(step.path):
                os.unlink(step.path)
        elif step.op == "rename":
            if os.path.lexists(step.new_path):
                os.rename(step.new_path, step.path)
            if step.trash:
                os.rename(step.trash, step.new_path)
        elif step.op == "unlink" and step.trash:
            os.rename(step.trash, step.path)

    # -- helpers -----------------------------------------------------------------

    def _full(self, path: str) -> str:
        if path == "/" + TRASH or path.startswith("/" + TRASH + "/"):
            raise mfusepy.FuseOSError(errno.ENOENT)
        return self.backing + path

    def _wait_fsync_fault(self) -> None:
        """Called with the lock held: apply slow / stall / EIO to an fsync."""
        fault = self._fault
        if fault is None:
            return
        kind, delay_ms = fault
        if kind == "eio_fsync":
            raise mfusepy.FuseOSError(errno.EIO)
        if kind == "slow_fsync" and delay_ms > 0:
            epoch = self._fault_epoch
            deadline = time.monotonic() + delay_ms / 1000
            # Sleep without the lock; healing (a new epoch) ends the wait early.
            while self._fault_epoch == epoch and (left := deadline - time.monotonic()) > 0:
                self._healed.wait(min(left, _INTERRUPT_POLL_S))
                _raise_if_interrupted()
        elif kind == "stall_fsync":
            self.stalled += 1
            try:
                while self._fault is not None and self._fault[0] == "stall_fsync":
                    self._healed.wait(_INTERRUPT_POLL_S)
                    _raise_if_interrupted()
            finally:
                self.stalled -= 1
            self._wait_fsync_fault()  # the fault it was changed to, if any

    def _next_trash(self) -> str:
        self._trash_seq += 1
        return os.path.join(self.trash_dir, f"{self._trash_seq:012d}")

    def _overlay(self, fd: int) -> Overlay:
        key = self._open[fd]
        overlay = self._overlays.get(key)
        if overlay is None:
            size = os.fstat(fd).st_size
            own = os.dup(fd)
            overlay = self._overlays[key] = Overlay(fd=own, size=size, floor=size)
        return overlay

    def _discard(self, key: tuple[int, int]) -> None:
        overlay = self._overlays.pop(key)
        os.close(overlay.fd)

    def _write_through(self, key: tuple[int, int]) -> int:
        """Write an overlay to its backing file (lock held); returns the fd to fsync."""
        overlay = self._overlays[key]
        fd = overlay.fd
        if overlay.floor < os.fstat(fd).st_size:
            os.ftruncate(fd, overlay.floor)
        for at, data in overlay.extents:
            _pwrite_all(fd, data, at)
        if os.fstat(fd).st_size != overlay.size:
            os.ftruncate(fd, overlay.size)
        if overlay.forgotten:
            # Only the forgotten writes stay in memory, against the new backing size.
            overlay.extents = []
            overlay.floor = overlay.size
            return os.dup(fd)
        del self._overlays[key]
        return fd

    # -- attributes and directories ----------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.fstat(fh) if fh is not None and fh in self._open else os.lstat(self._full(path))
        attrs = {
            key: getattr(st, key)
            for key in (
                "st_mode",
                "st_nlink",
                "st_uid",
                "st_gid",
                "st_size",
                "st_atime_ns",
                "st_mtime_ns",
                "st_ctime_ns",
                "st_ino",
                "st_blocks",
            )
        }
        if stat.S_ISREG(st.st_mode):
            with self._lock:
                overlay = self._overlays.get((st.st_dev, st.st_ino))
                if overlay is not None:
                    attrs["st_size"] = overlay.size
        return attrs

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._full(path), amode):
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def readdir(self, path: str, fh: int) -> list[str | tuple[str, dict[str, int], int]]:
        # With use_ino an entry needs its inode number (0 reads as a deleted entry).
        entries: list[str | tuple[str, dict[str, int], int]] = [".", ".."]
        with os.scandir(self._full(path)) as found:
            for entry in found:
                if path == "/" and entry.name == TRASH:
                    continue
                mode = entry.stat(follow_symlinks=False).st_mode
                entries.append((entry.name, {"st_ino": entry.inode(), "st_mode": mode}, 0))
        return entries

    def opendir(self, path: str) -> int:
        return os.open(self._full(path), os.O_RDONLY | os.O_DIRECTORY)

    def releasedir(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        with self._lock:
            self._wait_fsync_fault()
            self.fsyncs += 1
            directory = os.path.normpath(self._full(path))
            durable = [s for s in self._journal if directory in s.dirs]
            self._journal = [s for s in self._journal if directory not in s.dirs]
            for step in durable:
                if step.trash:
                    os.unlink(step.trash)
        os.fsync(fh)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._full(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._full(path))
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self._full(path))
        out = {
            key: getattr(sv, key)
            for key in (
                "f_bsize",
                "f_frsize",
                "f_blocks",
                "f_bfree",
                "f_bavail",
                "f_files",
                "f_ffree",
                "f_favail",
                "f_namemax",
            )
        }
        if self._fault is not None and self._fault[0] == "full":
            out["f_bfree"] = out["f_bavail"] = 0
        return out

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._full(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._full(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._full(path))
        else:
            os.utime(self._full(path), ns=times)
        return 0

    # -- names (journalled) -------------------------------------------------------

    def create(self, path: str, mode: int, flags: int = os.O_RDWR) -> int:
        full = self._full(path)
        with self._lock:
            try:
                fd = os.open(full, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
                created = True
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
                fd = os.open(full, os.O_RDWR | os.O_CLOEXEC)
                created = False
            if created:
                self._journal.append(JournalStep("create", frozenset({_parent(full)}), full))
            st = os.fstat(fd)
            self._open[fd] = (st.st_dev, st.st_ino)
            if flags & os.O_TRUNC and not created:
                self._overlay(fd).truncate(0)
        return fd

    def link(self, target: str, source: str) -> int:
        full = self._full(target)
        os.link(self._full(source), full)
        with self._lock:
            self._journal.append(JournalStep("create", frozenset({_parent(full)}), full))
        return 0

    def symlink(self, target: str, source: str) -> int:
        full = self._full(target)
        os.symlink(source, full)
        with self._lock:
            self._journal.append(JournalStep("create", frozenset({_parent(full)}), full))
        return 0

    def readlink(self, path: str) -> str:
        return os.readlink(self._full(path))

    def rename(self, old: str, new: str) -> int:
        old_full, new_full = self._full(old), self._full(new)
        with self._lock:
            trash = ""
            if os.path.lexists(new_full) and not os.path.isdir(new_full):
                trash = self._next_trash()
                os.link(new_full, trash)
            try:
                os.rename(old_full, new_full)
            except OSError:
                if trash:
                    os.unlink(trash)
                raise
            dirs = frozenset({_parent(old_full), _parent(new_full)})
            self._journal.append(JournalStep("rename", dirs, old_full, new_full, trash))
        return 0

    def unlink(self, path: str) -> int:
        full = self._full(path)
        with self._lock:
            trash = self._next_trash()
            os.link(full, trash)
            try:
                os.unlink(full)
            except OSError:
                os.unlink(trash)
                raise
            self._journal.append(JournalStep("unlink", frozenset({_parent(full)}), full, "", trash))
        return 0

    # -- file data (overlaid) -----------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        full = self._full(path)
        # Read-write underneath whatever the caller asked: fsync writes the overlay through.
        try:
            fd = os.open(full, os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            if flags & os.O_ACCMODE != os.O_RDONLY:
                raise
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC)  # a read-only file, as non-root
        with self._lock:
            st = os.fstat(fd)
            self._open[fd] = (st.st_dev, st.st_ino)
            if flags & os.O_TRUNC:
                self._overlay(fd).truncate(0)
        return fd

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            self._open.pop(fh, None)
            os.close(fh)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # close() is no sync point

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._lock:
            overlay = self._overlays.get(self._open[fh])
            if overlay is not None:
                return overlay.read(fh, size, offset)
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._lock:
            fault = self._fault[0] if self._fault else None
            if fault == "eio_write":
                raise mfusepy.FuseOSError(errno.EIO)
            overlay = self._overlay(fh)
            if fault == "full" and offset + len(data) > overlay.size:
                raise mfusepy.FuseOSError(errno.ENOSPC)
            overlay.write(offset, data)
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._lock:
            if fh is not None and fh in self._open:
                overlay = self._overlay(fh)
            else:
                full = self._full(path)
                fd = os.open(full, os.O_RDWR | os.O_CLOEXEC)
                try:
                    st = os.fstat(fd)
                    self._open[fd] = (st.st_dev, st.st_ino)
                    overlay = self._overlay(fd)
                finally:
                    del self._open[fd]
                    os.close(fd)
            if self._fault is not None and self._fault[0] == "full" and length > overlay.size:
                raise mfusepy.FuseOSError(errno.ENOSPC)
            overlay.truncate(length)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._lock:
            key = self._open[fh]
            overlay = self._overlays.get(key)
            try:
                self._wait_fsync_fault()
            except OSError as exc:
                # (EINTR, a killed caller, leaves its writes pending.)
                if exc.errno == errno.EIO and overlay is not None:
                    # Linux after a writeback error: the pages stay readable, they are
                    # never written, and the next fsync succeeds without them.
                    overlay.forgotten.extend(overlay.extents)
                    overlay.extents = []
                raise
            self.fsyncs += 1
            # A power cut may have come while stalled: then there is nothing to write.
            sync_fd = self._write_through(key) if key in self._overlays else None
        if sync_fd is None:
            os.fsync(fh)
        else:
            try:
                os.fsync(sync_fd)
            finally:
                os.close(sync_fd)
        return 0


_INTERRUPT_POLL_S = 0.05


def _raise_if_interrupted() -> None:
    """A caller killed while its fsync waits here sits in uninterruptible sleep until we
    answer (the kernel waits out requests already sent to the filesystem): answer EINTR
    as soon as the kernel says the caller was interrupted, so a stalled node can be
    killed (and power-cut)."""
    if _libfuse_interrupted():
        raise mfusepy.FuseOSError(errno.EINTR)


def _libfuse_interrupted() -> bool:
    return bool(mfusepy._libfuse.fuse_interrupted())


def _parent(path: str) -> str:
    return os.path.dirname(path)


def _pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n

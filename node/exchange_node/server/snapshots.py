"""This replica's snapshots: when to take one, taking it off the event loop, and its file.

Taking a snapshot (docs/snapshots.md has the measurements and the reasons):

- **Copy-on-write.** The node ``fork()``\\ s. The child sees the engine frozen
  at the applied index, serialises it, hashes it (the divergence checkpoint),
  writes the snapshot file durably (temp file, fsync, rename, directory fsync)
  and ``_exit``\\ s; it touches no lock, no gRPC, no logging, no asyncio. It
  sends its result (the state digest and the size, or what failed) through a
  pipe, which a waiter thread reads. The parent goes on applying at once: the
  loop pays only the ``fork()`` itself.
- The WAL then puts the file in force in the disk thread
  (``save_written_snapshot``: read back, verify, marker record, fsync) after
  every Ready already queued there, and only then is the in-memory log
  compacted. A storage without that method (tests' fakes) gets the snapshot's
  bytes back through the pipe and saves them with ``save_snapshot``.

When (``SnapshotPolicy``, pure and deterministic):

- **Bytes.** A snapshot is due when the entries applied since the newest
  snapshot reach ``--snapshot-bytes`` (each counted as its data plus
  ``ENTRY_MEMORY_OVERHEAD``); optionally also a number of entries
  (``--snapshot-threshold``, 0: off).
- **Staggered.** After a fresh start, or after installing a leader's snapshot,
  the first threshold of the voter ranked ``slot`` of ``slots`` is
  ``bytes * (slot + 1) / slots``, and so is the entry count's; later ones are
  the full thresholds. Every replica applies the same entries, so their phases
  stay apart (a restart from the replica's own snapshot keeps its phase). The
  entry count was once left out, so a cluster with ``--snapshot-threshold``
  (local clusters, the demo and the benches set 50,000 or 100,000) forked on
  every replica at the same index.
- **Checkpoints at shared indexes.** Snapshots no longer fall at equal indexes,
  so the divergence checkpoint is separate: every ``--checkpoint-entries``
  applied index (the same on every replica), a child only hashes the state (or
  the snapshot's child hashes it, when both fall together).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import pathlib
import signal
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from exchange_node.raft.types import ConfState, Snapshot, SnapshotMeta
from exchange_node.server.divergence import state_digest
from exchange_node.server.envelope import MemberInfo, wrap_snapshot
from exchange_node.storage.interface import RaftStorage
from exchange_node.storage.wal import write_snapshot_file

if TYPE_CHECKING:
    from collections.abc import Callable


class SnapshotSource(Protocol):
    def snapshot(self) -> bytes: ...


class SnapshotKeeper:
    """Which snapshot is newest, and the save in flight (``durable`` waits for it)."""

    def __init__(self) -> None:
        self.index = 0
        """Index of the newest snapshot taken or restored (0: none)."""
        self.term = 0
        self._saving: tuple[int, int, asyncio.Future[None]] | None = None
        """(index, term, save) of the newest snapshot this process started."""

    def restored(self, meta: SnapshotMeta) -> None:
        """A durable snapshot (recovered, or installed from the leader) is in force."""
        self.index = meta.index
        self.term = meta.term
        self._saving = None

    def due(self, applied_index: int) -> bool:
        """Is there anything applied past the newest snapshot?"""
        return applied_index > self.index

    @property
    def in_flight(self) -> bool:
        """A snapshot this process started is not durable yet."""
        return self._saving is not None and not self._saving[2].done()

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

    def started(self, index: int, term: int, future: asyncio.Future[None]) -> None:
        """The snapshot at (index, term) is being taken; ``future`` is done once durable
        (or failed: then the newest snapshot is again the one before)."""
        previous = self.index, self.term
        self.index = index
        self.term = term
        self._saving = (index, term, future)

        def done(f: asyncio.Future[None]) -> None:
            failed = f.cancelled() or f.exception() is not None
            if failed and self._saving is not None and self._saving[2] is f:
                self.index, self.term = previous

        future.add_done_callback(done)

    async def durable(self) -> tuple[int, int]:
        """(index, term) of the newest snapshot, once its save completed."""
        saving = self._saving
        if saving is None:
            # Only a restored snapshot, never saved by this process: it is durable.
            return self.index, self.term
        index, term, future = saving
        await asyncio.shield(future)
        return index, term


# ---------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class Due:
    """What the entry just applied calls for."""

    snapshot: bool
    checkpoint: bool


ENTRY_MEMORY_OVERHEAD = 150
"""Bytes an in-memory log entry costs beyond its data (the ``Entry`` object, its
``bytes`` header, list and index slots): measured 137 with tracemalloc. The shell
counts each applied entry as its data plus this, so that ``--snapshot-bytes`` bounds
memory also for small entries (a single order's entry is about 45 bytes of data)."""


class SnapshotPolicy:
    """See the module docstring ("When"). Pure: no clock, no I/O."""

    def __init__(self, snapshot_bytes: int, snapshot_entries: int, checkpoint_entries: int):
        if snapshot_bytes <= 0:
            raise ValueError("snapshot_bytes must be positive")
        self.snapshot_bytes = snapshot_bytes
        self.snapshot_entries = snapshot_entries
        """0: no entry trigger."""
        self.checkpoint_entries = checkpoint_entries
        """0: no fixed-index checkpoints."""
        self.bytes_since = 0
        """Bytes of entries applied since the newest snapshot's index."""
        self.entries_since = 0
        self.slot = 0
        self.slots = 1
        self._staggered = True
        """The next threshold is this member's staggered first one."""
        self._taking: tuple[int, int] | None = None
        """(bytes_since, entries_since) when the snapshot in flight was started."""

    def place(self, slot: int, slots: int) -> None:
        """This member's rank among the voters (a learner ranks after them)."""
        self.slots = max(1, slots)
        self.slot = min(max(0, slot), self.slots - 1)

    def threshold_bytes(self) -> int:
        if self._staggered:
            return max(1, self.snapshot_bytes * (self.slot + 1) // self.slots)
        return self.snapshot_bytes

    def threshold_entries(self) -> int:
        """0: no entry trigger."""
        if self.snapshot_entries > 0 and self._staggered:
            return max(1, self.snapshot_entries * (self.slot + 1) // self.slots)
        return self.snapshot_entries

    def applied(self, index: int, size: int) -> Due:
        self.bytes_since += size
        self.entries_since += 1
        entries = self.threshold_entries()
        snapshot = self.bytes_since >= self.threshold_bytes() or (
            entries > 0 and self.entries_since >= entries
        )
        checkpoint = self.checkpoint_entries > 0 and index % self.checkpoint_entries == 0
        return Due(snapshot, checkpoint)

    def started(self) -> None:
        """A snapshot of everything applied so far was started."""
        self._taking = (self.bytes_since, self.entries_since)

    def taken(self) -> None:
        """The snapshot started last is durable: count from its index on."""
        if self._taking is None:
            return
        taken_bytes, taken_entries = self._taking
        self._taking = None
        self.bytes_since = max(0, self.bytes_since - taken_bytes)
        self.entries_since = max(0, self.entries_since - taken_entries)
        self._staggered = False

    def failed(self) -> None:
        """The snapshot started last failed: still due."""
        self._taking = None

    def reset(self, *, staggered: bool) -> None:
        """A snapshot is in force at the applied index (recovered, or installed from the
        leader): nothing applied since. ``staggered``: the next threshold is this
        member's first one (a fresh start or a leader's snapshot; not a restart from
        this replica's own snapshot, whose phase stays)."""
        self.bytes_since = 0
        self.entries_since = 0
        self._taking = None
        self._staggered = staggered


# ---------------------------------------------------------------------- the child


class SnapshotError(Exception):
    """A snapshot (or checkpoint) child failed; nothing was put in force."""


@dataclass(frozen=True, slots=True)
class ChildResult:
    digest: bytes
    """State digest (``divergence.state_digest`` of the engine's snapshot)."""
    size: int
    """Bytes of the snapshot's data (0 for a checkpoint)."""
    data: bytes | None
    """The snapshot's data when it came back through the pipe (no file written)."""


_OK = b"K"
_PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent dies."""
_FAILED = b"E"
_RESULT_HEAD = struct.Struct("<c32sQ")
MODE_CHECKPOINT = 0
"""Only hash the state."""
MODE_FILE = 1
"""Hash, and write the snapshot file into ``data_dir``."""
MODE_PIPE = 2
"""Hash, and send the snapshot's data back through the pipe."""


def fork_child(
    engine: SnapshotSource,
    members: dict[int, MemberInfo],
    meta: SnapshotMeta,
    mode: int,
    data_dir: str | None,
) -> tuple[int, int]:
    """Fork a child that serialises ``engine`` as it is now; (pid, read end of its pipe).

    Call from the event loop's thread, between two applies: the child's copy of the
    engine is exactly the state at ``meta.index``."""
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    # No collection from the fork on, in the child: one would find the objects of the
    # parent's other threads (gone in the child) and run their finalizers (asyncio
    # tasks, gRPC objects), which crashed a child. The child never turns it back on.
    collecting = gc.isenabled()
    gc.disable()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; covered by the tests' results
            _die_with(parent)
            _run_child(write_fd, engine, members, meta, mode, data_dir)
    finally:
        if collecting:
            gc.enable()
    os.close(write_fd)
    return pid, read_fd


def _die_with(parent: int) -> None:  # pragma: no cover - runs in the forked child
    """Let the kernel kill this child when the node dies (PR_SET_PDEATHSIG).

    A child that outlived a kill -9 of its node held the data directory's lock (an
    inherited descriptor) and went on writing into it, so the restarted node could
    not start for as long as the child took."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's stop() still kills us
        return
    if os.getppid() != parent:  # the node died before the request took effect
        os._exit(1)


def _run_child(
    write_fd: int,
    engine: SnapshotSource,
    members: dict[int, MemberInfo],
    meta: SnapshotMeta,
    mode: int,
    data_dir: str | None,
) -> None:  # pragma: no cover - runs in the forked child
    status = 1
    try:
        # A signal sent to this child must not wake the parent's loop through the
        # shared wakeup fd. Inherited descriptors stay open: gRPC's fork handlers (when
        # the process did not turn them off, see grpc_io.skip_fork_handlers) may run
        # threads here that use them, and closing them under those threads aborts.
        with contextlib.suppress(ValueError):  # not the main thread: none set from here
            signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        # Behind the node on a busy CPU: the snapshot may take longer, clients not.
        with contextlib.suppress(OSError):
            os.nice(10)
        state = engine.snapshot()
        digest = state_digest(state)
        payload = b""
        size = 0
        if mode != MODE_CHECKPOINT:
            data = wrap_snapshot(members, state)
            size = len(data)
            if mode == MODE_FILE:
                assert data_dir is not None
                write_snapshot_file(data_dir, Snapshot(meta, data))
            else:
                payload = data
        _write_all(write_fd, _RESULT_HEAD.pack(_OK, digest, size) + payload)
        status = 0
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            _write_all(write_fd, _FAILED + f"{type(exc).__name__}: {exc}".encode()[:2000])
    finally:
        os._exit(status)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def wait_child(pid: int, read_fd: int) -> ChildResult:
    """Read a child's result and reap it (blocking: run it in a thread)."""
    chunks = []
    try:
        while chunk := os.read(read_fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    raw = b"".join(chunks)
    if raw[:1] == _FAILED:
        raise SnapshotError(raw[1:].decode(errors="replace"))
    if len(raw) < _RESULT_HEAD.size or raw[:1] != _OK:
        raise SnapshotError(f"the snapshot child died (wait status {status})")
    _, digest, size = _RESULT_HEAD.unpack_from(raw)
    data = raw[_RESULT_HEAD.size :] or None
    if data is not None and len(data) != size:
        raise SnapshotError(f"the snapshot child sent {len(data)} bytes of {size}")
    if status != 0:
        raise SnapshotError(f"the snapshot child exited with wait status {status}")
    return ChildResult(digest, size, data)


def can_put_written(storage: RaftStorage) -> bool:
    """Does ``storage`` take a snapshot file written by another process (the WAL)?"""
    return callable(getattr(storage, "save_written_snapshot", None)) and callable(
        getattr(storage, "snapshot_file", None)
    )


def snapshot_dir(storage: RaftStorage) -> str:
    snapshot_file: Callable[[int, int], str] = storage.snapshot_file  # type: ignore[attr-defined]
    return os.path.dirname(snapshot_file(0, 0))


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

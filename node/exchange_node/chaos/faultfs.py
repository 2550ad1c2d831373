"""``faultfs``: disk faults and power cuts for a node's data directory, through FUSE.

``FaultFS.mount(backing_dir, mountpoint)`` starts a child process that mounts a
passthrough filesystem over ``backing_dir`` at ``mountpoint`` (the node's
``--data-dir``) and returns a ``FaultFSHandle`` that talks to it over a Unix
socket:

* ``set_fault(DiskFault | None)``: slow or stalled fsync, EIO on write or fsync,
  a full disk (``None`` heals, and releases stalled fsyncs);
* ``drop_unsynced()``: the power cut. Everything not made durable by an fsync
  (file data) or a directory fsync (creations, renames, unlinks) is discarded.
  Kill the node first; then drop; then start it again on the same mount;
* ``unsynced_bytes()``: data a power cut would lose right now;
* ``unmount()``: write everything through (a clean shutdown syncs), unmount
  lazily (works while files are open), stop the child (killed if it hangs).

The filesystem process lives in its own session, so killing a node (or its
process group) never takes it down. The model of durability, and what it does
not capture, is in ``faultfs_ops``. ``leftover_mounts()`` and
``unmount_leftovers()`` find and remove mounts of earlier runs (also of a
faultfs process that died: its mount answers "transport endpoint is not
connected" until unmounted).

Needs Linux, ``/dev/fuse``, root (or a ``fusermount3`` the user may run) and
libfuse3 with the ``mfusepy`` binding (``pip install raft-exchange[chaos]``,
``apt-get install fuse3``); ``unavailable_reason()`` says which is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .target import DiskFault

FSTYPE = "fuse.faultfs"
MNT_DETACH = 2


class FaultFSError(RuntimeError):
    """The filesystem could not be mounted, or its process stopped answering."""


def unavailable_reason() -> str | None:
    """Why faultfs cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "faultfs needs Linux"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse (the kernel has no FUSE, or the container does not pass it)"
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        return "not root and no fusermount3 (apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401
    except ImportError as exc:
        return f"the FUSE binding cannot load ({exc}): pip install mfusepy, apt-get install fuse3"
    except OSError as exc:
        return f"libfuse cannot load ({exc}): apt-get install fuse3"
    return None


@dataclass(frozen=True, slots=True)
class DropReport:
    """What a power cut discarded."""

    bytes: int
    files: int
    names: int
    """Creations, renames and unlinks undone."""
    torn_bytes: int = 0
    """Of ``bytes``, those a torn power cut let reach the disk."""


class FaultFSHandle:
    """A mounted faultfs. Not thread-safe: one caller at a time."""

    def __init__(
        self, backing_dir: str, mountpoint: str, proc: subprocess.Popen[bytes], control: str
    ) -> None:
        self.backing_dir = backing_dir
        self.mountpoint = mountpoint
        self.proc = proc
        self._control = control
        self.fault: DiskFault | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _call(self, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        if self.proc.poll() is not None:
            raise FaultFSError(
                f"faultfs on {self.mountpoint} exited with status {self.proc.returncode}"
            )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(self._control)
                sock.sendall(json.dumps(request).encode() + b"\n")
                raw = sock.makefile("rb").readline()
            except OSError as exc:
                raise FaultFSError(f"faultfs on {self.mountpoint}: control channel: {exc}") from exc
        if not raw:
            raise FaultFSError(f"faultfs on {self.mountpoint}: no answer to {request['op']}")
        answer: dict[str, Any] = json.loads(raw)
        if "error" in answer:
            raise ValueError(answer["error"])
        return answer

    def set_fault(self, fault: DiskFault | None) -> None:
        """Inject ``fault`` (replacing any other), or heal with ``None``."""
        if fault is None:
            self._call({"op": "set_fault", "kind": None})
        else:
            self._call({"op": "set_fault", "kind": fault.kind, "delay_ms": fault.delay_ms})
        self.fault = fault

    def drop_unsynced(self, wait_closed: float = 5.0, torn_seed: int | None = None) -> DropReport:
        """The power cut: discard every write and name change not made durable.

        ``torn_seed``: a seeded strict prefix of each file's pending writes reaches the
        disk first, cut mid-write (a torn write); the rest is lost.

        Waits up to ``wait_closed`` seconds for every file on the mount to be closed
        (the kernel closes a killed process's files a moment after it dies), then
        raises ``FaultFSError`` if some process still has one open: kill it first."""
        deadline = time.monotonic() + wait_closed
        while (still_open := int(self._call({"op": "unsynced"})["open"])) > 0:
            if time.monotonic() >= deadline:
                raise FaultFSError(
                    f"{still_open} file(s) still open on {self.mountpoint}: kill the node"
                    " before the power cut"
                )
            time.sleep(0.02)
        answer = self._call({"op": "drop", "torn_seed": torn_seed})
        return DropReport(answer["bytes"], answer["files"], answer["names"], answer["torn_bytes"])

    def unsynced_bytes(self) -> int:
        return int(self._call({"op": "unsynced"})["bytes"])

    def stats(self) -> dict[str, int]:
        """Pending bytes, files and names; fsyncs served; fsyncs stalled right now."""
        return {k: int(v) for k, v in self._call({"op": "unsynced"}).items()}

    def sync(self) -> int:
        """Write everything through, as a clean shutdown does; returns the bytes written."""
        return int(self._call({"op": "sync"})["bytes"])

    def unmount(self, timeout: float = 5.0) -> None:
        """Sync (if the process still answers), unmount lazily, stop the process.

        Safe to call twice, and when files are still open: the mount leaves the
        namespace at once, and the process is killed if it does not exit in
        ``timeout`` (open files then get ENOTCONN)."""
        if self.proc.poll() is None:
            with contextlib.suppress(FaultFSError, ValueError):
                # A stalled fsync would hold the sync up: heal first.
                self._call({"op": "set_fault", "kind": None}, timeout=timeout)
                self._call({"op": "sync"}, timeout=timeout)
        lazy_unmount(self.mountpoint)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        lazy_unmount(self.mountpoint)  # libfuse may not have managed to, if killed
        shutil.rmtree(os.path.dirname(self._control), ignore_errors=True)
        shutil.rmtree(os.path.join(self.backing_dir, ".faultfs-trash"), ignore_errors=True)

    def __enter__(self) -> FaultFSHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()


class FaultFS:
    @staticmethod
    def mount(
        backing_dir: str | os.PathLike[str],
        mountpoint: str | os.PathLike[str],
        *,
        timeout: float = 15.0,
        log_file: str | os.PathLike[str] | None = None,
    ) -> FaultFSHandle:
        """Mount faultfs over ``backing_dir`` at ``mountpoint`` (both created if absent).

        Raises ``FaultFSError`` naming what failed (with the child's output)."""
        reason = unavailable_reason()
        if reason is not None:
            raise FaultFSError(reason)
        backing = os.path.realpath(backing_dir)
        mount_at = os.path.realpath(mountpoint)
        if backing == mount_at or mount_at.startswith(backing + os.sep):
            raise ValueError(f"mountpoint: {mount_at} must not be inside backing_dir {backing}")
        if mount_at in leftover_mounts():
            if not is_dead(mount_at):
                raise FaultFSError(f"mountpoint: {mount_at} already has a live faultfs mounted")
            lazy_unmount(mount_at)  # the mount of a faultfs that died
        os.makedirs(backing, exist_ok=True)
        os.makedirs(mount_at, exist_ok=True)
        control_dir = tempfile.mkdtemp(prefix="faultfs-")
        control = os.path.join(control_dir, "control.sock")
        log_path = Path(log_file) if log_file else Path(control_dir) / "faultfs.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", __name__, "serve", backing, mount_at, control],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a node's kill (or its group's) must not reach it
            )
        handle = FaultFSHandle(backing, mount_at, proc, control)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                output = log_path.read_text(errors="replace").strip()[-2000:]
                shutil.rmtree(control_dir, ignore_errors=True)
                raise FaultFSError(
                    f"faultfs on {mount_at} exited with status {proc.returncode} before"
                    f" mounting: {output or '(no output)'}"
                )
            if os.path.exists(control):
                with contextlib.suppress(FaultFSError, OSError):
                    if handle._call({"op": "ping"}, timeout=1.0).get("mounted"):
                        break
            if time.monotonic() > deadline:
                handle.unmount()
                raise FaultFSError(f"faultfs on {mount_at} did not mount within {timeout} s")
            time.sleep(0.02)
        return handle


class NodeDisks:
    """One faultfs per node: ``<root>/disk-<id>`` backs the node's data directory.

    Mount before the nodes start (the data directory must be the mount), close after
    they stop. ``disks[node_id]`` is that node's handle."""

    def __init__(self, root: str | os.PathLike[str], data_dirs: dict[int, str]) -> None:
        self.handles: dict[int, FaultFSHandle] = {}
        try:
            for node_id, data_dir in sorted(data_dirs.items()):
                backing = Path(root) / f"disk-{node_id}"
                self.handles[node_id] = FaultFS.mount(backing, data_dir)
        except BaseException:
            self.close()
            raise

    def __getitem__(self, node_id: int) -> FaultFSHandle:
        return self.handles[node_id]

    def power_cut(
        self, node_ids: Iterable[int], kill: Callable[[int], None]
    ) -> dict[int, DropReport]:
        """Kill every node first (``kill`` must return once it is dead: a live process
        would keep reading what was dropped under it), then drop their unsynced writes."""
        ids = list(node_ids)
        for node_id in ids:
            kill(node_id)
        return {node_id: self.handles[node_id].drop_unsynced() for node_id in ids}

    def close(self) -> None:
        for handle in self.handles.values():
            handle.unmount()


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount this process sees."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mount_point = left.split()[4]
            fstype = right.split()[0]
            # mountinfo escapes space, tab, newline and backslash as octal.
            decoded = mount_point.encode().decode("unicode_escape").encode("latin-1").decode()
            found.append((decoded, fstype))
    return found


def leftover_mounts(under: str | os.PathLike[str] | None = None) -> list[str]:
    """Mount points of faultfs mounts (live or of a dead process), optionally below ``under``."""
    root = os.path.realpath(under) if under is not None else None
    return [
        point
        for point, fstype in _mountinfo()
        if fstype == FSTYPE
        and (root is None or point == root or point.startswith(root.rstrip("/") + "/"))
    ]


def is_dead(mountpoint: str) -> bool:
    """True when the mount's faultfs process is gone ("transport endpoint is not connected")."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def unmount_leftovers(
    under: str | os.PathLike[str] | None = None, *, only_dead: bool = False
) -> list[str]:
    """Lazily unmount every faultfs mount (below ``under``; with ``only_dead``, only those
    whose process is gone, so a concurrent run's live mounts are left alone); returns
    what was unmounted."""
    points = [p for p in leftover_mounts(under) if not only_dead or is_dead(p)]
    for point in sorted(points, key=len, reverse=True):
        lazy_unmount(point)
    return points


def lazy_unmount(mountpoint: str) -> None:
    """Detach ``mountpoint`` if it is mounted (MNT_DETACH: also with files open)."""
    if mountpoint not in {p for p, _ in _mountinfo()}:
        return
    if os.geteuid() == 0:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.umount2(os.fsencode(mountpoint), MNT_DETACH) == 0:
            return
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
            return
        raise FaultFSError(f"umount2 {mountpoint}: {os.strerror(err)}")
    result = subprocess.run(
        ["fusermount3", "-u", "-z", mountpoint], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 and mountpoint in leftover_mounts():
        raise FaultFSError(f"fusermount3 -u -z {mountpoint}: {result.stderr.strip()}")


# -- the child process ------------------------------------------------------------


def _serve_control(ops: Any, path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(8)

    def answer(conn: socket.socket) -> None:
        with conn:
            raw = conn.makefile("rb").readline()
            try:
                request = json.loads(raw)
                op = request["op"]
                if op == "ping":
                    reply: dict[str, Any] = {"mounted": ops.mounted.is_set()}
                elif op == "set_fault":
                    ops.set_fault(request["kind"], float(request.get("delay_ms", 0.0)))
                    reply = {}
                elif op == "unsynced":
                    reply = ops.unsynced()
                elif op == "drop":
                    seed = request.get("torn_seed")
                    reply = ops.drop_unsynced(None if seed is None else int(seed))
                elif op == "sync":
                    reply = ops.sync_all()
                else:
                    reply = {"error": f"op: unknown control operation {op!r}"}
            except (ValueError, KeyError, TypeError, OSError) as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            conn.sendall(json.dumps(reply).encode() + b"\n")

    while True:
        conn, _ = server.accept()
        # Its own thread: a request never waits behind another (e.g. heal while stalled).
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


def _orphan_watch(ops: Any, mountpoint: str) -> None:
    """Whoever mounted us died (a killed chaos run): sync, unmount, exit; no mount or
    process outlives the run. Node kills never reach here: nodes are not our parent."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    with contextlib.suppress(Exception):
        ops.set_fault(None)
        ops.sync_all()
    with contextlib.suppress(Exception):
        lazy_unmount(mountpoint)
    time.sleep(5)  # the FUSE loop ends once nothing holds the mount; else leave anyway
    os._exit(0)


def _serve(backing: str, mountpoint: str, control: str) -> int:
    import mfusepy

    from .faultfs_ops import FaultOps

    ops = FaultOps(backing)
    threading.Thread(target=_serve_control, args=(ops, control), daemon=True).start()
    threading.Thread(target=_orphan_watch, args=(ops, mountpoint), daemon=True).start()
    options: dict[str, Any] = {
        "foreground": True,
        "fsname": "faultfs",
        "subtype": "faultfs",
        "direct_io": True,  # the kernel caches no data: a power cut is seen at once
        "hard_remove": True,
        "use_ino": True,
        "attr_timeout": 0,
        "entry_timeout": 0,
        "negative_timeout": 0,
    }
    if os.geteuid() == 0:
        options["allow_other"] = True  # nodes may run as another user
    mfusepy.FUSE(ops, mountpoint, **options)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exchange_node.chaos.faultfs")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="mount and serve (run by FaultFS.mount)")
    serve.add_argument("backing")
    serve.add_argument("mountpoint")
    serve.add_argument("control")
    sub.add_parser("leftovers", help="list faultfs mounts")
    clean = sub.add_parser("unmount-leftovers", help="lazily unmount faultfs mounts")
    clean.add_argument("--under", default=None)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.backing, args.mountpoint, args.control)
    if args.command == "leftovers":
        print("\n".join(leftover_mounts()))
        return 0
    for point in unmount_leftovers(args.under):
        print(f"unmounted {point}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

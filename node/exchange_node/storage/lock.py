"""The data-directory lock: one process, one open, per data directory.

``fcntl.flock`` on ``<data_dir>/LOCK``. The lock belongs to the open file
description, so it conflicts with another process *and* with a second open in
the same process, and the kernel drops it when the holder dies (a SIGKILLed
node never leaves a stale lock behind). The holder writes its pid into the
file so the error can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from .errors import DataDirLockedError

LOCK_FILE = "LOCK"


class DataDirLock:
    __slots__ = ("_fd", "data_dir")

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        fd = os.open(
            os.path.join(data_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirLockedError(data_dir, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None

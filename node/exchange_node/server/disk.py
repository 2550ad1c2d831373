"""The node's disk thread: storage calls run there one at a time, in submission order.

Every Ready that writes hands its batch to this thread and awaits the fsync, so
the hand-off is paid once per Ready on every node: at 500 orders/s nearly once
per order. ``loop.run_in_executor`` on a one-thread ``ThreadPoolExecutor`` costs
about 100 us of CPU per call on this project's 2-core hosts (a
``concurrent.futures.Future`` with its ``Condition``, a work item, the executor's
thread accounting, and a chain of callbacks copying the result into an asyncio
future); this thread takes jobs from a ``queue.SimpleQueue`` (C, one lock) and
answers through one ``call_soon_threadsafe``: about 45 us. Measured with both
side by side on one loop, 20,000 hops each, interleaved (docs/performance.md).

One thread, so writes reach the WAL in the order the loop submitted them (the
storage is not thread-safe, and the hard state written by ``flush_deferred`` must
not overtake or trail a batch out of order). A job whose future was cancelled
before it started is skipped, as an executor skips a cancelled work item.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("exchange.disk")

T = TypeVar("T")

_STOP = None


class DiskThread:
    """One thread running storage calls in order; see the module docstring."""

    def __init__(self, name: str = "wal") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[
            tuple[
                asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]
            ]
            | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on the disk thread; a future of the running loop for its result."""
        if self._closed:
            raise RuntimeError("the disk thread is closed")
        if self._thread is None:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def close(self) -> None:
        """Finish the jobs already queued, then stop the thread and wait for it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._jobs.put(_STOP)
            thread.join()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                # A daemon: a process that exits without ``close`` (a crash path) must
                # not hang on it; an interrupted write is a torn tail the WAL handles.
                thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                thread.start()
                self._thread = thread

    def _work(self) -> None:
        get = self._jobs.get
        while (job := get()) is not _STOP:
            loop, future, fn, args = job
            if future.cancelled():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine
                self._answer(loop, future, None, exc)
            else:
                self._answer(loop, future, result, None)

    @staticmethod
    def _answer(
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        result: Any,
        error: BaseException | None,
    ) -> None:
        try:
            loop.call_soon_threadsafe(_settle, future, result, error)
        except RuntimeError:
            # The loop closed while the job ran: nobody is left to tell.
            if error is not None:
                log.error("disk job failed after the loop closed: %r", error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

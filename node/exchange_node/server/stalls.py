"""What stops a node's event loop, measured where it happens.

Two figures for ``/metrics`` (docs/node-contract.md):

- ``exchange_event_loop_lag_seconds``: how late the loop woke up for each Raft tick
  (``Node._tick_timer`` observes it; no extra task). Whatever held the loop shows
  here: a garbage collection, a snapshot's ``fork()``, a long callback, a CPU taken
  by other processes. A tick later than the election timeout lets followers campaign.
- ``exchange_gc_pause_seconds{generation}``: each cyclic garbage collection of the
  process, timed from ``gc.callbacks``. A collection holds the GIL: every thread of
  the process waits, the event loop included. Its length grows with the tracked
  objects it scans (resting orders, retained results): the oldest generation scans
  them all (about 0.8 s for 1.36 million tracked objects on the development VM, an
  engine with 100,000 resting orders and 250,000 exactly-once keys).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

from prometheus_client import Histogram

GENERATIONS = ("0", "1", "2")


class GcPauseObserver:
    """Times every collection into a histogram labelled by generation, while installed.

    ``gc.callbacks`` is process-wide: every node in a process (tests) observes the
    process's collections. The callback does a clock read and, at the end, one
    observation: no allocation of tracked objects, so it cannot trigger a collection
    itself. A forked child (a snapshot's) inherits the callback and ignores it: it
    must not take a metric's lock that another thread of the parent may have held at
    the fork."""

    __slots__ = ("_children", "_installed", "_pid", "_started")

    def __init__(self, histogram: Histogram) -> None:
        self._children = [histogram.labels(generation=g) for g in GENERATIONS]
        self._started = 0.0
        self._installed = False
        self._pid = os.getpid()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if os.getpid() != self._pid:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info.get("generation", 2)
        if 0 <= generation < len(self._children) and self._started:
            self._children[generation].observe(time.perf_counter() - self._started)
        self._started = 0.0

    def install(self) -> None:
        self._pid = os.getpid()
        if not self._installed:
            gc.callbacks.append(self)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self)
            self._installed = False

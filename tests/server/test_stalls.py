"""What stops the event loop shows in /metrics: garbage collections by generation, and
the lateness of every Raft tick (server/stalls.py)."""

from __future__ import annotations

import asyncio
import gc
import re
import subprocess
import sys
import time
from pathlib import Path

from exchange_node.server.metrics import NodeMetrics
from exchange_node.server.stalls import GcPauseObserver

from tests.server.test_snapshot_trigger import _node


def _count(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{name}_count{labels} (\S+)", text, flags=re.M)
    assert found is not None, name
    return float(found[1])


def _sum(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{name}_sum{labels} (\S+)", text, flags=re.M)
    assert found is not None, name
    return float(found[1])


def test_every_collection_is_timed_under_its_generation_while_installed() -> None:
    metrics = NodeMetrics()
    observer = GcPauseObserver(metrics.gc_pause)
    observer.install()
    try:
        keep = [[n] for n in range(50_000)]  # tracked objects for the collections to scan
        for generation in (0, 1, 2, 2):
            gc.collect(generation)
    finally:
        observer.uninstall()
    text = metrics.render().decode()
    for generation, least in (("0", 1), ("1", 1), ("2", 2)):
        labels = f'{{generation="{generation}"}}'
        assert _count(text, "exchange_gc_pause_seconds", labels) >= least, generation
    full = '{generation="2"}'
    assert _sum(text, "exchange_gc_pause_seconds", full) > 0
    gc.collect(2)  # uninstalled: not observed any more
    after = metrics.render().decode()
    assert _count(after, "exchange_gc_pause_seconds", full) == _count(
        text, "exchange_gc_pause_seconds", full
    )
    assert observer not in gc.callbacks
    assert len(keep) == 50_000


def test_a_blocked_event_loop_shows_as_a_late_tick(tmp_path: Path) -> None:
    async def run() -> str:
        node = _node(tmp_path)
        await node.start()
        try:
            await asyncio.sleep(0.2)  # a few ticks on time
            time.sleep(0.3)  # holds the loop: the next tick is about 0.3 s late
            await asyncio.sleep(0.1)
            return node.metrics.render().decode()
        finally:
            await node.stop(grace_seconds=0.5)

    text = asyncio.run(run())
    ticks = _count(text, "exchange_event_loop_lag_seconds")
    assert ticks >= 5  # 20 ms heartbeat: every tick is observed
    late = re.search(r'^exchange_event_loop_lag_seconds_bucket\{le="0\.1"\} (\S+)', text, re.M)
    assert late is not None
    assert float(late[1]) < ticks  # at least one tick came more than 0.1 s late
    assert _sum(text, "exchange_event_loop_lag_seconds") >= 0.2


_FORKED_CHILD = """
import gc, os, re
from exchange_node.server.metrics import NodeMetrics
from exchange_node.server.stalls import GcPauseObserver

metrics = NodeMetrics()
GcPauseObserver(metrics.gc_pause).install()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        gc.collect(2)
        text = metrics.render().decode()
        os.write(write, re.search(r'^exchange_gc_pause_seconds_count[{]generation="2"[}] (\\S+)',
                                  text, re.M)[1].encode())
    finally:
        os._exit(0)
os.close(write)
os.waitpid(pid, 0)
print(float(os.read(read, 100)))
"""


def test_a_forked_child_does_not_observe_its_collections() -> None:
    # In a fresh interpreter: this one may hold gRPC's threads, which do not fork.
    out = subprocess.run(
        [sys.executable, "-c", _FORKED_CHILD], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout) == 0

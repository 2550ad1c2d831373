"""`exchange bench fairness`: one client at its limit; how much does another wait?

A local cluster of real node processes (default 3, fsync on). A victim client
sends single IOC orders one after another and times each answer, alone
(``victim_p50_ms_unloaded``, ``victim_p99_ms_unloaded``) and while a hog
client, in its own process, keeps ``--hog-batches`` batch requests of
``--hog-batch-size`` orders in flight, retrying 10 ms after each 429
(``victim_p50_ms_hogged``, ``victim_p99_ms_hogged``); the two alternate
``--rounds`` times, ``--phase-seconds`` each, so that the machine's neighbours
weigh on both alike, and the hogged phases start once the hog's rate limit has
refused it (its burst spent); ``victim_orders_hogged`` is how many orders the
p99 is taken over. ``victim_p99_ratio`` is hogged over unloaded p99;
``victim_errors`` counts the victim's answers other than 200 (a 503 would mean
the hog filled the shared queue); ``hog_orders_per_s``, ``hog_429_per_s`` and
``hog_other_per_s`` (answers neither 200 nor 429), over the hogged phases
only, show that the hog was at its limit (its key's orders/s,
``--api-rate-limit``). IOC orders far from the touch never rest, so the book
does not grow during the run.

With ``--loop-probe`` every node process also measures its event loop (a
``sitecustomize`` on the nodes' ``PYTHONPATH`` wraps the node's ``asyncio.run``):
a task sleeps 1 ms over and over and records how late it wakes
(``leader_loop_lag_*``, wall clock) and how much CPU time the loop thread spent
before it could run again (``leader_loop_cpu_*``: waiting for a core or for the
GIL is not counted, so the machine's other load stretches it far less);
``leader_stalls_*`` counts turns that cost 5 ms of CPU or more and
``leader_stall_ms_per_hog_request`` is their CPU time over the hog's requests
(accepted or refused). A watchdog thread samples the loop thread's stack when
it has spent ``STALL_SAMPLE_MS`` of CPU without the probe running; the samples
taken while the hog ran are summarised on stderr by site (the innermost frames
of this project's code). With ``--loop-probe-steps`` the nodes run asyncio's
own loop instead of uvloop so that every callback is timed in the loop thread's
CPU time and named (``leader_step_*``: p99 and max of the callbacks of 0.5 ms
or more, the longest pieces of work the loop did without a break; the longest
are listed on stderr with the coroutine they ran).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from exchange_node.tools.bench.format import BenchResult, report
from exchange_node.tools.local import LocalCluster

SYMBOL = "BTC-USD"
HOG_PRICE = 59_000  # a SELL far above any bid: IOC, never fills, never rests
VICTIM_PRICE = 41_000  # a BUY far below any ask
LOOP_PROBE_ENV = "EXCHANGE_BENCH_LOOP_PROBE"
"""A directory: a node process that sees it (through the sitecustomize) probes its loop."""
PHASE_SECONDS = 5.0
"""Each phase of each round: at the default limit (1,000 orders/s, a 500-order batch
every 0.5 s on average, two at once after each Retry-After second) a window of 5 s holds
about ten of the hog's batches; in windows shorter than a second, as when phases were
counted in orders, some held none and the ratio measured nothing."""
PROBE_INTERVAL_S = 0.001
STALL_SAMPLE_MS = 4.0
"""The watchdog samples the loop thread's stack when the loop has not woken for this long."""
STALL_MS = 5.0
"""Probe lateness counted as a stall in ``leader_stall_ms_per_hog_request``."""
LOOP_PROBE_STEPS_ENV = "EXCHANGE_BENCH_LOOP_PROBE_STEPS"
"""Set: the probed node runs asyncio's own loop (not uvloop) and times every callback."""
STEP_RECORD_MS = 0.5
"""Callbacks of at least this much CPU time are recorded one by one (``--loop-probe-steps``)."""
_SITECUSTOMIZE = (
    "import os\n"
    f"if os.environ.get({LOOP_PROBE_ENV!r}):\n"
    "    from exchange_node.tools.bench.fairness import install_loop_probe\n"
    f"    install_loop_probe(os.environ[{LOOP_PROBE_ENV!r}])\n"
)
_STEPS: list[tuple[float, float, str]] = []
"""(wall clock, CPU s, what ran) of the long callbacks of the probed loop thread."""
_STEP_THREAD: list[int] = []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=3, help="cluster size (1 or 3)")
    parser.add_argument(
        "--phase-seconds",
        type=float,
        default=PHASE_SECONDS,
        help="how long the victim sends in each phase of each round (at least 2 s holds "
        "several of a hog's batches at the default limit)",
    )
    parser.add_argument("--hog-batches", type=int, default=40, help="hog requests in flight")
    parser.add_argument("--hog-batch-size", type=int, default=500)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternations of unloaded and hogged phases"
    )
    parser.add_argument(
        "--hog-honours-retry-after",
        action="store_true",
        help="the hog waits Retry-After after a 429 (default: retries after 10 ms)",
    )
    parser.add_argument("--data-root", default=None, help="keep the cluster here")
    parser.add_argument(
        "--loop-probe",
        action="store_true",
        help="measure each node's event-loop stalls and sample what the leader's loop did",
    )
    parser.add_argument(
        "--loop-probe-steps",
        action="store_true",
        help="with --loop-probe: the nodes run asyncio's own loop instead of uvloop, and "
        "every callback's CPU time is measured and named (leader_step_* figures)",
    )


# ---------------------------------------------------------------- the loop probe (in each node)


PROBE_FLUSH_WAIT_S = 1.5


def install_loop_probe(out_dir: str) -> None:
    """In a node process (imported by the bench's sitecustomize): wrap ``asyncio.run`` so
    that the node's main coroutine runs beside a 1 ms lateness probe, and start a
    watchdog thread that samples the loop thread's stack during stalls. Records go to
    ``<out_dir>/probe-<pid>.jsonl``, flushed every second. Other programs that run with
    the same environment (the hog, the bench itself) are left alone."""
    original_run = asyncio.run
    if os.environ.get(LOOP_PROBE_STEPS_ENV):
        sys.modules["uvloop"] = None  # type: ignore[assignment]  # the node falls back
        _time_every_callback()

    def run(main: Any, **kwargs: Any) -> Any:
        frame = getattr(main, "cr_frame", None)
        if frame is None or frame.f_globals.get("__name__") != "exchange_node.server_cli":
            return original_run(main, **kwargs)
        asyncio.run = original_run  # once

        async def probed() -> Any:
            probe = asyncio.get_running_loop().create_task(_loop_probe(Path(out_dir)))
            try:
                return await main
            finally:
                probe.cancel()

        return original_run(probed(), **kwargs)

    asyncio.run = run


def _time_every_callback() -> None:
    """Wrap asyncio's ``Handle._run``: each callback of the probed loop thread is timed in
    that thread's CPU time (load-robust: waiting for a core or the GIL is not counted), and
    those of ``STEP_RECORD_MS`` or more are recorded with what ran: a task's coroutine and
    the innermost coroutine it waits in after the step (the piece that just ran ended
    there)."""
    import asyncio.events

    original = asyncio.events.Handle._run
    thread_time = time.thread_time
    threshold = STEP_RECORD_MS / 1000

    def timed_run(self: Any) -> None:
        if not _STEP_THREAD or threading.get_ident() != _STEP_THREAD[0]:
            original(self)
            return
        started = thread_time()
        original(self)
        cpu = thread_time() - started
        if cpu >= threshold:
            _STEPS.append((time.time(), cpu, _step_label(self._callback)))

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]


def _step_label(callback: Any) -> str:
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro: Any = task.get_coro()
        outer = getattr(coro, "__qualname__", type(coro).__name__)
        inner = outer
        for _ in range(30):
            waited = getattr(coro, "cr_await", None)
            if waited is None or not hasattr(waited, "cr_await"):
                break
            coro = waited
            inner = getattr(coro, "__qualname__", inner)
        return outer if inner == outer else f"{outer} > {inner}"
    return getattr(callback, "__qualname__", None) or type(callback).__name__


async def _loop_probe(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"probe-{os.getpid()}.jsonl"
    # (wall clock at wake-up, lateness s, CPU s of the loop thread since the last wake-up)
    lags: list[tuple[float, float, float]] = []
    samples: list[tuple[float, float, list[str]]] = []  # (wall clock, CPU s stalled, stack)
    loop_thread = threading.get_ident()
    _STEP_THREAD.append(loop_thread)
    # Garbage collections in the loop thread: (wall clock, CPU s, generation).
    collections_: list[tuple[float, float, int]] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != loop_thread:
            return
        if phase == "start":
            gc_started[0] = time.thread_time()
        else:
            collections_.append(
                (time.time(), time.thread_time() - gc_started[0], info["generation"])
            )

    gc.callbacks.append(on_gc)
    loop_cpu = time.pthread_getcpuclockid(loop_thread)
    beat_cpu = time.thread_time()

    stopped = threading.Event()

    def watchdog() -> None:
        # Counted in the loop thread's CPU time, not in wall time: a loop that waits for
        # a core (the machine's other load) or for the GIL is not stalled by its work.
        last_sampled = 0.0
        while not stopped.wait(PROBE_INTERVAL_S):
            stalled = time.clock_gettime(loop_cpu) - beat_cpu
            # One sample per 2 ms of a stall: where the loop spends a long step.
            if stalled * 1000 >= STALL_SAMPLE_MS and stalled - last_sampled >= 0.002:
                frame = sys._current_frames().get(loop_thread)
                stack: list[str] = []
                try:
                    while frame is not None and len(stack) < 40:
                        code = frame.f_code
                        name = code.co_filename.rsplit("/site-packages/", 1)[-1]
                        stack.append(f"{name}:{frame.f_lineno}:{code.co_qualname}")
                        frame = frame.f_back
                except AttributeError:  # the thread ran on while it was read: no sample
                    continue
                samples.append((time.time(), stalled, stack))
                last_sampled = stalled
            elif stalled * 1000 < STALL_SAMPLE_MS:
                last_sampled = 0.0

    threading.Thread(target=watchdog, name="loop-probe-watchdog", daemon=True).start()
    flushed = time.monotonic()
    try:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(PROBE_INTERVAL_S)
            woke = time.perf_counter()
            cpu = time.thread_time()
            lags.append((time.time(), max(0.0, woke - started - PROBE_INTERVAL_S), cpu - beat_cpu))
            beat_cpu = cpu
            if time.monotonic() - flushed >= 1.0:
                flushed = time.monotonic()
                taken_lags, taken_samples, taken_steps = lags[:], samples[:], _STEPS[:]
                taken_gcs = collections_[:]
                del lags[: len(taken_lags)], samples[: len(taken_samples)]
                del _STEPS[: len(taken_steps)], collections_[: len(taken_gcs)]
                record = {
                    "lags": taken_lags,
                    "samples": taken_samples,
                    "steps": taken_steps,
                    "gcs": taken_gcs,
                }
                with path.open("a") as out:
                    out.write(json.dumps(record) + "\n")
                beat_cpu = time.thread_time()  # the flush is the probe's, not the node's
    finally:
        # The probe ends with its task. A watchdog left behind went on sampling the
        # thread's stack every 2 ms of its CPU for the rest of the process (in a pytest
        # run, every later test), with no beat to reset it, and once hit a frame the
        # thread had already left (an AttributeError in the thread).
        stopped.set()
        gc.callbacks.remove(on_gc)
        with contextlib.suppress(ValueError):
            _STEP_THREAD.remove(loop_thread)


def enable_loop_probe(root: Path, steps: bool = False) -> Path:
    """Make node processes started from now on probe their loops (see
    ``install_loop_probe``; ``steps``: on asyncio's own loop, every callback timed);
    returns the directory their records go to."""
    if steps:
        os.environ[LOOP_PROBE_STEPS_ENV] = "1"
    site = root / "loop-probe-site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    records = root / "loop-probe"
    records.mkdir(parents=True, exist_ok=True)
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{site}{os.pathsep}{path}" if path else str(site)
    os.environ[LOOP_PROBE_ENV] = str(records)
    return records


def read_probe(records: Path, pid: int) -> dict[str, list[Any]]:
    """The records a node process ``pid`` wrote (lags, stack samples)."""
    out: dict[str, list[Any]] = {"lags": [], "samples": [], "steps": [], "gcs": []}
    path = records / f"probe-{pid}.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                doc = json.loads(line)
                for kind, rows in out.items():
                    rows.extend(doc.get(kind, []))
    return out


def _in(windows: list[tuple[float, float]], at: float) -> bool:
    return any(start <= at <= end for start, end in windows)


def stall_site(stack: list[str]) -> str:
    """Where a stalled loop was: the innermost two frames of this project's code (the
    stack is innermost first), or the innermost frame when none is ours."""
    ours = [f for f in stack if "exchange_node/" in f and "tools/bench/fairness.py" not in f]
    if not ours:
        return stack[0] if stack else "?"
    return " <- ".join(f.split("exchange_node/", 1)[1] for f in ours[:2])


def loop_figures(
    probe: dict[str, list[Any]],
    alone: list[tuple[float, float]],
    hogged: list[tuple[float, float]],
    hog_requests: int,
) -> dict[str, Any]:
    """The probe's figures per phase: the loop thread's CPU time between two turns of
    the 1 ms probe (p99, max), its wall-clock lateness (p99, max), the stall CPU time
    per hog request, and the stack samples of the hogged phases counted by site."""
    out: dict[str, Any] = {}
    stalls: list[float] = []
    for phase, windows in (("unloaded", alone), ("hogged", hogged)):
        rows = [row for row in probe["lags"] if _in(windows, row[0])]
        late = [row[1] for row in rows]
        cpu = [row[2] for row in rows]
        out[f"cpu_p99_ms_{phase}"] = _percentile(cpu, 0.99) * 1000 if cpu else 0.0
        out[f"cpu_max_ms_{phase}"] = max(cpu, default=0.0) * 1000
        out[f"lag_p99_ms_{phase}"] = _percentile(late, 0.99) * 1000 if late else 0.0
        out[f"lag_max_ms_{phase}"] = max(late, default=0.0) * 1000
        stalls = [c for c in cpu if c * 1000 >= STALL_MS]
        out[f"stalls_{phase}"] = len(stalls)
        if phase == "hogged":
            out["stall_ms_per_hog_request"] = sum(stalls) * 1000 / max(1, hog_requests)
    for phase, windows in (("unloaded", alone), ("hogged", hogged)):
        cpu = [row[1] for row in probe["steps"] if _in(windows, row[0])]
        out[f"step_max_ms_{phase}"] = max(cpu, default=0.0) * 1000
        out[f"step_p99_ms_{phase}"] = _percentile(cpu, 0.99) * 1000 if cpu else 0.0
        out[f"steps_{phase}"] = len(cpu)
    for phase, windows in (("unloaded", alone), ("hogged", hogged)):
        cpu = [row[1] for row in probe["gcs"] if _in(windows, row[0])]
        out[f"gc_max_ms_{phase}"] = max(cpu, default=0.0) * 1000
        out[f"gc_ms_{phase}"] = sum(cpu) * 1000
        out[f"gcs_{phase}"] = len(cpu)
    labels: dict[str, list[float]] = {}
    for at, cpu, label in probe["steps"]:
        if _in(hogged, at):
            labels.setdefault(label, []).append(cpu * 1000)
    out["step_labels"] = sorted(
        ((label, len(ms), max(ms), sum(ms)) for label, ms in labels.items()),
        key=lambda row: -row[2],
    )[:12]
    sites: collections.Counter[str] = collections.Counter()
    for at, _stalled, stack in probe["samples"]:
        if _in(hogged, at):
            sites[stall_site(stack)] += 1
    out["sites"] = sites.most_common(12)
    return out


def start_cluster(root: Path, nodes: int, extra_args: list[str] | None = None) -> LocalCluster:
    cluster = LocalCluster.create(
        root,
        nodes,
        election_ms=1_000,
        heartbeat_ms=50,
        extra_args=["--log-level=warning", *(extra_args or [])],
    )
    cluster.start_all()
    try:
        cluster.wait_for_leader(120)  # two shared cores: a busy machine starts slowly
        cluster.wait_ready(timeout=120)
    except BaseException:
        cluster.stop_all(5)
        raise
    return cluster


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def victim_latencies(url: str, token: str, seconds: float, prefix: str) -> dict[str, Any]:
    """Send single IOC orders one at a time for ``seconds`` (after 5 to warm up the
    connection); latencies (ms) and failures."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors: dict[int, int] = {}
    async with aiohttp.ClientSession() as session:
        i = 0
        ends = None
        while ends is None or time.monotonic() < ends:
            if i == 5:
                ends = time.monotonic() + seconds
            body = {
                "symbol": SYMBOL,
                "side": "BUY",
                "order_type": "LIMIT",
                "time_in_force": "IOC",
                "price": VICTIM_PRICE,
                "quantity": 1,
                "client_order_id": f"{prefix}-{i}",
            }
            started = time.perf_counter()
            async with session.post(f"{url}/v1/orders", json=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
            elapsed = (time.perf_counter() - started) * 1000
            i += 1
            if i <= 5:
                continue  # the connection's first requests warm up
            if status != 200:
                errors[status] = errors.get(status, 0) + 1
            latencies.append(elapsed)
    return _summary(latencies, errors)


def _summary(latencies: list[float], errors: dict[int, int]) -> dict[str, Any]:
    return {
        "p50": _percentile(latencies, 0.50),
        "p99": _percentile(latencies, 0.99),
        "errors": errors,
        "latencies": latencies,
    }


def _pooled(phases: list[dict[str, Any]]) -> dict[str, Any]:
    errors: dict[int, int] = {}
    for phase in phases:
        for status, n in phase["errors"].items():
            errors[status] = errors.get(status, 0) + n
    return _summary([ms for phase in phases for ms in phase["latencies"]], errors)


async def _hog(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    url, size = spec["url"], spec["batch_size"]
    headers = {"Authorization": f"Bearer {spec['token']}", "Content-Type": "application/json"}
    stop_file = Path(spec["stop_file"])
    limited_file = Path(spec["limited_file"])
    counts: dict[str, Any] = {"orders": 0, "429": 0, "other": []}
    accepted: list[tuple[float, int]] = []  # (wall clock, orders): the victim's window
    refused: list[float] = []
    serial = 0

    def new_body(w: int) -> str:
        nonlocal serial
        serial += 1
        return json.dumps(
            {
                "orders": [
                    {
                        "symbol": SYMBOL,
                        "side": "SELL",
                        "order_type": "LIMIT",
                        "time_in_force": "IOC",
                        "price": HOG_PRICE,
                        "quantity": 1,
                        "client_order_id": f"hog-{w}-{serial}-{k}",
                    }
                    for k in range(size)
                ]
            }
        )

    async def worker(session: aiohttp.ClientSession, w: int) -> None:
        # A refused batch was not applied: the retry sends the same bytes. Encoding a
        # new 500-order body for every retry cost the hog's process about half a core
        # of this machine's two, taken from the nodes it was meant to load.
        body = new_body(w)
        while not stop_file.exists():
            try:
                async with session.post(f"{url}/v1/orders/batch", data=body, headers=headers) as r:
                    status, answer = r.status, await r.read()
                    wait = r.headers.get("Retry-After")
            except aiohttp.ClientError:
                # Shut out for ignoring Retry-After: the node closed the connection
                # without reading the body (the 429 may not reach us).
                status, answer, wait = 429, b"", None
            if status == 200:
                counts["orders"] += size
                accepted.append((time.time(), size))
                body = new_body(w)
            elif status == 429:
                counts["429"] += 1
                refused.append(time.time())
                if b'"rate_limited"' in answer and not limited_file.exists():
                    limited_file.write_text("limited")  # its burst is spent
                if not spec["honour_retry_after"]:
                    wait = None
                await asyncio.sleep(float(wait) if wait else 0.01)
            else:
                counts["other"].append(time.time())
                await asyncio.sleep(0.01)

    connector = aiohttp.TCPConnector(limit=spec["batches"])
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.monotonic()
        Path(spec["started_file"]).write_text("started")
        await asyncio.gather(*(worker(session, w) for w in range(spec["batches"])))
        counts["seconds"] = time.monotonic() - started
    counts["accepted"], counts["refused"] = accepted, refused
    return counts


def _hog_main(spec: dict[str, Any], out: Any) -> None:
    out.put(asyncio.run(_hog(spec)))


class Hog:
    """The hog client in its own process (its CPU is not the victim's)."""

    def __init__(
        self,
        url: str,
        token: str,
        batches: int,
        batch_size: int,
        root: Path,
        honour_retry_after: bool = False,
    ) -> None:
        self.stop_file = root / "hog.stop"
        self.limited_file = root / "hog.limited"
        started = root / "hog.started"
        for path in (self.stop_file, started, self.limited_file):
            path.unlink(missing_ok=True)
        ctx = multiprocessing.get_context("spawn")
        self.out: Any = ctx.Queue()
        spec = {
            "url": url,
            "token": token,
            "batches": batches,
            "batch_size": batch_size,
            "stop_file": str(self.stop_file),
            "started_file": str(started),
            "limited_file": str(self.limited_file),
            "honour_retry_after": honour_retry_after,
        }
        self.proc = ctx.Process(target=_hog_main, args=(spec, self.out), daemon=True)
        self.proc.start()
        deadline = time.monotonic() + 60
        while not started.exists():
            if time.monotonic() > deadline or not self.proc.is_alive():
                raise RuntimeError("the hog process did not start")
            time.sleep(0.05)

    def wait_limited(self, timeout: float) -> bool:
        """Wait until the hog's rate limit has refused it once (its burst is spent)."""
        deadline = time.monotonic() + timeout
        while not self.limited_file.exists():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> dict[str, Any]:
        self.stop_file.write_text("stop")
        result: dict[str, Any] = self.out.get(timeout=90)
        self.proc.join(30)
        return result


def measure(
    cluster: LocalCluster,
    root: Path,
    *,
    phase_seconds: float,
    hog_batches: int,
    hog_batch_size: int,
    rounds: int = 1,
    honour_retry_after: bool = False,
) -> dict[str, Any]:
    """The victim's latency alone and while the hog runs at its limit, in ``rounds``
    alternations (the machine's neighbours load both alike), and the hog's counts."""
    leader = cluster.wait_for_leader(30)
    url = f"http://{cluster.member(leader).http}"
    # The hog is a retail key (the node's default limit); bench keys have their own.
    victim, hog_token = cluster.key_for("alice"), cluster.key_for("dave")
    alone: list[dict[str, Any]] = []
    hogged: list[dict[str, Any]] = []
    hog_orders = hog_refused = hog_other = hog_seconds = 0.0
    hog_requests = 0
    hog_limited = True
    alone_windows: list[tuple[float, float]] = []
    hogged_windows: list[tuple[float, float]] = []
    for r in range(rounds):
        window = time.time()
        alone.append(asyncio.run(victim_latencies(url, victim, phase_seconds, f"v-alone{r}")))
        alone_windows.append((window, time.time()))
        hog = Hog(url, hog_token, hog_batches, hog_batch_size, root, honour_retry_after)
        try:
            # At its limit: refused once (its burst spent), or a second of load.
            if not hog.wait_limited(10):
                hog_limited = False
            window = time.time()
            hogged.append(asyncio.run(victim_latencies(url, victim, phase_seconds, f"v-hog{r}")))
            window_end = time.time()
        finally:
            counts = hog.stop()
        # The hog's figures over the victim's measurement only (not its burst before).
        hog_seconds += window_end - window
        hogged_windows.append((window, window_end))
        accepted = [n for at, n in counts["accepted"] if window <= at <= window_end]
        hog_orders += sum(accepted)
        refused = sum(1 for at in counts["refused"] if window <= at <= window_end)
        hog_refused += refused
        hog_other += sum(1 for at in counts["other"] if window <= at <= window_end)
        hog_requests += len(accepted) + refused
    return {
        "alone": _pooled(alone),
        "hogged": _pooled(hogged),
        "hog": {
            "orders_per_s": hog_orders / hog_seconds,
            "429_per_s": hog_refused / hog_seconds,
            "other_per_s": hog_other / hog_seconds,
            "limited": hog_limited,
            "requests": hog_requests,
        },
        "leader": leader,
        "windows": {"alone": alone_windows, "hogged": hogged_windows},
    }


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="exchange-fairness-") as tmp:
        root = Path(args.data_root or tmp)
        records = enable_loop_probe(root, args.loop_probe_steps) if args.loop_probe else None
        cluster = start_cluster(root / "cluster", args.nodes)
        try:
            figures = measure(
                cluster,
                root,
                phase_seconds=args.phase_seconds,
                hog_batches=args.hog_batches,
                hog_batch_size=args.hog_batch_size,
                rounds=args.rounds,
                honour_retry_after=args.hog_honours_retry_after,
            )
            leader_pid = cluster.procs[figures["leader"]].pid
            if records is not None:
                # The probe writes its records once a second: the last window's must
                # reach the file before the node stops.
                time.sleep(PROBE_FLUSH_WAIT_S)
        finally:
            cluster.stop_all(15)
        loop = None
        if records is not None:
            windows = figures["windows"]
            loop = loop_figures(
                read_probe(records, leader_pid),
                windows["alone"],
                windows["hogged"],
                figures["hog"]["requests"],
            )
    alone, hogged, hog = figures["alone"], figures["hogged"], figures["hog"]
    results = [
        BenchResult("victim_p50_ms_unloaded", round(alone["p50"], 2), "ms"),
        BenchResult("victim_p99_ms_unloaded", round(alone["p99"], 2), "ms"),
        BenchResult("victim_p50_ms_hogged", round(hogged["p50"], 2), "ms"),
        BenchResult("victim_p99_ms_hogged", round(hogged["p99"], 2), "ms"),
        BenchResult("victim_p99_ratio", round(hogged["p99"] / alone["p99"], 2), "x"),
        BenchResult("victim_errors", sum(hogged["errors"].values()), "requests"),
        BenchResult("victim_orders_hogged", len(hogged["latencies"]), "orders"),
        BenchResult("hog_orders_per_s", round(hog["orders_per_s"], 1), "orders/s"),
        BenchResult("hog_429_per_s", round(hog["429_per_s"], 1), "requests/s"),
        BenchResult("hog_other_per_s", round(hog["other_per_s"], 1), "requests/s"),
    ]
    if loop is not None:
        results += [
            BenchResult(f"leader_loop_{figure}", round(loop[figure], 2), "ms")
            for figure in (
                "cpu_p99_ms_unloaded",
                "cpu_max_ms_unloaded",
                "cpu_p99_ms_hogged",
                "cpu_max_ms_hogged",
                "lag_p99_ms_unloaded",
                "lag_max_ms_unloaded",
                "lag_p99_ms_hogged",
                "lag_max_ms_hogged",
            )
        ]
        results += [
            BenchResult("leader_stalls_unloaded", loop["stalls_unloaded"], "stalls"),
            BenchResult("leader_stalls_hogged", loop["stalls_hogged"], "stalls"),
            BenchResult(
                "leader_stall_ms_per_hog_request", round(loop["stall_ms_per_hog_request"], 3), "ms"
            ),
        ]
        if args.loop_probe_steps:
            results += [
                BenchResult(f"leader_{figure}", round(loop[figure], 2), "ms")
                for figure in (
                    "step_p99_ms_unloaded",
                    "step_max_ms_unloaded",
                    "step_p99_ms_hogged",
                    "step_max_ms_hogged",
                )
            ]
            results += [
                BenchResult("leader_steps_over_0.5ms_unloaded", loop["steps_unloaded"], "steps"),
                BenchResult("leader_steps_over_0.5ms_hogged", loop["steps_hogged"], "steps"),
            ]
            print(
                "leader loop: the longest callbacks while the hog ran (CPU ms: count, max, total):",
                file=sys.stderr,
            )
            for label, n, longest, total in loop["step_labels"]:
                print(f"  {n:6d} {longest:7.2f} {total:8.1f}  {label}", file=sys.stderr)
        for phase in ("unloaded", "hogged"):
            print(
                f"leader loop, {phase}: {loop[f'gcs_{phase}']} garbage collections, "
                f"{loop[f'gc_ms_{phase}']:.1f} ms CPU in all, longest "
                f"{loop[f'gc_max_ms_{phase}']:.1f} ms",
                file=sys.stderr,
            )
        print("leader loop: stack samples in stalls while the hog ran, by site:", file=sys.stderr)
        for site, n in loop["sites"]:
            print(f"  {n:6d}  {site}", file=sys.stderr)
    if not hog["limited"] or hog["orders_per_s"] == 0:
        # The ratio then compares the victim with itself: say so where a reader looks.
        print(
            "warning: the hog was not at its limit in the hogged phases "
            f"(refused by its rate limit: {'yes' if hog['limited'] else 'no'}, "
            f"{hog['orders_per_s']:.0f} orders/s accepted); victim_p99_ratio measures "
            "nothing: give longer --phase-seconds",
            file=sys.stderr,
        )
    report("fairness", results, as_json=args.json)
    return 0

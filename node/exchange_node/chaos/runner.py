"""`exchange chaos run`: start a target, drive the workload, run a scenario, check, report.

The run: the cluster comes up (``--target local``: real processes, with the
namespaces, proxies and FUSE disks the scenario needs), the workload starts,
the scenario's faults run after a short warm-up and stop a few seconds before
the end (so acknowledged writes after the last fault show the cluster came
back), everything is healed, the replicas are given ``--converge-within``
seconds to agree, and one observation per replica is recorded. The history is
then checked (``checker.check_history``) and ``report.json`` and
``report.html`` written. While it runs, one progress line a second: the fault
in force, ops/s and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from . import report as report_mod
from .checker import check_history
from .history import Fault, HistoryWriter, read_history
from .scenarios import FaultContext, FaultWindow, Scenario, compose
from .spans import SpanReceiver
from .target import CapabilityError, Target
from .workload import Workload

WARMUP_S = 2.0
TAIL_S = 4.0
KEPT_SERIES = (
    "exchange_raft_term",
    "exchange_raft_commit_index",
    "exchange_raft_applied_index",
    "exchange_raft_leader_changes_total",
    "exchange_peer_frames_rejected_total",
    "exchange_wal_fsync_seconds_sum",
    "exchange_wal_fsync_seconds_count",
    "exchange_state_divergence_total",
)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


class RunError(RuntimeError):
    """The run could not be made as asked (exit 2); the message says why."""


@dataclass
class RunOptions:
    scenario: str
    target: str = "local"
    duration: float = 20.0
    seed: int = 0
    report_dir: Path = Path("build/chaos/run")
    nodes: int | None = None
    rate: float = 40.0
    clients: int = 4
    converge_within: float = 30.0
    target_options: dict[str, str] = field(default_factory=dict)
    keep_cluster: bool = False
    launch_env: dict[str, str] = field(default_factory=dict)


@dataclass
class RunRecord:
    """What the run saw besides the history: for the report."""

    faults: list[FaultWindow] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    started_ns: int = 0
    converged: bool = False
    converge_s: float | None = None
    """From the last heal to every replica showing the same applied index and fresh state hash."""
    indexes_agree_s: float | None = None
    """From the last heal to the same applied and commit index everywhere."""
    last_heal_ns: int | None = None
    capabilities: list[str] = field(default_factory=list)
    state_hash_readable: bool = True
    """False where the nodes' state hashes cannot be read (no admin API): then the
    replicas are compared by applied index only, and the report says so."""


# ---- targets -------------------------------------------------------------------------------


def local_capabilities(link_proxies: bool, faultfs: bool) -> tuple[frozenset[str], dict[str, str]]:
    """What a local target would offer, and why each missing kind is missing (not started)."""
    from . import clock, net
    from .local_target import ALWAYS

    caps, why = set(ALWAYS), {}
    missing_net = net.missing_tools("ip", "iptables", "tc")
    if missing_net is None:
        caps |= {"partition", "loss", "bandwidth"}
    else:
        for kind in ("partition", "loss", "bandwidth"):
            why[kind] = f"root with ip, iptables and tc ({missing_net})"
    if link_proxies:
        caps.add("link")
    if clock.libfaketime_path() is not None:
        caps.add("clock")
    else:
        why["clock"] = "libfaketime (scripts/system-deps.sh)"
    if faultfs:
        from . import faultfs as faultfs_mod

        reason = faultfs_mod.unavailable_reason()
        if reason is None:
            caps |= {"disk", "power_cut"}
        else:
            why["disk"] = why["power_cut"] = f"the FUSE filesystem: {reason}"
    return frozenset(caps), why


def make_target(
    options: RunOptions,
    scenario: Scenario,
    nodes: int,
    root: Path,
    receiver: SpanReceiver | None = None,
) -> Target:
    if options.target == "local":
        from . import faultfs as faultfs_mod
        from .local_target import LocalTarget

        monkey = "chaos-monkey" in scenario.name
        link = "link" in scenario.needs or monkey
        disks = bool({"disk", "power_cut"} & scenario.needs) or (
            monkey and faultfs_mod.unavailable_reason() is None
        )
        caps, why = local_capabilities(link, disks)
        missing = scenario.missing(caps)
        if missing:
            raise RunError(
                f"scenario {scenario.name} needs {', '.join(missing)}, which --target local "
                "lacks here: " + "; ".join(f"{k} needs {why.get(k, '?')}" for k in missing)
            )
        return LocalTarget(
            root,
            nodes,
            node_env=None if receiver is None else receiver.node_env,
            link_proxies=link,
            faultfs=disks,
            seed=options.seed,
            **_local_options(options),
        )
    modules = {
        "docker": ("exchange_node.chaos.docker_target", "DockerTarget"),
        "kubernetes": ("exchange_node.chaos.kube_target", "KubernetesTarget"),
    }
    if options.target not in modules:
        raise RunError(f"--target must be local, docker or kubernetes, not {options.target!r}")
    module_name, class_name = modules[options.target]
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise RunError(
            f"--target {options.target} is not available: {module_name}.{class_name} ({exc})"
        ) from exc
    # A Kubernetes cluster's size is its ExchangeCluster's; Docker makes the nodes.
    kwargs: dict[str, Any] = {"seed": options.seed}
    if options.target == "docker":
        kwargs["nodes"] = nodes
    kwargs.update({k: _option_value(v) for k, v in options.target_options.items()})
    try:
        target: Target = cls(**kwargs)
    except TypeError as exc:
        raise RunError(f"--target {options.target}: bad --target-option: {exc}") from exc
    missing = scenario.missing(target.capabilities())
    if missing:
        target.close()
        raise RunError(
            f"scenario {scenario.name} needs {', '.join(missing)}, which --target "
            f"{options.target} lacks"
        )
    return target


def _local_options(options: RunOptions) -> dict[str, Any]:
    allowed = {"election_ms": int, "heartbeat_ms": int, "snapshot_threshold": int}
    out: dict[str, Any] = {}
    for key, value in options.target_options.items():
        if key not in allowed:
            raise RunError(
                f"--target-option {key}: --target local takes only {', '.join(sorted(allowed))}"
            )
        try:
            out[key] = allowed[key](value)
        except ValueError:
            raise RunError(f"--target-option {key} must be an integer, got {value!r}") from None
    return out


def _option_value(text: str) -> Any:
    with contextlib.suppress(ValueError):
        return json.loads(text)
    return text


# ---- monitoring ----------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """The kept series, each summed over its labels."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) in KEPT_SERIES:
            with contextlib.suppress(ValueError):
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


async def _monitor(
    workload: Workload, record: RunRecord, stop: asyncio.Event, progress: Callable[[], None]
) -> None:
    # The workload's session: the same TLS trust (a target's CA) for the scrapes.
    session = workload.session
    timeout = aiohttp.ClientTimeout(total=0.8)
    while not stop.is_set():
        t = round((time.monotonic_ns() - record.started_ns) / 1e9, 2)

        async def poll(node_id: int, url: str, t: float = t) -> None:
            role: dict[str, Any] = {"t": t, "node": node_id, "role": "down"}
            try:
                async with session.get(url + "/v1/cluster", timeout=timeout) as resp:
                    doc = await resp.json(content_type=None)
                    role.update(
                        role=doc.get("role"), term=doc.get("term"), leader=doc.get("leader")
                    )
                async with session.get(url + "/metrics", timeout=timeout) as resp:
                    series = parse_metrics(await resp.text())
                    record.metrics.append({"t": t, "node": node_id, "series": series})
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError, AttributeError):
                pass
            record.roles.append(role)

        await asyncio.gather(
            *(poll(n, e.http.rstrip("/")) for n, e in sorted(workload.endpoints.items()))
        )
        progress()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


# ---- the run -------------------------------------------------------------------------------


def run(options: RunOptions, out: IO[str] = sys.stderr) -> int:
    """Run and report; 0 when every check passes (or is unknown), 1 when one fails,
    2 when the run could not be made."""
    try:
        scenario = compose(options.scenario)
    except KeyError as exc:
        print(f"exchange chaos run: {exc.args[0]}", file=out)
        return 2
    nodes = options.nodes or scenario.default_nodes
    if nodes < scenario.min_nodes:
        print(
            f"exchange chaos run: --nodes {nodes}: {scenario.name} needs at least "
            f"{scenario.min_nodes}",
            file=out,
        )
        return 2
    if options.duration < WARMUP_S + TAIL_S + 3:
        print(
            f"exchange chaos run: --duration must be at least {WARMUP_S + TAIL_S + 3:g} s, "
            f"got {options.duration:g}",
            file=out,
        )
        return 2
    report_dir = Path(options.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    history_path = report_dir / "history.jsonl"
    history_path.unlink(missing_ok=True)
    root = Path(tempfile.mkdtemp(prefix="exchange-chaos-"))
    print(
        f"chaos run: {scenario.name} on {options.target} ({nodes} nodes), "
        f"{options.duration:g} s, seed {options.seed}, report in {report_dir}",
        file=out,
        flush=True,
    )
    # Spans: the local nodes export theirs to a receiver in this process.
    receiver = SpanReceiver() if options.target == "local" else None
    try:
        target = make_target(options, scenario, nodes, root, receiver)
    except (RunError, CapabilityError, ValueError) as exc:
        print(f"exchange chaos run: {exc}", file=out)
        shutil.rmtree(root, ignore_errors=True)
        if receiver is not None:
            receiver.close()
        return 2
    record = RunRecord(capabilities=sorted(target.capabilities()))
    try:
        asyncio.run(_drive(options, scenario, target, record, history_path, out))
    finally:
        with contextlib.suppress(Exception):
            target.close()
        for log in root.glob("node-*.log"):
            shutil.copy(log, report_dir / log.name)
        if not options.keep_cluster:
            shutil.rmtree(root, ignore_errors=True)
        if receiver is not None:
            receiver.close()
    history = read_history(history_path)
    result = check_history(history)
    spans = receiver.by_trace() if receiver is not None else None
    if receiver is not None:
        with open(report_dir / "spans.jsonl", "w") as f:
            for span in receiver.spans:
                f.write(json.dumps(span, sort_keys=True) + "\n")
    doc = report_mod.build(options, scenario, nodes, record, history, result, spans)
    (report_dir / "report.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
    (report_dir / "report.html").write_text(report_mod.render_html(doc))
    print(report_mod.summary_text(doc), file=out, flush=True)
    return 1 if doc["verdict"] == "fail" else 0


async def _drive(
    options: RunOptions,
    scenario: Scenario,
    target: Target,
    record: RunRecord,
    history_path: Path,
    out: IO[str],
) -> None:
    writer = HistoryWriter(history_path)
    converge_ns = int(options.converge_within * 1e9)
    writer.meta(
        {
            "scenario": scenario.name,
            "seed": options.seed,
            "target": options.target,
            "nodes": len(target.node_ids()),
            "duration_s": options.duration,
        },
        converge_ns,
    )
    workload = Workload(
        target.endpoints(),
        target.credentials(),
        writer,
        seed=options.seed,
        rate=options.rate,
        clients=options.clients,
    )
    record.started_ns = time.monotonic_ns()
    lock = threading.Lock()
    current: list[FaultWindow] = []

    def on_fault(window: FaultWindow) -> None:
        with lock:
            if window.end_ns is None:
                current.append(window)
                return
            if window in current:
                current.remove(window)
            record.faults.append(window)
            record.last_heal_ns = window.end_ns
        writer.write(
            Fault(
                window.name,
                window.start_ns,
                window.end_ns,
                [f"n{n}" for n in window.nodes],
                {
                    "description": window.description,
                    "outcome": window.outcome,
                    "injection_ns": window.injection_ns,
                },
            )
        )

    def progress() -> None:
        rate, errors = workload.stats.last()
        totals = workload.stats.totals
        with lock:
            fault = "; ".join(w.description for w in current) or "none"
        elapsed = (time.monotonic_ns() - record.started_ns) / 1e9
        print(
            f"[{elapsed:5.1f}s] fault: {fault} | {rate:.0f} ops/s, {errors} errors "
            f"(ok {totals['ok']}, fail {totals['fail']}, indeterminate {totals['info']})",
            file=out,
            flush=True,
        )

    await workload.start()
    stop_load, stop_monitor = asyncio.Event(), asyncio.Event()
    monitor = asyncio.create_task(_monitor(workload, record, stop_monitor, progress))
    load = asyncio.create_task(workload.run(stop_load))
    begin = time.monotonic()
    ctx = FaultContext(
        target,
        random.Random(f"scenario:{options.seed}"),
        begin + options.duration - TAIL_S,
        on_fault,
    )
    try:
        await asyncio.sleep(WARMUP_S)
        await asyncio.to_thread(scenario.schedule, ctx)
        await asyncio.sleep(max(0.0, begin + options.duration - time.monotonic()))
    finally:
        ctx.stop.set()
        stop_load.set()
        with contextlib.suppress(Exception):
            await load
        await asyncio.to_thread(target.heal_all)
    heal_done = time.monotonic_ns()
    record.last_heal_ns = max(record.last_heal_ns or 0, heal_done)
    print("healed; waiting for the replicas to agree", file=out, flush=True)
    waited_from = time.monotonic_ns()
    agreed, _, indexes_s, last = await workload.wait_converged(options.converge_within)
    record.converged = agreed
    if agreed:
        record.converge_s = (time.monotonic_ns() - record.last_heal_ns) / 1e9
    if indexes_s is not None:
        record.indexes_agree_s = (waited_from - record.last_heal_ns) / 1e9 + indexes_s
    else:
        print(f"replicas did not agree in {options.converge_within:g} s: {last}", file=out)
    observations = await workload.observe(converge_ns)
    record.state_hash_readable = workload.state_hash_readable
    for observation in observations:
        writer.write(observation)
    stop_monitor.set()
    await monitor
    await workload.close()
    writer.close()

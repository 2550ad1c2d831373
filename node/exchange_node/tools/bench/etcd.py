"""`exchange bench etcd`: etcd 3.4 measured the way `exchange bench cluster` measures us.

Three etcd members as local processes (fsync on, etcd's defaults except the
election timeout and heartbeat, which are the bench's ``--election-ms`` and
``--heartbeat-ms`` so that failover compares like with like), driven by one
Python gRPC client in a separate process, as the cluster bench drives the
exchange through one HTTP client process:

- ``etcd_latency_p50_ms_at_500`` / ``etcd_latency_p99_ms_at_500``: puts offered
  on a fixed schedule (open loop, latency from each put's intended send time,
  as the cluster bench's latency phase);
- ``etcd_put_throughput``: puts/s with ``--etcd-in-flight`` puts outstanding
  (one key per put, 16-byte values);
- ``etcd_failover_unavailability_median_s``: kill -9 of the leader while puts
  flow to every member in turn, one every 5 ms whatever is unanswered (open
  loop, ``tools/bench/failover.py``); per trial the time from the kill to the
  first put sent after it and acknowledged (the killed member restarts between
  trials).

etcd comes from Debian's ``etcd-server`` package (``apt-get install
etcd-server``); its path is ``--etcd-binary``. The client speaks etcd's gRPC
``KV/Put`` with the two fields it needs encoded by hand (protobuf field 1,
the key, and 2, the value), so no etcd client library is needed, and finds
the leader through the JSON gateway's ``/v3/maintenance/status``.

``exchange bench cluster --compare etcd`` runs this after the exchange's own
phases, in the same run, and prints both side by side with their ratios. With
``--rounds N`` (2 or more) it interleaves the two instead: both clusters stay up,
the one not being measured is stopped (``EtcdCluster.freeze``), and each round
measures one then the other, the next round in the other order; each ratio is
the median of the rounds' ratios, with the lowest and highest round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exchange_node.tools.bench.failover import open_loop_writes, unavailability_gaps
from exchange_node.tools.bench.format import BenchResult, report
from exchange_node.tools.local import free_ports

PUT = "/etcdserverpb.KV/Put"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--etcd-binary", default=shutil.which("etcd") or "/usr/bin/etcd")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load phase")
    parser.add_argument("--rate", type=float, default=500.0, help="offered puts/s (latency)")
    parser.add_argument("--etcd-in-flight", type=int, default=1024, help="puts outstanding")
    parser.add_argument("--failover-trials", type=int, default=5)
    parser.add_argument("--election-ms", type=int, default=300)
    parser.add_argument("--heartbeat-ms", type=int, default=30)
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument("--data-root", type=Path, default=None, help="default: a temp dir")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def put_request(key: bytes, value: bytes) -> bytes:
    """etcdserverpb.PutRequest{key: 1, value: 2} in protobuf wire format."""
    return b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value


@dataclass
class Member:
    name: str
    client: int
    peer: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_address(self) -> str:
        return f"127.0.0.1:{self.client}"


class EtcdCluster:
    """Three (or ``n``) etcd members as child processes of this one."""

    def __init__(
        self, root: Path, binary: str, n: int = 3, election_ms: int = 1000, heartbeat_ms: int = 100
    ) -> None:
        if not Path(binary).exists():
            raise FileNotFoundError(
                f"--etcd-binary: {binary} not found (apt-get install etcd-server)"
            )
        self.root, self.binary = root, binary
        self.election_ms, self.heartbeat_ms = election_ms, heartbeat_ms
        ports = free_ports(2 * n)
        self.members = [
            Member(f"m{i + 1}", ports[i], ports[n + i], root / f"m{i + 1}") for i in range(n)
        ]
        self.initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer}" for m in self.members)

    def start(self, m: Member, state: str = "new") -> None:
        log = open(self.root / f"{m.name}.log", "ab")  # noqa: SIM115 - owned by the child
        m.proc = subprocess.Popen(
            [
                self.binary,
                f"--name={m.name}",
                f"--data-dir={m.data_dir}",
                f"--listen-client-urls=http://{m.client_address}",
                f"--advertise-client-urls=http://{m.client_address}",
                f"--listen-peer-urls=http://127.0.0.1:{m.peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{m.peer}",
                f"--initial-cluster={self.initial}",
                f"--initial-cluster-state={state}",
                "--initial-cluster-token=exchange-bench",
                f"--election-timeout={self.election_ms}",
                f"--heartbeat-interval={self.heartbeat_ms}",
                "--logger=zap",
                "--log-level=error",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_all(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for m in self.members:
            self.start(m)

    def status(self, m: Member, timeout: float = 1.0) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://{m.client_address}/v3/maintenance/status", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status: dict[str, Any] = json.loads(answer.read())
            return status

    def leader(self, timeout: float = 30.0) -> Member:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.members:
                if m.proc is None or m.proc.poll() is not None:
                    continue
                try:
                    status = self.status(m)
                except OSError:
                    continue
                if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                    return m
            time.sleep(0.05)
        raise TimeoutError("etcd elected no leader")

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP (or SIGCONT) every running member: a stopped cluster takes no CPU
        from a phase measured beside it."""
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def settle(self, timeout: float = 60.0) -> Member:
        """After a thaw: the leader, once the same member has led for two election
        timeouts (a thawed member's timers are overdue; it may campaign first)."""
        deadline = time.monotonic() + timeout
        leader = self.leader(timeout)
        while True:
            time.sleep(2 * self.election_ms / 1000)
            now = self.leader(max(1.0, deadline - time.monotonic()))
            if now is leader:
                return leader
            if time.monotonic() > deadline:
                raise TimeoutError("the thawed etcd cluster's leadership did not settle")
            leader = now

    def kill(self, m: Member) -> None:
        if m.proc is not None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait()
            m.proc = None

    def stop_all(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.terminate()
        for m in self.members:
            if m.proc is not None:
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                m.proc = None


# ---- the load process -----------------------------------------------------------


async def _throughput(spec: dict[str, Any]) -> dict[str, Any]:
    import grpc

    channel = grpc.aio.insecure_channel(spec["address"])
    put = channel.unary_unary(PUT)
    done = errors = 0
    end = time.monotonic() + spec["duration"]

    async def worker(w: int) -> None:
        nonlocal done, errors
        k = 0
        while time.monotonic() < end:
            k += 1
            try:
                await put(put_request(f"t/{w}/{k}".encode(), b"v" * 16), timeout=30)
                done += 1
            except grpc.aio.AioRpcError:
                errors += 1

    start = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(spec["in_flight"])))
    seconds = time.monotonic() - start
    await channel.close()
    return {"puts": done, "seconds": seconds, "errors": errors}


async def _latency(spec: dict[str, Any]) -> dict[str, Any]:
    import grpc

    channel = grpc.aio.insecure_channel(spec["address"])
    put = channel.unary_unary(PUT)
    rate = spec["rate"]
    count = int(rate * spec["duration"])
    bodies = [put_request(f"l/{i}".encode(), b"v" * 16) for i in range(count)]
    latencies: list[float] = []
    errors = 0

    async def one(body: bytes, due: float) -> None:
        nonlocal errors
        try:
            await put(body, timeout=30)
        except grpc.aio.AioRpcError:
            errors += 1
        latencies.append(time.monotonic() - due)  # a failure counts with its full wait

    now = time.monotonic()
    await asyncio.gather(*(one(put_request(b"warm", b"v"), now) for _ in range(16)))
    latencies.clear()
    loop = asyncio.get_running_loop()
    tasks = []
    start = time.monotonic() + 0.05
    for i in range(count):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(bodies[i], due)))
    await asyncio.gather(*tasks)
    await channel.close()
    latencies.sort()
    return {
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "errors": errors,
    }


async def _failover_writer(spec: dict[str, Any]) -> dict[str, Any]:
    """Open-loop puts to every member in turn until the stop file exists (see
    ``tools/bench/failover.py``); returns the acknowledged puts' times."""
    import grpc

    stop = Path(spec["stop_file"]).exists
    channels = [grpc.aio.insecure_channel(a) for a in spec["addresses"]]
    puts = [c.unary_unary(PUT) for c in channels]

    async def write(k: int) -> bool:
        try:
            await puts[k % len(puts)](put_request(f"f/{k}".encode(), b"v"), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return True

    successes = await open_loop_writes(write, stop)
    for c in channels:
        await c.close()
    return {"successes": successes}


_PHASES = {"throughput": _throughput, "latency": _latency, "failover": _failover_writer}


def _load_main(phase: str, spec: dict[str, Any], out: Any) -> None:
    out.put(asyncio.run(_PHASES[phase](spec)))


class _Load:
    """A phase in its own process (spawned: gRPC and fork do not mix)."""

    def __init__(self, phase: str, spec: dict[str, Any]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.out: Any = ctx.Queue()
        self.proc = ctx.Process(target=_load_main, args=(phase, spec, self.out), daemon=True)
        self.proc.start()

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self.out.get(timeout=timeout)
            return result
        finally:
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()


def _failover(cluster: EtcdCluster, trials: int, root: Path) -> list[float]:
    gaps = []
    for trial in range(trials):
        leader = cluster.leader()
        stop_file = root / f"etcd-failover-stop-{trial}"
        spec = {
            "addresses": [m.client_address for m in cluster.members],
            "stop_file": str(stop_file),
        }
        writer = _Load("failover", spec)
        time.sleep(1.5)  # writes flowing to every member
        killed_at = time.monotonic()
        cluster.kill(leader)
        time.sleep(max(3.0, 4 * cluster.election_ms / 1000))
        stop_file.write_text("stop")
        gaps += unavailability_gaps(writer.result(60)["successes"], [killed_at])
        cluster.start(leader, state="existing")
        cluster.leader()
        time.sleep(1.0)  # the restarted member catches up before the next kill
    return gaps


def measure(args: argparse.Namespace, root: Path) -> dict[str, float]:
    """etcd's figures, named as in the module docstring."""
    cluster = EtcdCluster(
        root / "etcd",
        args.etcd_binary,
        election_ms=args.election_ms,
        heartbeat_ms=args.heartbeat_ms,
    )
    cluster.start_all()
    try:
        figures = measure_load(cluster, args)
        if not args.skip_failover:
            figures.update(measure_failover(cluster, args, root))
    finally:
        cluster.stop_all()
    return figures


def measure_load(cluster: EtcdCluster, args: argparse.Namespace) -> dict[str, float]:
    """Latency at ``--rate`` and puts/s on a running cluster (its leader's address)."""
    address = cluster.leader().client_address
    latency = _Load(
        "latency", {"address": address, "rate": args.rate, "duration": args.duration}
    ).result(args.duration + 120)
    throughput = _Load(
        "throughput",
        {"address": address, "in_flight": args.etcd_in_flight, "duration": args.duration},
    ).result(args.duration + 120)
    return {
        "etcd_latency_p50_ms_at_500": round(latency["p50_ms"], 3),
        "etcd_latency_p99_ms_at_500": round(latency["p99_ms"], 3),
        "etcd_put_throughput": round(throughput["puts"] / throughput["seconds"], 1),
        "etcd_request_errors": latency["errors"] + throughput["errors"],
    }


def measure_failover(
    cluster: EtcdCluster, args: argparse.Namespace, root: Path
) -> dict[str, float]:
    gaps = _failover(cluster, args.failover_trials, root)
    return {
        "etcd_failover_unavailability_median_s": round(statistics.median(gaps), 3),
        "etcd_failover_unavailability_max_s": round(max(gaps), 3),
    }


UNITS = {
    "etcd_latency_p50_ms_at_500": "ms",
    "etcd_latency_p99_ms_at_500": "ms",
    "etcd_put_throughput": "puts/s",
    "etcd_request_errors": "requests",
    "etcd_failover_unavailability_median_s": "s",
    "etcd_failover_unavailability_max_s": "s",
}


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="exchange-bench-etcd-") as tmp:
        figures = measure(args, Path(args.data_root or tmp))
    results = [BenchResult(name, value, UNITS[name]) for name, value in figures.items()]
    results.append(BenchResult("etcd_in_flight", args.etcd_in_flight, "puts"))
    results.append(BenchResult("election_ms", args.election_ms, "ms"))
    results.append(BenchResult("heartbeat_ms", args.heartbeat_ms, "ms"))
    report("etcd", results, as_json=getattr(args, "json", False))
    return 0


if __name__ == "__main__":  # pragma: no cover - manual runs
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--json", action="store_true")
    raise SystemExit(main(parser.parse_args()))

"""`exchange bench cluster`: a local cluster of real node processes under load.

Starts a 3-node cluster (fsync on, every node its own process and data
directory) and drives it through the public HTTP API from a *separate* load
process. Then the same single-order figures against a 1-node cluster
(no replication), in the same run. Results (names are stable):

- ``batch_throughput``: orders/s acknowledged through ``POST /v1/orders/batch``
  (committed and applied before the answer).
- ``single_throughput``: orders/s with one order per ``POST /v1/orders``.
- ``ws_single_throughput``: orders/s with one order per WebSocket message
  (``{"op": "order"}`` on ``/v1/ws``): ``--ws-clients`` sockets (16) to the
  leader, each keeping ``--ws-in-flight`` orders (64) unanswered: 1,024 in all,
  as many as ``exchange bench etcd`` keeps puts outstanding. The fastest public
  path for single orders: no HTTP request per order, and the orders that arrive
  while a Ready's fsync runs are proposed together in the next one.
- ``latency_p50_ms_at_500`` / ``latency_p99_ms_at_500``: 500 orders/s offered
  on a fixed schedule, latency from each order's *intended* send time to its
  answer (corrected for coordinated omission: a stalled server cannot make
  the client send less).
- ``failover_unavailability_median_s``: kill -9 of the leader while writes
  flow to every node in turn, one every 5 ms whatever is unanswered (open loop,
  ``tools/bench/failover.py``); per trial the time from the kill to the first
  write sent after it and acknowledged; median of ``--failover-trials``
  (default 5).
- ``single_node_single_throughput``, ``single_node_latency_p50_ms_at_500``,
  ``single_node_latency_p99_ms_at_500``: the same on one node.
- ``request_errors``: requests of the load phases (not the failover writer)
  that failed; anything but 0 makes the other figures suspect.

The latency phases use ``LeanClient``, a minimal keep-alive HTTP/1.1 client,
so that what is measured is the cluster rather than the load process's HTTP
library, which shares the same cores (``--latency-client aiohttp`` measures
through aiohttp instead; it spends about 0.2-0.3 ms more CPU per request).
Every request of a latency phase is built before the clock starts.

Election and heartbeat intervals are the bench's ``--election-ms`` and
``--heartbeat-ms`` (defaults 300 and 30); they are printed as results too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from exchange_node.tools.bench.failover import open_loop_writes, unavailability_gaps
from exchange_node.tools.bench.format import BenchResult, report
from exchange_node.tools.local import LocalCluster

SYMBOL = "BTC-USD"
BASE_PRICE = 50_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load phase")
    parser.add_argument("--failover-trials", type=int, default=5)
    parser.add_argument("--election-ms", type=int, default=300)
    parser.add_argument("--heartbeat-ms", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=500, help="orders per batch request")
    parser.add_argument("--batch-clients", type=int, default=6, help="concurrent batch requests")
    parser.add_argument(
        "--single-clients", type=int, default=64, help="concurrent single-order requests"
    )
    parser.add_argument(
        "--ws-clients", type=int, default=16, help="WebSockets sending single orders"
    )
    parser.add_argument(
        "--ws-in-flight",
        type=int,
        default=64,
        help="orders each of those WebSockets keeps unanswered (the node allows 1,000); "
        "16 x 64 is the 1,024 puts etcd's bench keeps outstanding",
    )
    parser.add_argument("--rate", type=float, default=500.0, help="offered orders/s (latency)")
    parser.add_argument(
        "--latency-client",
        choices=("lean", "aiohttp"),
        default="lean",
        help="HTTP client of the latency phases: the bench's minimal one, or aiohttp's "
        "(about 0.2-0.3 ms more CPU per request)",
    )
    parser.add_argument("--data-root", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--skip-single-node", action="store_true")
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument(
        "--peer-tls",
        choices=("on", "off", "both"),
        default="on",
        help="mutual TLS between the nodes (default on); 'both' runs an mTLS and a plaintext "
        "cluster in the same run, each phase on one then the other (alternating which goes "
        "first; the other's processes are stopped meanwhile), and prints each figure for "
        "both with the median of the rounds' mTLS/plaintext ratios",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="with --peer-tls both: rounds per mode (default 4; each round runs every phase "
        "on both clusters back to back, the next round in the other order); with --compare "
        "etcd: 2 or more interleaves the exchange and etcd the same way (default 1: etcd "
        "once, after the exchange)",
    )
    parser.add_argument(
        "--compare",
        choices=("etcd",),
        default=None,
        help="then measure etcd 3.4 the same way in the same run (exchange bench etcd) and "
        "print its figures and the exchange/etcd ratios",
    )
    parser.add_argument("--etcd-binary", default=shutil.which("etcd") or "/usr/bin/etcd")
    parser.add_argument(
        "--etcd-in-flight", type=int, default=1024, help="etcd puts outstanding (throughput)"
    )


# ---------------------------------------------------------------- the load process


def _order(seq: int, prefix: str, buy: bool | None = None) -> dict[str, Any]:
    buy = seq % 2 == 0 if buy is None else buy
    return {
        "symbol": SYMBOL,
        "side": "BUY" if buy else "SELL",
        "price": BASE_PRICE + (seq % 7 if buy else -(seq % 7)),
        "quantity": 1 + seq % 3,
        "client_order_id": f"{prefix}{seq}",
    }


def _auth(spec: dict[str, Any], worker: int) -> dict[str, str]:
    tokens = spec["tokens"]
    return {"Authorization": f"Bearer {tokens[worker % len(tokens)]}"}


def _session(timeout_s: float = 30.0) -> Any:
    """The load process's HTTP client: no connection limit, one total timeout."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=timeout_s)
    )


def _sdk_client(
    session: Any, spec: dict[str, Any], worker: int, node: str | None = None, timeout: float = 30.0
) -> Any:
    """The SDK's client (client/exchange_client) on ``node`` (default the leader) with the
    worker's key: one attempt, no leader look-up, so what is measured is one request."""
    from exchange_client import AsyncClient

    tokens = spec["tokens"]
    return AsyncClient(
        [node or spec["leader_http"]],
        tokens[worker % len(tokens)],
        session=session,
        timeout=timeout,
        max_attempts=1,
        leader_aware=False,
    )


class HttpError(Exception):
    """A response the lean client cannot read, or a connection that broke."""


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        try:
            status = int(head[9:12])
            length_at = head.index(b"\r\ncontent-length:") + 17
            length = int(head[length_at : head.index(b"\r\n", length_at)].strip())
        except ValueError:
            waiter.set_exception(HttpError(f"cannot read the response head {head[:200]!r}"))
            return
        if len(buffer) < end + 4 + length:
            return
        body = bytes(buffer[end + 4 : end + 4 + length])
        del buffer[: end + 4 + length]
        waiter.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class LeanClient:
    """A minimal keep-alive HTTP/1.1 client for load generation (like wrk2's).

    A Python load process shares the cores with the nodes it measures; a
    general client library (aiohttp) spends about 0.2-0.3 ms more CPU on each
    request, which would be counted as the cluster's latency and take CPU
    from the nodes. This client writes pre-built request bytes and reads
    ``Content-Length`` bodies, nothing more (no redirects, no chunked
    bodies: the node never sends them). Connections are pooled; each carries
    one request at a time.
    """

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port, self.address = host, int(port), address
        self._idle: list[_Connection] = []
        self._all: list[_Connection] = []

    def build(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.address}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", "", ""]
        return "\r\n".join(lines).encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send pre-built ``request`` bytes; the status and body of the answer."""
        conn = None
        while self._idle and conn is None:
            conn = self._idle.pop()
            if conn.closed:  # the server ended it while it was idle
                conn = None
        if conn is None:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(_Connection, self.host, self.port)
            self._all.append(conn)
        try:
            answer = await conn.request(request)
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        if not conn.closed:
            self._idle.append(conn)
        return answer

    def close(self) -> None:
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()


async def _run_workers(worker: Any, clients: int) -> float:
    """Run ``worker(session, id)`` for ``clients`` ids on one session; the seconds it took."""
    started = time.monotonic()
    async with _session() as session:
        await asyncio.gather(*(worker(session, w) for w in range(clients)))
    return time.monotonic() - started


async def _batch_phase(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    size = spec["batch_size"]
    deadline = time.monotonic() + spec["duration"]
    acked = 0
    errors = 0
    seq = 0

    async def worker(session: aiohttp.ClientSession, wid: int) -> None:
        nonlocal acked, errors, seq
        client = _sdk_client(session, spec, wid)
        while time.monotonic() < deadline:
            first = seq
            seq += size
            # Even workers buy, odd ones sell (each worker is one client): orders trade.
            # The phase's prefix too: a later round must not resend ids the exchange
            # answers from its idempotency record (acknowledged again, nothing done).
            prefix = f"{spec['prefix']}{wid}-"
            body = {"orders": [_order(first + i, prefix, wid % 2 == 0) for i in range(size)]}
            status, doc = await client.request("POST", "/v1/orders/batch", body)
            if status == 200:
                # Engine results carry the order's status name; failures an int.
                acked += sum(1 for r in doc["results"] if isinstance(r["status"], str))
                continue
            errors += 1
            await asyncio.sleep(0.01)

    seconds = await _run_workers(worker, spec["clients"])
    return {"orders": acked, "seconds": seconds, "errors": errors}


async def _single_phase(spec: dict[str, Any]) -> dict[str, Any]:
    """One order per request through aiohttp's client itself, not the SDK's: the SDK
    (which also parses each answer) cost the load process about 10% more CPU per
    request, and that CPU is taken from the nodes on the same cores. Against the same
    nodes, 4 runs each, interleaved: 1,195 orders/s through the SDK against 1,345
    (medians), 0.89. 3d038d2's bench sent through aiohttp too (docs/performance.md)."""
    import aiohttp

    deadline = time.monotonic() + spec["duration"]
    url = f"http://{spec['leader_http']}/v1/orders"
    acked = 0
    errors = 0
    counter = 0

    async def worker(session: aiohttp.ClientSession, wid: int) -> None:
        nonlocal acked, errors, counter
        headers = _auth(spec, wid)
        while time.monotonic() < deadline:
            counter += 1
            try:
                async with session.post(
                    url, json=_order(counter, spec["prefix"]), headers=headers
                ) as response:
                    await response.read()
                    if response.status == 200:
                        acked += 1
                        continue
            except (aiohttp.ClientError, TimeoutError):
                pass
            errors += 1
            await asyncio.sleep(0.01)

    seconds = await _run_workers(worker, spec["clients"])
    return {"orders": acked, "seconds": seconds, "errors": errors}


async def _ws_single_phase(spec: dict[str, Any]) -> dict[str, Any]:
    """One order per WebSocket message (``{"op": "order"}``): ``clients`` sockets to the
    leader, each keeping ``in_flight`` orders sent and not yet answered."""
    import aiohttp

    deadline = time.monotonic() + spec["duration"]
    url = f"http://{spec['leader_http']}/v1/ws"
    acked = 0
    errors = 0
    seq = 0
    sample: str | None = None

    async def worker(session: aiohttp.ClientSession, wid: int) -> None:
        nonlocal acked, errors, seq, sample
        async with session.ws_connect(url, headers=_auth(spec, wid), max_msg_size=0) as ws:
            hello = await ws.receive_json()
            if hello.get("type") != "hello" or hello.get("client_id") is None:
                raise RuntimeError(f"unexpected first WebSocket message {hello!r}")
            waiting = 0

            async def send() -> None:
                nonlocal seq, waiting
                seq += 1
                order = _order(seq, spec["prefix"])
                order["op"], order["id"] = "order", seq
                waiting += 1
                await ws.send_str(json.dumps(order))

            for _ in range(spec["in_flight"]):
                await send()
            while waiting:
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    errors += waiting  # closed with orders unanswered
                    return
                doc = json.loads(message.data)
                if doc.get("type") not in ("ack", "error"):
                    continue
                waiting -= 1
                if doc["type"] == "ack" and doc.get("status") == 200:
                    acked += 1
                else:
                    errors += 1
                    if sample is None:
                        sample = json.dumps(doc)[:300]
                if time.monotonic() < deadline:
                    await send()

    seconds = await _run_workers(worker, spec["clients"])
    return {"orders": acked, "seconds": seconds, "errors": errors, "error_sample": sample}


async def _latency_phase(spec: dict[str, Any]) -> dict[str, Any]:
    """Open loop: order i is due at start + i/rate whatever happened before it."""
    import json

    import aiohttp

    rate = spec["rate"]
    count = int(rate * spec["duration"])
    latencies: list[float] = []
    errors = 0
    lean = LeanClient(spec["leader_http"])
    built: dict[int, bytes] = {}
    session = _session() if spec["client"] == "aiohttp" else None
    clients = [_sdk_client(session, spec, w) for w in range(len(spec["tokens"]))]

    def build(i: int) -> bytes:
        body = json.dumps(_order(i, spec["prefix"])).encode()
        return lean.build("POST", "/v1/orders", body, _auth(spec, i))

    async def send(i: int) -> int:
        if session is None:
            status, _body = await lean.send(built.pop(i, None) or build(i))
            return status
        status, _ = await clients[i % len(clients)].request(
            "POST", "/v1/orders", _order(i, spec["prefix"])
        )
        return int(status)

    async def one(i: int, due: float) -> None:
        nonlocal errors
        try:
            if await asyncio.wait_for(send(i), 30.0) != 200:
                errors += 1
        except (OSError, HttpError, aiohttp.ClientError, TimeoutError):
            errors += 1
        # A failed order counts with its full latency: it was not served sooner.
        latencies.append(time.monotonic() - due)

    loop = asyncio.get_running_loop()
    try:
        # Warm the connection pool so the first orders do not pay for TCP setup.
        now = time.monotonic()
        await asyncio.gather(*(one(-1 - i, now) for i in range(16)))
        latencies.clear()
        if session is None:
            built.update((i, build(i)) for i in range(count))  # before the clock starts
        start = time.monotonic() + 0.05
        tasks = []
        for i in range(count):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    finally:
        lean.close()
        if session is not None:
            await session.close()
    latencies.sort()
    return {
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "errors": errors,
        "orders": len(latencies),
    }


async def _failover_writer(spec: dict[str, Any], stop_file: str) -> dict[str, Any]:
    """Open-loop writes to every node in turn until ``stop_file`` exists (see
    ``tools/bench/failover.py``); returns the acknowledged writes' times."""
    nodes = spec["nodes_http"]
    prefix = spec["prefix"]
    stop = Path(stop_file).exists

    async with _session(2.0) as session:
        # One client per node and key: the writer aims at every node in turn itself.
        clients = [
            _sdk_client(session, spec, key, node, timeout=2.0)
            for key in range(len(spec["tokens"]))
            for node in nodes
        ]

        async def write(k: int) -> bool:
            status, _ = await clients[k % len(clients)].request(
                "POST", "/v1/orders", _order(k, prefix)
            )
            return bool(status == 200)

        successes = await open_loop_writes(write, stop)
    return {"successes": successes}


def _load_main(phase: str, spec: dict[str, Any], out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    runners = {
        "batch": _batch_phase,
        "single": _single_phase,
        "ws_single": _ws_single_phase,
        "latency": _latency_phase,
    }
    if phase == "failover":
        result = asyncio.run(_failover_writer(spec, spec["stop_file"]))
    else:
        result = asyncio.run(runners[phase](spec))
    out.put(result)


def _run_load(phase: str, spec: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    return _LoadProcess(phase, spec).result(timeout)


class _LoadProcess:
    """A load process running in the background (the failover writer)."""

    def __init__(self, phase: str, spec: dict[str, Any]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.queue = ctx.Queue()
        self.proc = ctx.Process(target=_load_main, args=(phase, spec, self.queue), daemon=True)
        self.proc.start()

    def result(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                result: dict[str, Any] = self.queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self.proc.is_alive():
                    raise RuntimeError(
                        f"the load process died (exit code {self.proc.exitcode})"
                    ) from None
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise TimeoutError("the load process did not finish in time") from None
        self.proc.join(10)
        return result


# ---------------------------------------------------------------- the bench


def _start(
    root: Path, nodes: int, args: argparse.Namespace, peer_tls: bool | None = None
) -> LocalCluster:
    cluster = LocalCluster.create(
        root,
        nodes,
        election_ms=args.election_ms,
        heartbeat_ms=args.heartbeat_ms,
        snapshot_threshold=100_000,
        peer_tls=args.peer_tls != "off" if peer_tls is None else peer_tls,
        extra_args=[
            "--log-level=warning",
            "--max-pending-proposals=200000",
            "--request-timeout-ms=10000",
        ],
    )
    cluster.start_all()
    try:
        cluster.wait_for_leader(60)
        cluster.wait_ready(timeout=60)
    except BaseException:
        cluster.stop_all(5)
        raise
    return cluster


def _spec(
    cluster: LocalCluster, args: argparse.Namespace, prefix: str, **extra: Any
) -> dict[str, Any]:
    leader = cluster.wait_for_leader(30)
    return {
        "leader_http": cluster.member(leader).http,
        "nodes_http": [m.http for m in cluster.spec.members],
        "tokens": [cluster.key_for(f"bench{i}") for i in range(8)],
        "duration": args.duration,
        "prefix": prefix,
        **extra,
    }


def _failover(cluster: LocalCluster, args: argparse.Namespace, root: Path) -> list[float]:
    stop_file = root / "failover.stop"
    load = _LoadProcess("failover", _spec(cluster, args, "f-", stop_file=str(stop_file)))
    kills: list[float] = []
    try:
        time.sleep(1.0)
        for _trial in range(args.failover_trials):
            leader = cluster.wait_for_leader(30)
            others = [m.node_id for m in cluster.spec.members if m.node_id != leader]
            kills.append(time.monotonic())
            cluster.kill(leader)
            cluster.wait_for_leader(30, among=others)
            time.sleep(1.0)
            cluster.start(leader)
            cluster.wait_caught_up(leader, timeout=60)
            cluster.wait_ready(timeout=60)
            time.sleep(0.5)
    finally:
        stop_file.write_text("stop")
    return unavailability_gaps(load.result()["successes"], kills)


def _cpu_seconds(cluster: LocalCluster) -> float:
    """user+sys CPU seconds of the cluster's node processes so far (Linux /proc)."""
    total = 0
    for proc in cluster.procs.values():
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


PHASES = ("batch", "single", "ws_single", "latency")
"""The 3-node load phases, in the order they run."""


def _measure_phase(
    cluster: LocalCluster, args: argparse.Namespace, phase: str, run: str = ""
) -> tuple[dict[str, float], int]:
    """One load phase on a running 3-node cluster: its figures and its failed requests.

    CPU per order (user+sys of the node processes, from /proc) is steadier than a rate on
    a shared host. ``run`` goes into every client order id, so a later round on the same
    cluster does not reuse an earlier round's ids (the exchange would refuse them as
    reused)."""
    if phase == "batch":
        spec = _spec(
            cluster, args, f"b{run}-", batch_size=args.batch_size, clients=args.batch_clients
        )
    elif phase == "single":
        spec = _spec(cluster, args, f"s{run}-", clients=args.single_clients)
    elif phase == "ws_single":
        spec = _spec(
            cluster, args, f"w{run}-", clients=args.ws_clients, in_flight=args.ws_in_flight
        )
    else:
        spec = _spec(cluster, args, f"l{run}-", rate=args.rate, client=args.latency_client)
    cpu_before = _cpu_seconds(cluster)
    result = _run_load(phase, spec)
    cpu = (_cpu_seconds(cluster) - cpu_before) / max(1, result["orders"]) * 1000
    if phase == "latency":
        figures = {
            "latency_p50_ms_at_500": round(result["p50_ms"], 3),
            "latency_p99_ms_at_500": round(result["p99_ms"], 3),
        }
        suffix = "at_500"
    else:
        figures = {f"{phase}_throughput": round(result["orders"] / result["seconds"], 1)}
        suffix = phase
    figures[f"cpu_ms_per_order_{suffix}"] = round(cpu, 3)
    if result["errors"] and result.get("error_sample"):
        print(
            f"bench cluster: {result['errors']} failed requests in the {phase} phase, "
            f"the first: {result['error_sample']}",
            file=sys.stderr,
        )
    return figures, result["errors"]


def _three_node_phases(
    cluster: LocalCluster, args: argparse.Namespace, run: str = ""
) -> tuple[dict[str, float], int]:
    """Batch, single and latency figures of one running 3-node cluster, and its errors."""
    figures: dict[str, float] = {}
    errors = 0
    for phase in PHASES:
        phase_figures, failed = _measure_phase(cluster, args, phase, run)
        figures.update(phase_figures)
        errors += failed
    return figures, errors


_UNITS = {
    "batch_throughput": "orders/s",
    "single_throughput": "orders/s",
    "ws_single_throughput": "orders/s",
    "latency_p50_ms_at_500": "ms",
    "latency_p99_ms_at_500": "ms",
    "cpu_ms_per_order_batch": "ms",
    "cpu_ms_per_order_single": "ms",
    "cpu_ms_per_order_ws_single": "ms",
    "cpu_ms_per_order_at_500": "ms",
}


def side_by_side_order(round_index: int) -> tuple[str, str]:
    """Which mode runs each phase first in a round: mTLS, plaintext, then swapped (ABBA)."""
    return ("mtls", "plain") if round_index % 2 == 0 else ("plain", "mtls")


def ratio_summary(
    samples: dict[str, list[dict[str, float]]], name: str
) -> tuple[float, float, float, float, float]:
    """Medians of ``name`` per mode, and the median, lowest and highest of the rounds'
    mTLS/plaintext ratios (each round's pair ran back to back, so a ratio within a round
    sees one machine; the median of those ignores the rounds a neighbour spoiled)."""
    mtls = [s[name] for s in samples["mtls"]]
    plain = [s[name] for s in samples["plain"]]
    ratios = [a / b for a, b in zip(mtls, plain, strict=True) if b and a == a and b == b]
    if not ratios:
        nan = float("nan")
        return statistics.median(mtls), statistics.median(plain), nan, nan, nan
    return (
        statistics.median(mtls),
        statistics.median(plain),
        statistics.median(ratios),
        min(ratios),
        max(ratios),
    )


def _freeze(cluster: LocalCluster, frozen: bool) -> None:
    """SIGSTOP (or SIGCONT) every node process of ``cluster``."""
    for node_id in list(cluster.procs):
        if cluster.alive(node_id):
            (cluster.pause if frozen else cluster.resume)(node_id)


def _children(cluster: LocalCluster) -> int:
    """Forked children (state hashes, snapshots) of ``cluster``'s node processes now."""
    count = 0
    for proc in cluster.procs.values():
        # A process gone, or a kernel without the file: nothing to wait for.
        with contextlib.suppress(OSError):
            count += len(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split())
    return count


def _wait_children(cluster: LocalCluster, deadline: float) -> None:
    while _children(cluster):
        if time.monotonic() > deadline:
            raise TimeoutError("the nodes' hashing or snapshot children did not finish")
        time.sleep(0.1)


def _quiesce(cluster: LocalCluster, deadline: float) -> None:
    """Wait until no node has a forked child and a round of status calls starts none. A
    node idle for 2 s hashes its state in a child when asked for its status (the bench's
    leader checks ask), and a continued node has been idle for as long as it was stopped:
    that hash (about a second of CPU per node on a full exactly-once table) would
    otherwise run during the next phase."""
    while True:
        for node_id in list(cluster.procs):
            if cluster.alive(node_id):
                cluster.status(node_id)
        time.sleep(0.2)
        if not _children(cluster):
            return
        _wait_children(cluster, deadline)


def _settle(cluster: LocalCluster, args: argparse.Namespace, timeout: float = 60.0) -> None:
    """After a thaw: wait until one leader has held for two election timeouts, every node
    is ready (a thawed cluster may hold an election first: its timers are overdue), and no
    node hashes its state (``_quiesce``)."""
    deadline = time.monotonic() + timeout
    leader = cluster.wait_for_leader(timeout)
    while True:
        time.sleep(2 * args.election_ms / 1000)
        now = cluster.wait_for_leader(max(1.0, deadline - time.monotonic()))
        if now == leader:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the thawed cluster's leadership did not settle")
        leader = now
    cluster.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
    _quiesce(cluster, deadline)


def _side_by_side(args: argparse.Namespace, root: Path) -> int:
    """``--peer-tls both``: the same phases on an mTLS and a plaintext cluster, interleaved.

    Both clusters are started once, and only the one being measured runs: the other's
    processes are stopped (SIGSTOP) meanwhile, once their forked children are done, so its
    heartbeats, timers and state hashes take no CPU from the phase (with both running,
    the latency phase's p50 was 2-5 times a lone cluster's on two cores). A continued
    cluster settles (one leader for two election timeouts, every node ready, no node
    hashing its state) before its phase. Each round runs every phase on
    one cluster and then on the other, and the next round swaps who goes first (ABBA), so
    neither mode always meets a warmer machine. The ratio printed for a figure is the
    median over rounds of that round's mTLS/plaintext ratio (with the lowest and highest
    beside it); the per-mode figures are medians over rounds.
    """
    rounds = max(1, args.rounds or 4)
    clusters = {"mtls": _start(root / "mtls", 3, args, True)}
    running = "mtls"
    try:
        _freeze(clusters["mtls"], True)
        clusters["plain"] = _start(root / "plain", 3, args, False)
        running = "plain"
        samples: dict[str, list[dict[str, float]]] = {
            "mtls": [{} for _ in range(rounds)],
            "plain": [{} for _ in range(rounds)],
        }
        errors = 0
        for r in range(rounds):
            for phase in PHASES:
                for mode in side_by_side_order(r):
                    if mode != running:
                        # A snapshot child of the stopped cluster would still run.
                        _wait_children(clusters[running], time.monotonic() + 60)
                        _freeze(clusters[running], True)
                        _freeze(clusters[mode], False)
                        running = mode
                        _settle(clusters[mode], args)
                    figures, failed = _measure_phase(clusters[mode], args, phase, str(r))
                    samples[mode][r].update(figures)
                    errors += failed
    finally:
        for cluster in clusters.values():
            _freeze(cluster, False)  # a stopped process would not see SIGTERM
            cluster.stop_all(10)
    results: list[BenchResult] = []
    for name, unit in _UNITS.items():
        mtls, plain, ratio, lowest, highest = ratio_summary(samples, name)
        results.append(BenchResult(f"{name}_mtls", round(mtls, 3), unit))
        results.append(BenchResult(f"{name}_plain", round(plain, 3), unit))
        results.append(BenchResult(f"{name}_mtls_vs_plain", round(ratio, 3), "ratio"))
        results.append(BenchResult(f"{name}_mtls_vs_plain_lowest", round(lowest, 3), "ratio"))
        results.append(BenchResult(f"{name}_mtls_vs_plain_highest", round(highest, 3), "ratio"))
    results.append(BenchResult("rounds", rounds, "per mode"))
    results.append(BenchResult("request_errors", errors, "requests"))
    report("cluster", results, as_json=args.json)
    return 0


# exchange figure -> etcd's (a ratio below 1 is better for latency and failover,
# above 1 for throughput)
_VERSUS_ETCD = {
    "latency_p50_ms_at_500": "etcd_latency_p50_ms_at_500",
    "latency_p99_ms_at_500": "etcd_latency_p99_ms_at_500",
    "single_throughput": "etcd_put_throughput",
    "ws_single_throughput": "etcd_put_throughput",
    "batch_throughput": "etcd_put_throughput",
    "failover_unavailability_median_s": "etcd_failover_unavailability_median_s",
}


def _compare_etcd(
    args: argparse.Namespace, root: Path, ours: dict[str, float]
) -> list[BenchResult]:
    """etcd measured the same way, right after the exchange, and the ratios."""
    from exchange_node.tools.bench import etcd

    theirs = etcd.measure(args, root)
    results = [BenchResult(name, value, etcd.UNITS[name]) for name, value in theirs.items()]
    for name, other in _VERSUS_ETCD.items():
        if name in ours and theirs.get(other):
            ratio = ours[name] / theirs[other]
            results.append(BenchResult(f"{name}_vs_etcd", round(ratio, 3), "ratio"))
    return results


def versus_etcd_rounds(
    ours: list[dict[str, float]], theirs: list[dict[str, float]], failover: dict[str, float]
) -> list[BenchResult]:
    """Each ``*_vs_etcd`` ratio of interleaved rounds: the median over rounds of the
    round's exchange/etcd ratio, with the lowest and highest round (``failover`` holds
    both systems' failover figures, measured once: their plain ratio)."""
    results = []
    for name, other in _VERSUS_ETCD.items():
        if name in failover:
            if failover.get(other):
                ratio = failover[name] / failover[other]
                results.append(BenchResult(f"{name}_vs_etcd", round(ratio, 3), "ratio"))
            continue
        ratios = [
            a[name] / b[other]
            for a, b in zip(ours, theirs, strict=True)
            if name in a and b.get(other)
        ]
        if ratios:
            for suffix, value in (
                ("", statistics.median(ratios)),
                ("_lowest", min(ratios)),
                ("_highest", max(ratios)),
            ):
                results.append(BenchResult(f"{name}_vs_etcd{suffix}", round(value, 3), "ratio"))
    return results


def _versus_etcd(args: argparse.Namespace, root: Path) -> int:
    """``--compare etcd --rounds N`` (N >= 2): the exchange and etcd, interleaved.

    As ``--peer-tls both`` does for its two clusters: both start once, only the one being
    measured runs (the other is stopped, SIGSTOP), a thawed one settles first, and each
    round measures one then the other, the next round in the other order (ABBA). A
    figure's ratio is the median over rounds of that round's exchange/etcd ratio, printed
    with the lowest and highest round: a round the machine's neighbours spoiled spoils
    both of its measurements, and its ratio stays usable where one run's does not (one
    run's p50 ratio was 1.98 and another's 5.8, hours apart, on this host). Failover runs
    once per system after the rounds, as without rounds; the single-node figures are
    left out (they have no etcd counterpart)."""
    from exchange_node.tools.bench import etcd

    rounds = args.rounds
    ours = _start(root / "three", 3, args)
    theirs: etcd.EtcdCluster | None = None
    running = "exchange"
    samples: dict[str, list[dict[str, float]]] = {
        "exchange": [{} for _ in range(rounds)],
        "etcd": [{} for _ in range(rounds)],
    }
    errors = 0
    failover: dict[str, float] = {}

    def run_only(side: str) -> None:
        nonlocal running
        if side == running:
            return
        assert theirs is not None
        if running == "exchange":
            _wait_children(ours, time.monotonic() + 60)  # a snapshot child would still run
            _freeze(ours, True)
            theirs.freeze(False)
            theirs.settle()
        else:
            theirs.freeze(True)
            _freeze(ours, False)
            _settle(ours, args)
        running = side

    try:
        _wait_children(ours, time.monotonic() + 60)
        _freeze(ours, True)
        running = "etcd"
        theirs = etcd.EtcdCluster(
            root / "etcd",
            args.etcd_binary,
            election_ms=args.election_ms,
            heartbeat_ms=args.heartbeat_ms,
        )
        theirs.start_all()
        theirs.leader()
        for r in range(rounds):
            for side in ("exchange", "etcd") if r % 2 == 0 else ("etcd", "exchange"):
                run_only(side)
                if side == "exchange":
                    for phase in PHASES:
                        figures, failed = _measure_phase(ours, args, phase, str(r))
                        samples["exchange"][r].update(figures)
                        errors += failed
                else:
                    figures = etcd.measure_load(theirs, args)
                    errors += int(figures.pop("etcd_request_errors"))
                    samples["etcd"][r].update(figures)
        if not args.skip_failover:
            run_only("exchange")
            gaps = _failover(ours, args, root)
            failover["failover_unavailability_median_s"] = round(statistics.median(gaps), 3)
            failover["failover_unavailability_max_s"] = round(max(gaps), 3)
            run_only("etcd")
            failover.update(etcd.measure_failover(theirs, args, root))
    finally:
        _freeze(ours, False)  # a stopped process would not see SIGTERM
        ours.stop_all(10)
        if theirs is not None:
            theirs.freeze(False)
            theirs.stop_all()
    results = [
        BenchResult(name, round(statistics.median(s[name] for s in samples["exchange"]), 3), unit)
        for name, unit in _UNITS.items()
    ]
    results += [
        BenchResult(name, round(statistics.median(s[name] for s in samples["etcd"]), 3), unit)
        for name, unit in etcd.UNITS.items()
        if name in samples["etcd"][0]
    ]
    results += [BenchResult(name, value, "s") for name, value in failover.items()]
    results += versus_etcd_rounds(samples["exchange"], samples["etcd"], failover)
    results.append(BenchResult("rounds", rounds, "per system"))
    results.append(BenchResult("request_errors", errors, "requests"))
    results.append(BenchResult("election_ms", args.election_ms, "ms"))
    results.append(BenchResult("heartbeat_ms", args.heartbeat_ms, "ms"))
    results.append(BenchResult("peer_tls", 1 if args.peer_tls == "on" else 0, "1=mTLS"))
    report("cluster", results, as_json=args.json)
    return 0


def main(args: argparse.Namespace) -> int:
    if args.rounds is not None and args.rounds < 1:
        print("exchange bench cluster: --rounds must be >= 1", file=sys.stderr)
        return 2
    if args.peer_tls == "both":
        with tempfile.TemporaryDirectory(prefix="exchange-bench-") as tmp:
            return _side_by_side(args, Path(args.data_root or tmp))
    if args.compare == "etcd" and (args.rounds or 1) > 1:
        with tempfile.TemporaryDirectory(prefix="exchange-bench-") as tmp:
            return _versus_etcd(args, Path(args.data_root or tmp))
    with tempfile.TemporaryDirectory(prefix="exchange-bench-") as tmp:
        root = Path(args.data_root or tmp)
        results: list[BenchResult] = []
        errors = 0
        cluster = _start(root / "three", 3, args)
        try:
            figures, errors = _three_node_phases(cluster, args)
            results += [BenchResult(name, value, _UNITS[name]) for name, value in figures.items()]
            if not args.skip_failover:
                gaps = _failover(cluster, args, root)
                results.append(
                    BenchResult(
                        "failover_unavailability_median_s", round(statistics.median(gaps), 3), "s"
                    )
                )
                results.append(
                    BenchResult("failover_unavailability_max_s", round(max(gaps), 3), "s")
                )
        finally:
            cluster.stop_all(10)
        if not args.skip_single_node:
            one = _start(root / "one", 1, args)
            try:
                single = _run_load("single", _spec(one, args, "s-", clients=args.single_clients))
                results.append(
                    BenchResult(
                        "single_node_single_throughput",
                        round(single["orders"] / single["seconds"], 1),
                        "orders/s",
                    )
                )
                lat = _run_load(
                    "latency", _spec(one, args, "l-", rate=args.rate, client=args.latency_client)
                )
                errors += single["errors"] + lat["errors"]
                results.append(
                    BenchResult("single_node_latency_p50_ms_at_500", round(lat["p50_ms"], 3), "ms")
                )
                results.append(
                    BenchResult("single_node_latency_p99_ms_at_500", round(lat["p99_ms"], 3), "ms")
                )
            finally:
                one.stop_all(10)
        # Requests that failed outside the failover phase (none expected): a failed
        # latency probe counts with its full wait, a failed throughput one not at all.
        results.append(BenchResult("request_errors", errors, "requests"))
        results.append(BenchResult("election_ms", args.election_ms, "ms"))
        results.append(BenchResult("heartbeat_ms", args.heartbeat_ms, "ms"))
        results.append(BenchResult("peer_tls", 1 if args.peer_tls == "on" else 0, "1=mTLS"))
        if args.compare == "etcd":
            results += _compare_etcd(args, root, {r.name: r.value for r in results})
    report("cluster", results, as_json=args.json)
    return 0

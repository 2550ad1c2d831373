"""`exchange bench fairness`: one client at its limit; how much does another wait?

A local cluster of real node processes (default 3, fsync on). A victim client
sends single IOC orders one after another and times each answer, alone
(``victim_p50_ms_unloaded``, ``victim_p99_ms_unloaded``) and while a hog
client, in its own process, keeps ``--hog-batches`` batch requests of
``--hog-batch-size`` orders in flight, retrying 10 ms after each 429
(``victim_p50_ms_hogged``, ``victim_p99_ms_hogged``); the two alternate
``--rounds`` times so that the machine's neighbours weigh on both alike, and
the hogged phases start once the hog's rate limit has refused it (its burst
spent). ``victim_p99_ratio`` is hogged over unloaded p99; ``victim_errors``
counts the victim's answers other than 200 (a 503 would mean the hog filled
the shared queue); ``hog_orders_per_s`` and ``hog_429_per_s``, over the
hogged phases only, show that the hog was at its limit (its key's orders/s,
``--api-rate-limit``). IOC orders far from the touch never rest, so the book
does not grow during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

from exchange_node.tools.bench.format import BenchResult, report
from exchange_node.tools.local import LocalCluster

SYMBOL = "BTC-USD"
HOG_PRICE = 59_000  # a SELL far above any bid: IOC, never fills, never rests
VICTIM_PRICE = 41_000  # a BUY far below any ask


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=3, help="cluster size (1 or 3)")
    parser.add_argument(
        "--orders", type=int, default=1_500, help="victim orders per phase (all rounds)"
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


async def victim_latencies(url: str, token: str, orders: int, prefix: str) -> dict[str, Any]:
    """Send ``orders`` single IOC orders one at a time; latencies (ms) and failures."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors: dict[int, int] = {}
    async with aiohttp.ClientSession() as session:
        for i in range(orders + 5):
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
            if i < 5:
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
    counts: dict[str, Any] = {"orders": 0, "429": 0, "other": 0}
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
                counts["other"] += 1
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
    orders: int,
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
    per_round = max(1, orders // rounds)
    alone: list[dict[str, Any]] = []
    hogged: list[dict[str, Any]] = []
    hog_orders = hog_refused = hog_seconds = 0.0
    hog_limited = True
    for r in range(rounds):
        alone.append(asyncio.run(victim_latencies(url, victim, per_round, f"v-alone{r}")))
        hog = Hog(url, hog_token, hog_batches, hog_batch_size, root, honour_retry_after)
        try:
            # At its limit: refused once (its burst spent), or a second of load.
            if not hog.wait_limited(10):
                hog_limited = False
            window = time.time()
            hogged.append(asyncio.run(victim_latencies(url, victim, per_round, f"v-hog{r}")))
            window_end = time.time()
        finally:
            counts = hog.stop()
        # The hog's figures over the victim's measurement only (not its burst before).
        hog_seconds += window_end - window
        hog_orders += sum(n for at, n in counts["accepted"] if window <= at <= window_end)
        hog_refused += sum(1 for at in counts["refused"] if window <= at <= window_end)
    return {
        "alone": _pooled(alone),
        "hogged": _pooled(hogged),
        "hog": {
            "orders_per_s": hog_orders / hog_seconds,
            "429_per_s": hog_refused / hog_seconds,
            "limited": hog_limited,
        },
    }


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="exchange-fairness-") as tmp:
        root = Path(args.data_root or tmp)
        cluster = start_cluster(root / "cluster", args.nodes)
        try:
            figures = measure(
                cluster,
                root,
                orders=args.orders,
                hog_batches=args.hog_batches,
                hog_batch_size=args.hog_batch_size,
                rounds=args.rounds,
                honour_retry_after=args.hog_honours_retry_after,
            )
        finally:
            cluster.stop_all(15)
    alone, hogged, hog = figures["alone"], figures["hogged"], figures["hog"]
    results = [
        BenchResult("victim_p50_ms_unloaded", round(alone["p50"], 2), "ms"),
        BenchResult("victim_p99_ms_unloaded", round(alone["p99"], 2), "ms"),
        BenchResult("victim_p50_ms_hogged", round(hogged["p50"], 2), "ms"),
        BenchResult("victim_p99_ms_hogged", round(hogged["p99"], 2), "ms"),
        BenchResult("victim_p99_ratio", round(hogged["p99"] / alone["p99"], 2), "x"),
        BenchResult("victim_errors", sum(hogged["errors"].values()), "requests"),
        BenchResult("hog_orders_per_s", round(hog["orders_per_s"], 1), "orders/s"),
        BenchResult("hog_429_per_s", round(hog["429_per_s"], 1), "requests/s"),
    ]
    report("fairness", results, as_json=args.json)
    return 0

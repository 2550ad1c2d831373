"""The recorded workload of a chaos run: several clients over the public API only.

Each client (its own API key) runs a few sequential *processes*; each process
sends one operation at a time to a seeded choice of node (followers forward):
limit, market, IOC and FOK orders, cancels, replaces and mass cancels, reads by
order id and by client order id, linearizable and stale. Every attempt is one
``invoke`` and one ``complete`` record (docs/chaos-history.md); an
indeterminate submit or replace is retried with the same client order id.
Each client also keeps an ``orders`` WebSocket on every node, so the fills
applied anywhere are collected for the final observations.

After the faults are healed, :meth:`Workload.observe` waits (bounded) for the
replicas to agree and records one observation per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .history import HistoryWriter, Observation
from .spans import trace_id_for, traceparent
from .target import ClusterCredentials, NodeEndpoint

# Indeterminate submits and replaces are retried this often (same client order id).
RETRIES = 6
OP_WEIGHTS = {
    "submit": 45,
    "cancel": 12,
    "replace": 8,
    "mass_cancel": 2,
    "read_order": 25,
    "read_position": 8,
}


def node_name(node_id: int) -> str:
    return f"n{node_id}"


@dataclass
class Second:
    """What completed in one second of the run (progress and the report's charts)."""

    ok: int = 0
    fail: int = 0
    info: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class WorkloadStats:
    started: float = field(default_factory=time.monotonic)
    seconds: dict[int, Second] = field(default_factory=lambda: defaultdict(Second))
    totals: dict[str, int] = field(default_factory=lambda: {"ok": 0, "fail": 0, "info": 0})

    def add(self, outcome: str, latency_s: float) -> None:
        bucket = self.seconds[int(time.monotonic() - self.started)]
        setattr(bucket, outcome, getattr(bucket, outcome) + 1)
        if outcome == "ok":
            bucket.latencies_ms.append(latency_s * 1000)
        self.totals[outcome] += 1

    def last(self, span: int = 2) -> tuple[float, int]:
        """(operations per second, errors) over the last ``span`` whole seconds."""
        now = int(time.monotonic() - self.started)
        ops = errors = 0
        for s in range(now - span, now):
            b = self.seconds.get(s)
            if b is not None:
                ops += b.ok + b.fail + b.info
                errors += b.info
        return ops / span, errors


@dataclass
class _Order:
    client_order_id: str
    symbol: str
    order_id: int | None = None
    live: bool = True


class _FillCollector:
    """One client's ``orders`` channel on every node. Fills are complete unless, at some
    moment, no socket of this client was subscribed (or one reported a gap)."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.fills: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
        self.up: set[int] = set()
        self.complete = True
        self.armed = False
        """Coverage counts from the moment every socket first subscribed."""

    def down(self, node_id: int) -> None:
        self.up.discard(node_id)
        if self.armed and not self.up:
            self.complete = False


class Workload:
    def __init__(
        self,
        endpoints: Mapping[int, NodeEndpoint],
        credentials: ClusterCredentials,
        writer: HistoryWriter,
        *,
        seed: int,
        rate: float = 40.0,
        clients: int = 4,
        processes_per_client: int = 2,
        request_timeout: float = 3.0,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        names = sorted(c for c in credentials.api_keys if not c.startswith("bench"))
        names += sorted(c for c in credentials.api_keys if c.startswith("bench"))
        if len(names) < 2:
            raise ValueError("the workload needs at least 2 API keys (clients)")
        self.clients = names[: max(2, clients)]
        self.tokens = {c: credentials.api_keys[c] for c in self.clients}
        self.endpoints = dict(endpoints)
        self.admin_token = credentials.admin_token
        self.ca_file = credentials.ca_file
        self.state_hash_readable = True
        """False when some node's state hash could not be read (no admin API)."""
        self.writer = writer
        self.seed = seed
        self.rate = rate
        self.processes_per_client = processes_per_client
        self.timeout = aiohttp.ClientTimeout(total=request_timeout)
        self.stats = WorkloadStats()
        self.orders: dict[str, list[_Order]] = {c: [] for c in self.clients}
        self.fills = {c: _FillCollector(c) for c in self.clients}
        self.symbols: list[dict[str, Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self._seq = 0

    # ---- HTTP ------------------------------------------------------------------------

    async def _http(
        self,
        node_id: int,
        token: str,
        method: str,
        path: str,
        body: Any = None,
        timeout: aiohttp.ClientTimeout | None = None,
        trace_id: str | None = None,
    ) -> tuple[int, Any]:
        """(status, JSON body); raises on a timeout or a connection error."""
        assert self._session is not None
        url = self.endpoints[node_id].http.rstrip("/") + path
        headers = {"Authorization": f"Bearer {token}"}
        if trace_id is not None:
            headers["traceparent"] = traceparent(trace_id)
        async with self._session.request(
            method,
            url,
            json=body,
            headers=headers,
            timeout=timeout or self.timeout,
        ) as resp:
            try:
                payload = await resp.json(content_type=None)
            except ValueError:
                payload = None
            return resp.status, payload

    async def _recorded(
        self, process: str, client: str, node_id: int, op: str, args: dict[str, Any], route: Any
    ) -> tuple[str, Any]:
        """One attempt, recorded: ``route`` is (method, path, body)."""
        method, path, body = route
        op_id = self.writer.invoke(process, client, node_name(node_id), op, args)
        started = time.monotonic()
        try:
            status, payload = await self._http(
                node_id,
                self.tokens[client],
                method,
                path,
                body,
                trace_id=trace_id_for(self.seed, op_id),
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.writer.complete(
                op_id, process, "info", error=type(exc).__name__ + f": {exc}"[:200]
            )
            self.stats.add("info", time.monotonic() - started)
            return "info", None
        answer = payload if isinstance(payload, dict) else None
        if status == 200:
            outcome = "ok"
            self.writer.complete(op_id, process, "ok", status=status, answer=answer)
        elif 400 <= status < 500:
            outcome = "fail"
            self.writer.complete(op_id, process, "fail", status=status, answer=answer)
        else:
            outcome = "info"
            self.writer.complete(
                op_id, process, "info", status=status, answer=answer, error=f"HTTP {status}"
            )
        self.stats.add(outcome, time.monotonic() - started)
        return outcome, answer

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "start() first"
        return self._session

    # ---- the run ---------------------------------------------------------------------

    async def start(self) -> None:
        ssl_context = None
        if self.ca_file is not None:
            ssl_context = ssl.create_default_context(cafile=self.ca_file)
        connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True)
        self._session = aiohttp.ClientSession(connector=connector)
        first = sorted(self.endpoints)
        for _ in range(100):
            for node_id in first:
                with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
                    status, body = await self._http(
                        node_id, self.tokens[self.clients[0]], "GET", "/v1/symbols"
                    )
                    if status == 200 and isinstance(body, dict) and body.get("symbols"):
                        self.symbols = list(body["symbols"])
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError("no node listed the symbols (GET /v1/symbols)")

    async def run(self, stop: asyncio.Event) -> None:
        """The clients' processes and fill sockets until ``stop`` is set."""
        self._sockets = [
            asyncio.create_task(self._fill_socket(client, node_id))
            for client in self.clients
            for node_id in sorted(self.endpoints)
        ]
        # Coverage counts once every socket has subscribed (bounded wait).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            len(f.up) < len(self.endpoints) for f in self.fills.values()
        ):
            await asyncio.sleep(0.05)
        for f in self.fills.values():
            f.armed = True
            if not f.up:
                f.complete = False
        processes = [
            asyncio.create_task(self._process(client, p, stop))
            for client in self.clients
            for p in range(self.processes_per_client)
        ]
        await asyncio.gather(*processes)

    async def _process(self, client: str, index: int, stop: asyncio.Event) -> None:
        name = f"{client}-{index}"
        rng = random.Random(f"{self.seed}:{name}")
        period = len(self.clients) * self.processes_per_client / self.rate
        ops, weights = zip(*OP_WEIGHTS.items(), strict=True)
        next_at = time.monotonic() + rng.random() * period
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
            next_at = max(next_at + period, time.monotonic())
            op = rng.choices(ops, weights)[0]
            await getattr(self, f"_op_{op}")(name, client, rng)

    def _node(self, rng: random.Random) -> int:
        return rng.choice(sorted(self.endpoints))

    def _new_coid(self, client: str) -> str:
        self._seq += 1
        return f"{client[:4]}-{self.seed}-{self._seq}"

    @staticmethod
    def _price_quantity(symbol: dict[str, Any], rng: random.Random) -> tuple[int, int]:
        """A price a few ticks around the symbol's reference (inside its band), a few lots."""
        tick, lot = int(symbol.get("tick_size") or 1), int(symbol.get("lot_size") or 1)
        mid = int(symbol.get("reference_price") or 50_000) // tick * tick
        step = max(tick, mid // 2000 // tick * tick)
        return max(tick, mid + step * rng.randint(-4, 4)), lot * rng.randint(1, 5)

    def _pick_order(self, client: str, rng: random.Random) -> _Order | None:
        live = [o for o in self.orders[client][-40:] if o.live]
        return rng.choice(live) if live else None

    def _target(self, order: _Order, rng: random.Random) -> tuple[dict[str, Any], str]:
        """(args naming the order, the path naming it)."""
        if order.order_id is not None and rng.random() < 0.6:
            return {"order_id": order.order_id}, f"/v1/orders/{order.order_id}"
        return (
            {"client_order_id": order.client_order_id},
            f"/v1/orders/by-client-id/{order.client_order_id}",
        )

    async def _op_submit(self, process: str, client: str, rng: random.Random) -> None:
        symbol = rng.choice(self.symbols[:2])
        kind = rng.choices(["GTC", "IOC", "FOK", "MARKET"], [50, 20, 15, 15])[0]
        side = rng.choice(["BUY", "SELL"])
        price, quantity = self._price_quantity(symbol, rng)
        args: dict[str, Any] = {
            "symbol": symbol["symbol"],
            "side": side,
            "quantity": quantity,
            "price": 0 if kind == "MARKET" else price,
            "order_type": "MARKET" if kind == "MARKET" else "LIMIT",
            "time_in_force": "IOC" if kind == "MARKET" else kind,
            "client_order_id": self._new_coid(client),
        }
        body = {k: v for k, v in args.items() if not (k == "price" and kind == "MARKET")}
        order = _Order(args["client_order_id"], symbol["symbol"])
        self.orders[client].append(order)
        for _ in range(RETRIES):
            outcome, answer = await self._recorded(
                process, client, self._node(rng), "submit", args, ("POST", "/v1/orders", body)
            )
            if outcome != "info":
                break
            await asyncio.sleep(0.2)
        else:
            return
        if outcome == "ok" and answer is not None:
            order.order_id = answer.get("order_id")
            order.live = answer.get("status") in ("NEW", "PARTIALLY_FILLED")
        elif outcome == "fail":
            order.live = False

    async def _op_cancel(self, process: str, client: str, rng: random.Random) -> None:
        order = self._pick_order(client, rng)
        if order is None:
            return
        args, path = self._target(order, rng)
        outcome, _ = await self._recorded(
            process, client, self._node(rng), "cancel", args, ("DELETE", path, None)
        )
        if outcome != "info":
            order.live = False

    async def _op_replace(self, process: str, client: str, rng: random.Random) -> None:
        order = self._pick_order(client, rng)
        if order is None:
            return
        symbol = next(s for s in self.symbols if s["symbol"] == order.symbol)
        named, path = self._target(order, rng)
        new_coid = self._new_coid(client)
        price, quantity = self._price_quantity(symbol, rng)
        body = {"price": price, "quantity": quantity, "new_client_order_id": new_coid}
        args = {**named, **body}
        for _ in range(RETRIES):
            outcome, answer = await self._recorded(
                process, client, self._node(rng), "replace", args, ("POST", path + "/replace", body)
            )
            if outcome != "info":
                break
            await asyncio.sleep(0.2)
        if outcome == "ok":
            order.client_order_id = new_coid
            if answer is not None:
                order.order_id = answer.get("order_id", order.order_id)
                order.live = answer.get("status") in ("NEW", "PARTIALLY_FILLED")
        elif outcome == "fail":
            order.live = False
        else:
            # The order may now go by either id: remember both for the observation.
            self.orders[client].append(_Order(new_coid, order.symbol, None, False))

    async def _op_mass_cancel(self, process: str, client: str, rng: random.Random) -> None:
        symbol = rng.choice([None, self.symbols[0]["symbol"]])
        body = {"symbol": symbol} if symbol else {}
        outcome, _ = await self._recorded(
            process,
            client,
            self._node(rng),
            "mass_cancel",
            {"symbol": symbol},
            ("POST", "/v1/orders/mass-cancel", body),
        )
        if outcome == "ok":
            for order in self.orders[client]:
                order.live = False

    async def _op_read_order(self, process: str, client: str, rng: random.Random) -> None:
        known = self.orders[client][-40:]
        if not known:
            return
        order = rng.choice(known)
        named, path = self._target(order, rng)
        consistency = rng.choice(["linearizable", "stale"])
        await self._recorded(
            process,
            client,
            self._node(rng),
            "read_order",
            {**named, "consistency": consistency},
            ("GET", f"{path}?consistency={consistency}", None),
        )

    async def _op_read_position(self, process: str, client: str, rng: random.Random) -> None:
        consistency = rng.choice(["linearizable", "stale"])
        await self._recorded(
            process,
            client,
            self._node(rng),
            "read_position",
            {"consistency": consistency},
            ("GET", f"/v1/positions?consistency={consistency}", None),
        )

    # ---- fills -------------------------------------------------------------------------

    async def _fill_socket(self, client: str, node_id: int) -> None:
        collector = self.fills[client]
        url = self.endpoints[node_id].http.rstrip("/") + "/v1/ws"
        assert self._session is not None
        while not self._closing:
            try:
                async with self._session.ws_connect(
                    url, headers={"Authorization": f"Bearer {self.tokens[client]}"}, heartbeat=5
                ) as ws:
                    await ws.send_json({"op": "subscribe", "id": 1, "channels": ["orders"]})
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            break
                        doc = message.json()
                        kind = doc.get("type")
                        if kind == "subscribed":
                            collector.up.add(node_id)
                        elif kind == "events":
                            collector.up.add(node_id)
                            for event in doc.get("events") or ():
                                if event.get("type") == "fill":
                                    fill = {**event, "client_id": client}
                                    key = (fill["trade_id"], fill["order_id"], fill["liquidity"])
                                    collector.fills.setdefault(key, fill)
                        elif kind == "gap":
                            # Events were missed here: this socket starts over.
                            break
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                pass
            collector.down(node_id)
            if self._closing:
                return
            await asyncio.sleep(0.3)

    _closing = False
    _sockets: list[asyncio.Task[None]] = []

    # ---- the end ----------------------------------------------------------------------

    async def admin_status(self, node_id: int) -> dict[str, Any] | None:
        """The node's admin status; where the admin API is out of reach (Kubernetes: it
        is the operator's), the public ``/v1/cluster`` with ``state_hash`` empty."""
        endpoint = self.endpoints[node_id]
        if self._session is None:
            return None
        if endpoint.admin is None:
            url, headers = endpoint.http.rstrip("/") + "/v1/cluster", {}
        else:
            url = endpoint.admin.rstrip("/") + "/v1/admin/status"
            headers = {"Authorization": f"Bearer {self.admin_token}"}
        try:
            async with self._session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=1.0)
            ) as resp:
                doc = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return None
        if resp.status != 200 or not isinstance(doc, dict):
            return None
        if endpoint.admin is None:
            self.state_hash_readable = False
            doc.setdefault("state_hash", "")
        return doc

    async def wait_converged(
        self, timeout: float
    ) -> tuple[bool, float, float | None, dict[int, Any]]:
        """(agreed, seconds until the state hashes agreed, seconds until the applied and
        commit indexes agreed, last statuses), polled until ``timeout``. A node's status
        shows a fresh state hash only once it has been idle a moment, so the hashes
        agree a little after the indexes do."""
        started = time.monotonic()
        last: dict[int, Any] = {}
        indexes_at: float | None = None
        while True:
            statuses = await asyncio.gather(*(self.admin_status(n) for n in sorted(self.endpoints)))
            last = dict(zip(sorted(self.endpoints), statuses, strict=True))
            if all(last.values()):
                applied = {s["applied_index"] for s in last.values()}
                hashes = {s["state_hash"] for s in last.values()}
                commits = {s["commit_index"] for s in last.values()}
                fresh = all(
                    s.get("state_hash_index", s["applied_index"]) == s["applied_index"]
                    for s in last.values()
                )
                if indexes_at is None and len(applied) == 1 and applied == commits:
                    indexes_at = time.monotonic() - started
                if len(applied) == 1 and len(hashes) == 1 and applied == commits and fresh:
                    return True, time.monotonic() - started, indexes_at, last
            if time.monotonic() - started > timeout:
                return False, time.monotonic() - started, indexes_at, last
            await asyncio.sleep(0.2)

    async def observe(self, converge_within_ns: int | None) -> list[Observation]:
        """One observation per replica (call after :meth:`wait_converged`)."""
        # Let every fill socket deliver what its node applied last.
        await asyncio.sleep(1.0)
        complete = all(f.complete for f in self.fills.values())
        fills = [fill for f in self.fills.values() for fill in f.fills.values()]
        semaphore = asyncio.Semaphore(16)

        async def get(node_id: int, client: str, path: str) -> Any:
            async with semaphore:
                for _ in range(3):
                    try:
                        status, body = await self._http(node_id, self.tokens[client], "GET", path)
                    except (TimeoutError, aiohttp.ClientError, OSError):
                        await asyncio.sleep(0.2)
                        continue
                    return body if status == 200 else None
                return None

        observations = []
        for node_id in sorted(self.endpoints):
            status = await self.admin_status(node_id)
            if status is None:
                continue
            views: dict[int, dict[str, Any]] = {}
            positions: dict[str, dict[str, dict[str, Any]]] = {}
            for client in self.clients:
                doc = await get(node_id, client, "/v1/positions?consistency=stale")
                positions[client] = dict((doc or {}).get("positions") or {})
                paths = [
                    f"/v1/orders/{o.order_id}?consistency=stale"
                    if o.order_id is not None
                    else f"/v1/orders/by-client-id/{o.client_order_id}?consistency=stale"
                    for o in self.orders[client]
                ]
                answers = await asyncio.gather(*(get(node_id, client, p) for p in paths))
                open_doc = await get(node_id, client, "/v1/orders?consistency=stale")
                answers += list((open_doc or {}).get("orders") or [])
                for view in answers:
                    if isinstance(view, dict) and isinstance(view.get("order_id"), int):
                        # Without the read mark: replicas at one state may differ in
                        # applied index (no-op entries), which is not divergence.
                        views[view["order_id"]] = {k: v for k, v in view.items() if k != "read"}
            observations.append(
                Observation(
                    node_name(node_id),
                    time.monotonic_ns(),
                    int(status["applied_index"]),
                    str(status["state_hash"]),
                    positions,
                    sorted(views.values(), key=lambda v: v["order_id"]),
                    fills,
                    complete,
                    converge_within_ns,
                )
            )
        return observations

    async def close(self) -> None:
        self._closing = True
        for task in self._sockets:
            task.cancel()
        await asyncio.gather(*self._sockets, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

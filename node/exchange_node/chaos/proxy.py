"""A small TCP proxy with toxics, in the manner of toxiproxy, for one peer link each.

This kernel has no netem qdisc, so latency cannot come from ``tc``: the chaos
target puts one :class:`LinkProxy` in each directed peer link (node ``i``'s
``--peers`` entry for ``j`` points at the proxy ``i -> j``). Every proxy has two
:class:`Pipe` s, ``up`` (client to server bytes) and ``down`` (back), each with its
own toxics:

- latency + jitter: every chunk is held ``latency +- jitter`` ms, never overtaking
  the chunk before it (order preserved, as on a TCP stream);
- stall: nothing is forwarded until healed (bytes queue up);
- corrupt: one random bit flipped in a ``probability`` share of chunks (seeded RNG);
- blackhole: chunks are dropped (a one-way cut the stream cannot recover from).

``reset`` closes every open connection with an RST, and while active refuses
(resets) a ``probability`` share of new ones.

All proxies of a target run on one asyncio loop in a daemon thread
(:class:`ProxyHub`); every control method is thread-safe and returns once applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

CHUNK = 65536


@dataclass
class Pipe:
    """One direction of a proxy's connections, and its toxics."""

    rng: random.Random
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    corrupt_probability: float = 0.0
    blackhole: bool = False
    stalled: asyncio.Event | None = None
    """Set while forwarding is allowed; created on the hub's loop."""
    chunks: int = 0
    corrupted: int = 0

    def delay_s(self) -> float:
        if self.latency_ms <= 0 and self.jitter_ms <= 0:
            return 0.0
        jitter = self.rng.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0
        return max(0.0, self.latency_ms + jitter) / 1000.0

    def corrupt(self, chunk: bytes) -> bytes:
        if self.corrupt_probability <= 0 or self.rng.random() >= self.corrupt_probability:
            return chunk
        bit = self.rng.randrange(len(chunk) * 8)
        data = bytearray(chunk)
        data[bit // 8] ^= 1 << (bit % 8)
        self.corrupted += 1
        return bytes(data)


@dataclass
class LinkProxy:
    name: str
    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int
    up: Pipe
    down: Pipe
    reset_probability: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)
    server: asyncio.base_events.Server | None = None
    accepted: int = 0
    resets: int = 0

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed or reset peer would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ProxyHub:
    """Runs every :class:`LinkProxy` of a chaos target on one loop in a thread."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.proxies: dict[str, LinkProxy] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy")
        self._thread.daemon = True
        self._thread.start()
        self._closed = False

    def _call(self, fn: Callable[[], T]) -> T:
        fut: Future[T] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed back to the caller's thread
                fut.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return fut.result(10)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # ---- proxies ----------------------------------------------------------------

    def add(
        self,
        name: str,
        listen_host: str,
        upstream_host: str,
        upstream_port: int,
        listen_port: int = 0,
    ) -> LinkProxy:
        """Start a proxy listening on ``listen_host:listen_port`` (0: any free port)."""
        # Seeded per proxy name, so a run's corruption pattern repeats with its seed.
        rng = random.Random(f"{self.seed}:{name}")
        proxy = LinkProxy(
            name,
            listen_host,
            listen_port,
            upstream_host,
            upstream_port,
            Pipe(random.Random(rng.random())),
            Pipe(random.Random(rng.random())),
            rng=rng,
        )

        async def start() -> None:
            for pipe in (proxy.up, proxy.down):
                pipe.stalled = asyncio.Event()
                pipe.stalled.set()
            proxy.server = await asyncio.start_server(
                lambda r, w: self._serve(proxy, r, w), listen_host, listen_port
            )
            proxy.listen_port = proxy.server.sockets[0].getsockname()[1]

        self._run(start())
        self.proxies[name] = proxy
        return proxy

    async def _serve(
        self, proxy: LinkProxy, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        # Cancelled only when the hub closes: end quietly.
        with contextlib.suppress(asyncio.CancelledError):
            await self._connect(proxy, client_r, client_w)

    async def _connect(
        self, proxy: LinkProxy, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        proxy.accepted += 1
        if proxy.reset_probability > 0 and proxy.rng.random() < proxy.reset_probability:
            proxy.resets += 1
            _abort(client_w)
            return
        try:
            up_r, up_w = await asyncio.open_connection(proxy.upstream_host, proxy.upstream_port)
        except OSError:
            _abort(client_w)
            return
        pair = (client_w, up_w)
        proxy.connections.add(pair)
        try:
            await asyncio.gather(
                self._pump(client_r, up_w, proxy.up),
                self._pump(up_r, client_w, proxy.down),
                return_exceptions=True,
            )
        finally:
            proxy.connections.discard(pair)
            for w in pair:
                w.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: Pipe
    ) -> None:
        """Forward chunks, each due ``delay`` after it was read and never before the
        previous one (a queue drained by a writer task keeps the order)."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def drain() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    break
                due, chunk = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                assert pipe.stalled is not None
                await pipe.stalled.wait()
                if pipe.blackhole:
                    continue
                writer.write(pipe.corrupt(chunk))
                await writer.drain()
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()

        sender = asyncio.create_task(drain())
        last_due = 0.0
        try:
            while True:
                chunk = await reader.read(CHUNK)
                if not chunk:
                    break
                pipe.chunks += 1
                last_due = max(last_due, time.monotonic() + pipe.delay_s())
                queue.put_nowait((last_due, chunk))
                if sender.done():
                    break
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await sender
            if not reader.at_eof():
                # The source broke off (reset, error): pass the break on.
                writer.transport.abort()

    # ---- toxics -----------------------------------------------------------------

    def set_latency(self, name: str, pipe: str, latency_ms: float, jitter_ms: float = 0.0) -> None:
        def apply() -> None:
            p = self._pipe(name, pipe)
            p.latency_ms, p.jitter_ms = latency_ms, jitter_ms

        self._call(apply)

    def set_stall(self, name: str, pipe: str, stalled: bool) -> None:
        def apply() -> None:
            event = self._pipe(name, pipe).stalled
            assert event is not None
            event.clear() if stalled else event.set()

        self._call(apply)

    def set_corrupt(self, name: str, pipe: str, probability: float) -> None:
        def apply() -> None:
            self._pipe(name, pipe).corrupt_probability = probability

        self._call(apply)

    def set_blackhole(self, name: str, pipe: str, on: bool) -> None:
        def apply() -> None:
            self._pipe(name, pipe).blackhole = on

        self._call(apply)

    def set_reset(self, name: str, probability: float) -> None:
        """Reset every open connection now and ``probability`` of new ones while set."""

        def apply() -> None:
            proxy = self.proxies[name]
            proxy.reset_probability = probability
            if probability > 0:
                for pair in list(proxy.connections):
                    proxy.resets += 1
                    for w in pair:
                        _abort(w)

        self._call(apply)

    def clear(self, name: str) -> None:
        for pipe in ("up", "down"):
            self.set_latency(name, pipe, 0.0)
            self.set_stall(name, pipe, False)
            self.set_corrupt(name, pipe, 0.0)
            self.set_blackhole(name, pipe, False)
        self.set_reset(name, 0.0)

    def _pipe(self, name: str, pipe: str) -> Pipe:
        proxy = self.proxies[name]
        if pipe == "up":
            return proxy.up
        if pipe == "down":
            return proxy.down
        raise ValueError(f"pipe must be 'up' or 'down', not {pipe!r}")

    def listening(self) -> list[str]:
        """Addresses with a proxy listening (empty once closed)."""
        return [p.address for p in self.proxies.values() if p.server and p.server.is_serving()]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def stop() -> None:
            for proxy in self.proxies.values():
                if proxy.server is not None:
                    proxy.server.close()
                for pair in list(proxy.connections):
                    for w in pair:
                        w.transport.abort()
            for proxy in self.proxies.values():
                if proxy.server is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(proxy.server.wait_closed(), 2)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

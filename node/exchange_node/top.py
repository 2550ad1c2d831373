"""`exchange top`: a terminal UI over the public API only.

Members (role, term, indexes, lag, health, each as that node reports it), the
book ladder and the trades of one symbol (prices in the symbol's units), orders
per second (``exchange_orders_total`` on ``/metrics``) with a sparkline, and
alerts (leader lost, changed and regained, nodes down and back, unhealthy or
lagging members, halted symbols).

Every poll runs in the background with short timeouts, every endpoint at once,
and market data are stale reads (no quorum needed): the screen keeps refreshing
while the cluster has no leader. ``TopState`` holds what is shown and decides
the alerts from successive polls; it is plain code, tested without a terminal.
Keys: ``s`` next symbol, ``p`` pause, ``q`` quit.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

LAG_ALERT_ENTRIES = 1_000
THROUGHPUT_SAMPLES = 60
POLL_TIMEOUT_SECONDS = 1.0


@dataclass
class Poll:
    """One round of answers: per endpoint its ``/v1/cluster`` (None: no answer)."""

    at: float
    clusters: dict[str, dict[str, Any] | None]
    symbols: dict[str, dict[str, Any]] = field(default_factory=dict)
    book: dict[str, Any] | None = None
    trades: list[dict[str, Any]] = field(default_factory=list)
    orders_total: float | None = None


@dataclass
class Alert:
    at: str
    level: str
    """``info``, ``warn`` or ``crit``."""
    text: str


class TopState:
    """What the screen shows, updated from polls; emits alerts on changes."""

    def __init__(self) -> None:
        self.last: Poll | None = None
        self.leader: int | None = None
        self.term = 0
        self.leaderless_since: float | None = None
        self.alerts: deque[Alert] = deque(maxlen=200)
        self.new_alerts: list[Alert] = []
        self.throughput: deque[float] = deque([0.0] * THROUGHPUT_SAMPLES, THROUGHPUT_SAMPLES)
        self.orders_per_second = 0.0
        self._orders: tuple[float, float] | None = None
        self._down: set[str] = set()
        self._unhealthy: set[int] = set()
        self._lagging: set[int] = set()
        self._halted: set[str] = set()
        self.polls = 0

    def _alert(self, level: str, text: str, wall: float | None = None) -> None:
        alert = Alert(time.strftime("%H:%M:%S", time.localtime(wall)), level, text)
        self.alerts.append(alert)
        self.new_alerts.append(alert)

    def update(self, poll: Poll, wall: float | None = None) -> list[Alert]:
        """Take one poll; the alerts it raised."""
        self.new_alerts = []
        self.polls += 1
        first = self.last is None
        for endpoint, doc in poll.clusters.items():
            if doc is None and endpoint not in self._down:
                self._down.add(endpoint)
                self._alert("warn", f"{endpoint} does not answer", wall)
            elif doc is not None and endpoint in self._down:
                self._down.discard(endpoint)
                self._alert("info", f"{endpoint} answers again", wall)
        answered = [d for d in poll.clusters.values() if d is not None]
        # The leader is the one a node reporting itself leader says, at the highest term.
        leaders = [d for d in answered if d.get("role") == "leader"]
        leader_doc = max(leaders, key=lambda d: d["term"], default=None)
        term = max((d["term"] for d in answered), default=self.term)
        leader = leader_doc["node_id"] if leader_doc else None
        if leader is None and self.leader is not None:
            self.leaderless_since = poll.at
            self._alert("crit", f"no leader (was node {self.leader}, term {self.term})", wall)
        elif leader is not None and self.leader is None and not first:
            lost = (
                f" after {poll.at - self.leaderless_since:.1f}s"
                if self.leaderless_since is not None
                else ""
            )
            self._alert("info", f"leader regained: node {leader}, term {term}{lost}", wall)
            self.leaderless_since = None
        elif leader is not None and self.leader is not None and leader != self.leader:
            self._alert(
                "warn", f"leader changed: node {self.leader} -> {leader} (term {term})", wall
            )
        elif first and leader is None:
            self.leaderless_since = poll.at
            self._alert("crit", "no leader", wall)
        self.leader, self.term = leader, term
        if leader_doc is not None:
            self._member_alerts(leader_doc, wall)
        for name, spec in poll.symbols.items():
            if spec.get("halted") and name not in self._halted:
                self._halted.add(name)
                self._alert("warn", f"{name} halted", wall)
            elif not spec.get("halted") and name in self._halted:
                self._halted.discard(name)
                self._alert("info", f"{name} resumed", wall)
        if poll.orders_total is not None:
            if self._orders is not None and poll.at > self._orders[0]:
                delta = max(0.0, poll.orders_total - self._orders[1])
                self.orders_per_second = delta / (poll.at - self._orders[0])
                self.throughput.append(self.orders_per_second)
            self._orders = (poll.at, poll.orders_total)
        self.last = poll
        return self.new_alerts

    def _member_alerts(self, leader_doc: dict[str, Any], wall: float | None) -> None:
        for m in leader_doc.get("members", []):
            mid = m["id"]
            if not m.get("healthy", True) and mid not in self._unhealthy:
                self._unhealthy.add(mid)
                self._alert("warn", f"node {mid} unhealthy (leader has not heard from it)", wall)
            elif m.get("healthy", True) and mid in self._unhealthy:
                self._unhealthy.discard(mid)
                self._alert("info", f"node {mid} healthy again", wall)
            lagging = m.get("lag", 0) > LAG_ALERT_ENTRIES
            if lagging and mid not in self._lagging:
                self._lagging.add(mid)
                self._alert("warn", f"node {mid} lags {m['lag']} entries", wall)
            elif not lagging and mid in self._lagging:
                self._lagging.discard(mid)
                self._alert("info", f"node {mid} caught up", wall)

    def member_rows(self) -> list[tuple[str, ...]]:
        """One row per endpoint: as that node reports itself, lag and health as the
        leader sees them."""
        if self.last is None:
            return []
        leader_view: dict[int, dict[str, Any]] = {}
        for doc in self.last.clusters.values():
            if doc is not None and doc["node_id"] == self.leader:
                leader_view = {m["id"]: m for m in doc.get("members", [])}
        rows: list[tuple[str, ...]] = []
        for endpoint, doc in self.last.clusters.items():
            if doc is None:
                rows.append(("?", "-", "DOWN", "-", "-", "-", "-", "-", endpoint))
                continue
            seen = leader_view.get(doc["node_id"], {})
            rows.append(
                (
                    str(doc["node_id"]),
                    str(doc.get("name", "")),
                    str(doc["role"]),
                    str(doc["term"]),
                    str(doc["commit_index"]),
                    str(doc["applied_index"]),
                    str(seen.get("lag", "-")),
                    {True: "yes", False: "NO"}.get(seen.get("healthy"), "-"),  # type: ignore[arg-type]
                    endpoint,
                )
            )
        return rows


def price_text(units: int, scale: int) -> str:
    places = max(0, len(str(scale)) - 1) if scale > 1 else 0
    return f"{Decimal(units) / Decimal(scale):.{places}f}"


def ladder_rows(book: dict[str, Any] | None, scale: int, depth: int = 10) -> list[tuple[str, ...]]:
    """Asks above (best lowest, nearest the middle), bids below."""
    if not book:
        return []
    asks = list(book.get("asks", []))[:depth]
    bids = list(book.get("bids", []))[:depth]
    rows: list[tuple[str, ...]] = [("", price_text(p, scale), str(q)) for p, q in reversed(asks)]
    rows += [(str(q), price_text(p, scale), "") for p, q in bids]
    return rows


def orders_total(metrics_text: str) -> float | None:
    """The sum of ``exchange_orders_total`` over its labels, or None."""
    total, seen = 0.0, False
    for line in metrics_text.splitlines():
        if line.startswith("exchange_orders_total"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


class Poller:
    """One round of public-API reads, every endpoint at once, short timeouts."""

    def __init__(self, endpoints: list[str], timeout: float = POLL_TIMEOUT_SECONDS) -> None:
        from exchange_client.aio import normalize_endpoint

        self.endpoints = [normalize_endpoint(e) for e in endpoints]
        self.timeout = timeout
        self._session: Any = None
        self.in_flight = 0

    async def _get(self, url: str, text: bool = False) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=self.timeout)
            )
        try:
            async with self._session.get(url) as response:
                if response.status != 200:
                    return None
                return await (response.text() if text else response.json(content_type=None))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None

    async def poll(self, symbol: str | None) -> Poll:
        self.in_flight += 1
        try:
            docs = await asyncio.gather(*(self._get(e + "/v1/cluster") for e in self.endpoints))
            clusters = dict(zip(self.endpoints, docs, strict=True))
            poll = Poll(time.monotonic(), clusters)
            source = next((e for e, d in clusters.items() if d is not None), None)
            if source is None:
                return poll
            stale = "consistency=stale"
            symbols_doc, metrics_text = await asyncio.gather(
                self._get(f"{source}/v1/symbols"), self._get(f"{source}/metrics", text=True)
            )
            if isinstance(symbols_doc, dict):
                poll.symbols = {s["symbol"]: s for s in symbols_doc.get("symbols", [])}
            if metrics_text:
                poll.orders_total = orders_total(metrics_text)
            symbol = symbol or next(iter(poll.symbols), None)
            if symbol:
                book, trades = await asyncio.gather(
                    self._get(f"{source}/v1/book/{symbol}?depth=10&{stale}"),
                    self._get(f"{source}/v1/trades/{symbol}?limit=30&{stale}"),
                )
                poll.book = book if isinstance(book, dict) else None
                if isinstance(trades, dict):
                    poll.trades = list(trades.get("trades", []))
            poll.at = time.monotonic()  # when the whole round was in
            return poll
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def build_app(endpoints: list[str], symbol: str | None = None, refresh: float = 1.0) -> Any:
    """The Textual application (imported here so the rest of the CLI never needs it)."""
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import Horizontal, Vertical
    from textual.widgets import DataTable, Footer, Header, RichLog, Sparkline, Static

    class TopApp(App[None]):
        TITLE = "exchange top"
        CSS = """
        #left { width: 3fr; }
        #right { width: 2fr; }
        #members { height: auto; max-height: 12; }
        #summary, #rate { height: 1; }
        #throughput { height: 4; }
        #book { height: 1fr; }
        #trades { height: 1fr; }
        #alerts { height: 8; border-top: solid $accent; }
        """
        BINDINGS = [
            Binding("q", "quit", "quit"),
            Binding("s", "next_symbol", "next symbol"),
            Binding("p", "pause", "pause"),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.poller = Poller(endpoints)
            self.state = TopState()
            self.symbol = symbol
            self.refresh_seconds = refresh
            self.paused = False
            self.ticks = 0
            self._polling = False

        def compose(self) -> ComposeResult:
            yield Header()
            with Horizontal():
                with Vertical(id="left"):
                    yield Static("connecting...", id="summary")
                    yield DataTable(id="members", cursor_type="none")
                    yield Static("orders/s: -", id="rate")
                    yield Sparkline([0.0], id="throughput")
                with Vertical(id="right"):
                    yield DataTable(id="book", cursor_type="none")
                    yield DataTable(id="trades", cursor_type="none")
            yield RichLog(id="alerts", max_lines=200, markup=True)
            yield Footer()

        def on_mount(self) -> None:
            self.sub_title = ", ".join(self.poller.endpoints)
            members = self.query_one("#members", DataTable)
            members.add_columns(
                "id", "name", "role", "term", "commit", "applied", "lag", "healthy", "endpoint"
            )
            self.query_one("#book", DataTable).add_columns("bid qty", "price", "ask qty")
            self.query_one("#trades", DataTable).add_columns("price", "qty", "aggressor")
            self.set_interval(self.refresh_seconds, self.start_poll)
            self.set_interval(0.1, self._tick)
            self.start_poll()

        def _tick(self) -> None:
            self.ticks += 1

        def start_poll(self) -> None:
            if self._polling or self.paused:
                return  # the last poll still waits for a slow node: never pile up
            self._polling = True
            self.run_worker(self._poll(), group="poll")

        async def _poll(self) -> None:
            try:
                poll = await self.poller.poll(self.symbol)
                if self.symbol is None and poll.symbols:
                    self.symbol = next(iter(poll.symbols))
                self.state.update(poll, time.time())
                self.render_state()
            finally:
                self._polling = False

        def render_state(self) -> None:
            state, poll = self.state, self.state.last
            if poll is None:
                return
            leader = f"node {state.leader}" if state.leader is not None else "[b red]NONE[/]"
            down = sum(1 for d in poll.clusters.values() if d is None)
            self.query_one("#summary", Static).update(
                f"leader {leader}   term {state.term}   nodes {len(poll.clusters) - down}/"
                f"{len(poll.clusters)} answering   symbol {self.symbol or '-'}"
                + ("   [b]PAUSED[/]" if self.paused else "")
            )
            members = self.query_one("#members", DataTable)
            members.clear()
            for row in state.member_rows():
                members.add_row(*row)
            self.query_one("#rate", Static).update(
                f"orders/s: {state.orders_per_second:,.0f}   (exchange_orders_total, last "
                f"{THROUGHPUT_SAMPLES} polls)"
            )
            self.query_one("#throughput", Sparkline).data = list(state.throughput)
            spec = poll.symbols.get(self.symbol or "", {})
            scale = int(spec.get("price_scale") or 100)
            book = self.query_one("#book", DataTable)
            book.clear()
            for row in ladder_rows(poll.book, scale):
                book.add_row(*row)
            trades = self.query_one("#trades", DataTable)
            trades.clear()
            for t in reversed(poll.trades[-15:]):
                trades.add_row(
                    price_text(int(t["price"]), scale), str(t["quantity"]), t["aggressor_side"]
                )
            log = self.query_one("#alerts", RichLog)
            colour = {"crit": "red", "warn": "yellow", "info": "green"}
            for alert in state.new_alerts:
                log.write(
                    f"[{colour[alert.level]}]{alert.at} {alert.level.upper()}[/] {alert.text}"
                )
            state.new_alerts = []

        def action_next_symbol(self) -> None:
            poll = self.state.last
            names = list(poll.symbols) if poll else []
            if not names:
                return
            at = names.index(self.symbol) if self.symbol in names else -1
            self.symbol = names[(at + 1) % len(names)]
            self.render_state()
            self.start_poll()

        def action_pause(self) -> None:
            self.paused = not self.paused
            self.render_state()

        async def on_unmount(self) -> None:
            await self.poller.close()

    return TopApp()


def run_top(endpoints: list[str], args: argparse.Namespace) -> int:
    try:
        import textual  # noqa: F401
    except ImportError:
        print("exchange top: needs the textual package (pip install textual)")
        return 2
    app = build_app(endpoints, getattr(args, "symbol", None), getattr(args, "refresh", 1.0))
    app.run()
    return 0

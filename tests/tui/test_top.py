"""`exchange top`: its state and alerts as plain code, and the Textual app driven
headless by Textual's pilot against a real 3-node cluster whose leader is frozen
(SIGSTOP) and thawed: the screen keeps refreshing and answering keys while a
poll waits on the frozen node, reports the leader lost and regained, and shows
the book and trades in the symbol's units."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from exchange_client import AsyncClient
from exchange_node.tools.local import LocalCluster
from exchange_node.top import Poll, TopState, build_app, ladder_rows, orders_total, price_text


def _cluster_doc(node_id: int, role: str, term: int, leader: int) -> dict:
    return {
        "node_id": node_id,
        "name": f"n{node_id}",
        "role": role,
        "term": term,
        "leader": leader,
        "commit_index": 10,
        "applied_index": 10,
        "members": [{"id": i, "lag": 0 if i != 3 else 5_000, "healthy": i != 2} for i in (1, 2, 3)],
    }


def test_alerts_follow_the_leader_lost_changed_and_regained() -> None:
    state = TopState()
    a, b, c = "http://a", "http://b", "http://c"
    state.update(
        Poll(
            0.0,
            {a: _cluster_doc(1, "leader", 2, 1), b: _cluster_doc(2, "follower", 2, 1), c: None},
            orders_total=100,
        )
    )
    texts = [x.text for x in state.alerts]
    assert "http://c does not answer" in texts
    assert any("node 2 unhealthy" in t for t in texts) and any("node 3 lags" in t for t in texts)
    state.update(
        Poll(1.0, {a: None, b: _cluster_doc(2, "candidate", 3, 0), c: None}, orders_total=None)
    )
    assert [x.level for x in state.new_alerts] == ["warn", "crit"]
    assert state.new_alerts[-1].text == "no leader (was node 1, term 2)"
    state.update(
        Poll(2.5, {a: None, b: _cluster_doc(2, "leader", 3, 2), c: None}, orders_total=400)
    )
    assert state.new_alerts[-1].text == "leader regained: node 2, term 3 after 1.5s"
    state.update(
        Poll(
            3.0,
            {a: _cluster_doc(1, "leader", 4, 1), b: _cluster_doc(2, "follower", 4, 1), c: None},
            orders_total=500,
        )
    )
    assert "leader changed: node 2 -> 1 (term 4)" in [x.text for x in state.new_alerts]
    assert state.orders_per_second == pytest.approx(200.0)
    rows = state.member_rows()
    assert [r[2] for r in rows] == ["leader", "follower", "DOWN"]


def test_ladder_prices_in_units_and_metrics_parsing() -> None:
    assert price_text(50_001, 100) == "500.01" and price_text(7, 1) == "7"
    book = {"bids": [[49_900, 2], [49_800, 1]], "asks": [[50_100, 3], [50_200, 4]]}
    assert ladder_rows(book, 100) == [
        ("", "502.00", "4"),
        ("", "501.00", "3"),
        ("2", "499.00", ""),
        ("1", "498.00", ""),
    ]
    text = (
        "# TYPE exchange_orders_total counter\n"
        'exchange_orders_total{side="BUY",symbol="BTC-USD"} 3.0\n'
        'exchange_orders_total{side="SELL",symbol="BTC-USD"} 4.0\n'
        "exchange_fills_total 9.0\n"
    )
    assert orders_total(text) == 7.0 and orders_total("") is None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root: Path = tmp_path_factory.mktemp("top") / "c"
    c = LocalCluster.create(root, 3, election_ms=400, heartbeat_ms=40)
    c.start_all()
    try:
        c.wait_for_leader(60)
        c.wait_ready(timeout=60)
        yield c
    finally:
        for m in c.spec.members:
            if m.node_id in c.procs:
                c.resume(m.node_id)
        c.stop_all(10)


async def _until(pilot, check, what: str, limit: int = 600) -> None:
    for _ in range(limit):
        if check():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"never: {what}")


async def test_top_headless_through_a_frozen_leader(cluster: LocalCluster) -> None:
    endpoints = [f"http://{m.http}" for m in cluster.spec.members]
    async with (
        AsyncClient(endpoints, cluster.key_for("alice")) as alice,
        AsyncClient(endpoints, cluster.key_for("bob")) as bob,
    ):
        await alice.place_order("BTC-USD", "SELL", 2, price=50_150)
        await bob.place_order("BTC-USD", "BUY", 1, price=50_150)
        await bob.place_order("BTC-USD", "BUY", 3, price=49_875)
    app = build_app(endpoints, symbol="BTC-USD", refresh=0.3)
    async with app.run_test(size=(160, 48)) as pilot:
        state = app.state
        await _until(
            pilot,
            lambda: state.leader is not None and len(state.member_rows()) == 3,
            "three members and a leader",
        )
        await _until(pilot, lambda: state.last.trades and state.last.book, "book and trades")
        book = app.query_one("#book")
        cells = [book.get_row_at(i) for i in range(book.row_count)]
        assert ["", "501.50", "1"] in cells and ["3", "498.75", ""] in cells
        assert app.query_one("#trades").get_row_at(0)[0] == "501.50"

        frozen = state.leader
        cluster.pause(frozen)  # SIGSTOP: its sockets accept nothing, answer nothing
        try:
            # A poll is waiting on the frozen node: the app still ticks and takes keys.
            await _until(pilot, lambda: app.poller.in_flight > 0 and state.polls > 0, "a poll")
            ticks = app.ticks
            await pilot.press("s")
            assert app.symbol == "ETH-USD"
            await _until(pilot, lambda: app.ticks >= ticks + 3, "ticks during the poll")
            await _until(
                pilot,
                lambda: state.leader is not None and state.leader != frozen,
                "a new leader",
            )
            texts = [a.text for a in state.alerts]
            assert any("does not answer" in t for t in texts)
            assert any(t.startswith(("leader changed", "leader regained")) for t in texts), texts
        finally:
            cluster.resume(frozen)
        await _until(
            pilot,
            lambda: any("answers again" in a.text for a in state.alerts),
            "the thawed node answers again",
        )
        log_text = "\n".join(str(line.text) for line in app.query_one("#alerts").lines)
        assert "does not answer" in log_text
        await pilot.press("q")
    await asyncio.sleep(0)

"""The S&P 500 universe and the replay of a past day: the shipped list, the probe
that keeps an offline start fast, yfinance's daily bars (a frame in its layout)
with their cache, the intraday path through a bar, and the fair values it drives."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from exchange_node.agents import marketdata
from exchange_node.agents.marketdata import (
    DailyBar,
    ReferencePrices,
    ReplayFairValues,
    ReplayPath,
    bars_from_frame,
    daily_bars,
    universe,
)
from exchange_node.tools.demo import population_for

FIXTURE = Path(__file__).parent / "fixtures" / "yfinance_day_aapl_msft.json"
DAY = date(2026, 11, 18)


def day_frame() -> pd.DataFrame:
    raw = json.loads(FIXTURE.read_text())
    columns = pd.MultiIndex.from_tuples(
        [tuple(c) for c in raw["columns"]], names=["Price", "Ticker"]
    )
    return pd.DataFrame(raw["data"], index=pd.to_datetime(raw["index"]), columns=columns)


def test_the_shipped_sp500_list() -> None:
    sp500 = universe("sp500")
    assert len(sp500) >= 500
    assert {"AAPL", "MSFT", "NVDA", "BRK-B", "JPM", "XOM"} <= set(sp500)
    assert all(price > 0 and math.isfinite(price) for price in sp500.values())
    lines = [
        line.split(",")[0]
        for line in marketdata.resources.files(marketdata.__package__)
        .joinpath("sp500.csv")
        .read_text()
        .splitlines()
        if line and not line.startswith(("#", "symbol,"))
    ]
    assert len(lines) == len(set(lines)) == len(sp500)  # no ticker twice
    with pytest.raises(ValueError, match="sp500"):
        universe("nasdaq")


def test_offline_a_large_universe_costs_one_probe_and_uses_the_shipped_prices(tmp_path) -> None:
    calls: list[list[str]] = []

    def offline(symbols: list[str]) -> pd.DataFrame:
        calls.append(symbols)
        return pd.DataFrame()

    sp500 = universe("sp500")
    prices = ReferencePrices(tmp_path / "p.json", download=offline).load(sp500, fallback=sp500)
    assert len(calls) == 1 and len(calls[0]) == 1  # one ticker asked, not 500
    assert all(p.source == "fallback" for p in prices.values())
    assert prices["AAPL"].price == sp500["AAPL"]


def test_online_the_probe_is_followed_by_the_rest(tmp_path) -> None:
    calls: list[list[str]] = []
    frame = day_frame()

    def online(symbols: list[str]) -> pd.DataFrame:
        calls.append(symbols)
        return frame

    names = ["AAPL", *(f"T{i}" for i in range(30)), "MSFT"]
    prices = ReferencePrices(tmp_path / "p.json", download=online).load(names)
    assert [len(c) for c in calls] == [1, len(names) - 1]
    assert (prices["AAPL"].source, prices["MSFT"].source) == ("yfinance", "yfinance")
    assert prices["MSFT"].price == 421.0


def test_daily_bars_from_yfinances_layout_then_from_the_cache(tmp_path) -> None:
    bars = bars_from_frame(day_frame(), ["AAPL", "MSFT", "NVDA"], DAY)
    assert set(bars) == {"AAPL", "MSFT"}  # a ticker without data is absent
    assert bars["AAPL"] == DailyBar("AAPL", "2026-11-18", 231.0, 233.2, 227.1, 229.5, 52100000)
    assert bars_from_frame(day_frame(), ["AAPL"], date(2026, 11, 19)) == {}  # another day

    calls = []

    def download(symbols: list[str], day: date) -> pd.DataFrame:
        calls.append((symbols, day))
        return day_frame()

    first = daily_bars(["AAPL", "MSFT"], DAY, cache_dir=tmp_path, download=download)
    assert first == bars_from_frame(day_frame(), ["AAPL", "MSFT"], DAY) and len(calls) == 1

    def offline(symbols: list[str], day: date) -> pd.DataFrame:
        raise OSError("no network")

    again = daily_bars(["AAPL", "MSFT"], DAY, cache_dir=tmp_path, download=offline)
    assert again == first  # from the cache file, no network
    assert daily_bars(["AAPL"], date(2026, 11, 19), cache_dir=tmp_path, download=offline) == {}


def test_the_replayed_path_meets_open_high_low_close_and_stays_inside_the_bar() -> None:
    up = DailyBar("AAPL", "2026-11-18", 231.0, 233.2, 227.1, 232.0, 1)
    path = ReplayPath(up, seed=3)
    assert path.price(0.0) == 231.0 and path.price(1.0) == 232.0
    assert path.price(0.3) == 227.1 and path.price(0.7) == 233.2  # an up day: low first
    samples = [path.price(i / 1000) for i in range(1001)]
    assert all(up.low <= p <= up.high for p in samples)
    assert len({round(p, 4) for p in samples}) > 500  # it moves, not a staircase
    down = ReplayPath(DailyBar("X", "d", 100.0, 104.0, 95.0, 96.0, 1))
    assert down.price(0.3) == 104.0 and down.price(0.7) == 95.0  # a down day: high first
    assert samples == [ReplayPath(up, seed=3).price(i / 1000) for i in range(1001)]  # seeded


def test_replay_fair_values_follow_the_clock_and_fall_back_per_symbol() -> None:
    now = [0.0]

    class Walk:
        steps = 0

        def step(self) -> None:
            Walk.steps += 1

        def __getitem__(self, symbol: str) -> int:
            return 4242

    bar = DailyBar("AAPL", "d", 200.0, 210.0, 190.0, 205.0, 1)
    fair = ReplayFairValues({"AAPL": ReplayPath(bar)}, 100, 600.0, Walk(), clock=lambda: now[0])
    assert fair["AAPL"] == 20_000  # the open, in cents
    now[0] = 600.0
    fair.step()
    assert fair["AAPL"] == 20_500 and Walk.steps == 1  # the close at the end of the session
    assert fair["MSFT"] == 4242  # no bar: the random walk


def test_the_population_grows_with_the_machine_for_the_sp500() -> None:
    small = population_for("demo", 64)
    assert sum(small.values()) <= 12  # the demo's keys
    two, eight = population_for("sp500", 2), population_for("sp500", 8)
    assert sum(two.values()) > sum(small.values())
    assert sum(eight.values()) > sum(two.values())
    assert population_for("sp500", 256) == eight  # bounded on a big machine

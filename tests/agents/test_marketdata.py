"""Reference prices: the real yfinance parsing and caching path, fed a recorded frame."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from exchange_node.agents.marketdata import (
    DEFAULT_FALLBACK_PRICE,
    FALLBACK_PRICES,
    RandomWalk,
    ReferencePrices,
    closes_from_frame,
)

FIXTURE = Path(__file__).parent / "fixtures" / "yfinance_download_aapl_msft_5d.json"


def recorded_frame() -> pd.DataFrame:
    raw = json.loads(FIXTURE.read_text())
    columns = pd.MultiIndex.from_tuples(
        [tuple(c) for c in raw["columns"]], names=["Price", "Ticker"]
    )
    rows = [[math.nan if v is None else v for v in row] for row in raw["data"]]
    return pd.DataFrame(rows, index=pd.to_datetime(raw["index"]), columns=columns)


def test_last_finite_close_per_ticker_from_multiindex_frame():
    closes = closes_from_frame(recorded_frame(), ["AAPL", "MSFT", "NVDA"])
    assert closes == {"AAPL": 234.95, "MSFT": 427.15}  # NaN skipped, absent ticker omitted


def test_single_ticker_flat_frame():
    frame = recorded_frame()[[("Close", "MSFT")]]
    flat = pd.DataFrame({"Close": frame[("Close", "MSFT")].to_numpy()}, index=frame.index)
    assert closes_from_frame(flat, ["MSFT"]) == {"MSFT": 427.15}


def test_download_then_cache_then_stale_then_fallback(tmp_path):
    cache = tmp_path / "prices.json"
    now = [1_000_000.0]
    calls = []

    def download(symbols):
        calls.append(list(symbols))
        return recorded_frame()

    prices = ReferencePrices(cache, download=download, clock=lambda: now[0], max_age_seconds=60)
    first = prices.load(["AAPL", "MSFT", "ZZZZ"])
    assert {s: (p.price, p.source) for s, p in first.items()} == {
        "AAPL": (234.95, "yfinance"),
        "MSFT": (427.15, "yfinance"),
        "ZZZZ": (DEFAULT_FALLBACK_PRICE, "fallback"),
    }
    assert json.loads(cache.read_text())["AAPL"]["price"] == 234.95

    # fresh cache: no download for cached symbols
    calls.clear()
    again = prices.load(["AAPL", "MSFT"])
    assert calls == [] and {p.source for p in again.values()} == {"cache"}

    # cache too old and the network gone: stale cache, never a crash
    now[0] += 3600
    offline = ReferencePrices(
        cache, download=lambda s: pd.DataFrame(), clock=lambda: now[0], max_age_seconds=60
    )
    stale = offline.load(["AAPL", "NVDA"])
    assert (stale["AAPL"].price, stale["AAPL"].source) == (234.95, "stale-cache")
    assert (stale["NVDA"].price, stale["NVDA"].source) == (FALLBACK_PRICES["NVDA"], "fallback")


def test_download_errors_mean_offline(tmp_path):
    def broken(symbols):
        raise ConnectionError("no route to host")

    got = ReferencePrices(tmp_path / "p.json", download=broken).load(["SPY"])
    assert (got["SPY"].price, got["SPY"].source) == (FALLBACK_PRICES["SPY"], "fallback")


def test_unreadable_cache_is_ignored(tmp_path):
    cache = tmp_path / "p.json"
    cache.write_text("{not json")
    got = ReferencePrices(cache, download=lambda s: pd.DataFrame()).load(["AAPL"])
    assert got["AAPL"].source == "fallback"


def test_random_walk_is_seeded_and_positive():
    a = [RandomWalk(10_000, seed=7).step() for _ in range(1)]
    w1, w2 = RandomWalk(10_000, seed=7), RandomWalk(10_000, seed=7)
    path1 = [w1.step() for _ in range(500)]
    path2 = [w2.step() for _ in range(500)]
    assert path1 == path2 and a[0] == path1[0]
    assert min(path1) > 0 and path1 != [10_000] * 500
    with pytest.raises(ValueError):
        RandomWalk(0)


def test_without_yfinance_installed_the_real_path_falls_back(tmp_path, monkeypatch):
    import sys

    from exchange_node.agents.marketdata import yfinance_download

    monkeypatch.setitem(sys.modules, "yfinance", None)  # import yfinance -> ImportError
    with pytest.raises(ImportError):
        yfinance_download(["AAPL"])
    got = ReferencePrices(tmp_path / "p.json").load(["AAPL"])  # default downloader: the real one
    assert (got["AAPL"].price, got["AAPL"].source) == (FALLBACK_PRICES["AAPL"], "fallback")

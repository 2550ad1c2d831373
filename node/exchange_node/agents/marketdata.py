"""Reference prices for the agents: recent closes from yfinance, cached on disk.

Order of preference for each symbol:

1. a cached close younger than ``max_age_seconds`` (no network at all);
2. a fresh download of the last five daily closes through yfinance;
3. a stale cached close, however old;
4. the documented fallback starting price (``FALLBACK_PRICES``, else
   ``DEFAULT_FALLBACK_PRICE``), after which the agents move the price with a
   seeded random walk.

Offline (as on the machines this project is tested on) step 2 returns an
empty frame within a second and the agents say once that they fell back. A
large request (the S&P 500 universe) first asks for one ticker and, when that
brings nothing, does not try the other five hundred one by one.

Universes (``universe``): ``demo`` (four tickers) and ``sp500`` (the S&P 500
constituents, ``sp500.csv`` beside this module, each with an offline reference
price used when neither yfinance nor the cache has one).

Replay (``daily_bars``, ``ReplayPath``): the daily bars (open, high, low,
close, volume) of a past day, from yfinance or the cache (or a bars file),
turned into a deterministic intraday path the agents trade around, so a past
day is replayed in minutes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_FALLBACK_PRICE = 100.0
FALLBACK_PRICES: dict[str, float] = {
    "AAPL": 190.0,
    "MSFT": 420.0,
    "NVDA": 120.0,
    "GOOG": 170.0,
    "SPY": 550.0,
    "QQQ": 480.0,
}
"""Starting prices used when neither the network nor the cache has a close."""


DEMO_TICKERS = ("AAPL", "MSFT", "NVDA", "SPY")
UNIVERSES = ("demo", "sp500")
PROBE_ABOVE = 20
"""A download of more tickers than this first tries one, to learn cheaply whether
the data source answers at all."""


def sp500_prices() -> dict[str, float]:
    """The shipped S&P 500 list: ticker -> offline reference price in dollars."""
    text = resources.files(__package__).joinpath("sp500.csv").read_text()
    prices: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("symbol,"):
            continue
        symbol, price = line.split(",")
        prices[symbol.strip()] = float(price)
    return prices


def universe(name: str) -> dict[str, float]:
    """Ticker -> offline reference price (dollars) of a named universe."""
    if name == "demo":
        return {t: FALLBACK_PRICES.get(t, DEFAULT_FALLBACK_PRICE) for t in DEMO_TICKERS}
    if name == "sp500":
        return sp500_prices()
    raise ValueError(f"unknown universe {name!r} (one of {', '.join(UNIVERSES)})")


def default_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "raft-exchange" / "reference-prices.json"


@dataclass(frozen=True)
class ReferencePrice:
    symbol: str
    price: float
    source: str
    """"yfinance", "cache", "stale-cache" or "fallback"."""
    fetched_at: float
    """Unix time the close was downloaded (0 for the fallback)."""


def closes_from_frame(frame: Any, symbols: Iterable[str]) -> dict[str, float]:
    """The last finite close per symbol from a ``yfinance.download`` frame.

    Handles both shapes yfinance returns: a (Price, Ticker) column MultiIndex
    for several tickers, and flat columns for one ticker.
    """
    closes: dict[str, float] = {}
    if frame is None or getattr(frame, "empty", True):
        return closes
    symbols = list(symbols)
    columns = frame.columns
    for symbol in symbols:
        if getattr(columns, "nlevels", 1) > 1:
            if ("Close", symbol) not in columns:
                continue
            series = frame[("Close", symbol)]
        elif len(symbols) == 1 and "Close" in columns:
            series = frame["Close"]
        else:
            continue
        for value in reversed(list(series)):
            price = float(value)
            if math.isfinite(price) and price > 0:
                closes[symbol] = price
                break
    return closes


def yfinance_download(symbols: list[str]) -> Any:
    """The real download (network): five daily bars per ticker."""
    import contextlib
    import io
    import warnings

    import yfinance

    # yfinance reports every failed ticker itself (logs and prints); offline that
    # is a screenful per run. The caller says once where each price came from.
    yf_log = logging.getLogger("yfinance")
    level = yf_log.level
    yf_log.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            return yfinance.download(
                symbols, period="5d", interval="1d", progress=False, timeout=5, threads=False
            )
    finally:
        yf_log.setLevel(level)


class ReferencePrices:
    def __init__(
        self,
        cache_path: Path | None = None,
        *,
        max_age_seconds: float = 24 * 3600,
        download: Callable[[list[str]], Any] = yfinance_download,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache_path = cache_path or default_cache_path()
        self.max_age_seconds = max_age_seconds
        self._download = download
        self._clock = clock

    def _read_cache(self) -> dict[str, ReferencePrice]:
        try:
            raw = json.loads(self.cache_path.read_text())
            return {s: ReferencePrice(**v) for s, v in raw.items()}
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable price cache %s: %s", self.cache_path, exc)
            return {}

    def _write_cache(self, prices: dict[str, ReferencePrice]) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({s: asdict(p) for s, p in sorted(prices.items())}, indent=1))
        os.replace(tmp, self.cache_path)

    def load(
        self, symbols: Iterable[str], fallback: Mapping[str, float] | None = None
    ) -> dict[str, ReferencePrice]:
        """``fallback``: offline prices (a universe's) used before the generic ones."""
        symbols = list(dict.fromkeys(symbols))
        fallback = fallback or {}
        now = self._clock()
        cache = self._read_cache()
        result = {
            s: ReferencePrice(s, cache[s].price, "cache", cache[s].fetched_at)
            for s in symbols
            if s in cache and now - cache[s].fetched_at <= self.max_age_seconds
        }
        missing = [s for s in symbols if s not in result]
        if missing:
            closes = self._closes(missing[:1] if len(missing) > PROBE_ABOVE else missing)
            if closes and len(missing) > PROBE_ABOVE:
                closes.update(self._closes(missing[1:]))
            fresh = {s: ReferencePrice(s, p, "yfinance", now) for s, p in closes.items()}
            if fresh:
                self._write_cache({**cache, **fresh})
            result.update(fresh)
        for s in symbols:
            if s in result:
                continue
            if s in cache:
                result[s] = ReferencePrice(s, cache[s].price, "stale-cache", cache[s].fetched_at)
            else:
                price = fallback.get(s) or FALLBACK_PRICES.get(s, DEFAULT_FALLBACK_PRICE)
                result[s] = ReferencePrice(s, price, "fallback", 0.0)
        return {s: result[s] for s in symbols}

    def _closes(self, symbols: list[str]) -> dict[str, float]:
        try:
            return closes_from_frame(self._download(symbols), symbols)
        except Exception as exc:  # any network or parsing failure means "offline"
            log.debug("yfinance download failed: %s", exc)
            return {}


class RandomWalk:
    """A seeded multiplicative random walk of a reference price, in ticks.

    Used when live prices are unavailable, and as the "fair value" the agents
    trade around. ``volatility`` is the per-step standard deviation of the
    log return.
    """

    def __init__(self, start_ticks: int, *, volatility: float = 0.0005, seed: int = 0) -> None:
        if start_ticks <= 0:
            raise ValueError("start_ticks must be positive")
        self._log_price = math.log(start_ticks)
        self._rng = random.Random(seed)
        self.volatility = volatility

    @property
    def ticks(self) -> int:
        return max(1, round(math.exp(self._log_price)))

    def step(self) -> int:
        self._log_price += self._rng.gauss(0.0, self.volatility)
        return self.ticks


# --- replay of a past day -------------------------------------------------------------


@dataclass(frozen=True)
class DailyBar:
    symbol: str
    day: str
    """ISO date of the session."""
    open: float
    high: float
    low: float
    close: float
    volume: float


def bars_from_frame(frame: Any, symbols: Iterable[str], day: date) -> dict[str, DailyBar]:
    """The bar of ``day`` per symbol from a ``yfinance.download`` frame (both shapes)."""
    bars: dict[str, DailyBar] = {}
    if frame is None or getattr(frame, "empty", True):
        return bars
    symbols = list(symbols)
    columns = frame.columns
    wanted = day.isoformat()
    rows = [i for i, stamp in enumerate(frame.index) if str(stamp)[:10] == wanted]
    if not rows:
        return bars
    row = rows[0]
    for symbol in symbols:
        values = {}
        for field in ("Open", "High", "Low", "Close", "Volume"):
            if getattr(columns, "nlevels", 1) > 1:
                key: Any = (field, symbol)
            elif len(symbols) == 1:
                key = field
            else:
                break
            if key not in columns:
                break
            values[field] = float(list(frame[key])[row])
        if len(values) == 5 and all(math.isfinite(v) and v >= 0 for v in values.values()):
            if values["Low"] <= 0 or not values["Low"] <= values["High"]:
                continue
            bars[symbol] = DailyBar(
                symbol,
                wanted,
                values["Open"],
                values["High"],
                values["Low"],
                values["Close"],
                values["Volume"],
            )
    return bars


def yfinance_day(symbols: list[str], day: date) -> Any:
    """The real download (network): daily bars of ``day`` (end is exclusive)."""
    import contextlib
    import io
    import warnings

    import yfinance

    yf_log = logging.getLogger("yfinance")
    level = yf_log.level
    yf_log.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            return yfinance.download(
                symbols,
                start=day.isoformat(),
                end=(day + timedelta(days=1)).isoformat(),
                interval="1d",
                progress=False,
                timeout=5,
                threads=False,
                auto_adjust=False,
            )
    finally:
        yf_log.setLevel(level)


def default_bars_dir() -> Path:
    return default_cache_path().parent / "bars"


def read_bars_file(path: Path) -> dict[str, DailyBar]:
    """Bars saved by ``daily_bars`` (or written by hand): ``{symbol: {day, open, ...}}``."""
    raw = json.loads(path.read_text())
    return {
        s: DailyBar(symbol=s, **{k: v for k, v in b.items() if k != "symbol"})
        for s, b in raw.items()
    }


def daily_bars(
    symbols: Iterable[str],
    day: date,
    *,
    cache_dir: Path | None = None,
    download: Callable[[list[str], date], Any] = yfinance_day,
) -> dict[str, DailyBar]:
    """The bars of ``day``: cached ones first (``<cache>/bars/<day>.json``), the rest
    from yfinance (then cached). Symbols without a bar (offline, not traded) are absent."""
    symbols = list(dict.fromkeys(symbols))
    path = (cache_dir or default_bars_dir()) / f"{day.isoformat()}.json"
    cached: dict[str, DailyBar] = {}
    try:
        cached = read_bars_file(path)
    except FileNotFoundError:
        pass
    except (ValueError, TypeError) as exc:
        log.warning("ignoring unreadable bars cache %s: %s", path, exc)
    result = {s: cached[s] for s in symbols if s in cached}
    missing = [s for s in symbols if s not in result]
    if missing:
        fresh: dict[str, DailyBar] = {}
        probe = missing[:1] if len(missing) > PROBE_ABOVE else missing
        for batch in (probe, missing[len(probe) :]):
            if not batch or (batch is not probe and not fresh):
                continue
            try:
                fresh.update(bars_from_frame(download(batch, day), batch, day))
            except Exception as exc:  # offline or a parsing failure
                log.debug("yfinance bars download failed: %s", exc)
        if fresh:
            path.parent.mkdir(parents=True, exist_ok=True)
            merged = {**cached, **fresh}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({s: asdict(b) for s, b in sorted(merged.items())}, indent=1))
            os.replace(tmp, path)
        result.update(fresh)
    return result


class ReplayPath:
    """A deterministic intraday path through one daily bar, in dollars.

    Open, then the extreme away from the close, then the other extreme, then the
    close (a down day visits the high first), piecewise linear, with a small
    seeded wiggle that never leaves [low, high]. ``price(progress)`` for
    progress in [0, 1] through the session.
    """

    def __init__(self, bar: DailyBar, *, seed: int = 0, wiggle: float = 0.15) -> None:
        self.bar = bar
        first, second = (bar.low, bar.high) if bar.close >= bar.open else (bar.high, bar.low)
        self.knots = [(0.0, bar.open), (0.3, first), (0.7, second), (1.0, bar.close)]
        rng = random.Random(f"{bar.symbol}/{bar.day}/{seed}")
        self._phases = [rng.uniform(0, 2 * math.pi) for _ in range(3)]
        self._wiggle = wiggle

    def price(self, progress: float) -> float:
        p = min(1.0, max(0.0, progress))
        for (x0, y0), (x1, y1) in zip(self.knots, self.knots[1:], strict=False):
            if p <= x1:
                base = y0 + (y1 - y0) * ((p - x0) / (x1 - x0) if x1 > x0 else 1.0)
                break
        bar = self.bar
        # a wiggle that vanishes at the knots, so open, high, low and close are met exactly
        span = (bar.high - bar.low) * self._wiggle
        envelope = math.sin(math.pi * ((p - x0) / (x1 - x0) if x1 > x0 else 0.0))
        wave = sum(math.sin(2 * math.pi * k * 7 * p + ph) for k, ph in enumerate(self._phases, 1))
        return min(bar.high, max(bar.low, base + span * envelope * wave / 3))


class ReplayFairValues:
    """The agents' fair values (``fair[symbol]`` in ticks, ``step()``) following past
    daily bars: the session is replayed over ``seconds`` of wall time, read from
    ``clock``; a symbol without a bar keeps ``fallback`` (the ordinary random walk)."""

    def __init__(
        self,
        paths: Mapping[str, ReplayPath],
        price_scale: int,
        seconds: float,
        fallback: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if seconds <= 0:
            raise ValueError("the replay needs a positive duration")
        self.paths = dict(paths)
        self.price_scale = price_scale
        self.seconds = seconds
        self.fallback = fallback
        self._clock = clock
        self._started = clock()
        self.progress = 0.0

    def step(self) -> None:
        self.progress = min(1.0, (self._clock() - self._started) / self.seconds)
        self.fallback.step()

    def __getitem__(self, symbol: str) -> int:
        path = self.paths.get(symbol)
        if path is None:
            ticks: int = self.fallback[symbol]
            return ticks
        return max(1, round(path.price(self.progress) * self.price_scale))

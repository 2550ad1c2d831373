"""Reference prices for the agents: recent closes from yfinance, cached on disk.

Order of preference for each symbol:

1. a cached close younger than ``max_age_seconds`` (no network at all);
2. a fresh download of the last five daily closes through yfinance;
3. a stale cached close, however old;
4. the documented fallback starting price (``FALLBACK_PRICES``, else
   ``DEFAULT_FALLBACK_PRICE``), after which the agents move the price with a
   seeded random walk.

Offline (as on the machines this project is tested on) step 2 returns an
empty frame within a second and the agents say once that they fell back.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
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

    def load(self, symbols: Iterable[str]) -> dict[str, ReferencePrice]:
        symbols = list(dict.fromkeys(symbols))
        now = self._clock()
        cache = self._read_cache()
        result = {
            s: ReferencePrice(s, cache[s].price, "cache", cache[s].fetched_at)
            for s in symbols
            if s in cache and now - cache[s].fetched_at <= self.max_age_seconds
        }
        missing = [s for s in symbols if s not in result]
        if missing:
            try:
                closes = closes_from_frame(self._download(missing), missing)
            except Exception as exc:  # any network or parsing failure means "offline"
                log.debug("yfinance download failed: %s", exc)
                closes = {}
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
                result[s] = ReferencePrice(
                    s, FALLBACK_PRICES.get(s, DEFAULT_FALLBACK_PRICE), "fallback", 0.0
                )
        return {s: result[s] for s in symbols}


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

"""``Client``: the same API as ``AsyncClient``, blocking, for scripts and notebooks.

It runs an event loop in a daemon thread and calls the async client there, so
it works inside programs that already run a loop (Jupyter) too. Close it (or use
``with``) to stop the thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .admin import AdminClient
from .aio import AsyncClient

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _blocking(name: str) -> Callable[..., Any]:
    method = getattr(AsyncClient, name, None) or getattr(AdminClient, name)

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self._thread.run(getattr(self._async, name)(*args, **kwargs))

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


class Client:
    """Blocking ``AsyncClient``: ``Client(endpoints, token).place_order(...)``."""

    def __init__(self, endpoints: list[str] | str, token: str | None = None, **options: Any):
        self._thread = _LoopThread()

        async def make() -> AsyncClient:
            return AsyncClient(endpoints, token, **options)

        self._async = self._thread.run(make())

    @property
    def stats(self) -> Any:
        return self._async.stats

    def next_client_order_id(self) -> str:
        return self._async.next_client_order_id()

    def order_body(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self._async.order_body(*args, **kwargs)

    def close(self) -> None:
        self._thread.run(self._async.close())
        self._thread.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    request = _blocking("request")
    place_order = _blocking("place_order")
    place_batch = _blocking("place_batch")
    cancel = _blocking("cancel")
    cancel_by_client_id = _blocking("cancel_by_client_id")
    replace = _blocking("replace")
    mass_cancel = _blocking("mass_cancel")
    order = _blocking("order")
    order_by_client_id = _blocking("order_by_client_id")
    open_orders = _blocking("open_orders")
    positions = _blocking("positions")
    symbols = _blocking("symbols")
    book = _blocking("book")
    trades = _blocking("trades")
    bbo = _blocking("bbo")
    analytics = _blocking("analytics")
    cluster = _blocking("cluster")

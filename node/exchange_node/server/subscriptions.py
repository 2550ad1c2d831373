"""Bounded fan-out of applied results to subscribers (the WebSocket streams).

Each subscriber owns a bounded queue. Publishing never blocks and never
grows memory: a subscriber whose queue is full is dropped (its iterator
ends), so one slow consumer cannot hold the apply loop back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

_END: Any = object()


class Subscription:
    """An async iterator of ``(log_index, results)`` in log order."""

    def __init__(self, max_queue: int, on_close: Callable[[Subscription], None]) -> None:
        self._max_queue = max_queue
        self._items: deque[Any] = deque()
        self._ready = asyncio.Event()
        self._on_close = on_close
        self.closed = False
        self.dropped = False

    def offer(self, item: tuple[int, list[Any]]) -> None:
        if self.closed:
            return
        if len(self._items) >= self._max_queue:
            self.dropped = True
            self._items.clear()
            self.close()
            return
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._items.append(_END)
        self._ready.set()
        self._on_close(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[int, list[Any]]:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if item is _END:
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        self.close()


class Publisher:
    def __init__(self, on_count: Callable[[int], None] | None = None) -> None:
        self._subscribers: list[Subscription] = []
        self._on_count = on_count

    def subscribe(self, max_queue: int) -> Subscription:
        sub = Subscription(max(1, max_queue), self._remove)
        self._subscribers.append(sub)
        self._count_changed()
        return sub

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
            self._count_changed()

    def _count_changed(self) -> None:
        if self._on_count:
            self._on_count(len(self._subscribers))

    def publish(self, log_index: int, results: list[Any]) -> None:
        for sub in list(self._subscribers):
            sub.offer((log_index, results))

    def close_all(self) -> None:
        for sub in list(self._subscribers):
            sub.close()

    def __len__(self) -> int:
        return len(self._subscribers)

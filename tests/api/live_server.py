"""The API served from a background thread on a real loopback port, for synchronous
clients (hypothesis tests, schemathesis)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from api_fakes import EngineService
from exchange_node.api import ApiConfig, create_app


@contextmanager
def serve_in_thread(**config: Any) -> Iterator[tuple[str, EngineService]]:
    """Yield (base URL, service) while a thread runs the app on 127.0.0.1."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        service = EngineService()
        app = create_app(service, ApiConfig(**config))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        state.update(runner=runner, service=service, url=f"http://127.0.0.1:{port}")

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        finally:
            started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="api-test-server", daemon=True)
    thread.start()
    started.wait(30)
    assert "url" in state, "the test server did not start"
    try:
        yield state["url"], state["service"]
    finally:
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()

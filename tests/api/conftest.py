from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).parent))

from api_fakes import KEYS, EngineService
from exchange_node.api import ApiConfig, create_app

Factory = Callable[..., Any]


@pytest.fixture
async def make_client() -> AsyncIterator[Factory]:
    """make_client(service=None, **config) -> (client, service) on a real local port."""
    clients: list[TestClient] = []

    async def make(
        service: EngineService | None = None, **config: Any
    ) -> tuple[TestClient, EngineService]:
        service = service or EngineService()
        config.setdefault("api_keys", dict(KEYS))
        app = create_app(service, ApiConfig(**config))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client, service

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def api(make_client: Factory) -> tuple[TestClient, EngineService]:
    result: tuple[TestClient, EngineService] = await make_client()
    return result

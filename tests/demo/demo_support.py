"""Helpers for the demo-level tests: a real local cluster and a tiny HTTP client."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exchange_node.tools.local import LocalCluster


def start_cluster(root: Path, nodes: int = 3) -> LocalCluster:
    cluster = LocalCluster.create(root, nodes, election_ms=400, heartbeat_ms=40)
    cluster.start_all()
    cluster.wait_for_leader(60)
    return cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = start_cluster(tmp_path / "cluster")
    yield c
    c.stop_all(10)


def http(method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")

"""tests/ctl: one real 3-node local cluster per module (``cluster`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from exchange_node.tools.local import LocalCluster


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root: Path = tmp_path_factory.mktemp("ctl") / "c"
    c = LocalCluster.create(root, 3, election_ms=400, heartbeat_ms=40)
    c.start_all()
    try:
        c.wait_for_leader(60)
        c.wait_ready(timeout=60)
        yield c
    finally:
        c.stop_all(10)

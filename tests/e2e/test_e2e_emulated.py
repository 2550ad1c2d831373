"""The e2e scenario on the emulated cluster: runs in `make test`.

The same steps as the kind suite (tests/e2e/test_e2e_kind.py), against the
emulated API server with real node processes behind the pods and the real
operator with the chart's RBAC (tests/e2e/emulated_cluster.py): install with
API keys from a Secret, Ready, trade through the client Service, scale
3 -> 5 -> 3 and roll to a new image with trading on throughout, every
acknowledged order kept, delete everything at once and nothing left
Terminating. Each step's duration is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulated_cluster import NAMESPACE, emulated_cluster
from scenario import Scenario

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("exchange_node.server_cli") is None,
        reason="the node (exchange_node.server_cli) is not installed",
    ),
]


@contextlib.contextmanager
def _step(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - started


async def test_install_trade_scale_upgrade_and_uninstall(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    async with emulated_cluster(tmp_path) as cluster:
        # The deadline of each wait is only a hang guard (the shared machine can be slow).
        scenario = Scenario(cluster, NAMESPACE, image="exchange:e2e-1", timeout=300)
        try:
            with _step(timings, "install"):
                await scenario.install()
            with _step(timings, "trade"):
                await scenario.trade()
            for replicas in (5, 3):
                with _step(timings, f"scale to {replicas}"):
                    step = asyncio.create_task(scenario.scale(replicas))
                    await scenario.trading_while(step, f"s{replicas}")
            with _step(timings, "rolling upgrade"):
                step = asyncio.create_task(scenario.upgrade("exchange:e2e-2"))
                await scenario.trading_while(step, "u")
            with _step(timings, "nothing lost"):
                await scenario.nothing_lost()
            # The client's pod is a follower whenever there is one: writes were forwarded
            # to the leader over HTTPS, the leader's certificate verified.
            assert scenario.workload.forwarded > 0, scenario.workload
        finally:
            with _step(timings, "uninstall"):
                await scenario.uninstall()
            figures = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
            print(
                f"emulated e2e: {figures}; {time.monotonic() - started:.1f} s in all; "
                f"{len(scenario.workload.acknowledged)} orders acknowledged, "
                f"{scenario.workload.forwarded} forwarded, {scenario.workload.refused} retried"
            )

"""The e2e scenario on the emulated cluster: runs in `make test`.

The same steps as the kind suite (tests/e2e/test_e2e_kind.py), against the
emulated API server with real node processes behind the pods and the real
operator with the chart's RBAC (tests/e2e/emulated_cluster.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
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


@pytest.mark.xfail(
    strict=False,
    reason="a follower forwards to an HTTPS leader reached at 127.0.0.1 in the emulated "
    "cluster, whose certificate names only DNS names: when the client's pod (xc-0) is not "
    "the leader every write answers 503 'could not reach the leader' (issue 16, open)",
)
async def test_install_trade_and_uninstall(tmp_path: Path) -> None:
    """make test's e2e steps: install with API keys from a Secret, Ready, trade through
    the client Service with every acknowledged order kept, delete everything at once
    and nothing left Terminating."""
    async with emulated_cluster(tmp_path) as cluster:
        scenario = Scenario(cluster, NAMESPACE)
        await scenario.install()
        try:
            await scenario.trade()
            await scenario.nothing_lost()
        finally:
            await scenario.uninstall()


# The rest of the scenario takes minutes with real processes: `make e2e` runs it here
# and on kind (marker e2e).
@pytest.mark.e2e
async def test_scale_and_upgrade_with_trading_on(tmp_path: Path) -> None:
    async with emulated_cluster(tmp_path) as cluster:
        scenario = Scenario(cluster, NAMESPACE, image="exchange:e2e-1")
        await scenario.install()
        try:
            await scenario.trade()
            for replicas in (5, 3):
                step = asyncio.create_task(scenario.scale(replicas))
                await scenario.trading_while(step, f"s{replicas}")
            step = asyncio.create_task(scenario.upgrade("exchange:e2e-2"))
            await scenario.trading_while(step, "u")
            await scenario.nothing_lost()
        finally:
            await scenario.uninstall()

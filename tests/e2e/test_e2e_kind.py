"""The e2e suite on a real kind cluster (`make e2e`; marker `e2e`).

Without Docker, kind, kubectl, Helm or a registry for the node image, every
test here skips with one line naming what is missing. The same scenario
steps run against the emulated cluster in `make test` (test_e2e_emulated.py).
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import kind_cluster
import pytest
from scenario import Scenario

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, NAME = "raft-exchange", "demo"  # where chaos-experiments/ expects the cluster


@functools.cache
def _missing() -> str | None:
    return kind_cluster.missing()


@pytest.fixture(scope="module")
def kind() -> Iterator[kind_cluster.KindCluster]:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    kind_cluster.create()
    cluster = kind_cluster.KindCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def artifacts_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"artifacts: {kind_cluster.collect_artifacts(NAMESPACE, request.node.name)}")


def _scenario(kind: kind_cluster.KindCluster) -> Scenario:
    return Scenario(kind, NAMESPACE, NAME, image=kind_cluster.IMAGE, timeout=600)


JOBS = {"pod-delete-leader": "chaos-pod-delete", "network-partition-leader": "chaos-partition"}


def _chaos(experiment: str) -> None:
    """Run one of chaos-experiments/ as its Job; the Job completes only when every
    check is green (its exit status is the verdict), else this raises."""
    path = ROOT / "chaos-experiments" / f"{experiment}.yaml"
    manifest = path.read_text().replace("ghcr.io/raft-exchange/exchange:0.1.0", kind_cluster.IMAGE)
    kind_cluster._run("kubectl", "apply", "-f", "-", stdin=manifest)
    job = f"job/{JOBS[experiment]}"
    kind_cluster._run("kubectl", "-n", NAMESPACE, "wait", "--for=condition=complete", job,
                      "--timeout=30m", timeout=1900)  # fmt: skip
    subprocess.run(["kubectl", "delete", "-f", "-", "--wait=false"], input=manifest.encode(),
                   check=False)  # fmt: skip


async def test_install_trade_scale_upgrade_chaos_uninstall(
    kind: kind_cluster.KindCluster, artifacts_on_failure: None
) -> None:
    scenario = _scenario(kind)
    await scenario.install()
    await scenario.trade()
    for replicas in (5, 3):
        await scenario.trading_while(asyncio.create_task(scenario.scale(replicas)), f"s{replicas}")
    repository, _ = kind_cluster.IMAGE.split(":")
    kind_cluster._run("docker", "tag", kind_cluster.IMAGE, f"{repository}:e2e-next")
    kind_cluster._run("kind", "load", "docker-image", f"{repository}:e2e-next",
                      "--name", kind_cluster.CLUSTER_NAME, timeout=900)  # fmt: skip
    await scenario.trading_while(
        asyncio.create_task(scenario.upgrade(f"{repository}:e2e-next")), "u"
    )
    await scenario.nothing_lost()
    for experiment in JOBS:
        await asyncio.to_thread(_chaos, experiment)
    await scenario.nothing_lost()
    await scenario.uninstall()

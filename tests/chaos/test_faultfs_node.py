"""Power cuts and disk faults on real node processes, through faultfs.

Three nodes run on faultfs mounts as their ``--data-dir``. A SIGKILL alone never
loses page-cache data; a power cut does. So: orders flow, every node is killed,
every mount drops what was never fsynced, the nodes start again, and every
acknowledged order must still be there, read back through the API by its client
order id. The same run with fsync made a no-op (a test-only wrapper, never a
product flag) must lose acknowledged orders, and the check must say so. EIO on a
leader's fsync must stop it acknowledging.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from exchange_node.chaos.faultfs import DropReport, FaultFSHandle, NodeDisks, unavailable_reason
from exchange_node.chaos.target import DiskFault
from exchange_node.tools.local import LocalCluster, MemberSpec

sys.path.insert(0, str(Path(__file__).parents[1] / "node"))
from node_load import Ack, OrderLoad

NOSYNC_WRAPPER = Path(__file__).parent / "nosync_node.py"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "faultfs tests mount FUSE filesystems: run as root"
    return unavailable_reason()


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]


class NoSyncCluster(LocalCluster):
    """The same nodes, started through the test-only wrapper that disables fsync."""

    def command(self, m: MemberSpec) -> list[str]:
        cmd = super().command(m)
        at = cmd.index("-m")
        return [cmd[0], str(NOSYNC_WRAPPER), *cmd[at + 2 :]]


class FaultFSCluster:
    """A LocalCluster whose every data directory is a faultfs mount."""

    def __init__(
        self, root: Path, cls: type[LocalCluster] = LocalCluster, snapshot_threshold: int = 50_000
    ) -> None:
        self.root = root
        self.cluster = cls.create(
            root,
            3,
            election_ms=400,
            heartbeat_ms=40,
            snapshot_threshold=snapshot_threshold,
            extra_args=["--request-timeout-ms=3000", "--log-level=info"],
        )
        self.disks = NodeDisks(root, {m.node_id: m.data_dir for m in self.cluster.spec.members})
        self.mounts: dict[int, FaultFSHandle] = self.disks.handles

    def start(self) -> None:
        self.cluster.start_all()
        self.cluster.wait_for_leader(60)
        self.cluster.wait_ready(timeout=60)

    def power_cut(self, node_ids: list[int]) -> dict[int, DropReport]:
        """Kill the nodes, then drop what their disks had not made durable."""
        return self.disks.power_cut(node_ids, self.cluster.kill)

    def close(self) -> None:
        self.cluster.stop_all(10)
        self.disks.close()


MakeCluster = Callable[..., "FaultFSCluster"]


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    made: list[FaultFSCluster] = []

    def make(cls: type[LocalCluster] = LocalCluster, **kw: Any) -> FaultFSCluster:
        made.append(FaultFSCluster(tmp_path / f"cluster{len(made)}", cls, **kw))
        return made[-1]

    yield make
    for c in made:
        c.close()


def lost_acknowledged(cluster: LocalCluster, acked: dict[str, Ack]) -> list[str]:
    """Client order ids acknowledged once that the cluster no longer has as that order
    (linearizable reads by client order id, so no replica can answer from behind)."""
    leader = cluster.wait_for_leader(60)
    lost = []
    for coid, ack in acked.items():
        for _ in range(50):
            try:
                code, doc = cluster.request(
                    leader,
                    "GET",
                    f"/v1/orders/by-client-id/{coid}",
                    token=cluster.key_for(ack.client),
                    timeout=5.0,
                )
            except (OSError, urllib.error.URLError):
                code, doc = 0, None
            if code in (200, 404):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no answer for {coid}: last {code} {doc}")
        if code != 200 or doc.get("order_id") != ack.answer["order_id"]:
            lost.append(coid)
    return lost


def run_power_cut(
    c: FaultFSCluster, acks: int, *, drop: bool = True
) -> tuple[dict[str, Ack], dict[int, DropReport]]:
    """Orders flow; every node is killed (with requests in flight) and, with ``drop``,
    loses what its disk had not made durable; every node starts again."""
    if not c.cluster.procs:
        c.start()
    # Client order ids unique across rounds: a round's orders are new orders.
    load = OrderLoad(c.cluster, prefix=f"pc-{time.monotonic_ns()}", concurrency=4).start()
    node_ids = [m.node_id for m in c.cluster.spec.members]
    try:
        load.wait_for_acks(acks, timeout=120)
        if drop:
            drops = c.power_cut(node_ids)
        else:
            for node_id in node_ids:
                c.cluster.kill(node_id)
            drops = {}
    finally:
        load.stop()
    for node_id in node_ids:
        c.cluster.start(node_id)
    c.cluster.wait_for_leader(60)
    c.cluster.wait_ready(timeout=60)
    return dict(load.acked), drops


def test_power_cut_of_every_node_keeps_every_acknowledged_order(make_cluster: MakeCluster) -> None:
    # Snapshots every 40 entries: their temp file, fsync, rename and directory fsync,
    # and the compaction's unlinks, all go through the power cut too.
    c = make_cluster(snapshot_threshold=40)
    acked: dict[str, Ack] = {}
    for cut in (1, 2):  # the second cut hits a cluster that recovered from the first
        round_acked, drops = run_power_cut(c, acks=100)
        acked |= round_acked
        lost = lost_acknowledged(c.cluster, acked)
        print(f"cut {cut}: acknowledged {len(acked)} in all; dropped {drops}; lost {len(lost)}")
        assert lost == [], f"{len(lost)}/{len(acked)} acknowledged orders lost: {lost[:10]}"
    snapshots = sorted(p.name for p in c.root.glob("disk-*/snap-*.snap"))
    assert snapshots, "no snapshot was taken: the durable rename path went untested"
    c.cluster.wait_converged([m.node_id for m in c.cluster.spec.members], timeout=60)


def test_power_cut_loses_acknowledged_orders_when_fsync_is_disabled(
    make_cluster: MakeCluster,
) -> None:
    """The planted fault: the check above must catch a node that acks before durability,
    and only the power cut does: a SIGKILL alone keeps the page cache."""
    c = make_cluster(NoSyncCluster)
    acked, _ = run_power_cut(c, acks=60, drop=False)
    assert lost_acknowledged(c.cluster, acked) == [], "kill -9 alone lost page-cache data"
    acked, drops = run_power_cut(c, acks=60)
    assert sum(d.bytes for d in drops.values()) > 0, drops
    lost = lost_acknowledged(c.cluster, acked)
    print(f"planted no-fsync: acknowledged {len(acked)}; lost {len(lost)}; dropped {drops}")
    assert lost, "a node that never fsyncs lost nothing in a power cut: the check is blind"


@pytest.mark.chaos
@pytest.mark.parametrize("kind", ["eio_fsync", "eio_write", "full"])
def test_a_disk_error_on_the_leader_stops_it_before_any_ack(
    make_cluster: MakeCluster, kind: str
) -> None:
    c = make_cluster()
    c.start()
    cluster = c.cluster
    leader = cluster.wait_for_leader(60)
    c.mounts[leader].set_fault(DiskFault(kind))  # type: ignore[arg-type,unused-ignore]
    body = {
        "symbol": "BTC-USD",
        "side": "BUY",
        "price": 40_000,
        "quantity": 1,
        "client_order_id": f"{kind}-1",
    }
    try:
        code, doc = cluster.request(
            leader, "POST", "/v1/orders", body, token=cluster.key_for("alice"), timeout=5.0
        )
    except (OSError, urllib.error.URLError) as exc:
        code, doc = 0, repr(exc)
    assert code != 200, f"the leader acknowledged an order its disk refused: {doc}"
    # It must not carry on as if nothing happened: it exits (and a new leader takes over).
    deadline = time.monotonic() + 20
    while cluster.alive(leader) and time.monotonic() < deadline:
        time.sleep(0.1)
    exit_code = cluster.procs[leader].poll()
    log_tail = cluster.log_tail(leader, 15)
    print(f"leader {leader} after {kind}: answered {code}, exit status {exit_code}")
    print(log_tail)
    assert exit_code is not None and exit_code != 0, f"still running after {kind}:\n{log_tail}"
    assert "stops to stay safe" in log_tail, log_tail
    others = [m.node_id for m in cluster.spec.members if m.node_id != leader]
    # (wait_for_leader refuses to wait while a node has exited non-zero.)
    deadline = time.monotonic() + 60
    while cluster.leader(among=others) is None:
        assert time.monotonic() < deadline, "no new leader after the old one stopped"
        time.sleep(0.1)
    # Healed and restarted, it recovers from what is on disk and rejoins.
    c.mounts[leader].set_fault(None)
    cluster.start(leader)
    cluster.wait_ready(timeout=60)
    code, doc = cluster.request(
        others[0], "POST", "/v1/orders", body, token=cluster.key_for("alice"), timeout=10.0
    )
    assert code == 200, doc
    cluster.wait_converged([m.node_id for m in cluster.spec.members], timeout=60)


@pytest.mark.chaos
@pytest.mark.parametrize("then", ["heal", "power_cut"])
def test_a_stalled_leader_disk_moves_leadership_and_loses_nothing(
    make_cluster: MakeCluster, then: str
) -> None:
    """The leader's fsync stalls: another node leads. Then either the disk heals and the
    old leader catches up, or the stalled node is killed (its fsync still stuck) and
    power-cut, and starts again."""
    c = make_cluster()
    c.start()
    cluster = c.cluster
    stalled = cluster.wait_for_leader(60)
    others = [m.node_id for m in cluster.spec.members if m.node_id != stalled]
    c.mounts[stalled].set_fault(DiskFault("stall_fsync"))
    # Requests to the stalled node only time out (5 s each): send to the others.
    load = OrderLoad(cluster, prefix="stall", concurrency=4, avoid={stalled}).start()
    try:
        # Writes are acknowledged again once another node leads.
        t0 = time.monotonic()
        load.wait_for_acks(40, timeout=90)
        print(f"40 acks {time.monotonic() - t0:.1f} s after the stall; errors {load.errors}")
        deadline = time.monotonic() + 30
        while cluster.leader(among=others) is None:
            assert time.monotonic() < deadline, "no other leader while the leader's disk stalls"
            time.sleep(0.1)
        assert c.mounts[stalled].stats()["stalled"] >= 1, "nothing waited on the stalled disk"
        if then == "power_cut":
            drops = c.power_cut([stalled])
            print(f"power cut of the stalled node: {drops}")
            c.mounts[stalled].set_fault(None)
            cluster.start(stalled)
        else:
            c.mounts[stalled].set_fault(None)
        load.wait_for_acks(20, timeout=60)
    finally:
        load.stop()
    assert cluster.alive(stalled), cluster.log_tail(stalled)
    assert lost_acknowledged(cluster, dict(load.acked)) == []
    cluster.wait_converged([m.node_id for m in cluster.spec.members], timeout=60)

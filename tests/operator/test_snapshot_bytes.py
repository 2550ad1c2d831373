"""spec.snapshotBytes: the operator passes the byte trigger the node bounds its log with.

The node snapshots once the log since the last snapshot reaches --snapshot-bytes
(docs/snapshots.md). An entry count alone bounds memory badly (one entry carries 1 to
500 orders), so the operator's default is bytes only: snapshotThreshold 0.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from exchange_node.server import config as node_config
from exchange_operator import crd, render
from exchange_operator.spec import ClusterRef, parse_spec

CLUSTER = ClusterRef(name="prod", namespace="trading", uid="uid-1")


def _node_env(raw: dict[str, Any]) -> dict[str, str]:
    spec = parse_spec(raw)
    state = render.RenderState(
        statefulset_replicas=spec.replicas,
        bootstrap_replicas=spec.replicas,
        bootstrapped=False,
        claim_size=None,
    )
    (sts,) = (o for o in render.core_children(CLUSTER, spec, state) if o["kind"] == "StatefulSet")
    (node,) = (c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "node")
    return {e["name"]: e["value"] for e in node["env"] if "value" in e}


def _node_config(env: dict[str, str]) -> node_config.NodeConfig:
    parser = argparse.ArgumentParser()
    node_config.add_arguments(parser)
    wanted = ("EXCHANGE_SNAPSHOT_BYTES", "EXCHANGE_SNAPSHOT_THRESHOLD")
    picked = {k: v for k, v in env.items() if k in wanted}
    return node_config.from_args(
        parser.parse_args([]), env={"EXCHANGE_INSECURE_PEERS": "true", **picked}
    )


def test_default_is_the_byte_trigger_alone() -> None:
    env = _node_env({})
    assert env["EXCHANGE_SNAPSHOT_BYTES"] == str(64 << 20)
    assert env["EXCHANGE_SNAPSHOT_THRESHOLD"] == "0"
    cfg = _node_config(env)
    assert (cfg.snapshot_bytes, cfg.snapshot_threshold) == (64 << 20, 0)


@pytest.mark.parametrize(
    ("given", "bytes_"),
    [("256Mi", 256 << 20), ("1Gi", 1 << 30), (1_048_576, 1 << 20), ("500M", 500_000_000)],
)
def test_quantities_reach_the_node_as_bytes(given: object, bytes_: int) -> None:
    env = _node_env({"snapshotBytes": given, "snapshotThreshold": 20_000})
    cfg = _node_config(env)
    assert (cfg.snapshot_bytes, cfg.snapshot_threshold) == (bytes_, 20_000)


@pytest.mark.parametrize("bad", ["0", "0.5", "-1", "1m", "lots"])
def test_a_size_the_node_would_refuse_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match=r"spec\.snapshotBytes"):
        parse_spec({"snapshotBytes": bad})


def test_the_crd_declares_the_field_with_the_default() -> None:
    props = crd.spec_schema()["properties"]
    field = props["snapshotBytes"]
    assert field["default"] == "64Mi" and field["x-kubernetes-int-or-string"] is True
    assert props["snapshotThreshold"]["default"] == 0

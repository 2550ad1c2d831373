"""spec.snapshotBytes: the operator passes the byte trigger the node bounds its log with.

The node snapshots once the log since the last snapshot reaches --snapshot-bytes
(docs/snapshots.md). An entry count alone bounds memory badly (one entry carries 1 to
500 orders), so the operator's default is bytes only: snapshotThreshold 0.
"""

from __future__ import annotations

import pytest
import rendered_node
from exchange_node.server import config as node_config
from exchange_operator import crd
from exchange_operator.spec import parse_spec

_node_env = rendered_node.node_env


def _node_config(env: dict[str, str]) -> node_config.NodeConfig:
    return rendered_node.node_config_from(
        env, ("EXCHANGE_SNAPSHOT_BYTES", "EXCHANGE_SNAPSHOT_THRESHOLD")
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

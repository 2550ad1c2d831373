"""What the operator renders for a member, as the node itself reads it.

Tests of a spec field that reaches the node as a variable: render the StatefulSet
for a spec, take the node container's variables, and run the node's own parser on
the ones under test (with insecure peers, so that no certificate is needed).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from exchange_node.server import config as node_config
from exchange_operator import render
from exchange_operator.spec import ClusterRef, parse_spec

CLUSTER = ClusterRef(name="prod", namespace="trading", uid="uid-1")


def node_env(raw: dict[str, Any]) -> dict[str, str]:
    """The node container's plain variables (not those from secrets) for spec ``raw``."""
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


def node_config_from(env: dict[str, str], names: Iterable[str]) -> node_config.NodeConfig:
    """The node's configuration from the variables ``names`` of ``env`` alone."""
    parser = argparse.ArgumentParser()
    node_config.add_arguments(parser)
    picked = {k: v for k, v in env.items() if k in set(names)}
    return node_config.from_args(
        parser.parse_args([]), env={"EXCHANGE_INSECURE_PEERS": "true", **picked}
    )

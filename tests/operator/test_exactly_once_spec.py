"""spec.exactlyOnce: the operator passes the retention settings to the nodes, whose
leaders put them in force through the log; fields left out are not rendered, so the
cluster keeps its own values (docs/api.md, "Exactly once")."""

from __future__ import annotations

from typing import Any

import pytest
import rendered_node
from exchange_node.server import config as node_config
from exchange_operator.spec import parse_spec

NAMES = (
    "EXCHANGE_EXACTLY_ONCE_HORIZON",
    "EXCHANGE_EXACTLY_ONCE_MAX_KEYS",
    "EXCHANGE_FINISHED_ORDERS",
)
_node_env = rendered_node.node_env


def _retention(env: dict[str, str]) -> node_config.RetentionConfig:
    """What the node's own parser makes of the rendered variables."""
    return rendered_node.node_config_from(env, NAMES).retention


def test_left_out_the_nodes_keep_the_clusters_values() -> None:
    env = _node_env({})
    assert not set(NAMES) & set(env)
    assert _retention(env) == node_config.RetentionConfig(None, None, None)


def test_given_they_reach_the_node_as_its_flags() -> None:
    env = _node_env({"exactlyOnce": {"horizon": "2h", "maxKeys": 500_000, "finishedOrders": 9}})
    assert _retention(env) == node_config.RetentionConfig(7_200 * 10**9, 500_000, 9)
    env = _node_env({"exactlyOnce": {"horizon": "90m"}})
    assert _retention(env) == node_config.RetentionConfig(5_400 * 10**9, None, None)
    env = _node_env({"exactlyOnce": {"horizon": "366d"}})  # the longest either accepts
    assert _retention(env).exactly_once_horizon_ns == 366 * 86_400 * 10**9


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"horizon": "soon"}, "horizon"),
        ({"horizon": "0h"}, "horizon"),
        ({"horizon": "367d"}, "horizon"),
        ({"horizon": 31_708_801}, "horizon"),
        ({"maxKeys": 0}, "maxKeys"),
        ({"maxKeys": True}, "maxKeys"),
        ({"finishedOrders": 1 << 32}, "finishedOrders"),
        ({"window": 5}, "window"),
        ("24h", "exactlyOnce"),
    ],
)
def test_a_bad_field_is_refused_by_name(raw: Any, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_spec({"exactlyOnce": raw})

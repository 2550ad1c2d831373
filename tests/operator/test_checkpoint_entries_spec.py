"""spec.checkpointEntries: the operator passes the divergence checkpoint interval to the
nodes (the remedy of ExchangeDivergenceCheckBlind); left out, it is not rendered, so the
node keeps its default and an operator upgrade rolls no pod."""

from __future__ import annotations

from typing import Any

import pytest
import rendered_node
from exchange_operator.spec import parse_spec

NAME = "EXCHANGE_CHECKPOINT_ENTRIES"


def test_left_out_the_nodes_keep_their_default() -> None:
    env = rendered_node.node_env({})
    assert NAME not in env
    assert rendered_node.node_config_from(env, [NAME]).checkpoint_entries == 50_000


@pytest.mark.parametrize("entries", [0, 200_000])
def test_given_it_reaches_the_node_as_its_flag(entries: int) -> None:
    env = rendered_node.node_env({"checkpointEntries": entries})
    assert env[NAME] == str(entries)
    assert rendered_node.node_config_from(env, [NAME]).checkpoint_entries == entries


@pytest.mark.parametrize("raw", [-1, True, "100", 1.5, (1 << 40) + 1])
def test_a_bad_value_is_refused_by_name(raw: Any) -> None:
    with pytest.raises(ValueError, match="checkpointEntries"):
        parse_spec({"checkpointEntries": raw})

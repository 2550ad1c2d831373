"""limits.py: every limit carries its reason, and the API's defaults are those limits."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from exchange_node import limits
from exchange_node.api import ApiConfig

LIMITS_PY = Path(limits.__file__)


def test_every_limit_has_a_one_line_reason() -> None:
    body = ast.parse(LIMITS_PY.read_text()).body
    missing = []
    names = 0
    for i, node in enumerate(body):
        if not isinstance(node, ast.AnnAssign | ast.Assign):
            continue
        names += 1
        following = body[i + 1] if i + 1 < len(body) else None
        documented = (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
            and following.value.value.strip()
        )
        if not documented:
            missing.append(ast.unparse(node.target if isinstance(node, ast.AnnAssign) else node))
    assert names > 40, "limits.py lost its entries"
    assert not missing, f"limits without a docstring: {missing}"


def test_api_config_defaults_are_the_limits() -> None:
    config = ApiConfig()
    expected = {
        "max_batch": limits.API_MAX_BATCH,
        "max_body_bytes": limits.API_MAX_BODY_BYTES,
        "rate_limit_per_second": limits.API_RATE_LIMIT,
        "rate_limit_burst": limits.API_RATE_BURST,
        "max_in_flight_per_client": limits.API_MAX_IN_FLIGHT_PER_CLIENT,
        "forward_timeout_seconds": limits.API_FORWARD_TIMEOUT_S,
        "max_forward_hops": limits.API_MAX_FORWARD_HOPS,
        "unavailable_retry_after_seconds": limits.API_RETRY_AFTER_S,
        "http_idle_timeout_seconds": limits.API_HTTP_IDLE_TIMEOUT_S,
        "http_body_timeout_seconds": limits.API_HTTP_BODY_TIMEOUT_S,
        "auth_failure_rate_per_second": limits.API_AUTH_FAILURE_RATE,
        "auth_failure_burst": limits.API_AUTH_FAILURE_BURST,
        "max_depth": limits.API_MAX_DEPTH,
        "max_trades": limits.API_MAX_TRADES,
        "member_status_timeout_seconds": limits.API_MEMBER_STATUS_TIMEOUT_S,
        "member_status_cache_seconds": limits.API_MEMBER_STATUS_CACHE_S,
        "ws_send_queue": limits.API_WS_SEND_QUEUE,
        "ws_send_queue_bytes": limits.API_WS_SEND_QUEUE_BYTES,
        "ws_heartbeat_seconds": limits.API_WS_HEARTBEAT_S,
        "ws_max_message_bytes": limits.API_WS_MAX_MESSAGE_BYTES,
        "ws_max_subscriptions": limits.API_WS_MAX_SUBSCRIPTIONS,
        "ws_anonymous_max_subscriptions": limits.API_WS_ANONYMOUS_MAX_SUBSCRIPTIONS,
        "ws_max_connections": limits.API_WS_MAX_CONNECTIONS,
        "ws_max_connections_per_key": limits.API_WS_MAX_CONNECTIONS_PER_KEY,
        "ws_max_connections_per_address": limits.API_WS_MAX_CONNECTIONS_PER_ADDRESS,
        "ws_max_anonymous_per_address": limits.API_WS_MAX_ANONYMOUS_PER_ADDRESS,
    }
    fields = {f.name for f in dataclasses.fields(ApiConfig)}
    assert set(expected) <= fields
    assert {name: getattr(config, name) for name in expected} == expected

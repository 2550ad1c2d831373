"""Fuzzing: generated bodies, paths and queries never get a 5xx, and every 4xx is the
documented JSON error naming a problem. Hypothesis always runs; schemathesis (driven by
/openapi.json) runs too when it is installed."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from api_fakes import KEYS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from live_server import serve_in_thread

AUTH = {"Authorization": "Bearer tok-alice"}


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[str, Any]]:
    with serve_in_thread(api_keys=dict(KEYS), rate_limit_per_second=0) as served:
        yield served


class Http:
    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read(), response.getheader("Content-Type", "")
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def check_answer(status: int, payload: bytes, ctype: str) -> None:
    assert status < 500, payload[:500]
    if status >= 400:
        assert ctype.startswith("application/json"), (status, ctype)
        error = json.loads(payload)["error"]
        assert isinstance(error["code"], str) and error["code"]
        assert isinstance(error["message"], str) and error["message"]
        assert error["field"] is None or isinstance(error["field"], str)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_VALUES: dict[str, Any] = {
    "client_order_id": st.text(max_size=70) | json_values,
    "symbol": st.sampled_from(["BTC-USD", "ETH-USD", "NOPE", ""]) | json_values,
    "side": st.sampled_from(["BUY", "SELL", "buy"]) | json_values,
    "order_type": st.sampled_from(["LIMIT", "MARKET"]) | json_values,
    "time_in_force": st.sampled_from(["GTC", "IOC", "FOK"]) | json_values,
    "price": st.integers(min_value=-10, max_value=(1 << 64)) | json_values,
    "quantity": st.integers(min_value=-10, max_value=(1 << 64)) | json_values,
    "post_only": st.booleans() | json_values,
    "stp": st.sampled_from(["CANCEL_INCOMING", "CANCEL_RESTING", "CANCEL_BOTH"]) | json_values,
    "new_client_order_id": st.text(max_size=70),
}
orders = st.fixed_dictionaries(
    {},
    optional={name: value for name, value in FIELD_VALUES.items() if name != "new_client_order_id"},
) | st.dictionaries(st.sampled_from([*FIELD_VALUES, "client_id", "x"]), json_values, max_size=6)
bodies = orders | st.fixed_dictionaries({"orders": st.lists(orders, max_size=5)}) | json_values
raw_bodies = st.binary(max_size=200) | bodies.map(lambda b: json.dumps(b).encode())
ROUTES = [
    ("POST", "/v1/orders"),
    ("POST", "/v1/orders/batch"),
    ("POST", "/v1/orders/mass-cancel"),
    ("POST", "/v1/orders/{id}/replace"),
    ("POST", "/v1/orders/by-client-id/{coid}/replace"),
    ("DELETE", "/v1/orders/{id}"),
    ("DELETE", "/v1/orders/by-client-id/{coid}"),
    ("GET", "/v1/orders/{id}"),
    ("GET", "/v1/orders/by-client-id/{coid}"),
    ("GET", "/v1/book/{symbol}"),
    ("GET", "/v1/trades/{symbol}"),
    ("GET", "/v1/bbo/{symbol}"),
    ("GET", "/v1/analytics/{symbol}"),
    ("GET", "/v1/orders"),
    ("GET", "/v1/positions"),
]
path_values = st.text(min_size=1, max_size=30) | st.integers(min_value=-5, max_value=1 << 70).map(
    str
)
queries = st.dictionaries(
    st.sampled_from(["depth", "limit", "consistency", "symbol", "x"]),
    st.sampled_from(["1", "0", "-1", "stale", "linearizable", "BTC-USD", "1e3", "abc", ""]),
    max_size=3,
)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    raw=raw_bodies,
    ctype=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", ""]
    ),
    path_value=path_values,
    query=queries,
    keyed=st.booleans(),
)
def test_generated_requests_never_get_a_5xx(live, route, raw, ctype, path_value, query, keyed):
    base, _service = live
    client = Http(base)
    method, template = route
    path = (
        template.replace("{id}", quote(path_value, safe=""))
        .replace("{coid}", quote(path_value, safe=""))
        .replace("{symbol}", quote(path_value, safe=""))
    )
    if query:
        path += "?" + "&".join(f"{k}={quote(v)}" for k, v in query.items())
    headers = dict(AUTH) if keyed else {}
    if ctype:
        headers["Content-Type"] = ctype
    body = raw if method == "POST" else None
    check_answer(*client.request(method, path, body, headers))


@FUZZ
@given(order=orders)
def test_generated_orders_are_accepted_or_refused_with_a_named_field(live, order):
    base, service = live
    client = Http(base)
    before = len(service.submitted)
    status, payload, ctype = client.request(
        "POST",
        "/v1/orders",
        json.dumps(order).encode(),
        {**AUTH, "Content-Type": "application/json"},
    )
    check_answer(status, payload, ctype)
    answer = json.loads(payload)
    if status == 400:
        assert answer["error"]["field"], answer  # bad orders always name the field
        assert len(service.submitted) == before  # and never reach the log
    else:
        assert status in (200, 422), answer


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_against_openapi_finds_no_server_errors(live, mode):
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis.checks import (
        content_type_conformance,
        negative_data_rejection,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    if mode == "negative":
        checks.append(negative_data_rejection)  # data outside the schema must get a 4xx
    base, _service = live
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/v1/ws":
            continue  # a WebSocket upgrade, covered in test_ws.py
        operations += 1
        strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

        @settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            case.headers = {**(case.headers or {}), **AUTH}
            response = case.call(base_url=base)
            if mode == "negative" and response.status_code == 413:
                # Too large (a batch over max_batch items, a body over the limit) is a
                # rejection too; schemathesis's list of rejecting statuses lacks 413.
                check_answer(413, response.content, response.headers.get("Content-Type", ""))
                return
            case.validate_response(response, checks=checks)

        try:
            run()
        except Unsatisfiable:
            # Negative mode on an operation with no inputs (GET /v1/cluster): nothing to break.
            assert mode == "negative", operation.path
        except Exception as exc:  # collect every operation's failure, then fail once
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert operations >= 17, operations  # every operation but /openapi.json and /v1/ws
    assert not failures, "\n\n".join(failures)

"""OpenTelemetry by the book: the node honours the SDK's variables, OTLP over
http/protobuf as well as gRPC, and its JSON logs carry the current span's ids.

The end-to-end test starts a real one-node cluster pointed at a local OTLP/HTTP
receiver (a small aiohttp server decoding ``ExportTraceServiceRequest``) with
``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``, places an order and waits for the
order's spans. Before the fix the node ignored the protocol and spoke gRPC
(HTTP/2) to the HTTP port, and nothing arrived.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from exchange_node.server import logs, tracing
from exchange_node.tools.local import LocalCluster, free_ports
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider

# --- which exporter the variables choose ----------------------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_exporters_follow_the_sdk_variables(env: dict[str, str], names: list[str]) -> None:
    assert tracing.exporter_names(env) == names


def test_protocol_variables_pick_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(tracing.span_exporter("otlp"), Grpc)  # the Python SDK's default
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert isinstance(tracing.span_exporter("otlp"), Http)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")  # the signal's own wins
    assert isinstance(tracing.span_exporter("otlp"), Grpc)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        tracing.span_exporter("otlp")


def test_incoming_headers_are_read_with_the_configured_propagators() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert tracing.context_from_headers({"X-Other": "1"}) is None
    context = tracing.context_from_headers({"Traceparent": parent})
    assert context is not None
    span = trace.get_current_span(context).get_span_context()
    assert format(span.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"


# --- logs carry the span's ids --------------------------------------------------------


def test_json_logs_carry_trace_and_span_ids_inside_a_span() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.otel.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("outside")
        span = TracerProvider().get_tracer("t").start_span("apply")
        with trace.use_span(span, end_on_exit=True):
            logger.info("inside")
    finally:
        logger.removeHandler(handler)
    outside, inside = (json.loads(line) for line in out.getvalue().splitlines())
    assert "trace_id" not in outside and "span_id" not in outside
    ids = span.get_span_context()
    assert inside["trace_id"] == format(ids.trace_id, "032x")
    assert inside["span_id"] == format(ids.span_id, "016x")


# --- a real node exports to a real OTLP/HTTP receiver -----------------------------------


class OtlpHttpReceiver:
    """POST /v1/traces with protobuf bodies, decoded; runs in its own thread."""

    def __init__(self) -> None:
        self.port = free_ports(1)[0]
        self.spans: list[tuple[str, str, dict[str, str]]] = []
        """(span name, trace id hex, resource attributes)."""
        self.content_types: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _traces(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            attrs = {
                a.key: a.value.string_value or str(a.value.int_value)
                for a in resource_spans.resource.attributes
            }
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append((span.name, span.trace_id.hex(), attrs))
        return web.Response(body=b"", content_type="application/x-protobuf")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())

    def __enter__(self) -> OtlpHttpReceiver:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as r:
        yield r


@pytest.mark.slow
def test_a_node_exports_an_orders_spans_over_otlp_http(
    tmp_path: Path, receiver: OtlpHttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "otel-test-node")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    cluster = LocalCluster.create(tmp_path / "cluster", 1, election_ms=300, heartbeat_ms=50)
    cluster.start_all()
    try:
        cluster.wait_for_leader(30)
        cluster.wait_ready(timeout=30)
        node = cluster.spec.members[0]
        request = urllib.request.Request(
            f"http://{node.http}/v1/orders",
            data=json.dumps(
                {"symbol": "BTC-USD", "side": "BUY", "price": 40_000, "quantity": 1}
            ).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {cluster.key_for('alice')}",
                "Content-Type": "application/json",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        deadline = time.monotonic() + 30
        wanted = {"POST /v1/orders", "propose"}
        while time.monotonic() < deadline:
            names = {n for n, t, _ in receiver.spans if t == "4bf92f3577b34da6a3ce929d0e0e4736"}
            if wanted <= names:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"spans of the order never arrived: {receiver.spans[:20]}")
        # the same live node's /metrics: the standard collectors and the disk use
        with urllib.request.urlopen(f"http://{node.http}/metrics", timeout=10) as answer:
            metrics = dict(
                line.rsplit(" ", 1)
                for line in answer.read().decode().splitlines()
                if line and not line.startswith("#")
            )
    finally:
        cluster.stop_all(10)
    assert float(metrics["exchange_wal_bytes"]) > 0  # the order is in the WAL
    assert float(metrics["process_resident_memory_bytes"]) > 0
    assert "exchange_snapshot_bytes" in metrics
    assert receiver.content_types == {"application/x-protobuf"}
    _, _, resource = receiver.spans[0]
    assert resource["service.name"] == "otel-test-node"
    assert resource["deployment.environment"] == "test"
    assert resource["exchange.node_id"] == "1"

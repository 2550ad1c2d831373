"""OpenTelemetry for the node: one trace per order, across replicas.

When the standard ``OTEL_*`` variables ask for export
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
or ``OTEL_TRACES_EXPORTER=otlp``) an SDK tracer provider with a batching OTLP
exporter is installed; otherwise the API's no-op tracer is used and a span
costs almost nothing. ``OTEL_SDK_DISABLED=true`` always wins.

The trace of an order is HTTP request -> propose -> commit -> apply. The
W3C ``traceparent`` of the propose span travels *inside the log entry's
envelope*, so every replica's apply span joins the same trace.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_enabled = False


def exporting_requested(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_TRACES_EXPORTER", "").lower() == "otlp"
    )


def setup(node_name: str, node_id: int) -> bool:
    """Install the exporting provider when asked to; returns whether it did."""
    if not exporting_requested():
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, Any] = {"exchange.node_id": node_id, "exchange.node_name": node_name}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "exchange-node"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    return True


def install(provider: trace.TracerProvider) -> None:
    """Use ``provider`` for the node's spans (``setup`` does this; tests pass their own)."""
    global _enabled
    trace.set_tracer_provider(provider)
    _enabled = True


def enabled() -> bool:
    return _enabled


def shutdown() -> None:
    provider = trace.get_tracer_provider()
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()


def tracer() -> trace.Tracer:
    return trace.get_tracer("exchange_node.server")


def carrier_from_span(span: trace.Span) -> bytes:
    """The W3C ``traceparent`` of ``span`` as bytes for the log entry envelope."""
    if not span.get_span_context().is_valid:
        return b""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "").encode()


def context_from_bytes(raw: bytes) -> otel_context.Context | None:
    if not raw:
        return None
    return _PROPAGATOR.extract({"traceparent": raw.decode("ascii", "replace")})


def context_from_carrier(carrier: Mapping[str, str] | None) -> otel_context.Context | None:
    """The parent context a carrier names; None (the current context) without one."""
    if not carrier:
        return None
    return _PROPAGATOR.extract(dict(carrier))


def context_from_headers(headers: Mapping[str, str]) -> otel_context.Context | None:
    if "traceparent" not in headers:
        return None
    return _PROPAGATOR.extract({k.lower(): v for k, v in headers.items()})

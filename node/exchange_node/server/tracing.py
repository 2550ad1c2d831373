"""OpenTelemetry for the node: one trace per order, across replicas.

Configuration is the OpenTelemetry SDK's own environment variables, all of them:

* export is on when ``OTEL_EXPORTER_OTLP_ENDPOINT``,
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER`` (``otlp``,
  ``console``, a comma-separated list) asks for it; ``OTEL_TRACES_EXPORTER=none``
  and ``OTEL_SDK_DISABLED=true`` always win;
* ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` (else ``OTEL_EXPORTER_OTLP_PROTOCOL``)
  picks the OTLP transport: ``grpc`` (the default, as in the Python SDK) or
  ``http/protobuf``; ``http/json`` has no Python exporter and is sent as
  ``http/protobuf`` with a warning;
* the exporters read their ``OTEL_EXPORTER_OTLP[_TRACES]_{ENDPOINT,HEADERS,
  TIMEOUT,COMPRESSION,CERTIFICATE,CLIENT_KEY,CLIENT_CERTIFICATE,INSECURE}``,
  the provider its ``OTEL_TRACES_SAMPLER[_ARG]`` and ``OTEL_SPAN_*_LIMIT``,
  the batch processor its ``OTEL_BSP_*``, the resource
  ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``, and incoming HTTP
  headers are read with the ``OTEL_PROPAGATORS`` propagators (W3C trace
  context and baggage by default).

Without export the API's no-op tracer is used and a span costs almost nothing.

The trace of an order is HTTP request -> propose -> commit -> apply. The
W3C ``traceparent`` of the propose span travels *inside the log entry's
envelope*, so every replica's apply span joins the same trace.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
"""The log entry envelope's format: always W3C ``traceparent`` (replicas must agree)."""
_enabled = False
log = logging.getLogger("exchange.node.tracing")

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
HTTP_JSON = "http/json"


def exporter_names(env: Mapping[str, str] | None = None) -> list[str]:
    """The span exporters the environment asks for (``otlp``, ``console``), in order;
    empty when tracing is off."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    listed = [
        name.strip().lower()
        for name in env.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip()
    ]
    if "none" in listed:
        return []
    if listed:
        return list(dict.fromkeys(listed))
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return ["otlp"]
    return []


def exporting_requested(env: Mapping[str, str] | None = None) -> bool:
    return bool(exporter_names(env))


def otlp_protocol(env: Mapping[str, str] | None = None) -> str:
    """``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``,
    else ``grpc``."""
    env = os.environ if env is None else env
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(name, "").strip().lower()
        if value:
            if value not in (GRPC, HTTP_PROTOBUF, HTTP_JSON):
                raise ValueError(
                    f"{name}={value!r}: expected {GRPC}, {HTTP_PROTOBUF} or {HTTP_JSON}"
                )
            return value
    return GRPC


def span_exporter(name: str, env: Mapping[str, str] | None = None) -> Any:
    """The SDK exporter for ``name``; OTLP ones read their own ``OTEL_EXPORTER_OTLP_*``."""
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER: {name!r} is not available (otlp, console, none)")
    protocol = otlp_protocol(env)
    if protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    if protocol == HTTP_JSON:
        log.warning("OTLP http/json has no Python exporter; sending http/protobuf instead")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


def setup(node_name: str, node_id: int) -> bool:
    """Install the exporting provider when asked to; returns whether it did."""
    names = exporter_names()
    if not names:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, Any] = {"exchange.node_id": node_id, "exchange.node_name": node_name}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "exchange-node"
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; the
    # provider reads the sampler and span limits, the processor OTEL_BSP_*.
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(span_exporter(name)))
    install(provider)
    log.info(
        "exporting spans",
        extra={"exporters": names, "otlp_protocol": otlp_protocol() if "otlp" in names else None},
    )
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
    """The parent context of an incoming request, read with the ``OTEL_PROPAGATORS``
    propagators (tracecontext and baggage unless configured otherwise)."""
    carrier = {k.lower(): v for k, v in headers.items()}
    textmap = propagate.get_global_textmap()
    if not set(textmap.fields) & carrier.keys():
        return None
    return textmap.extract(carrier)

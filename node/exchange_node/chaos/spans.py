"""An in-process OTLP/gRPC trace receiver: the spans a chaos run's nodes export.

The nodes export spans when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set
(server/tracing.py); :meth:`SpanReceiver.node_env` gives them the variables that
point at this receiver. The workload sends a W3C ``traceparent`` with every
request (:func:`trace_id_for`), so an operation of the history and the spans of
its request, proposal and every replica's apply share one trace id.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def trace_id_for(seed: int, op_id: int) -> str:
    """The trace id (32 hex digits) the workload sends for operation ``op_id``."""
    return hashlib.sha256(f"chaos:{seed}:{op_id}".encode()).hexdigest()[:32]


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{trace_id[:16]}-01"


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class _Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: SpanReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    spans.append(
                        {
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "name": span.name,
                            "node": resource.get("exchange.node_id"),
                            "start_unix_ns": span.start_time_unix_nano,
                            "end_unix_ns": span.end_time_unix_nano,
                            "attributes": attributes,
                        }
                    )
        with self.receiver.lock:
            self.receiver.spans.extend(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class SpanReceiver:
    """Listens on ``host`` (all interfaces by default) until :meth:`close`."""

    def __init__(self, host: str = "0.0.0.0") -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        add = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
        add(_Service(self), self.server)  # type: ignore[no-untyped-call]
        self.port = self.server.add_insecure_port(f"{host}:0")
        self.server.start()

    def node_env(self, address: str) -> dict[str, str]:
        """The variables that make a node export its spans here, soon after they end."""
        return {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://{address}:{self.port}",
            "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }

    def by_trace(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        with self.lock:
            for span in self.spans:
                out.setdefault(span["trace_id"], []).append(span)
        return out

    def close(self) -> None:
        self.server.stop(grace=1.0)

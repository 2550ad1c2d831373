"""Structured JSON logs: one object per line, with the node's id, term and role.

The node updates ``NodeLogContext`` whenever its term or role changes; every
record logged anywhere in the process then carries the current values, so a
line read on its own says which replica said it and in what state. A record
logged inside a span (an HTTP request, a propose, an apply) also carries that
span's ``trace_id`` and ``span_id`` (hex, as in the exported trace), so a log
line leads to its trace and back.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from opentelemetry import trace


@dataclass(slots=True)
class NodeLogContext:
    node_id: int = 0
    name: str = ""
    term: int = 0
    role: str = "follower"


CONTEXT = NodeLogContext()

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "node_id": CONTEXT.node_id,
            "name": CONTEXT.name,
            "term": CONTEXT.term,
            "role": CONTEXT.role,
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            doc["trace_id"] = format(span.trace_id, "032x")
            doc["span_id"] = format(span.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every logger's records, as JSON lines, to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter at INFO would drown the node's own lines.
    for noisy in ("aiohttp.access", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""What the node puts in a log entry and in a snapshot, around the engine's bytes.

Log entry (``EntryType.NORMAL`` with data; an empty entry is the core's no-op,
``CONF_CHANGE`` entries are the core's own)::

    u8 magic 0xE7 | u8 version 1 | u8 kind | u16 trace_len | trace | payload

``kind`` 1 is an engine batch (``engine.commands.encode_batch``); ``trace`` is
the W3C ``traceparent`` of the proposing span (empty when not tracing), so a
follower's apply span joins the order's trace. No checksum here: the WAL and
the transport already carry a CRC on every record and frame.

Snapshot data::

    b"XSNP" | u8 version 1 | u32 members_len | members JSON | engine snapshot

The members JSON maps node id -> {"name", "grpc", "http"}: the addresses
learnt from ConfChange contexts, which log compaction would otherwise lose.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

MAGIC = 0xE7
VERSION = 1
KIND_ENGINE_BATCH = 1

_HEAD = struct.Struct(">BBBH")
_SNAP_HEAD = struct.Struct(">4sBI")
_SNAP_MAGIC = b"XSNP"


class EnvelopeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class MemberInfo:
    name: str
    grpc: str
    http: str

    def to_context(self) -> bytes:
        return json.dumps({"name": self.name, "grpc": self.grpc, "http": self.http}).encode()

    @classmethod
    def from_context(cls, raw: bytes, node_id: int) -> MemberInfo:
        if not raw:
            return cls(name=f"node-{node_id}", grpc="", http="")
        try:
            doc = json.loads(raw)
            return cls(name=str(doc.get("name", "")), grpc=str(doc["grpc"]), http=str(doc["http"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise EnvelopeError(f"bad member context for node {node_id}: {exc}") from exc


def wrap_entry(payload: bytes, trace: bytes = b"", kind: int = KIND_ENGINE_BATCH) -> bytes:
    return _HEAD.pack(MAGIC, VERSION, kind, len(trace)) + trace + payload


def unwrap_entry(data: bytes) -> tuple[int, bytes, bytes]:
    """-> (kind, trace, payload)."""
    if len(data) < _HEAD.size:
        raise EnvelopeError("entry shorter than its header")
    magic, version, kind, trace_len = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise EnvelopeError(f"unknown entry envelope {magic:#x} v{version}")
    start = _HEAD.size + trace_len
    if start > len(data):
        raise EnvelopeError("entry trace context truncated")
    return kind, data[_HEAD.size : start], data[start:]


def wrap_snapshot(members: dict[int, MemberInfo], engine_state: bytes) -> bytes:
    doc = {str(k): {"name": v.name, "grpc": v.grpc, "http": v.http} for k, v in members.items()}
    raw = json.dumps(doc, sort_keys=True).encode()
    return _SNAP_HEAD.pack(_SNAP_MAGIC, VERSION, len(raw)) + raw + engine_state


def unwrap_snapshot(data: bytes) -> tuple[dict[int, MemberInfo], bytes]:
    if len(data) < _SNAP_HEAD.size:
        raise EnvelopeError("snapshot shorter than its header")
    magic, version, size = _SNAP_HEAD.unpack_from(data)
    if magic != _SNAP_MAGIC or version != VERSION:
        raise EnvelopeError("unknown snapshot envelope")
    start = _SNAP_HEAD.size
    try:
        doc = json.loads(data[start : start + size])
    except ValueError as exc:
        raise EnvelopeError(f"snapshot members unreadable: {exc}") from exc
    members = {
        int(k): MemberInfo(name=v["name"], grpc=v["grpc"], http=v["http"]) for k, v in doc.items()
    }
    return members, data[start + size :]

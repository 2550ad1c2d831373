"""docs/api.md documents every WebSocket message the server can send: each
``"type"`` the hub writes (read from api/ws.py's source) has a row in the
message table, and the table lists no type the server never sends."""

from __future__ import annotations

import re
from pathlib import Path

from exchange_node.api import ws

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def sent_types(source: str) -> set[str]:
    return set(re.findall(r'"type":\s*"([a-z_]+)"', source))


def documented_types(doc: str) -> set[str]:
    section = doc.split("## WebSocket", 1)[1]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M)) - {"type"}  # the header


def test_every_websocket_message_type_is_documented() -> None:
    sent = sent_types(Path(ws.__file__).read_text())
    assert {"hello", "subscribed", "pong", "snapshot", "delta", "stats", "error"} <= sent
    assert sent == documented_types(DOC.read_text())


def test_the_check_sees_a_missing_row() -> None:
    doc = DOC.read_text().replace("| `pong` |", "| pong |")
    assert "pong" not in documented_types(doc)

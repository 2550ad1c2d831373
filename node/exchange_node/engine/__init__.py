"""The exchange state machine: commands, events, the matching engine, snapshots.

Deterministic by construction: no clock, no randomness, no environment. The
same committed log gives byte-identical state (and ``state_hash``) on every
replica.

- ``commands``: the command records, ``encode_batch`` / ``decode_batch`` (one
  Raft entry = one batch) and ``validate_format`` (the API's pre-check).
- ``events``: ``Accepted``, ``Rejected``, ``Fill``, ``Cancelled``, ``Expired``,
  ``Replaced``, ``BookUpdate``, ``TradingStatus`` and ``CommandResult``.
- ``state``: ``EngineState`` (books, orders, positions, retention tables,
  counters) and its full invariant check, ``check_invariants``.
- ``engine``: ``Engine``, the write path (apply, snapshot / restore /
  state_hash); its module docstring states the rules.
- ``queries``: ``EngineQueries``, the read side ``Engine`` inherits.
- ``book``: one symbol's price levels.
- ``views``: what queries return (``OrderView``, ``Position``, ``Depth``, ...).
- ``snapshot``: the canonical snapshot format.
"""

from exchange_node.engine.commands import (
    AddSymbol,
    Cancel,
    CancelReplace,
    Command,
    CommandDecodeError,
    CommandEncodeError,
    HaltSymbol,
    MassCancel,
    NewOrder,
    OrderType,
    Rejection,
    RejectReason,
    ResumeSymbol,
    SelfTradeMode,
    SetOrderLimits,
    SetRetention,
    SetRiskLimits,
    Side,
    SymbolSpec,
    TimeInForce,
    decode_batch,
    encode_batch,
    validate_format,
)
from exchange_node.engine.engine import Engine, tune_garbage_collector
from exchange_node.engine.events import CommandResult, Status
from exchange_node.engine.snapshot import SnapshotError
from exchange_node.engine.views import RiskLimits

__all__ = [
    "AddSymbol",
    "Cancel",
    "CancelReplace",
    "Command",
    "CommandDecodeError",
    "CommandEncodeError",
    "CommandResult",
    "Engine",
    "HaltSymbol",
    "MassCancel",
    "NewOrder",
    "OrderType",
    "RejectReason",
    "Rejection",
    "ResumeSymbol",
    "RiskLimits",
    "SelfTradeMode",
    "SetOrderLimits",
    "SetRetention",
    "SetRiskLimits",
    "Side",
    "SnapshotError",
    "Status",
    "SymbolSpec",
    "TimeInForce",
    "decode_batch",
    "encode_batch",
    "tune_garbage_collector",
    "validate_format",
]

"""Engine results and events as the JSON a client sees.

A client sees its own orders in full, but never another client's id: fills
are shown from one side (``order_id`` and ``liquidity`` MAKER or TAKER), and
the public trade feed carries no client or order ids at all.
"""

from __future__ import annotations

from typing import Any

from exchange_node.engine.commands import RejectReason
from exchange_node.engine.events import (
    BookUpdate,
    CommandResult,
    Fill,
    Rejected,
    Status,
    TradingStatus,
)

from . import errors

# Which request field an engine rejection is about (None: no single field).
REJECT_FIELD: dict[RejectReason, str | None] = {
    RejectReason.UNKNOWN_SYMBOL: "symbol",
    RejectReason.INVALID_QUANTITY: "quantity",
    RejectReason.QUANTITY_OFF_LOT: "quantity",
    RejectReason.INVALID_PRICE: "price",
    RejectReason.PRICE_OFF_TICK: "price",
    RejectReason.PRICE_BAND: "price",
    RejectReason.RISK_MAX_ORDER_QTY: "quantity",
    RejectReason.RISK_MAX_NOTIONAL: "quantity",
    RejectReason.RISK_MAX_POSITION: "quantity",
    RejectReason.POST_ONLY_WOULD_TAKE: "post_only",
    RejectReason.DUPLICATE_CLIENT_ORDER_ID: "client_order_id",
    RejectReason.SYMBOL_HALTED: "symbol",
}

_REJECT_CODE = {reason: reason.name.lower() for reason in RejectReason}


def public_trade(fill: Fill) -> dict[str, Any]:
    return {
        "trade_id": fill.trade_id,
        "symbol": fill.symbol,
        "price": fill.price,
        "quantity": fill.quantity,
        "aggressor_side": fill.aggressor_side.name,
        "timestamp_ns": fill.timestamp_ns,
    }


def own_fill(fill: Fill, order_id: int, liquidity: str) -> dict[str, Any]:
    return {
        "type": "fill",
        "trade_id": fill.trade_id,
        "order_id": order_id,
        "symbol": fill.symbol,
        "price": fill.price,
        "quantity": fill.quantity,
        "aggressor_side": fill.aggressor_side.name,
        "liquidity": liquidity,
        "timestamp_ns": fill.timestamp_ns,
    }


def own_events(events: list[Any], client_id: str) -> list[dict[str, Any]]:
    """The events of one result that concern ``client_id``, as that client sees them."""
    out: list[dict[str, Any]] = []
    for event in events:
        if type(event) is Fill:
            if event.taker_client_id == client_id:
                out.append(own_fill(event, event.taker_order_id, "TAKER"))
            if event.maker_client_id == client_id:
                out.append(own_fill(event, event.maker_order_id, "MAKER"))
        elif type(event) is BookUpdate or type(event) is TradingStatus:
            continue
        elif getattr(event, "client_id", None) == client_id:
            out.append(event.to_dict())
    return out


def result_body(result: CommandResult, client_id: str) -> dict[str, Any]:
    return {
        "log_index": result.log_index,
        "order_id": result.order_id,
        "status": result.status.name,
        "events": own_events(result.events, client_id),
    }


def rejection_of(result: CommandResult) -> Rejected | None:
    if result.status is not Status.REJECTED:
        return None
    for event in result.events:
        if type(event) is Rejected:
            return event
    return None


def result_answer(result: CommandResult, client_id: str) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for one command's result.

    200: the command took effect (whatever the order's state). Rejected by the
    engine: 404 for an unknown order, 422 otherwise, with the error and the
    result (the rejection is itself in the log, and a retry returns it again).
    """
    body = result_body(result, client_id)
    rejected = rejection_of(result)
    if result.status is not Status.REJECTED:
        return 200, body
    reason = rejected.reason if rejected is not None else RejectReason.INVALID_FIELD
    message = rejected.message if rejected is not None else "rejected"
    status = 404 if reason is RejectReason.UNKNOWN_ORDER else 422
    return status, {
        "error": {
            "code": _REJECT_CODE.get(reason, errors.INVALID_VALUE),
            "message": message,
            "field": REJECT_FIELD.get(reason),
            "reason": reason.name,
        },
        "result": body,
    }

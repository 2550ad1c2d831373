"""Read-side views: the engine's query records turned into the API's JSON.

The only module that calls the engine's query methods, so a change there is
a change here only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exchange_node.service import NodeStatus

from .present import public_trade


def symbol_specs(engine: Any) -> Mapping[str, Any]:
    """Listed symbols -> their ``SymbolSpec`` (tick_size, lot_size, ...)."""
    specs: Mapping[str, Any] = engine.symbols()
    return specs


def symbols_view(
    engine: Any, price_scales: Mapping[str, int] | None = None, default_price_scale: int = 100
) -> list[dict[str, Any]]:
    """Each symbol with ``price_scale``: price units per unit of the quote currency
    (a price of 19_012 with scale 100 is 190.12)."""
    scales = price_scales or {}
    return [
        {
            "symbol": spec.symbol,
            "price_scale": scales.get(spec.symbol, default_price_scale),
            "tick_size": spec.tick_size,
            "lot_size": spec.lot_size,
            "price_band_bps": spec.price_band_bps,
            "reference_price": spec.reference_price,
            "halted": spec.halted,
        }
        for spec in symbol_specs(engine).values()
    ]


def order_owner(engine: Any, order_id: int) -> str | None:
    order = engine.order(order_id)
    return None if order is None else order.client_id


def order_symbol(engine: Any, order_id: int) -> str | None:
    order = engine.order(order_id)
    return None if order is None else order.symbol


def order_symbol_by_client_id(engine: Any, client_id: str, client_order_id: str) -> str | None:
    order = engine.order_by_client_id(client_id, client_order_id)
    return None if order is None else order.symbol


def order_view(engine: Any, order_id: int) -> dict[str, Any] | None:
    order = engine.order(order_id)
    return None if order is None else order.to_dict()


def order_view_by_client_id(
    engine: Any, client_id: str, client_order_id: str
) -> dict[str, Any] | None:
    order = engine.order_by_client_id(client_id, client_order_id)
    return None if order is None else order.to_dict()


def open_orders_view(engine: Any, client_id: str, symbol: str | None) -> list[dict[str, Any]]:
    return [order.to_dict() for order in engine.open_orders(client_id, symbol)]


def book_view(engine: Any, symbol: str, depth: int) -> dict[str, Any]:
    view = engine.depth(symbol, depth)
    return {
        "symbol": symbol,
        "seq": view.seq,
        "bids": [[price, quantity] for price, quantity in view.bids],
        "asks": [[price, quantity] for price, quantity in view.asks],
    }


def bbo_view(engine: Any, symbol: str) -> dict[str, Any]:
    bbo = engine.best_bid_offer(symbol)
    return {
        "symbol": symbol,
        "bid_price": bbo.bid_price,
        "bid_quantity": bbo.bid_quantity,
        "ask_price": bbo.ask_price,
        "ask_quantity": bbo.ask_quantity,
        "seq": bbo.seq,
    }


def trades_view(engine: Any, symbol: str, limit: int) -> list[dict[str, Any]]:
    return [public_trade(fill) for fill in engine.recent_trades(symbol, limit)]


def positions_view(engine: Any, client_id: str) -> dict[str, dict[str, Any]]:
    positions: Mapping[str, Any] = engine.positions(client_id)
    return {symbol: position.to_dict() for symbol, position in positions.items()}


def analytics_view(engine: Any, symbol: str) -> dict[str, Any]:
    analytics = engine.analytics(symbol)
    return {
        "symbol": symbol,
        "trade_count": analytics.trade_count,
        "volume": analytics.volume,
        "notional": analytics.notional,
        "vwap": analytics.vwap,
        "last_price": analytics.last_price,
        "candles": {
            str(interval): [candle.to_dict() for candle in candles]
            for interval, candles in analytics.candles.items()
        },
    }


def cluster_view(status: NodeStatus) -> dict[str, Any]:
    """The public view of the cluster from this node: no tokens, no state hashes."""
    members = []
    for member in status.members:
        if member.id == status.leader:
            role = "leader"
        elif member.voter:
            role = "follower"
        else:
            role = "learner"
        if member.id == status.node_id:
            role = status.role
        members.append(
            {
                "id": member.id,
                "name": member.name,
                "role": role,
                "voter": member.voter,
                "http_address": member.http_address,
                "match_index": member.match_index,
                "lag": member.lag,
                "healthy": member.healthy,
                "regressions": member.regressions,
                "stuck": member.stuck,
            }
        )
    return {
        "node_id": status.node_id,
        "name": status.name,
        "role": status.role,
        "term": status.term,
        "leader": status.leader,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "recovering": status.recovering,
        "recovery_verdict": status.recovery_verdict,
        "members": members,
    }

"""The OpenAPI 3.1 document served at /openapi.json.

Request schemas come from ``schema.py`` (the same declarations the
validators are built from); the paths are exactly ``app.ROUTES``. A test
sends a real request to every documented operation and checks the status is
documented and the body matches, and that every real route is documented.
"""

from __future__ import annotations

from typing import Any

from exchange_node import __version__
from exchange_node.engine.commands import RejectReason
from exchange_node.engine.events import Status

from . import schema
from .config import ApiConfig

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(name_or_schema: str | dict[str, Any], description: str) -> dict[str, Any]:
    body = _ref(name_or_schema) if isinstance(name_or_schema, str) else name_or_schema
    return {"description": description, "content": {"application/json": {"schema": body}}}


_INT = {"type": "integer"}
_NULLABLE_INT = {"type": ["integer", "null"]}
_STR = {"type": "string"}


def _obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, **extra}
    out["required"] = list(props) if required is None else required
    return out


def _components(config: ApiConfig) -> dict[str, Any]:
    batch = schema.BATCH.openapi()
    batch["properties"]["orders"]["maxItems"] = config.max_batch
    event = {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {
                "type": "string",
                "enum": ["accepted", "rejected", "fill", "cancelled", "expired", "replaced"],
            }
        },
        "additionalProperties": True,
        "description": "An engine event about one of your orders (see docs/api.md).",
    }
    result = _obj(
        {
            "log_index": _INT,
            "order_id": _NULLABLE_INT,
            "status": {"type": "string", "enum": [s.name for s in Status]},
            "events": {"type": "array", "items": _ref("Event")},
        },
        additionalProperties=False,
    )
    error_detail = _obj(
        {
            "code": _STR,
            "message": _STR,
            "field": {"type": ["string", "null"]},
            "reason": {"type": "string", "enum": [r.name for r in RejectReason]},
            "leader": _INT,
            "leader_address": _STR,
        },
        required=["code", "message", "field"],
        additionalProperties=False,
    )
    error = _obj(
        {"error": _ref("ErrorDetail"), "result": _ref("CommandResult")},
        required=["error"],
        additionalProperties=False,
        description="Every error. ``result`` is present when the engine rejected the "
        "command (the rejection is in the log; a retry returns it again).",
    )
    rejected_item = _obj(
        {"status": _INT, "error": _ref("ErrorDetail"), "result": _ref("CommandResult")},
        additionalProperties=False,
    )
    order_view = _obj(
        {
            "order_id": _INT,
            "client_id": _STR,
            "client_order_id": _STR,
            "symbol": _STR,
            "side": {"type": "string", "enum": ["BUY", "SELL"]},
            "order_type": {"type": "string", "enum": ["LIMIT", "MARKET"]},
            "time_in_force": {"type": "string", "enum": ["GTC", "IOC", "FOK"]},
            "price": _INT,
            "quantity": _INT,
            "filled_quantity": _INT,
            "leaves_quantity": _INT,
            "status": {"type": "string", "enum": [s.name for s in Status]},
            "post_only": {"type": "boolean"},
            "stp": {"type": "string", "enum": ["CANCEL_RESTING", "CANCEL_INCOMING", "CANCEL_BOTH"]},
        },
        additionalProperties=False,
    )
    level = {
        "type": "array",
        "items": _INT,
        "minItems": 2,
        "maxItems": 2,
        "description": "[price, total open quantity]",
    }
    trade = _obj(
        {
            "trade_id": _INT,
            "symbol": _STR,
            "price": _INT,
            "quantity": _INT,
            "aggressor_side": {"type": "string", "enum": ["BUY", "SELL"]},
            "timestamp_ns": _INT,
        },
        additionalProperties=False,
    )
    position = _obj(
        {
            name: _INT
            for name in (
                "quantity",
                "open_cost",
                "realised_pnl",
                "bought_quantity",
                "sold_quantity",
                "open_buy_quantity",
                "open_sell_quantity",
            )
        },
        additionalProperties=False,
    )
    candle = _obj(
        {
            name: _INT
            for name in (
                "start_ns",
                "interval_ns",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "notional",
            )
        },
        additionalProperties=False,
    )
    member = _obj(
        {
            "id": _INT,
            "name": _STR,
            "role": _STR,
            "voter": {"type": "boolean"},
            "http_address": _STR,
            "match_index": _INT,
            "lag": _INT,
            "healthy": {"type": "boolean"},
            "regressions": {
                **_INT,
                "description": "Times the leader found this member's log shorter than it "
                "believed (a lost tail); it is unhealthy until it caught up again.",
            },
            "stuck": {
                **_STR,
                "description": "Why the member is stuck behind, empty when it is not: "
                "applying (applied short of commit), behind (connected, log not keeping "
                "up) or silent (no message and no digest), each for STUCK_S (10 s).",
            },
        },
        additionalProperties=False,
    )
    return {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key; it decides your client id.",
            }
        },
        "schemas": {
            "NewOrder": schema.NEW_ORDER.openapi(),
            "Batch": batch,
            "Replace": schema.REPLACE.openapi(),
            "MassCancel": schema.MASS_CANCEL.openapi(),
            "Event": event,
            "CommandResult": result,
            "ErrorDetail": error_detail,
            "Error": error,
            "BatchResult": _obj(
                {
                    "results": {
                        "type": "array",
                        "items": {"anyOf": [_ref("CommandResult"), rejected_item]},
                    }
                },
                additionalProperties=False,
            ),
            "Order": order_view,
            "OrderList": _obj(
                {"orders": {"type": "array", "items": _ref("Order")}}, additionalProperties=False
            ),
            "Symbols": _obj(
                {
                    "symbols": {
                        "type": "array",
                        "items": _obj(
                            {
                                "symbol": _STR,
                                "price_scale": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "description": "Price units per unit of the quote "
                                    "currency: a price of 19012 with price_scale 100 is 190.12.",
                                },
                                "tick_size": _INT,
                                "lot_size": _INT,
                                "price_band_bps": _INT,
                                "reference_price": _INT,
                                "halted": {"type": "boolean"},
                            },
                            additionalProperties=False,
                        ),
                    }
                },
                additionalProperties=False,
            ),
            "Book": _obj(
                {
                    "symbol": _STR,
                    "seq": _INT,
                    "bids": {"type": "array", "items": level},
                    "asks": {"type": "array", "items": level},
                },
                additionalProperties=False,
            ),
            "Trades": _obj(
                {"symbol": _STR, "trades": {"type": "array", "items": trade}},
                additionalProperties=False,
            ),
            "BestBidOffer": _obj(
                {
                    "symbol": _STR,
                    "bid_price": _NULLABLE_INT,
                    "bid_quantity": _INT,
                    "ask_price": _NULLABLE_INT,
                    "ask_quantity": _INT,
                    "seq": _INT,
                },
                additionalProperties=False,
            ),
            "Positions": _obj(
                {
                    "client_id": _STR,
                    "positions": {"type": "object", "additionalProperties": position},
                },
                additionalProperties=False,
            ),
            "Analytics": _obj(
                {
                    "symbol": _STR,
                    "trade_count": _INT,
                    "volume": _INT,
                    "notional": _INT,
                    "vwap": {"type": ["number", "null"]},
                    "last_price": _NULLABLE_INT,
                    "candles": {
                        "type": "object",
                        "description": "interval in ns -> candles, oldest first",
                        "additionalProperties": {"type": "array", "items": candle},
                    },
                },
                additionalProperties=False,
            ),
            "ClusterMembers": _obj(
                {
                    "node_id": _INT,
                    "leader": _INT,
                    "members": {
                        "type": "array",
                        "items": _obj(
                            {
                                "id": _INT,
                                "name": _STR,
                                "voter": {"type": "boolean"},
                                "http_address": _STR,
                                "reachable": {"type": "boolean"},
                                "error": {"type": ["string", "null"]},
                                "role": {"type": ["string", "null"]},
                                "term": _NULLABLE_INT,
                                "leader": _NULLABLE_INT,
                                "commit_index": _NULLABLE_INT,
                                "applied_index": _NULLABLE_INT,
                                "lag": _NULLABLE_INT,
                            },
                            additionalProperties=False,
                        ),
                    },
                },
                additionalProperties=False,
                description="Each member's own view (role, term, commit and applied index), "
                "fetched by this node; lag as the leader sees it.",
            ),
            "Cluster": _obj(
                {
                    "node_id": _INT,
                    "name": _STR,
                    "role": _STR,
                    "term": _INT,
                    "leader": _INT,
                    "commit_index": _INT,
                    "applied_index": _INT,
                    "recovering": {
                        **_INT,
                        "description": "Nonzero while this node recovers a lost log tail: "
                        "the index it must get back before it helps elect a leader "
                        "(docs/recovery.md).",
                    },
                    "recovery_verdict": {
                        "type": "string",
                        "enum": [
                            "clean",
                            "torn_unacknowledged",
                            "lost_acknowledged_tail",
                            "corruption",
                        ],
                        "description": "What this node's storage found when it started.",
                    },
                    "members": {"type": "array", "items": member},
                },
                additionalProperties=False,
            ),
        },
    }


TAGS = [
    {"name": "orders", "description": "Submit, cancel, replace and read your orders (API key)."},
    {"name": "positions", "description": "Your positions per symbol (API key)."},
    {
        "name": "market data",
        "description": "Symbols, books, trades, best bid and offer, analytics and candles "
        "(public unless public_market_data is off).",
    },
    {"name": "cluster", "description": "Which member leads, terms, commit and applied indexes."},
    {"name": "streaming", "description": "The WebSocket: market data, your events, order entry."},
    {"name": "meta", "description": "This document."},
]

TAG_OF = {
    "newOrder": "orders",
    "openOrders": "orders",
    "newOrderBatch": "orders",
    "massCancel": "orders",
    "getOrderByClientId": "orders",
    "cancelOrderByClientId": "orders",
    "replaceOrderByClientId": "orders",
    "getOrder": "orders",
    "cancelOrder": "orders",
    "replaceOrder": "orders",
    "positions": "positions",
    "symbols": "market data",
    "book": "market data",
    "trades": "market data",
    "bbo": "market data",
    "analytics": "market data",
    "cluster": "cluster",
    "clusterMembers": "cluster",
    "websocket": "streaming",
    "openapi": "meta",
}

DESCRIPTIONS = {
    "newOrder": "Places one LIMIT or MARKET order. The answer comes once the order is "
    "committed by a majority and applied: its state and every event (accepted, fills, ...). "
    "Send a client_order_id to make retries safe: the same id is never applied twice, and a "
    "retry answers with the first outcome.",
    "openOrders": "Your resting orders, optionally in one symbol.",
    "newOrderBatch": "Up to max_batch orders proposed as one log entry (one fsync, one round "
    "of replication); each has its own result, in order. A batch costs one rate-limit token "
    "per order. A key that has spent half its burst is at its limit: its batch is proposed in "
    "pieces of 100 orders spaced at its rate (other clients' orders may fall between them), "
    "and a piece that fails stops the rest, each of whose orders then carries that error.",
    "massCancel": "Cancels all your resting orders, in one symbol or all (empty body).",
    "getOrderByClientId": "One of your orders by the client order id you gave it.",
    "cancelOrderByClientId": "Cancels one of your orders by its client order id.",
    "replaceOrderByClientId": "Cancel-replace by client order id: a new price and total "
    "quantity; the order loses its time priority unless only the quantity goes down.",
    "getOrder": "One of your orders, live or recently finished.",
    "cancelOrder": "Cancels one of your orders.",
    "replaceOrder": "Cancel-replace: a new price and total quantity (see the by-client-id form).",
    "positions": "Your net quantity, open cost and realised P&L per symbol, in price units.",
    "symbols": "Every listed symbol: price_scale (price units per unit of the quote "
    "currency), tick and lot sizes, the price band around the reference price, halted.",
    "book": "The top levels of each side, best first, as [price, quantity], with the book's "
    "seq (the WebSocket's book deltas continue from it).",
    "trades": "The most recent trades, oldest first; the aggressor's side is the taker's.",
    "bbo": "Best bid and offer with their quantities; null prices on an empty side.",
    "analytics": "Trade count, volume, notional, VWAP, last price and OHLCV candles per "
    "interval (keys are the interval in nanoseconds).",
    "cluster": "This node's view: its role and term, the leader, commit and applied indexes, "
    "and each member with its lag as this node knows it (a leader knows every follower's).",
    "clusterMembers": "Every member's own view, fetched by this node from each member's "
    "/v1/cluster with a short timeout and shared between callers for a quarter second, so a "
    "browser behind a port-forward, an ingress or HTTPS needs to reach one node only. A "
    "member that does not answer is listed with reachable false and the reason.",
    "websocket": "Upgrade to a WebSocket. Subscribe to book:SYMBOL (snapshot, then deltas "
    "by seq), trades:SYMBOL, bbo:SYMBOL and orders (your own events, with a key); send orders "
    "with op order. docs/api.md lists every message.",
    "openapi": "This OpenAPI 3.1 document (the page at /api renders it).",
}

_ORDER_EXAMPLE = {
    "symbol": "AAPL",
    "side": "BUY",
    "order_type": "LIMIT",
    "price": 19012,
    "quantity": 10,
    "time_in_force": "GTC",
    "client_order_id": "my-order-1",
}

REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "NewOrder": {
        "limit": {"summary": "A limit buy of 10 at 190.12", "value": _ORDER_EXAMPLE},
        "market": {
            "summary": "A market sell of 5",
            "value": {"symbol": "AAPL", "side": "SELL", "order_type": "MARKET", "quantity": 5},
        },
    },
    "Batch": {
        "two": {
            "summary": "Two orders in one log entry",
            "value": {
                "orders": [
                    {**_ORDER_EXAMPLE, "client_order_id": "b-1"},
                    {**_ORDER_EXAMPLE, "side": "SELL", "price": 19030, "client_order_id": "b-2"},
                ]
            },
        }
    },
    "Replace": {
        "reprice": {"summary": "New price and quantity", "value": {"price": 19010, "quantity": 8}}
    },
    "MassCancel": {
        "one_symbol": {"summary": "Everything resting in AAPL", "value": {"symbol": "AAPL"}},
        "all": {"summary": "Everything", "value": {}},
    },
}

RESPONSE_EXAMPLES: dict[str, Any] = {
    "symbols": {
        "symbols": [
            {
                "symbol": "AAPL",
                "price_scale": 100,
                "tick_size": 1,
                "lot_size": 1,
                "price_band_bps": 1000,
                "reference_price": 19000,
                "halted": False,
            }
        ]
    },
    "book": {"symbol": "AAPL", "seq": 42, "bids": [[19012, 10]], "asks": [[19030, 4]]},
    "bbo": {
        "symbol": "AAPL",
        "bid_price": 19012,
        "bid_quantity": 10,
        "ask_price": 19030,
        "ask_quantity": 4,
        "seq": 42,
    },
    "clusterMembers": {
        "node_id": 1,
        "leader": 2,
        "members": [
            {
                "id": 1,
                "name": "node-1",
                "voter": True,
                "http_address": "127.0.0.1:8080",
                "reachable": True,
                "error": None,
                "role": "follower",
                "term": 3,
                "leader": 2,
                "commit_index": 1200,
                "applied_index": 1200,
                "lag": 0,
            },
            {
                "id": 3,
                "name": "node-3",
                "voter": True,
                "http_address": "127.0.0.1:8082",
                "reachable": False,
                "error": "no answer within 0.5 s",
                "role": None,
                "term": None,
                "leader": None,
                "commit_index": None,
                "applied_index": None,
                "lag": 950,
            },
        ],
    },
}


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


_R400 = _error("Bad input: the body names the field and the problem.")
_R401 = _error("Missing or invalid API key.")
_R403 = _error("The order belongs to another client.")
_R404 = _error("No such order (or symbol).")
_R413 = _error("Body larger than the limit, or a batch with too many orders.")
_R415 = _error("Content-Type is not application/json.")
_R421 = _error("Not the leader (only with follower_writes=redirect): error.leader_address.")
_R422 = _error("The engine rejected the command (risk, price band, halted, ...).")
_R429 = _error("Rate limit for this key exceeded; see Retry-After.")
_R503 = _error("Overloaded, no leader or no quorum; see Retry-After. Nothing was done.")
_R504 = _error("Timed out: the outcome is unknown; retrying with the same client_order_id is safe.")

_CONSISTENCY = {
    "name": "consistency",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["linearizable", "stale"], "default": "linearizable"},
    "description": "linearizable (default): a ReadIndex barrier first; stale: this replica as is.",
}


def _path_param(name: str, param_schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": param_schema,
        "description": description,
    }


_ORDER_ID = _path_param(
    "order_id",
    {"type": "integer", "minimum": 1, "maximum": schema.UINT64_MAX},
    "The exchange's order id.",
)
_CLIENT_ORDER_ID = _path_param(
    "client_order_id",
    {"type": "string", "pattern": schema.CLIENT_ORDER_ID_PATTERN},
    "Your client order id.",
)
_SYMBOL = _path_param("symbol", {"type": "string"}, "A listed symbol.")


def _write_responses(ok: str, ok_schema: str, *, rejections: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": _json(ok_schema, ok),
        "400": _R400,
        "401": _R401,
        "413": _R413,
        "415": _R415,
        "421": _R421,
        "429": _R429,
        "503": _R503,
        "504": _R504,
    }
    if rejections:
        out["422"] = _R422
    return out


READ_SCHEMAS = (
    "Order",
    "OrderList",
    "Symbols",
    "Book",
    "Trades",
    "BestBidOffer",
    "Positions",
    "Analytics",
)
"""Answers of reads: each carries ``read`` (ReadMark) and the X-Consistency and
X-Applied-Index headers."""

_READ_HEADERS = {
    "X-Consistency": {
        "description": "linearizable (ReadIndex: everything committed before the request) "
        "or stale (this replica's state, ?consistency=stale).",
        "schema": {"type": "string", "enum": ["linearizable", "stale"]},
    },
    "X-Applied-Index": {
        "description": "The last log index applied to the state this answer was read from.",
        "schema": _INT,
    },
}


def _with_read_marks(components: dict[str, Any]) -> dict[str, Any]:
    schemas = components["schemas"]
    schemas["ReadMark"] = _obj(
        {
            "consistency": _READ_HEADERS["X-Consistency"]["schema"],
            "applied_index": _INT,
        },
        additionalProperties=False,
        description="What a read reflects: its consistency and the applied log index "
        "(also in the X-Consistency and X-Applied-Index headers).",
    )
    for name in READ_SCHEMAS:
        schemas[name]["properties"]["read"] = _ref("ReadMark")
    return components


def _read_responses(ok_schema: str, ok: str, *, auth: bool) -> dict[str, Any]:
    answer = _json(ok_schema, ok)
    answer["headers"] = _READ_HEADERS
    out: dict[str, Any] = {
        "200": answer,
        "400": _R400,
        "429": _R429,
        "503": _R503,
        "504": _R504,
    }
    if auth:
        out["401"] = _R401
    else:
        out["401"] = _error("An invalid API key was sent (none is needed here).")
    return out


def _body(name: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


def build_openapi(config: ApiConfig) -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    public: list[dict[str, list[str]]] = (
        [{}, {"bearer": []}] if config.public_market_data else secured
    )
    market = not config.public_market_data

    def op(
        summary: str, responses: dict[str, Any], *, security: Any, **extra: Any
    ) -> dict[str, Any]:
        operation = {"summary": summary, "security": security, "responses": responses}
        operation.update(extra)
        name = operation["operationId"]
        operation["tags"] = [TAG_OF[name]]
        operation["description"] = DESCRIPTIONS[name]
        body = operation.get("requestBody")
        if body is not None:
            ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            body["content"]["application/json"]["examples"] = REQUEST_EXAMPLES[ref]
        ok = responses.get("200", {}).get("content", {}).get("application/json")
        if ok is not None and name in RESPONSE_EXAMPLES:
            ok["example"] = RESPONSE_EXAMPLES[name]
        return operation

    new_order = _write_responses("The order's result (its state and events).", "CommandResult")
    batch = _write_responses(
        "One result per order, in order (rejected ones carry status, error and result).",
        "BatchResult",
        rejections=False,
    )
    cancel = _write_responses("The cancel's result.", "CommandResult")
    cancel["403"] = _R403
    cancel["404"] = _R404
    cancel_by_coid = _write_responses("The cancel's result.", "CommandResult")
    cancel_by_coid["404"] = _R404
    replace = _write_responses("The replace's result.", "CommandResult")
    replace["403"] = _R403
    replace["404"] = _R404
    replace_by_coid = _write_responses("The replace's result.", "CommandResult")
    replace_by_coid["404"] = _R404
    mass_cancel = _write_responses("The mass cancel's result.", "CommandResult")
    get_order = _read_responses("Order", "The order (live, or recently finished).", auth=True)
    get_order["403"] = _R403
    get_order["404"] = _R404
    get_order_by_coid = _read_responses("Order", "The order.", auth=True)
    get_order_by_coid["404"] = _R404
    symbol_read = {"404": _R404}

    paths: dict[str, Any] = {
        "/v1/orders": {
            "post": op(
                "Submit one order",
                new_order,
                security=secured,
                operationId="newOrder",
                requestBody=_body("NewOrder"),
            ),
            "get": op(
                "Your open orders",
                _read_responses("OrderList", "Your live orders, by order id.", auth=True),
                security=secured,
                operationId="openOrders",
                parameters=[
                    {
                        "name": "symbol",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                    _CONSISTENCY,
                ],
            ),
        },
        "/v1/orders/batch": {
            "post": op(
                f"Submit up to {config.max_batch} orders (one log entry unless the key is at its limit)",
                batch,
                security=secured,
                operationId="newOrderBatch",
                requestBody=_body("Batch"),
            )
        },
        "/v1/orders/mass-cancel": {
            "post": op(
                "Cancel all your live orders (in one symbol or all)",
                mass_cancel,
                security=secured,
                operationId="massCancel",
                requestBody=_body("MassCancel", required=False),
            )
        },
        "/v1/orders/by-client-id/{client_order_id}": {
            "parameters": [_CLIENT_ORDER_ID],
            "get": op(
                "One of your orders by client order id",
                get_order_by_coid,
                security=secured,
                operationId="getOrderByClientId",
                parameters=[_CONSISTENCY],
            ),
            "delete": op(
                "Cancel one of your orders by client order id",
                cancel_by_coid,
                security=secured,
                operationId="cancelOrderByClientId",
            ),
        },
        "/v1/orders/by-client-id/{client_order_id}/replace": {
            "parameters": [_CLIENT_ORDER_ID],
            "post": op(
                "Cancel-replace one of your orders by client order id",
                replace_by_coid,
                security=secured,
                operationId="replaceOrderByClientId",
                requestBody=_body("Replace"),
            ),
        },
        "/v1/orders/{order_id}": {
            "parameters": [_ORDER_ID],
            "get": op(
                "One of your orders",
                get_order,
                security=secured,
                operationId="getOrder",
                parameters=[_CONSISTENCY],
            ),
            "delete": op(
                "Cancel one of your orders", cancel, security=secured, operationId="cancelOrder"
            ),
        },
        "/v1/orders/{order_id}/replace": {
            "parameters": [_ORDER_ID],
            "post": op(
                "Cancel-replace one of your orders (new price and total quantity)",
                replace,
                security=secured,
                operationId="replaceOrder",
                requestBody=_body("Replace"),
            ),
        },
        "/v1/positions": {
            "get": op(
                "Your positions by symbol",
                _read_responses("Positions", "Your positions.", auth=True),
                security=secured,
                operationId="positions",
                parameters=[_CONSISTENCY],
            )
        },
        "/v1/symbols": {
            "get": op(
                "Listed symbols and their trading parameters",
                _read_responses("Symbols", "The symbols.", auth=market),
                security=public,
                operationId="symbols",
                parameters=[_CONSISTENCY],
            )
        },
        "/v1/book/{symbol}": {
            "parameters": [_SYMBOL],
            "get": op(
                "Level-2 book: the top levels per side, best first, with the book seq",
                {**_read_responses("Book", "The book.", auth=market), **symbol_read},
                security=public,
                operationId="book",
                parameters=[
                    {
                        "name": "depth",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": config.max_depth,
                            "default": config.default_depth,
                        },
                    },
                    _CONSISTENCY,
                ],
            ),
        },
        "/v1/trades/{symbol}": {
            "parameters": [_SYMBOL],
            "get": op(
                "Recent trades, oldest first",
                {**_read_responses("Trades", "The trades.", auth=market), **symbol_read},
                security=public,
                operationId="trades",
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": config.max_trades,
                            "default": config.default_trades,
                        },
                    },
                    _CONSISTENCY,
                ],
            ),
        },
        "/v1/bbo/{symbol}": {
            "parameters": [_SYMBOL],
            "get": op(
                "Best bid and offer",
                {**_read_responses("BestBidOffer", "The BBO.", auth=market), **symbol_read},
                security=public,
                operationId="bbo",
                parameters=[_CONSISTENCY],
            ),
        },
        "/v1/analytics/{symbol}": {
            "parameters": [_SYMBOL],
            "get": op(
                "Volume, VWAP, last price and candles",
                {**_read_responses("Analytics", "The analytics.", auth=market), **symbol_read},
                security=public,
                operationId="analytics",
                parameters=[_CONSISTENCY],
            ),
        },
        "/v1/cluster": {
            "get": op(
                "Public view of the cluster from this node (roles, commit, applied, lag)",
                {
                    "200": _json("Cluster", "This node and its members."),
                    "401": _error("An invalid API key was sent (none is needed here)."),
                    "429": _R429,
                },
                security=public,
                operationId="cluster",
            )
        },
        "/v1/cluster/members": {
            "get": op(
                "Every member's own status, fetched by this node (for browsers and proxies)",
                {
                    "200": _json("ClusterMembers", "Every member, reachable or not."),
                    "401": _error("An invalid API key was sent (none is needed here)."),
                    "429": _R429,
                },
                security=public,
                operationId="clusterMembers",
            )
        },
        "/v1/ws": {
            "get": op(
                "WebSocket: market data, your order events, order entry (see docs/api.md)",
                {
                    "101": {"description": "Switching to the WebSocket protocol."},
                    "400": _error("Not a WebSocket upgrade request."),
                    "401": _error("Invalid API key (a key is needed for orders)."),
                    "503": _error("Too many WebSocket connections on this node."),
                },
                security=public,
                operationId="websocket",
                parameters=[
                    {
                        "name": "token",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "The API key, for browsers that cannot set headers.",
                    }
                ],
            )
        },
        "/openapi.json": {
            "get": op(
                "This document",
                {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
                security=[{}],
                operationId="openapi",
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Raft exchange order API",
            "version": __version__,
            "description": "Orders, market data and a WebSocket stream (GET /v1/ws, see "
            "docs/api.md) of a Raft-replicated exchange. Prices and quantities are integers: "
            "a price is in the symbol's price units (GET /v1/symbols gives price_scale, the "
            "units per unit of the quote currency; 100 means cents) and a multiple of its "
            "tick_size; a quantity is a multiple of its lot_size. Any node answers any "
            "request; followers forward writes to the leader. A readable page of this "
            "document is served at /api.",
        },
        "tags": TAGS,
        "paths": paths,
        "components": _with_read_marks(_components(config)),
    }

"""The API's error answers: one JSON shape for every 4xx and 5xx it produces.

    {"error": {"code": "invalid_value", "message": "...", "field": "orders[3].price"}}

``field`` names the offending input (a JSON path into the body, a path or
query parameter, or a header) or is null when no single field is at fault.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from .jsonio import dumps

# Stable error codes (clients may switch on them).
MALFORMED_JSON = "malformed_json"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
BODY_TOO_LARGE = "body_too_large"
BATCH_TOO_LARGE = "batch_too_large"
MISSING_FIELD = "missing_field"
UNKNOWN_FIELD = "unknown_field"
INVALID_TYPE = "invalid_type"
INVALID_VALUE = "invalid_value"
UNKNOWN_SYMBOL = "unknown_symbol"
PRICE_OFF_TICK = "price_off_tick"
QUANTITY_OFF_LOT = "quantity_off_lot"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
OVERLOADED = "overloaded"
UNAVAILABLE = "unavailable"
NO_LEADER = "no_leader"
TIMEOUT = "timeout"
FORWARD_FAILED = "forward_failed"
TOO_MANY_IN_FLIGHT = "too_many_in_flight"
BODY_TIMEOUT = "body_timeout"

TIMEOUT_MESSAGE = (
    "the request was accepted but its outcome is unknown (not confirmed committed in time); "
    "retrying with the same client_order_id is safe: the exchange applies it at most once"
)


class ApiError(Exception):
    """An answer other than success, raised anywhere below a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        retry_after: float | None = None,
        extra: dict[str, Any] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.extra = extra
        self.close = close
        """Answer without reading the request's body and close the connection."""

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "field": self.field}
        if self.extra:
            error.update(self.extra)
        return {"error": error}

    def response(self) -> web.Response:
        headers = None
        if self.retry_after is not None:
            headers = {"Retry-After": retry_after_header(self.retry_after)}
        response = web.Response(
            body=dumps(self.body()),
            status=self.status,
            content_type="application/json",
            headers=headers,
        )
        if self.close:
            response.force_close()
        return response


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds; round up and never say 0."""
    return str(max(1, math.ceil(seconds)))


def bad_request(code: str, message: str, field: str | None = None) -> ApiError:
    return ApiError(400, code, message, field)


def no_leader(why: str, retry_after: float) -> ApiError:
    """503: no leader to take the request now (an election is under way)."""
    return ApiError(
        503, NO_LEADER, f"{why}; retry after the Retry-After delay", None, retry_after=retry_after
    )

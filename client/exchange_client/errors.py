"""Errors: one exception per kind of answer, each carrying the server's JSON error.

The API's error shape is ``{"error": {"code", "message", "field", ...}}``
(docs/api.md); the admin API's is ``{"error": "message", "field": ...}``.
Both become an ``ExchangeError`` with ``status``, ``code``, ``message`` and
``field`` (the offending input, or None).
"""

from __future__ import annotations

from typing import Any


class ExchangeError(Exception):
    """An answer other than success. ``body`` is the decoded JSON (or None)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body = body


class BadRequestError(ExchangeError):
    """400/404/405/408/413/415: the request itself is wrong; retrying will not help."""


class AuthError(ExchangeError):
    """401 or 403: no key, an unknown key, or someone else's order."""


class RejectedError(ExchangeError):
    """422: the engine rejected the command. ``reason`` is the engine's code
    (``SYMBOL_HALTED``, ``RISK_MAX_ORDER_QTY``...); ``result`` the logged result."""

    @property
    def reason(self) -> str | None:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(error, dict):
            return error.get("reason")
        return self.body.get("reason") if isinstance(self.body, dict) else None

    @property
    def result(self) -> Any:
        return self.body.get("result") if isinstance(self.body, dict) else None


class NotFoundError(BadRequestError):
    """404: no such order or symbol."""


class RateLimitedError(ExchangeError):
    """429 after the client's retries: ``retry_after`` seconds."""

    retry_after: float = 0.0


class NotLeaderError(ExchangeError):
    """421 (admin calls, or a node with ``follower_writes="redirect"``)."""


class UnavailableError(ExchangeError):
    """No node answered usefully after every retry (503, connection errors); nothing
    was done, or for writes the client could not find out: see ``OutcomeUnknownError``."""


class OutcomeUnknownError(ExchangeError):
    """A write was sent and every retry timed out (504 or a lost connection): it may or
    may not have been placed. Retrying with the same ``client_order_id`` is safe."""


def error_from(status: int, body: Any) -> ExchangeError:
    """The exception for an HTTP answer ``status`` with JSON ``body``."""
    code, message, field = f"http_{status}", "", None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
        field = error.get("field")
    elif isinstance(error, str):
        message = error
        field = body.get("field")
        if status == 422 and body.get("reason"):
            code = str(body["reason"]).lower()
    cls: type[ExchangeError]
    if status == 422:
        cls = RejectedError
    elif status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFoundError
    elif status == 421:
        cls = NotLeaderError
    elif status == 429:
        cls = RateLimitedError
    elif status == 504:
        cls = OutcomeUnknownError
    elif status in (502, 503) or status == 0:
        cls = UnavailableError
    else:
        cls = BadRequestError
    return cls(status, code, message or code, field, body)

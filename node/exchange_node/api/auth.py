"""Bearer-token authentication and per-key token-bucket rate limiting."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from . import errors
from .errors import ApiError

_BEARER = "bearer "

REFUSAL_LIMITS = (
    "rate_limit",
    "auth_failure",
    "in_flight",
    "ws_connections",
    "ws_slow_consumer",
    "body_timeout",
)
"""The per-client limits whose refusals a node counts (``exchange_api_refusals_total``)."""


def new_refusals() -> dict[str, int]:
    return dict.fromkeys(REFUSAL_LIMITS, 0)


def bearer_token(request: web.Request, *, allow_query: bool = False) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (or ``?token=`` when allowed)."""
    header = request.headers.get("Authorization")
    if header is not None:
        if header[:7].lower() != _BEARER:
            return ""
        return header[7:].strip()
    if allow_query:
        return request.query.get("token")
    return None


class TokenBucket:
    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.last = now


class RateLimiter:
    """One token bucket per key: ``rate`` tokens per second up to ``burst``.

    ``acquire`` returns 0 when the request may go ahead, otherwise how many
    seconds until it could (the Retry-After). Rate 0 disables the limit.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}

    def acquire(self, key: str, cost: float = 1.0) -> float:
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) > 100_000:
                self._forget_full_buckets(now)
            bucket = self.buckets[key] = TokenBucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.last) * self.rate)
            bucket.last = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate

    def _forget_full_buckets(self, now: float) -> None:
        # Anonymous (per-address) buckets could otherwise grow without bound.
        refill = self.burst / self.rate
        for key in [k for k, b in self.buckets.items() if now - b.last >= refill]:
            del self.buckets[key]


class Authenticator:
    """Maps tokens to client ids and applies the per-key rate limit; failed
    authentications are charged to their remote address (``failures``)."""

    def __init__(
        self,
        api_keys: dict[str, str],
        limiter: RateLimiter,
        failures: RateLimiter | None = None,
        refusals: dict[str, int] | None = None,
    ) -> None:
        self.api_keys = dict(api_keys)
        self.limiter = limiter
        self.failures = failures or RateLimiter(1.0, 20)
        self.refusals = new_refusals() if refusals is None else refusals

    def failed(self, request: web.Request) -> ApiError:
        """The answer to an unknown or malformed key: 401, or 429 once this address
        has failed more often than the failure limit allows (guessing keys is slow)."""
        wait = self.failures.acquire(f"addr:{request.remote}")
        if wait > 0:
            self.refusals["auth_failure"] += 1
            return ApiError(
                429,
                errors.RATE_LIMITED,
                "too many failed authentications from this address; "
                "retry after the Retry-After delay",
                "Authorization",
                retry_after=wait,
                extra={"limit": "auth_failure_rate_per_second"},
            )
        return ApiError(401, errors.UNAUTHORIZED, "invalid API key", "Authorization")

    def client_for(self, request: web.Request, *, allow_query: bool = False) -> str:
        """The authenticated client id, or raise 401 / 429."""
        token = bearer_token(request, allow_query=allow_query)
        if token is None:
            raise ApiError(
                401,
                errors.UNAUTHORIZED,
                "missing API key: send Authorization: Bearer <token>",
                "Authorization",
            )
        client_id = self.api_keys.get(token)
        if client_id is None:
            raise self.failed(request)
        self.charge(token)
        return client_id

    def optional_client(self, request: web.Request) -> str | None:
        """For public routes: None without a key (limited per address); 401 for a bad key."""
        if "Authorization" in request.headers:
            return self.client_for(request)
        self.charge(f"addr:{request.remote}")
        return None

    def charge(self, key: str, cost: float = 1.0) -> None:
        wait = self.limiter.acquire(key, cost)
        if wait > 0:
            self.refusals["rate_limit"] += 1
            raise ApiError(
                429,
                errors.RATE_LIMITED,
                "rate limit exceeded for this API key; retry after the Retry-After delay",
                None,
                retry_after=wait,
            )

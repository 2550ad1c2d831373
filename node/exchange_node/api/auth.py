"""Bearer-token authentication and per-key token-bucket rate limiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from aiohttp import web

from exchange_node.limits import (
    API_MAX_TOLD_TO_WAIT,
    API_PACE_MAX_SPAN_S,
    API_PENALTY_FIRST_S,
    API_PENALTY_MAX_S,
)

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
    "retry_after_ignored",
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
    __slots__ = ("last", "paced_until", "penalty", "penalty_until", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.last = now
        self.penalty = 0.0
        """Seconds the key was last shut out for ignoring Retry-After (0: it is not)."""
        self.penalty_until = 0.0
        self.paced_until = 0.0
        """When the key's last paced batch is all proposed (``RateLimiter.pace``)."""


class RateLimiter:
    """One token bucket per key: ``rate`` tokens per second up to ``burst``, or the
    key's own ``(rate, burst)`` from ``overrides`` (a market maker's key may get more).

    ``acquire`` returns 0 when the request may go ahead, otherwise how many
    seconds until it could (the Retry-After). Rate 0 disables the limit.
    ``debit`` takes tokens of a request already admitted on its first token (a
    batch, once its orders are counted): the bucket may go into debt, which the
    key's next requests wait out, unless it already is in debt (another request
    of the key got there first): then it refuses like ``acquire``. So a key gets
    ``rate`` orders per second in the long run, however many requests it overlaps.

    ``ignored(key)``: the key sent a request on a connection that had been
    answered 429 and told to wait, before the wait was over. It is shut out for
    ``API_PENALTY_FIRST_S`` seconds (limits.py), doubling with every further early request up to
    ``API_PENALTY_MAX_S``; ``penalised`` says so while it lasts (the API then answers
    without reading the body and closes the connection, so that the key's
    refusals cost the node almost nothing). Admitted after it, the key starts
    afresh.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        overrides: Mapping[str, tuple[float, int]] | None = None,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.overrides = {k: (r, float(b)) for k, (r, b) in (overrides or {}).items()}
        self.buckets: dict[str, TokenBucket] = {}

    def limit_of(self, key: str) -> tuple[float, float]:
        """The key's (tokens per second, burst)."""
        return self.overrides.get(key, (self.rate, self.burst))

    def _refilled(self, key: str, rate: float, burst: float) -> TokenBucket:
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) > 100_000:
                self._forget_full_buckets(now)
            bucket = self.buckets[key] = TokenBucket(burst, now)
        else:
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.last) * rate)
            bucket.last = now
        return bucket

    def acquire(self, key: str, cost: float = 1.0) -> float:
        rate, burst = self.limit_of(key)
        if rate <= 0:
            return 0.0
        bucket = self._refilled(key, rate, burst)
        if bucket.penalty:
            if bucket.last < bucket.penalty_until:
                return bucket.penalty_until - bucket.last
            bucket.penalty = 0.0
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / rate

    def debit(self, key: str, cost: float) -> float:
        rate, burst = self.limit_of(key)
        if rate <= 0:
            return 0.0
        bucket = self._refilled(key, rate, burst)
        if bucket.penalty and bucket.last < bucket.penalty_until:
            return bucket.penalty_until - bucket.last
        if bucket.tokens < 0:
            return (1.0 - bucket.tokens) / rate  # until its next request is admitted
        bucket.tokens -= cost
        return 0.0

    def ignored(self, key: str) -> None:
        """``key`` came back before the Retry-After it was given: shut it out longer."""
        rate, burst = self.limit_of(key)
        if rate <= 0:
            return
        bucket = self._refilled(key, rate, burst)
        bucket.penalty = (
            min(API_PENALTY_MAX_S, bucket.penalty * 2) if bucket.penalty else API_PENALTY_FIRST_S
        )
        bucket.penalty_until = bucket.last + bucket.penalty

    def penalised(self, key: str) -> bool:
        """Whether ``key`` is shut out for ignoring Retry-After."""
        bucket = self.buckets.get(key)
        return bucket is not None and bucket.penalty > 0 and self.clock() < bucket.penalty_until

    def pace(self, key: str, orders: int, piece: int) -> list[float] | None:
        """When to propose the pieces of ``piece`` orders of a batch of ``orders`` that
        ``key`` has been charged for (clock times, one per piece), or None to propose
        the whole batch at once, as one log entry: when the key has no limit or still
        has half its burst or more. A key that has spent more than that is at its
        limit; its pieces are spaced at its rate (at most ``API_PACE_MAX_SPAN_S`` for
        one batch) after those of its batches paced before, so that it loads the
        cluster evenly rather than in bursts of a whole batch, which every replica
        would process in one go while other clients' orders wait for a core."""
        rate, burst = self.limit_of(key)
        if rate <= 0:
            return None
        bucket = self._refilled(key, rate, burst)
        if bucket.tokens >= burst / 2:
            return None
        pieces = -(-orders // piece)
        step = min(piece / rate, API_PACE_MAX_SPAN_S / pieces)
        start = max(bucket.paced_until, bucket.last)
        times = [start + i * step for i in range(pieces)]
        bucket.paced_until = start + pieces * step
        return times

    def refund(self, key: str, tokens: float) -> None:
        rate, burst = self.limit_of(key)
        if rate > 0 and tokens > 0:
            bucket = self._refilled(key, rate, burst)
            bucket.tokens = min(burst, bucket.tokens + tokens)

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
        self._told_to_wait: dict[object, tuple[str, float]] = {}
        """connection (its transport) -> the key its last 429 refused, and until when
        it told that key to wait; popped by the connection's next request, and bounded
        (not weak references: uvloop's TLS transports cannot be weakly referenced)."""

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
        self._check_patience(request, token)
        self.charge(token, request=request)
        return client_id

    def optional_client(self, request: web.Request) -> str | None:
        """For public routes: None without a key (limited per address); 401 for a bad key."""
        if "Authorization" in request.headers:
            return self.client_for(request)
        key = f"addr:{request.remote}"
        self._check_patience(request, key)
        self.charge(key, request=request)
        return None

    def charge(self, key: str, cost: float = 1.0, request: web.Request | None = None) -> None:
        """Take ``cost`` tokens of ``key`` or raise 429 naming the limit."""
        self._refuse_after(key, self.limiter.acquire(key, cost), request)

    def reserve_batch(
        self, key: str, max_orders: int, request: web.Request | None = None
    ) -> BatchReservation:
        """Right after ``client_for`` (no await between): a batch admitted on its
        request's token takes tokens for ``max_orders`` before its body is read, so
        that the key's overlapping requests are refused before theirs are read and
        parsed (their work would be wasted); 429 if the key is in debt already."""
        self._refuse_after(key, self.limiter.debit(key, max_orders - 1), request)
        return BatchReservation(self.limiter, key, max_orders - 1)

    def _check_patience(self, request: web.Request, key: str) -> None:
        """A request of the key that a connection's last answer refused (429), on that
        connection, before its Retry-After (HTTP/1.1 answers in order, so the client
        had read that answer): the key ignores Retry-After and is shut out, for longer
        each time. Another key on the same connection (a proxy's pool) is not."""
        transport = request.transport
        if transport is None:
            return
        told = self._told_to_wait.pop(transport, None)
        if told is not None and told[0] == key and self.limiter.clock() < told[1]:
            self.refusals["retry_after_ignored"] += 1
            self.limiter.ignored(key)

    def _forget_waits(self, now: float) -> None:
        """Drop the waits that are over; if none are, the oldest half (a flood of
        refused connections must not grow this without bound)."""
        told = self._told_to_wait
        for transport in [t for t, (_, until) in told.items() if until <= now]:
            del told[transport]
        if len(told) >= API_MAX_TOLD_TO_WAIT:
            for transport in list(told)[: len(told) // 2]:
                del told[transport]

    def _refuse_after(self, key: str, wait: float, request: web.Request | None = None) -> None:
        if wait > 0:
            self.refusals["rate_limit"] += 1
            rate, burst = self.limiter.limit_of(key)
            penalised = self.limiter.penalised(key)
            if request is not None and request.transport is not None and not penalised:
                # Keep-alive: the next request on this connection should wait.
                now = self.limiter.clock()
                if len(self._told_to_wait) >= API_MAX_TOLD_TO_WAIT:
                    self._forget_waits(now)
                self._told_to_wait[request.transport] = (key, now + wait)
            if penalised:
                raise ApiError(
                    429,
                    errors.RATE_LIMITED,
                    "this API key sends again before its Retry-After delay: shut out, "
                    "longer with every early request; wait Retry-After",
                    None,
                    retry_after=wait,
                    extra={"limit": "retry_after_ignored", "rate": rate, "burst": burst},
                    close=True,
                )
            raise ApiError(
                429,
                errors.RATE_LIMITED,
                f"rate limit exceeded for this API key ({rate:g} orders or requests per "
                f"second, burst {burst:g}; a batch of N orders counts N); "
                "retry after the Retry-After delay",
                None,
                retry_after=wait,
                extra={"limit": "rate_limit_per_second", "rate": rate, "burst": burst},
            )


class BatchReservation:
    """Tokens a batch took before its orders were counted: ``settle(n)`` gives back
    what ``n`` orders did not need (the bucket keeps the debt of the rest),
    ``release()`` all of them (a body refused before its orders were counted)."""

    __slots__ = ("key", "limiter", "tokens")

    def __init__(self, limiter: RateLimiter, key: str, tokens: float) -> None:
        self.limiter, self.key, self.tokens = limiter, key, tokens

    def pace(self, orders: int, piece: int) -> list[float] | None:
        """``RateLimiter.pace`` for the batch's key."""
        return self.limiter.pace(self.key, orders, piece)

    def clock(self) -> float:
        return self.limiter.clock()

    def settle(self, orders: int) -> None:
        self.limiter.refund(self.key, self.tokens - (orders - 1))
        self.tokens = 0.0

    def release(self) -> None:
        self.limiter.refund(self.key, self.tokens)
        self.tokens = 0.0

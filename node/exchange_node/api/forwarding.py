"""Follower writes: proxy the request to the leader, once.

A follower that gets ``NotLeader(leader_http=...)`` from the service re-sends
the same method, path, query, body and ``Authorization`` header to the leader
and relays the leader's answer. The hop header stops loops: a request that
already made ``max_forward_hops`` hops is not forwarded again (leadership is
moving; the client gets 503 + Retry-After). No known leader: 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import aiohttp
from aiohttp import web

from . import errors
from .errors import ApiError

_inject: Callable[..., None] | None
try:
    from opentelemetry.propagate import inject as _inject
except ImportError:  # pragma: no cover - opentelemetry-api is a dependency of the node
    _inject = None

HOP_HEADER = "X-Exchange-Forward-Hops"
FORWARDED_BY_HEADER = "X-Exchange-Forwarded-By"
LEADER_HEADER = "X-Exchange-Leader"

_RELAYED_RESPONSE_HEADERS = ("Retry-After", LEADER_HEADER)


def _inject_trace_context(headers: dict[str, str], request: web.Request) -> None:
    """Carry the order's trace to the leader: the current span's ``traceparent``
    when tracing is on, else the client's own header, if any."""
    if _inject is not None:
        _inject(headers)
    if "traceparent" not in headers:
        for name in ("traceparent", "tracestate"):
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value


def request_hops(request: web.Request) -> int:
    raw = request.headers.get(HOP_HEADER)
    if raw is None:
        return 0
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


def leader_url(leader_http: str, path: str, *, secure: bool) -> str:
    """The leader's URL for ``path``: HTTPS when this node was asked over HTTPS
    (members of one cluster serve alike)."""
    return f"{'https' if secure else 'http'}://{leader_http}{path}"


LEADER_WATCH_S = 0.05
"""How often a forwarded request checks that its target is still the leader."""


class Forwarder:
    """Forwards to the leader. ``leader_now`` (this node's current view of the
    leader's HTTP address) lets a forwarded request give up as soon as this node
    learns that leadership moved: after a partition the old leader may never
    answer, and waiting out the forward timeout would hold the client for
    nothing. The client then gets 504 (outcome unknown; retrying with the same
    client order id is safe) once this node's own election timer fires or the
    new leader's first message arrives: at most about two election timeouts
    after the leader went silent, plus ``LEADER_WATCH_S`` (docs/api.md).

    ``leader_now`` must give the address in the form ``NotLeader.leader_http``
    has: both come from the node's one membership map (``http_address`` of the
    leader's member entry), so an unchanged leader always compares equal.

    Over HTTPS the leader's certificate is verified (``tls``) against the host
    in its address: the address a member advertises must be a name its
    certificate carries (on Kubernetes ``<pod>.<cluster>-peers.<ns>.svc``,
    which the operator's server certificate names)."""

    def __init__(
        self,
        timeout_seconds: float,
        max_hops: int,
        retry_after: float,
        leader_now: Callable[[], str | None] | None = None,
        tls: Callable[[], ssl.SSLContext | bool] | None = None,
    ) -> None:
        self.timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, connect=min(1.0, timeout_seconds)
        )
        self.max_hops = max_hops
        self.retry_after = retry_after
        self.leader_now = leader_now
        self.tls = tls
        """The TLS context for leaders served over HTTPS (a node that serves HTTPS
        forwards over HTTPS: members of one cluster serve alike)."""
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def no_leader(self, why: str) -> ApiError:
        return ApiError(
            503,
            errors.NO_LEADER,
            f"{why}; retry after the Retry-After delay",
            None,
            retry_after=self.retry_after,
        )

    async def forward(
        self,
        request: web.Request,
        leader_http: str | None,
        body: bytes | None,
        *,
        write: bool,
    ) -> web.Response:
        if not leader_http:
            raise self.no_leader("this node is not the leader and no leader is known")
        hops = request_hops(request)
        if hops >= self.max_hops:
            raise self.no_leader("leadership is changing (forwarded request reached a non-leader)")
        headers = {HOP_HEADER: str(hops + 1)}
        for name in ("Authorization", "Content-Type", "Accept"):
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        if "Authorization" not in headers and "token" in request.query:
            headers["Authorization"] = f"Bearer {request.query['token']}"
        _inject_trace_context(headers, request)
        url = leader_url(leader_http, str(request.rel_url), secure=request.secure)
        return await self.send(request.method, url, headers, body, leader_http, write=write)

    async def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        leader_http: str,
        *,
        write: bool,
    ) -> web.Response:
        status, upstream_headers, payload, content_type = await self.exchange(
            method, url, headers, body, leader_http, write=write
        )
        out_headers = {FORWARDED_BY_HEADER: "1", LEADER_HEADER: leader_http}
        for name in _RELAYED_RESPONSE_HEADERS:
            value = upstream_headers.get(name)
            if value is not None:
                out_headers[name] = value
        return web.Response(
            body=payload, status=status, headers=out_headers, content_type=content_type
        )

    async def exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        leader_http: str,
        *,
        write: bool,
    ) -> tuple[int, dict[str, str], bytes, str]:
        """One request to the leader: (status, headers, body, content type), or ApiError;
        given up when this node sees another leader (or none) meanwhile."""
        if self.leader_now is None:  # no watch: no task of its own
            return await self._exchange(method, url, headers, body, leader_http, write=write)
        attempt = asyncio.ensure_future(
            self._exchange(method, url, headers, body, leader_http, write=write)
        )
        try:
            while True:
                done, _ = await asyncio.wait({attempt}, timeout=LEADER_WATCH_S)
                if done:
                    return attempt.result()
                if self.leader_now() != leader_http:
                    attempt.cancel()
                    moved = "leadership moved while the request was at the old leader"
                    raise self._unanswered(write, moved, f"{moved}; ")
        finally:
            if not attempt.done():
                attempt.cancel()

    async def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        leader_http: str,
        *,
        write: bool,
    ) -> tuple[int, dict[str, str], bytes, str]:
        try:
            tls = self.tls() if self.tls is not None and url.startswith("https:") else True
            async with self.session().request(
                method, url, data=body, headers=headers, allow_redirects=False, ssl=tls
            ) as upstream:
                payload = await upstream.read()
                return (
                    upstream.status,
                    dict(upstream.headers),
                    payload,
                    upstream.content_type or "application/json",
                )
        except aiohttp.ClientConnectorError:
            # Nothing was sent: the request was certainly not accepted.
            raise ApiError(
                503,
                errors.UNAVAILABLE,
                f"could not reach the leader at {leader_http}",
                None,
                retry_after=self.retry_after,
            ) from None
        except (TimeoutError, aiohttp.ClientError):
            raise self._unanswered(write, f"the leader at {leader_http} did not answer") from None

    def _unanswered(self, write: bool, why: str, write_prefix: str = "") -> ApiError:
        """A request sent to the leader without an answer: a write's outcome is unknown
        (504; retrying with the same client order id is safe), a read is just 503."""
        if write:
            return ApiError(504, errors.TIMEOUT, write_prefix + errors.TIMEOUT_MESSAGE, None)
        return ApiError(503, errors.UNAVAILABLE, why, None, retry_after=self.retry_after)

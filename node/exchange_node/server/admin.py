"""Operations endpoints: probes, metrics and the admin API (docs/node-contract.md).

- ``GET /healthz``: 200 while the process and its loop are alive.
- ``GET /readyz``: 200 when a member with a known leader and applied close to
  commit; 503 with a JSON reason otherwise.
- ``GET /metrics``: Prometheus text from the node's own registry.
- ``/v1/admin/*``, on the admin listener only (``--admin-port``), with
  ``Authorization: Bearer <admin token>`` (401 without):
  status, add/promote/remove member, transfer leadership, and with
  ``--peer-tls-enroll`` the member certificate (GET certificate-request, PUT
  certificate). Membership calls
  on a non-leader answer 421 with the leader's id and address.

``http_metrics_middleware`` times every request of the whole application
(public API included) into ``exchange_http_request_seconds``.
"""

from __future__ import annotations

import datetime
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web
from exchange_node.security import enrollment
from exchange_node.security.enrollment import EnrollmentError, MemberEnrollment
from exchange_node.server import tracing
from exchange_node.service import NotLeader, Overloaded, Timeout, Unavailable

NODE_KEY: web.AppKey[Any] = web.AppKey("exchange_node", object)
ADMIN_TOKEN_KEY: web.AppKey[str | None] = web.AppKey("exchange_admin_token", object)  # type: ignore[arg-type]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def http_metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        if tracing.enabled():
            response = await _traced(request, handler)
        else:
            response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = "unmatched"
        info = request.match_info
        if info is not None and info.route.resource is not None:
            route = info.route.resource.canonical
        node = request.app.get(NODE_KEY) or _root_node(request)
        if node is not None:
            node.metrics.http_request.labels(
                route=route, method=request.method, status=str(status)
            ).observe(time.perf_counter() - started)


async def _traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The order's trace starts here (or continues an incoming ``traceparent``):
    the shell's propose span becomes a child of this one through the context."""
    from opentelemetry.trace import SpanKind

    info = request.match_info
    route = info.route.resource.canonical if info and info.route.resource else request.path
    with tracing.tracer().start_as_current_span(
        f"{request.method} {route}",
        context=tracing.context_from_headers(request.headers),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": request.method, "http.route": route},
    ) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        return response


def _root_node(request: web.Request) -> Any:
    for app in request.match_info.apps if request.match_info is not None else ():
        node = app.get(NODE_KEY)
        if node is not None:
            return node
    return None


def _node(request: web.Request) -> Any:
    return _root_node(request) or request.app[NODE_KEY]


def _check_admin(request: web.Request) -> None:
    token: str | None = None
    for app in request.match_info.apps:
        if ADMIN_TOKEN_KEY in app:
            token = app[ADMIN_TOKEN_KEY]
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not token or not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise web.HTTPUnauthorized(
            text='{"error": "admin token required"}',
            content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _not_leader(node: Any) -> web.Response:
    status = node.status()
    leader_address = None
    for member in status.members:
        if member.id == status.leader:
            leader_address = member.http_address
    return _json_error(
        421,
        "not the leader",
        leader=status.leader,
        leader_address=leader_address,
    )


async def _guarded(node: Any, action: Awaitable[Any]) -> web.Response | Any:
    try:
        return await action
    except NotLeader:
        return _not_leader(node)
    except Overloaded as exc:
        return web.json_response(
            {"error": str(exc)},
            status=503,
            headers={"Retry-After": str(max(1, round(exc.retry_after_seconds)))},
        )
    except Unavailable as exc:
        return _json_error(503, str(exc) or "unavailable")
    except Timeout as exc:
        return _json_error(504, str(exc) or "timed out")
    except ValueError as exc:
        return _json_error(400, str(exc))


# ---- probes and metrics ------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    node = _node(request)
    if node.healthy():
        return web.json_response({"status": "ok"})
    return _json_error(503, "event loop stalled or shutting down")


async def readyz(request: web.Request) -> web.Response:
    ok, reason = _node(request).ready()
    if ok:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready", "reason": reason}, status=503)


async def metrics(request: web.Request) -> web.Response:
    node = _node(request)
    node.refresh_gauges()
    # One subscription feeds the API's WebSocket hub; the gauge counts its sockets.
    from exchange_node.api import API_KEY

    api = request.app.get(API_KEY)
    hub = getattr(api, "hub", None)
    if hub is not None:
        node.metrics.ws_subscribers.set(len(hub.connections))
    body = node.metrics.render()
    return web.Response(body=body, headers={"Content-Type": node.metrics.content_type})


# ---- admin ---------------------------------------------------------------------------


def status_document(node: Any) -> dict[str, Any]:
    st = node.status()
    doc = asdict(st)
    # The index the state hash was computed at (hashing waits for an idle moment).
    doc["state_hash_index"] = node.status_hash()[0]
    doc["members"] = [
        {
            "id": m.id,
            "name": m.name,
            "address": m.grpc_address,
            "http_address": m.http_address,
            "voter": m.voter,
            "match_index": m.match_index,
            "lag": m.lag,
            "healthy": m.healthy,
        }
        for m in st.members
    ]
    member = enrollment.for_node(node)
    if member is not None:
        doc["member_certificate"] = member.status(_utcnow())
    return doc


async def admin_status(request: web.Request) -> web.Response:
    _check_admin(request)
    return web.json_response(status_document(_node(request)))


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        doc = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "body is not valid JSON"}', content_type="application/json"
        ) from None
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(
            text='{"error": "body must be a JSON object"}', content_type="application/json"
        )
    return doc


def _member_id(raw: Any, field: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise web.HTTPBadRequest(
            text=f'{{"error": "{field} must be an integer >= 1"}}',
            content_type="application/json",
        )
    return raw


def _address(raw: Any, field: str) -> str:
    if not isinstance(raw, str) or ":" not in raw or not raw.rpartition(":")[2].isdigit():
        raise web.HTTPBadRequest(
            text=f'{{"error": "{field} must be host:port"}}', content_type="application/json"
        )
    return raw


async def admin_add_member(request: web.Request) -> web.Response:
    _check_admin(request)
    node = _node(request)
    doc = await _body(request)
    member_id = _member_id(doc.get("id"), "id")
    address = _address(doc.get("address"), "address")
    http = doc.get("http_address")
    http_address = (
        _address(http, "http_address")
        if http is not None
        else f"{address.rpartition(':')[0]}:{node.config.http_port}"
    )
    result = await _guarded(node, node.add_member(member_id, address, http_address))
    if isinstance(result, web.Response):
        return result
    return web.json_response({"added": member_id, "voter": False}, status=201)


async def admin_promote_member(request: web.Request) -> web.Response:
    _check_admin(request)
    node = _node(request)
    member_id = _member_id(_int_or_none(request.match_info["id"]), "id")
    result = await _guarded(node, node.promote_member(member_id))
    if isinstance(result, web.Response):
        return result
    return web.json_response({"promoted": member_id})


async def admin_remove_member(request: web.Request) -> web.Response:
    _check_admin(request)
    node = _node(request)
    member_id = _member_id(_int_or_none(request.match_info["id"]), "id")
    result = await _guarded(node, node.remove_member(member_id))
    if isinstance(result, web.Response):
        return result
    return web.json_response({"removed": member_id})


async def admin_transfer_leadership(request: web.Request) -> web.Response:
    _check_admin(request)
    node = _node(request)
    doc = await _body(request)
    target = doc.get("target")
    if target is not None:
        target = _member_id(target, "target")
    result = await _guarded(node, node.transfer_leadership(target))
    if isinstance(result, web.Response):
        return result
    return web.json_response({"leader": result})


# ---- member certificate (--peer-tls-enroll) -------------------------------------------


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _enrollment(request: web.Request) -> MemberEnrollment:
    found = enrollment.for_node(_node(request))
    if found is None:
        raise web.HTTPNotFound(
            text='{"error": "this node does not enroll its member certificate '
            '(start it with --peer-tls-enroll)"}',
            content_type="application/json",
        )
    return found


async def admin_certificate_request(request: web.Request) -> web.Response:
    """A CSR for this node's member key; the key itself never leaves the node."""
    _check_admin(request)
    member = _enrollment(request)
    csr = member.certificate_request(_utcnow())
    return web.json_response(
        {"csr": csr.decode(), "member_id": member.node_id, "cluster_id": member.cluster_id}
    )


async def admin_put_certificate(request: web.Request) -> web.Response:
    """Install the certificate signed for the CSR (checked first, written atomically)."""
    _check_admin(request)
    member = _enrollment(request)
    doc = await _body(request)
    chain = doc.get("certificate")
    if not isinstance(chain, str) or "-----BEGIN CERTIFICATE-----" not in chain:
        return _json_error(400, "certificate must be a PEM certificate chain (string)")
    try:
        which = member.install(chain.encode(), _utcnow())
    except EnrollmentError as exc:
        return _json_error(400, str(exc))
    return web.json_response({"installed": which, **member.status(_utcnow())})


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def add_probe_routes(app: web.Application, node: Any) -> None:
    """Register the probes and /metrics on ``app`` (the public HTTP listener)."""
    app[NODE_KEY] = node
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


def add_admin_routes(app: web.Application, node: Any, admin_token: str | None) -> None:
    """Register /v1/admin/* on ``app``: the admin listener (--admin-port) only."""
    app[NODE_KEY] = node
    app[ADMIN_TOKEN_KEY] = admin_token
    app.router.add_get("/v1/admin/status", admin_status)
    app.router.add_post("/v1/admin/members", admin_add_member)
    app.router.add_post("/v1/admin/members/{id}/promote", admin_promote_member)
    app.router.add_delete("/v1/admin/members/{id}", admin_remove_member)
    app.router.add_post("/v1/admin/transfer-leadership", admin_transfer_leadership)
    app.router.add_get("/v1/admin/certificate-request", admin_certificate_request)
    app.router.add_put("/v1/admin/certificate", admin_put_certificate)

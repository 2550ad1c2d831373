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
import json
import logging
import os
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web
from exchange_node.limits import ADMIN_AUDIT_RECENT
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
            "stuck": m.stuck,
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


# ---- ops controls: halt/resume, risk limits, snapshots (issue 17) ----------------------
#
# Halts and limits are engine commands proposed through the log like orders, so
# every replica applies them at the same index. The engine's commands carry no
# actor, so *who* did it is recorded here: one JSON line on logger
# ``exchange.audit`` per action (actor, authentication, action, arguments, the log
# index it committed at, outcome), and the node's recent actions at
# ``GET /v1/admin/audit``.

audit_log = logging.getLogger("exchange.audit")
AUDIT_KEY: web.AppKey[deque[dict[str, Any]]] = web.AppKey("exchange_admin_audit", deque)
ACTOR_HEADER = "X-Exchange-Actor"
DEFAULT_CLIENT = "*"
"""``/v1/admin/risk/*``: the default limits of every client without its own."""
_ACTOR_CHARS = frozenset(string.ascii_letters + string.digits + "@._:-+/ ")
RISK_FIELDS = ("max_order_qty", "max_notional", "max_position", "max_open_orders")
MAX_LIMIT = (1 << 63) - 1


def _bad(message: str, field: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=json.dumps({"error": message, "field": field}), content_type="application/json"
    )


def _identity(request: web.Request) -> dict[str, Any]:
    """Who is calling: the admin client certificate's subject when the listener
    requires one (``--admin-tls-client-ca``), the bearer token otherwise; plus the
    name the caller gives in ``X-Exchange-Actor`` (the CLI sends ``user@host``)."""
    subject = None
    peercert = request.transport.get_extra_info("peercert") if request.transport else None
    if peercert:
        for rdn in peercert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    subject = value
        if subject is None:  # no CN: the certificate's first subject alternative name
            names = peercert.get("subjectAltName", ())
            subject = f"{names[0][0]}:{names[0][1]}" if names else "(no subject)"
    claimed = request.headers.get(ACTOR_HEADER, "")
    if claimed and (len(claimed) > 128 or not set(claimed) <= _ACTOR_CHARS):
        raise _bad(f"{ACTOR_HEADER} must be 1-128 of A-Z a-z 0-9 @ . _ : - + / space", ACTOR_HEADER)
    return {
        "auth": "mtls" if subject else "admin-token",
        "subject": subject,
        "actor": claimed or None,
        "remote": request.remote,
    }


def _audit(request: web.Request, action: str, args: dict[str, Any], outcome: Any) -> None:
    record = {
        "at": _utcnow().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "action": action,
        "args": args,
        **_identity(request),
        "node_id": getattr(_node(request), "node_id", None),
        "outcome": outcome,
    }
    for app in request.match_info.apps:
        if AUDIT_KEY in app:
            app[AUDIT_KEY].append(record)
    audit_log.info("admin %s", action, extra={"audit": record})


def _rejection(results: list[Any]) -> dict[str, Any] | None:
    for result in results:
        if getattr(getattr(result, "status", None), "name", "") == "REJECTED":
            for event in result.events:
                reason = getattr(event, "reason", None)
                if reason is not None:
                    return {"reason": reason.name, "message": event.message}
            return {"reason": "REJECTED", "message": "rejected"}
    return None


def _symbol(request: web.Request) -> str:
    symbol = request.match_info["symbol"]
    if not 1 <= len(symbol.encode()) <= 255:
        raise _bad("symbol must be 1-255 bytes", "symbol")
    return symbol


async def _propose_setting(
    request: web.Request,
    node: Any,
    commands: list[Any],
    action: str,
    args: dict[str, Any],
    answer: Callable[[], dict[str, Any]],
) -> web.Response:
    """Propose an admin command through the log and answer: ``answer()`` with the
    entry's index once applied, 422 with the engine's reason if it rejected it, the
    node's error if it could not be proposed; the outcome audited as ``action``."""
    result = await _guarded(node, node.submit(commands))
    if isinstance(result, web.Response):
        return result
    index = result[0].log_index
    rejected = _rejection(result)
    if rejected is not None:
        _audit(request, action, args, {"log_index": index, "rejected": rejected})
        return web.json_response({"error": rejected["message"], **rejected}, status=422)
    _audit(request, action, args, {"log_index": index})
    return web.json_response({**answer(), "log_index": index})


def _check_integer_fields(
    doc: dict[str, Any], ranges: dict[str, tuple[int, int]], must: Callable[[str, int, int], str]
) -> None:
    """400 naming the field: unknown, none given, or not an integer in its range
    (``must(key, lo, hi)`` says what it must be)."""
    known = ", ".join(ranges)
    for key in doc:
        if key not in ranges:
            raise _bad(f"unknown field {key[:40]!r}; known: {known}", key)
    if not doc:
        raise _bad(f"give at least one of {known}", "body")
    for key, value in doc.items():
        lo, hi = ranges[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _bad(must(key, lo, hi), key)


async def _set_halted(request: web.Request, halted: bool) -> web.Response:
    from exchange_node.engine.commands import HaltSymbol, ResumeSymbol

    _check_admin(request)
    node = _node(request)
    symbol = _symbol(request)
    _identity(request)  # a bad actor header is refused before anything is proposed
    if node.engine is not None and symbol not in node.engine.symbols():
        return web.json_response(
            {"error": f"unknown symbol {symbol[:40]!r}", "field": "symbol"}, status=404
        )
    command = HaltSymbol(symbol) if halted else ResumeSymbol(symbol)
    return await _propose_setting(
        request,
        node,
        [command],
        "halt" if halted else "resume",
        {"symbol": symbol},
        lambda: {"symbol": symbol, "halted": halted},
    )


async def admin_halt_symbol(request: web.Request) -> web.Response:
    return await _set_halted(request, True)


async def admin_resume_symbol(request: web.Request) -> web.Response:
    return await _set_halted(request, False)


def _client(request: web.Request) -> str | None:
    client = request.match_info["client"]
    if client == DEFAULT_CLIENT:
        return None
    if not 1 <= len(client.encode()) <= 255:
        raise _bad("client must be 1-255 bytes (or * for the default limits)", "client")
    return client


def _limits_document(engine: Any, client: str | None) -> dict[str, Any]:
    limits = engine.risk_limits(client)
    return {
        "client_id": DEFAULT_CLIENT if client is None else client,
        "max_order_qty": limits.max_order_qty,
        "max_notional": limits.max_notional,
        "max_position": limits.max_position,
        "max_open_orders": engine.max_open_orders(client),
    }


async def admin_get_risk(request: web.Request) -> web.Response:
    """A client's limits (``*``: the defaults) as this node has applied them, after a
    ReadIndex barrier (so every acknowledged change is in). 0 means unlimited."""
    _check_admin(request)
    node = _node(request)
    client = _client(request)
    barrier = await _guarded(node, node.read_barrier())
    if isinstance(barrier, web.Response):
        return barrier
    return web.json_response(_limits_document(node.engine, client))


async def admin_put_risk(request: web.Request) -> web.Response:
    """Set a client's limits (``*``: the defaults). Fields left out keep their value;
    0 means unlimited. One log entry carries the risk and open-order commands."""
    from exchange_node.engine.commands import SetOrderLimits, SetRiskLimits

    _check_admin(request)
    node = _node(request)
    client = _client(request)
    doc = await _body(request)
    _check_integer_fields(
        doc,
        dict.fromkeys(RISK_FIELDS, (0, MAX_LIMIT)),
        lambda key, _lo, _hi: f"{key} must be an integer >= 0 (0: unlimited)",
    )
    _identity(request)
    current = _limits_document(node.engine, client)
    merged = {key: doc.get(key, current[key]) for key in RISK_FIELDS}
    commands: list[Any] = []
    if any(key in doc for key in RISK_FIELDS[:3]):
        commands.append(
            SetRiskLimits(
                client, merged["max_order_qty"], merged["max_notional"], merged["max_position"]
            )
        )
    if "max_open_orders" in doc:
        commands.append(SetOrderLimits(client, merged["max_open_orders"]))
    return await _propose_setting(
        request,
        node,
        commands,
        "risk-set",
        {"client_id": current["client_id"], **doc},
        lambda: _limits_document(node.engine, client),
    )


RETENTION_FIELDS = ("exactly_once_horizon_seconds", "exactly_once_max_keys", "finished_orders")


def _retention_document(engine: Any) -> dict[str, Any]:
    stats = engine.retention_stats()
    return {
        "exactly_once_horizon_seconds": stats["exactly_once_horizon_ns"] // 1_000_000_000,
        "exactly_once_max_keys": stats["exactly_once_max_keys"],
        "finished_orders": stats["finished_max_orders"],
        "exactly_once_keys": stats["exactly_once_keys"],
        "exactly_once_evicted_by_cap": stats["exactly_once_evicted_by_cap"],
    }


async def admin_get_retention(request: web.Request) -> web.Response:
    """The exactly-once horizon and cap and the finished-order window in force (the same
    on every replica), after a ReadIndex barrier, with how full the table is."""
    _check_admin(request)
    node = _node(request)
    barrier = await _guarded(node, node.read_barrier())
    if isinstance(barrier, web.Response):
        return barrier
    return web.json_response(_retention_document(node.engine))


async def admin_put_retention(request: web.Request) -> web.Response:
    """Set the retention through the log (engine SetRetention); fields left out keep
    their value. In force at that entry on every replica: lowering one forgets the
    oldest entries at once. A node started with the matching flag sets its own value
    again when it becomes leader."""
    from exchange_node.engine.commands import SetRetention
    from exchange_node.limits import ENGINE_RETENTION_MAX_ENTRIES, ENGINE_RETENTION_MAX_HORIZON_NS

    _check_admin(request)
    node = _node(request)
    doc = await _body(request)
    _check_integer_fields(
        doc,
        {
            "exactly_once_horizon_seconds": (1, ENGINE_RETENTION_MAX_HORIZON_NS // 1_000_000_000),
            "exactly_once_max_keys": (1, ENGINE_RETENTION_MAX_ENTRIES),
            "finished_orders": (1, ENGINE_RETENTION_MAX_ENTRIES),
        },
        lambda key, lo, hi: f"{key} must be an integer in {lo}..{hi}",
    )
    _identity(request)
    current = _retention_document(node.engine)
    merged = {key: doc.get(key, current[key]) for key in RETENTION_FIELDS}
    command = SetRetention(
        merged["exactly_once_horizon_seconds"] * 1_000_000_000,
        merged["exactly_once_max_keys"],
        merged["finished_orders"],
    )
    return await _propose_setting(
        request, node, [command], "retention-set", doc, lambda: _retention_document(node.engine)
    )


async def admin_take_snapshot(request: web.Request) -> web.Response:
    """Snapshot this node's state now; ``{"index", "term"}`` once it is durable."""
    _check_admin(request)
    node = _node(request)
    _identity(request)
    result = await _guarded(node, node.snapshot_now())
    if isinstance(result, web.Response):
        return result
    index, term = result
    _audit(request, "snapshot", {}, {"index": index, "term": term})
    return web.json_response({"index": index, "term": term})


async def admin_get_snapshot(request: web.Request) -> web.StreamResponse:
    """The newest durable snapshot file of this node, as stored (storage's format)."""
    _check_admin(request)
    node = _node(request)
    path = node.latest_snapshot_path()
    if path is None:
        return _json_error(404, "no snapshot yet (POST /v1/admin/snapshot takes one)")
    # storage.files.snapshot_name: snap-<index:016x>-<term:016x>.snap
    _, index_hex, term_hex = path.stem.split("-")
    index, term = int(index_hex, 16), int(term_hex, 16)
    try:
        handle = path.open("rb")  # held open: a newer snapshot may replace the name
    except FileNotFoundError:
        return _json_error(503, "the snapshot was just replaced; try again")
    with handle:
        size = os.fstat(handle.fileno()).st_size
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
                "Content-Disposition": f'attachment; filename="{path.name}"',
                "X-Snapshot-Index": str(index),
                "X-Snapshot-Term": str(term),
            }
        )
        await response.prepare(request)
        while chunk := handle.read(1 << 20):
            await response.write(chunk)
        await response.write_eof()
    return response


async def admin_audit(request: web.Request) -> web.Response:
    """The admin actions this node served since it started (newest last, at most 256)."""
    _check_admin(request)
    records: list[dict[str, Any]] = []
    for app in request.match_info.apps:
        if AUDIT_KEY in app:
            audit: deque[dict[str, Any]] = app[AUDIT_KEY]
            records = list(audit)
    return web.json_response({"actions": records})


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
    app[AUDIT_KEY] = deque(maxlen=ADMIN_AUDIT_RECENT)
    for method, path, handler in OPS_ROUTES:
        app.router.add_route(method, path, handler)
        # The same routes under /admin/v1 as agreed with the backup job.
        app.router.add_route(method, "/admin/v1" + path.removeprefix("/v1/admin"), handler)
    app.router.add_get("/v1/admin/openapi.json", admin_openapi_handler)


OPS_ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/admin/symbols/{symbol}/halt", admin_halt_symbol),
    ("POST", "/v1/admin/symbols/{symbol}/resume", admin_resume_symbol),
    ("GET", "/v1/admin/risk/{client}", admin_get_risk),
    ("PUT", "/v1/admin/risk/{client}", admin_put_risk),
    ("GET", "/v1/admin/retention", admin_get_retention),
    ("PUT", "/v1/admin/retention", admin_put_retention),
    ("POST", "/v1/admin/snapshot", admin_take_snapshot),
    ("GET", "/v1/admin/snapshot", admin_get_snapshot),
    ("GET", "/v1/admin/audit", admin_audit),
]


# ---- the admin API's OpenAPI document ------------------------------------------------

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"]}},
}
_LIMITS = {
    "type": "object",
    "properties": {
        "client_id": {"type": "string", "description": "the client, or * for the defaults"},
        **{
            name: {"type": "integer", "minimum": 0, "description": "0: unlimited"}
            for name in RISK_FIELDS
        },
        "log_index": {"type": "integer", "description": "where the change committed (PUT)"},
    },
}


_RETENTION = {
    "type": "object",
    "properties": {
        "exactly_once_horizon_seconds": {
            "type": "integer",
            "description": "a client_order_id's result is remembered this long (engine time)",
        },
        "exactly_once_max_keys": {
            "type": "integer",
            "description": "the most results remembered; the oldest go first beyond it",
        },
        "finished_orders": {"type": "integer", "description": "finished orders kept for queries"},
        "exactly_once_keys": {"type": "integer", "description": "results remembered now"},
        "exactly_once_evicted_by_cap": {
            "type": "integer",
            "description": "results the cap dropped before their horizon (rising: the "
            "effective horizon is shorter than configured)",
        },
        "log_index": {"type": "integer", "description": "where the change committed (PUT)"},
    },
}


def _op(
    tag: str,
    summary: str,
    ok: dict[str, Any] | None = None,
    *,
    body: dict[str, Any] | None = None,
    params: tuple[str, ...] = (),
    errors: tuple[int, ...] = (400, 401),
    example: Any = None,
    leader: bool = False,
) -> dict[str, Any]:
    description = summary
    if leader:
        description += " Leader only: elsewhere 421 with the leader's id and address."
    ok_content: dict[str, Any] = {"schema": ok or {"type": "object"}}
    if example is not None:
        ok_content["example"] = example
    op: dict[str, Any] = {
        "tags": [tag],
        "summary": summary.split(".")[0],
        "description": description,
        "security": [{"adminToken": []}],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in params
        ],
        "responses": {
            "200": {"description": "done", "content": {"application/json": ok_content}},
            **{
                str(code): {
                    "description": _ERROR_TEXT[code],
                    "content": {"application/json": {"schema": _ERROR}},
                }
                for code in (*errors, *((421, 503, 504) if leader else ()))
            },
        },
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return op


_ERROR_TEXT = {
    400: "bad input; `field` names it",
    401: "no or wrong admin token",
    404: "no such thing",
    421: "not the leader: `leader`, `leader_address`",
    422: "the engine rejected the command (`reason`)",
    503: "no quorum, shutting down or overloaded (Retry-After)",
    504: "accepted, outcome unknown",
}


def admin_openapi() -> dict[str, Any]:
    """OpenAPI 3.1 for ``/v1/admin/*``; a test checks it against the routes."""
    member: dict[str, Any] = {"type": "object", "required": ["id", "address"]}
    member["properties"] = {
        "id": {"type": "integer", "minimum": 1},
        "address": {"type": "string", "description": "host:port of its gRPC peer port"},
        "http_address": {"type": "string", "description": "host:port of its HTTP API"},
    }
    snapshot: dict[str, Any] = {"type": "object", "properties": {"index": {"type": "integer"}}}
    snapshot["properties"]["term"] = {"type": "integer"}
    paths: dict[str, dict[str, Any]] = {
        "/v1/admin/status": {
            "get": _op("cluster", "This node's role, term, indexes and members with lag.")
        },
        "/v1/admin/members": {
            "post": _op("members", "Add a learner.", body=member, leader=True, example={"added": 4})
        },
        "/v1/admin/members/{id}/promote": {
            "post": _op("members", "Promote a caught-up learner.", params=("id",), leader=True)
        },
        "/v1/admin/members/{id}": {
            "delete": _op("members", "Remove a member.", params=("id",), leader=True)
        },
        "/v1/admin/transfer-leadership": {
            "post": _op(
                "cluster",
                "Hand leadership to `target` (or the most caught-up voter).",
                body={"type": "object", "properties": {"target": {"type": ["integer", "null"]}}},
                leader=True,
            )
        },
        "/v1/admin/certificate-request": {
            "get": _op("certificates", "A CSR for this member's key (--peer-tls-enroll).")
        },
        "/v1/admin/certificate": {
            "put": _op(
                "certificates",
                "Install the member certificate signed for the CSR.",
                body={"type": "object", "properties": {"certificate": {"type": "string"}}},
            )
        },
        "/v1/admin/symbols/{symbol}/halt": {
            "post": _op(
                "ops",
                "Halt a symbol: new orders and replaces are rejected, cancels work. "
                "A replicated command; audited with the caller's identity.",
                params=("symbol",),
                errors=(400, 401, 404, 422),
                leader=True,
                example={"symbol": "BTC-USD", "halted": True, "log_index": 812},
            )
        },
        "/v1/admin/symbols/{symbol}/resume": {
            "post": _op(
                "ops",
                "Resume trading a halted symbol. A replicated command; audited.",
                params=("symbol",),
                errors=(400, 401, 404, 422),
                leader=True,
                example={"symbol": "BTC-USD", "halted": False, "log_index": 813},
            )
        },
        "/v1/admin/risk/{client}": {
            "get": _op(
                "ops",
                "A client's pre-trade limits (`*`: the defaults), read after a ReadIndex "
                "barrier. Per symbol except max_open_orders (all symbols). 0: unlimited.",
                ok=_LIMITS,
                params=("client",),
                example={
                    "client_id": "alice",
                    "max_order_qty": 100,
                    "max_notional": 0,
                    "max_position": 0,
                    "max_open_orders": 100000,
                },
            ),
            "put": _op(
                "ops",
                "Set a client's limits (`*`: the defaults); fields left out keep their "
                "value. One replicated log entry; audited.",
                ok=_LIMITS,
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {name: {"type": "integer", "minimum": 0} for name in RISK_FIELDS},
                    "example": {"max_order_qty": 100},
                },
                params=("client",),
                errors=(400, 401, 422),
                leader=True,
            ),
        },
        "/v1/admin/retention": {
            "get": _op(
                "ops",
                "The exactly-once horizon and cap and the finished-order window in force "
                "(replicated: the same on every replica), read after a ReadIndex barrier, "
                "with how many keys the table holds and how many the cap dropped early.",
                ok=_RETENTION,
                example={
                    "exactly_once_horizon_seconds": 86400,
                    "exactly_once_max_keys": 262144,
                    "finished_orders": 65536,
                    "exactly_once_keys": 1200,
                    "exactly_once_evicted_by_cap": 0,
                },
            ),
            "put": _op(
                "ops",
                "Set the retention through the log; fields left out keep their value. In "
                "force at that entry on every replica: lowering one forgets the oldest "
                "entries at once. A node started with the matching --exactly-once-* or "
                "--finished-orders flag sets its own value again when it becomes leader. "
                "Audited.",
                ok=_RETENTION,
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {
                        name: {"type": "integer", "minimum": 1} for name in RETENTION_FIELDS
                    },
                    "example": {"exactly_once_horizon_seconds": 3600},
                },
                errors=(400, 401, 422),
                leader=True,
            ),
        },
        "/v1/admin/snapshot": {
            "post": _op(
                "snapshots",
                "Take a snapshot of this node's state now; answers once it is durable.",
                ok=snapshot,
                errors=(401, 503),
                example={"index": 5120, "term": 3},
            ),
            "get": {
                **_op("snapshots", "Download this node's newest durable snapshot file."),
                "responses": {
                    "200": {
                        "description": "the file as stored; X-Snapshot-Index, X-Snapshot-Term",
                        "content": {"application/octet-stream": {}},
                    },
                    "401": {"description": _ERROR_TEXT[401]},
                    "404": {"description": "no snapshot yet"},
                },
            },
        },
        "/v1/admin/audit": {
            "get": _op("ops", "The admin actions this node served (newest last, 256 at most).")
        },
        "/v1/admin/openapi.json": {"get": _op("meta", "This document.")},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "raft-exchange admin API",
            "version": "1",
            "description": "On --admin-port only. Every route also answers under /admin/v1/ "
            "for the ops routes. The ops controls are replicated commands; the caller's "
            "identity (client certificate subject, or the token plus X-Exchange-Actor) "
            "is logged on logger exchange.audit.",
        },
        "tags": [
            {"name": "cluster", "description": "status and leadership"},
            {"name": "members", "description": "membership changes"},
            {"name": "ops", "description": "halt/resume, risk limits, audit"},
            {"name": "snapshots", "description": "on-demand snapshot and download"},
            {"name": "certificates", "description": "member certificate enrollment"},
            {"name": "meta", "description": "this description"},
        ],
        "components": {"securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


async def admin_openapi_handler(request: web.Request) -> web.Response:
    _check_admin(request)
    return web.json_response(admin_openapi())

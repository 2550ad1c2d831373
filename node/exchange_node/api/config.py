"""ApiConfig: API keys, limits and follower behaviour of the public API.

API keys are bearer tokens, each bound to exactly one client id. They come
from a file (YAML or JSON mapping ``token: client_id``, or a list of
``{token, client_id}``) or from ``EXCHANGE_API_KEYS`` (``token=client_id,...``).
A client never chooses its client id: the key decides.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from exchange_node import limits

ENV_API_KEYS = "EXCHANGE_API_KEYS"
ENV_API_KEYS_FILE = "EXCHANGE_API_KEYS_FILE"


_KEY_LINE = re.compile(r"[^\s=:]+\s*=\s*[^\s=]+")


class ApiConfigError(ValueError):
    pass


@dataclass(slots=True)
class ApiConfig:
    api_keys: dict[str, str] = field(default_factory=dict)
    """token -> client id."""
    rate_limit_per_second: float = limits.API_RATE_LIMIT
    """Orders and other requests per second per key: a batch of N orders costs N (the
    limit bounds the work a key causes: validation, replication, apply), any other
    request 1; 0 disables the limit."""
    rate_limit_burst: int = limits.API_RATE_BURST
    """Bucket size: orders or requests a key may send at once after being idle."""
    key_rate_limits: dict[str, tuple[float, int]] = field(default_factory=dict)
    """token -> its own (rate, burst), from the keys file's ``rate_limit`` and
    ``rate_burst`` (e.g. a market maker's key)."""
    max_body_bytes: int = limits.API_MAX_BODY_BYTES
    max_batch: int = limits.API_MAX_BATCH
    public_market_data: bool = True
    """Symbols, book, trades, BBO, analytics and the cluster view need no key."""
    follower_writes: Literal["forward", "redirect"] = "forward"
    """``forward``: a follower proxies the request to the leader; ``redirect``: it
    answers 421 with the leader's address."""
    forward_timeout_seconds: float = limits.API_FORWARD_TIMEOUT_S
    """Total time for a forwarded request: a little above the node's own write timeout
    (5 s by default) so the leader's answer, even its 504, normally comes back. The
    connect phase is limited to 1 s, so a dead leader is noticed at once."""
    max_forward_hops: int = limits.API_MAX_FORWARD_HOPS
    unavailable_retry_after_seconds: float = limits.API_RETRY_AFTER_S
    ws_send_queue: int = limits.API_WS_SEND_QUEUE
    """Messages queued for one WebSocket before it is dropped as a slow consumer."""
    ws_send_queue_bytes: int = limits.API_WS_SEND_QUEUE_BYTES
    """Bytes one WebSocket may have waiting (its queue plus what the kernel did not
    take) before it is closed 4008: a connection costs at most this plus a constant."""
    ws_heartbeat_seconds: float = limits.API_WS_HEARTBEAT_S
    ws_max_subscriptions: int = limits.API_WS_MAX_SUBSCRIPTIONS
    ws_anonymous_max_subscriptions: int = limits.API_WS_ANONYMOUS_MAX_SUBSCRIPTIONS
    """Subscriptions of one connection without an API key."""
    ws_max_connections: int = limits.API_WS_MAX_CONNECTIONS
    """Open WebSockets per node; one more is refused with 503 + Retry-After."""
    ws_max_connections_per_key: int = limits.API_WS_MAX_CONNECTIONS_PER_KEY
    ws_max_connections_per_address: int = limits.API_WS_MAX_CONNECTIONS_PER_ADDRESS
    """Open WebSockets from one remote address, with or without keys."""
    ws_max_anonymous_per_address: int = limits.API_WS_MAX_ANONYMOUS_PER_ADDRESS
    """Open WebSockets without an API key from one remote address."""
    max_in_flight_per_client: int = limits.API_MAX_IN_FLIGHT_PER_CLIENT
    """Commands of one client being validated, proposed or answered (one full batch);
    more answer 429."""
    http_idle_timeout_seconds: float = limits.API_HTTP_IDLE_TIMEOUT_S
    """A connection idle this long, or whose request line and headers are not complete
    this long after it opened (or after its previous answer), is closed (slowloris)."""
    http_body_timeout_seconds: float = limits.API_HTTP_BODY_TIMEOUT_S
    """A request body not received in full within this time answers 408."""
    auth_failure_rate_per_second: float = limits.API_AUTH_FAILURE_RATE
    """Failed authentications (unknown or malformed keys) per second per remote address."""
    auth_failure_burst: int = limits.API_AUTH_FAILURE_BURST
    ws_max_message_bytes: int = limits.API_WS_MAX_MESSAGE_BYTES
    default_depth: int = 10
    max_depth: int = limits.API_MAX_DEPTH
    default_trades: int = 100
    max_trades: int = limits.API_MAX_TRADES
    price_scales: dict[str, int] = field(default_factory=dict)
    """symbol -> price units per unit of its quote currency (display only: the
    engine trades integers); ``/v1/symbols`` serves it as ``price_scale``."""
    default_price_scale: int = 100
    """``price_scale`` of a symbol without its own: prices in hundredths (cents)."""
    member_status_timeout_seconds: float = limits.API_MEMBER_STATUS_TIMEOUT_S
    """``/v1/cluster/members``: time allowed for each member's own ``/v1/cluster``."""
    member_status_cache_seconds: float = limits.API_MEMBER_STATUS_CACHE_S
    """``/v1/cluster/members``: answers are shared this long (one round of fetches)."""
    member_status_verify_tls: bool = True
    """``/v1/cluster/members`` over HTTPS: verify the members' certificates."""
    member_status_ca_file: str | None = None
    """PEM CA the members' HTTPS certificates are checked against (besides the system
    store); a node serving HTTPS passes its ``--peer-tls-ca`` (in Kubernetes the
    cluster's CA signs the shared HTTP certificate)."""

    def __post_init__(self) -> None:
        for token, client_id in self.api_keys.items():
            if not isinstance(token, str) or not token or not token.isprintable():
                raise ApiConfigError("API key tokens must be non-empty printable strings")
            if any(ch.isspace() for ch in token):
                raise ApiConfigError("API key tokens must not contain whitespace")
            if not isinstance(client_id, str) or not client_id:
                raise ApiConfigError(f"API key {token[:4]}...: client id must be a string")
            if len(client_id.encode()) > 255:
                raise ApiConfigError(f"client id {client_id[:16]!r}... longer than 255 bytes")
        if self.max_batch < 1:
            raise ApiConfigError("max_batch must be >= 1")
        if self.max_body_bytes < 1024:
            raise ApiConfigError("max_body_bytes must be >= 1024")
        if self.rate_limit_per_second < 0 or self.rate_limit_burst < 1:
            raise ApiConfigError("rate limit must be >= 0 per second with a burst >= 1")
        if not (self.rate_limit_per_second < float("inf")):
            raise ApiConfigError("rate limit must be finite")
        for token, (rate, burst) in self.key_rate_limits.items():
            if not 0 <= rate < float("inf") or burst < 1:
                raise ApiConfigError(
                    f"API key {token[:4]}...: rate_limit must be >= 0 per second "
                    "and rate_burst >= 1"
                )
        if self.ws_send_queue < 1 or self.forward_timeout_seconds <= 0:
            raise ApiConfigError("ws_send_queue and forward_timeout_seconds must be positive")
        if self.follower_writes not in ("forward", "redirect"):
            raise ApiConfigError("follower_writes must be 'forward' or 'redirect'")
        for name in _POSITIVE_INTS:
            if getattr(self, name) < 1:
                raise ApiConfigError(f"{name} must be >= 1")
        for name in _POSITIVE_SECONDS:
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ApiConfigError(f"{name} must be a positive number of seconds")
        for symbol, scale in self.price_scales.items():
            if not isinstance(scale, int) or scale < 1:
                raise ApiConfigError(f"price_scale of {symbol} must be a positive integer")
        if self.default_price_scale < 1:
            raise ApiConfigError("default_price_scale must be >= 1")
        if not 0 < self.member_status_timeout_seconds < float("inf"):
            raise ApiConfigError("member_status_timeout_seconds must be positive")
        if not 0 <= self.member_status_cache_seconds < float("inf"):
            raise ApiConfigError("member_status_cache_seconds must be >= 0")
        if not 0 < self.auth_failure_rate_per_second < float("inf"):
            raise ApiConfigError("auth_failure_rate_per_second must be positive")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, keys_file: str | Path | None = None, **kw: Any
    ) -> ApiConfig:
        """Keys from ``keys_file`` (or ``EXCHANGE_API_KEYS_FILE``) plus ``EXCHANGE_API_KEYS``
        (merged with any ``api_keys`` given), and the limits from ``EXCHANGE_API_*``
        variables (see ``ENV_SETTINGS``); keyword arguments win over the environment."""
        env = os.environ if env is None else env
        keys: dict[str, str] = {}
        path = keys_file or env.get(ENV_API_KEYS_FILE)
        if path:
            keys.update(load_api_keys_file(path))
            if "key_rate_limits" not in kw:
                kw["key_rate_limits"] = load_key_rate_limits(path)
        if env.get(ENV_API_KEYS):
            keys.update(parse_api_keys(env[ENV_API_KEYS]))
        keys.update(kw.pop("api_keys", None) or {})
        settings: dict[str, Any] = {}
        for variable, (name, parse) in ENV_SETTINGS.items():
            raw = env.get(variable)
            if raw is None or name in kw:
                continue
            try:
                settings[name] = parse(raw)
            except ValueError as exc:
                raise ApiConfigError(f"{variable}={raw!r}: {exc}") from None
        return cls(api_keys=keys, **settings, **kw)


def _env_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


_POSITIVE_INTS = (
    "ws_send_queue_bytes",
    "ws_max_subscriptions",
    "ws_anonymous_max_subscriptions",
    "ws_max_connections",
    "ws_max_connections_per_key",
    "ws_max_connections_per_address",
    "ws_max_anonymous_per_address",
    "max_in_flight_per_client",
    "auth_failure_burst",
)
_POSITIVE_SECONDS = ("http_idle_timeout_seconds", "http_body_timeout_seconds")

API_FLAGS: dict[str, tuple[str, Any, str]] = {
    "api-rate-limit": (
        "rate_limit_per_second",
        float,
        "orders and requests/s per API key, a batch of N orders counting N (0: no limit)",
    ),
    "api-rate-burst": (
        "rate_limit_burst",
        int,
        "orders or requests a key may send at once when idle",
    ),
    "api-max-body-bytes": ("max_body_bytes", int, "largest request body (413 above)"),
    "api-max-batch": ("max_batch", int, "orders in one batch request (413 above)"),
    "api-public-market-data": (
        "public_market_data",
        _env_bool,
        "market data without a key (false: 401 without one)",
    ),
    "api-follower-writes": ("follower_writes", str, "forward or redirect"),
    "api-forward-timeout-seconds": (
        "forward_timeout_seconds",
        float,
        "total time for a write forwarded to the leader",
    ),
    "api-max-in-flight-per-client": (
        "max_in_flight_per_client",
        int,
        "commands of one client being validated, proposed or answered (429 above)",
    ),
    "api-ws-send-queue": ("ws_send_queue", int, "messages queued per WebSocket (4008 above)"),
    "api-ws-send-queue-bytes": (
        "ws_send_queue_bytes",
        int,
        "bytes waiting per WebSocket, queue and kernel-refused (4008 above)",
    ),
    "api-ws-max-connections": ("ws_max_connections", int, "WebSockets per node"),
    "api-ws-max-connections-per-key": (
        "ws_max_connections_per_key",
        int,
        "WebSockets per API key",
    ),
    "api-ws-max-connections-per-address": (
        "ws_max_connections_per_address",
        int,
        "WebSockets per remote address",
    ),
    "api-ws-max-anonymous-per-address": (
        "ws_max_anonymous_per_address",
        int,
        "WebSockets without a key per remote address",
    ),
    "api-ws-max-subscriptions": ("ws_max_subscriptions", int, "subscriptions per WebSocket"),
    "api-ws-anonymous-max-subscriptions": (
        "ws_anonymous_max_subscriptions",
        int,
        "subscriptions per WebSocket without a key",
    ),
    "api-http-idle-timeout-seconds": (
        "http_idle_timeout_seconds",
        float,
        "close a connection idle, or with incomplete request headers, this long",
    ),
    "api-http-body-timeout-seconds": (
        "http_body_timeout_seconds",
        float,
        "408 when a request body takes longer",
    ),
    "api-auth-failure-rate": (
        "auth_failure_rate_per_second",
        float,
        "failed authentications/s per remote address (429 above)",
    ),
    "api-auth-failure-burst": ("auth_failure_burst", int, "failed authentications at once"),
}
"""The node's ``--api-*`` flags -> (ApiConfig field, parser, help); each flag's
variable is ``EXCHANGE_`` + the flag in upper case (``--api-max-batch``:
``EXCHANGE_API_MAX_BATCH``)."""

ENV_SETTINGS: dict[str, tuple[str, Any]] = {
    "EXCHANGE_" + flag.upper().replace("-", "_"): (name, parse)
    for flag, (name, parse, _help) in API_FLAGS.items()
}
"""Environment variables for the API's limits -> ApiConfig field."""


def parse_api_keys(text: str) -> dict[str, str]:
    """``token=client_id,token2=client_id2`` -> {token: client_id}."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        token, sep, client_id = item.partition("=")
        token, client_id = token.strip(), client_id.strip()
        if not sep or not token or not client_id:
            raise ApiConfigError(f"{ENV_API_KEYS}: entry {item[:8]!r}... is not token=client_id")
        if token in keys:
            raise ApiConfigError(f"{ENV_API_KEYS}: a token appears twice")
        keys[token] = client_id
    return keys


def load_api_keys_file(path: str | Path) -> dict[str, str]:
    """``token=client_id`` lines, or YAML/JSON: ``{token: client_id}`` or
    ``[{token: ..., client_id: ...}]`` (optionally under a top-level ``keys``; a list
    entry may also carry ``rate_limit`` and ``rate_burst``: load_key_rate_limits)."""
    text = Path(path).read_text(encoding="utf-8")
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    if lines and all(_KEY_LINE.fullmatch(line) for line in lines):
        # The node's plain format: one ``token=client_id`` per line.
        return parse_api_keys(",".join(lines))
    try:
        data: Any = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiConfigError(f"{path}: not valid YAML/JSON: {exc}") from None
    if data is None:
        return {}
    if isinstance(data, Mapping) and "keys" in data and len(data) == 1:
        data = data["keys"]
    keys: dict[str, str] = {}
    if isinstance(data, Mapping):
        items = list(data.items())
    elif isinstance(data, list):
        items = []
        for entry in data:
            if not isinstance(entry, Mapping) or {"token", "client_id"} - set(entry):
                raise ApiConfigError(f"{path}: list entries need token and client_id")
            items.append((entry["token"], entry["client_id"]))
    else:
        raise ApiConfigError(f"{path}: expected a mapping token -> client_id")
    for token, client_id in items:
        if not isinstance(token, str) or not isinstance(client_id, str | int):
            raise ApiConfigError(f"{path}: tokens and client ids must be strings")
        if token in keys:
            raise ApiConfigError(f"{path}: a token appears twice")
        keys[token] = str(client_id)
    return keys


def load_key_rate_limits(path: str | Path) -> dict[str, tuple[float, int]]:
    """token -> (rate, burst) of the keys file's list entries that have ``rate_limit``
    (orders or requests per second) and optionally ``rate_burst`` (default: twice
    the rate, at least 1); the other forms set no per-key limits."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data: Any = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        return {}  # the plain token=client_id format (load_api_keys_file checks it)
    if isinstance(data, Mapping) and "keys" in data and len(data) == 1:
        data = data["keys"]
    if not isinstance(data, list):
        return {}
    limits: dict[str, tuple[float, int]] = {}
    for entry in data:
        if not isinstance(entry, Mapping) or "rate_limit" not in entry:
            if isinstance(entry, Mapping) and "rate_burst" in entry:
                raise ApiConfigError(f"{path}: rate_burst without rate_limit")
            continue
        token, rate, burst = entry.get("token"), entry["rate_limit"], entry.get("rate_burst")
        where = f"{path}: key {str(token)[:4]}..."
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ApiConfigError(f"{where}: rate_limit must be a number, got {rate!r}")
        if burst is None:
            burst = max(1, int(2 * rate))
        if isinstance(burst, bool) or not isinstance(burst, int):
            raise ApiConfigError(f"{where}: rate_burst must be an integer, got {burst!r}")
        if not 0 <= rate < float("inf") or burst < 1:
            raise ApiConfigError(f"{where}: rate_limit must be >= 0 and rate_burst >= 1")
        limits[str(token)] = (float(rate), burst)
    return limits

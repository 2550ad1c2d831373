"""The node's configuration: flags, ``EXCHANGE_*`` environment variables, YAML.

Every flag ``--some-flag`` has the variable ``EXCHANGE_SOME_FLAG``; a flag
given on the command line wins over the environment, which wins over the
default (docs/node-contract.md, "Configuration"). A bad value, from either
source, raises ``ConfigError`` with a message that names the flag (and the
variable when it came from there), which the CLI prints as a usage error.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from exchange_node.limits import ENGINE_RETENTION_MAX_ENTRIES, ENGINE_RETENTION_MAX_HORIZON_NS

ENV_PREFIX = "EXCHANGE_"


class ConfigError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class SymbolConfig:
    name: str
    tick_size: int = 1
    lot_size: int = 1
    price_band_bps: int = 1_000
    reference_price: int = 10_000
    price_scale: int = 100
    """Price units per unit of the quote currency, for display (/v1/symbols); not
    replicated: the engine trades integers."""


@dataclass(frozen=True, slots=True)
class RiskConfig:
    max_order_qty: int = 1_000_000
    max_notional: int = 10**12
    max_position: int = 10**9
    max_open_orders: int = 100_000
    """Resting orders per client, all symbols together (engine: SetOrderLimits); 0: unlimited."""


DEFAULT_SYMBOLS = (
    SymbolConfig("BTC-USD", tick_size=1, lot_size=1, price_band_bps=2_000, reference_price=50_000),
    SymbolConfig("ETH-USD", tick_size=1, lot_size=1, price_band_bps=2_000, reference_price=3_000),
)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """Engine retention the leader sets through the log (engine: SetRetention) at every
    new term when it differs; None leaves the cluster's own value (docs/api.md)."""

    exactly_once_horizon_ns: int | None = None
    exactly_once_max_keys: int | None = None
    finished_orders: int | None = None

    def wanted(self, current: tuple[int, int, int]) -> tuple[int, int, int]:
        """(horizon ns, max keys, finished orders): these settings over ``current``."""
        horizon, keys, finished = current
        return (
            horizon if self.exactly_once_horizon_ns is None else self.exactly_once_horizon_ns,
            keys if self.exactly_once_max_keys is None else self.exactly_once_max_keys,
            finished if self.finished_orders is None else self.finished_orders,
        )


@dataclass(frozen=True, slots=True)
class PeerSpec:
    node_id: int
    grpc_address: str
    http_address: str


@dataclass(slots=True)
class NodeConfig:
    name: str
    node_id: int | None
    peers: list[PeerSpec]
    cluster_state: str
    http_port: int
    grpc_port: int
    listen_host: str
    advertise_address: str
    advertise_http: str
    data_dir: Path
    config_file: Path | None
    symbols: tuple[SymbolConfig, ...]
    risk: RiskConfig
    api_keys: dict[str, str]
    admin_token: str | None
    snapshot_threshold: int
    """Also snapshot after this many entries since the last one (0: bytes only)."""
    election_ms: int
    heartbeat_ms: int
    shutdown_grace_seconds: float
    max_pending_proposals: int
    request_timeout_ms: int
    log_level: str
    commit_hold_ms: float = 2.0
    api_settings: dict[str, Any] = field(default_factory=dict)
    """ApiConfig fields from the ``--api-*`` flags and ``EXCHANGE_API_*`` variables."""
    # The admin API's own listener and optional TLS on both HTTP listeners.
    admin_port: int = 8081
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None
    admin_tls_client_ca: Path | None = None
    await_member_certificate: bool = False
    peer_tls_enroll: bool = False
    # The Raft peer port: cluster identity, mutual TLS and incoming snapshot bounds.
    cluster_id: str = "exchange"
    peer_tls_cert: Path | None = None
    peer_tls_key: Path | None = None
    peer_tls_ca: Path | None = None
    insecure_peers: bool = False
    max_snapshot_bytes: int = 1 << 30
    snapshot_bytes: int = 64 << 20
    """Snapshot once the entries applied since the last one reach this many bytes."""
    checkpoint_entries: int = 50_000
    """Divergence checkpoint (state hash) at every multiple of this applied index."""
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grpc_listen(self) -> str:
        return f"{self.listen_host}:{self.grpc_port}"

    @property
    def peer_tls(self) -> Any:
        """A ``transport.tls.PeerTLS``, or None with ``--insecure-peers``."""
        from exchange_node.transport.tls import PeerTLS

        if self.peer_tls_cert is None or self.peer_tls_key is None or self.peer_tls_ca is None:
            return None
        return PeerTLS(self.peer_tls_cert, self.peer_tls_key, self.peer_tls_ca)


# --- parsing helpers ---------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65_535:
        raise ValueError("must be a port number 0..65535")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite number >= 0")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _cluster_id(text: str) -> str:
    from exchange_node.security.certs import validate_cluster_id

    return validate_cluster_id(text)


_SIZE_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20}
_SIZE_UNITS |= {"g": 1 << 30, "gib": 1 << 30}


def _byte_size(text: str) -> int:
    """``1073741824``, ``512MiB`` or ``1GiB`` (binary units)."""
    stripped = text.strip().lower()
    digits = stripped.rstrip("kmgib")
    unit = stripped[len(digits) :]
    if unit not in _SIZE_UNITS or not digits.strip().isdigit():
        raise ValueError("must be a number of bytes, optionally with KiB, MiB or GiB")
    value = int(digits) * _SIZE_UNITS[unit]
    if value < 1:
        raise ValueError("must be >= 1")
    return value


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def parse_horizon_ns(text: str) -> int:
    """``86400``, ``3600s``, ``90m``, ``24h`` or ``7d``: whole seconds, 1 s to 366 days."""
    stripped = text.strip().lower()
    unit = stripped[-1:] if stripped[-1:] in _DURATION_UNITS else ""
    digits = stripped[: len(stripped) - len(unit)]
    if not digits.isdigit():
        raise ValueError("must be whole seconds, or a number with s, m, h or d (e.g. 24h)")
    nanoseconds = int(digits) * _DURATION_UNITS.get(unit, 1) * 1_000_000_000
    if not 1 <= nanoseconds <= ENGINE_RETENTION_MAX_HORIZON_NS:
        raise ValueError("must be from 1 s to 366 days")
    return nanoseconds


def _retention_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= ENGINE_RETENTION_MAX_ENTRIES:
        raise ValueError(f"must be in 1..{ENGINE_RETENTION_MAX_ENTRIES}")
    return value


def _cluster_state(text: str) -> str:
    if text not in ("new", "existing"):
        raise ValueError("must be 'new' or 'existing'")
    return text


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    _port(port)
    return text


def parse_peer_map(text: str) -> dict[int, str]:
    """``1=host:port,2=host:port`` -> {1: "host:port", 2: ...}."""
    peers: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        ident, sep, address = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not id=host:port")
        node_id = int(ident)
        if node_id < 1:
            raise ValueError(f"node id {node_id} must be >= 1")
        if node_id in peers:
            raise ValueError(f"node id {node_id} appears twice")
        peers[node_id] = _host_port(address.strip())
    return peers


# name -> (parser, default, help)
_OPTIONS: dict[str, tuple[Callable[[str], Any], Any, str]] = {
    "name": (str, None, "human name of this node (default: the hostname)"),
    "node-id": (_positive_int, None, "Raft id; otherwise from identity.json or the name's ordinal"),
    "peers": (parse_peer_map, None, "initial voters of a new cluster: 1=host:port,2=host:port"),
    "peer-http": (
        parse_peer_map,
        None,
        "HTTP addresses of the initial voters: 1=host:port,... "
        "(default: each peer's gRPC host with this node's --http-port)",
    ),
    "cluster-state": (_cluster_state, "new", "new | existing"),
    "http-port": (_port, 8080, "HTTP API, WebSocket, /metrics and probes"),
    "grpc-port": (_port, 7070, "Raft peer traffic"),
    "cluster-id": (
        _cluster_id,
        "exchange",
        "this cluster's id; peers of another cluster id are refused (and it must match "
        "the id in --peer-tls-cert)",
    ),
    "peer-tls-cert": (
        Path,
        None,
        "PEM member certificate for the peer port (`exchange certs member`); reloaded on change",
    ),
    "peer-tls-key": (Path, None, "PEM private key for --peer-tls-cert"),
    "peer-tls-ca": (Path, None, "PEM CA that signed every member certificate"),
    "insecure-peers": (
        _bool,
        False,
        "run the peer port without TLS: anyone who reaches it controls the cluster; "
        "for local experiments only",
    ),
    "max-snapshot-bytes": (
        _byte_size,
        1 << 30,
        "largest snapshot accepted from a peer (bytes, or with KiB/MiB/GiB)",
    ),
    "admin-port": (_port, 8081, "the admin API (/v1/admin/*) only; keep it off client Services"),
    "http-tls-cert": (
        Path,
        None,
        "PEM certificate (chain) for TLS on the HTTP and admin listeners; reloaded on change",
    ),
    "http-tls-key": (Path, None, "PEM private key for --http-tls-cert"),
    "await-member-certificate": (
        _bool,
        False,
        "when --peer-tls-cert names another member id (a new pod's id is only known once it "
        "runs), serve HTTP and admin and wait for a matching certificate instead of exiting",
    ),
    "peer-tls-enroll": (
        _bool,
        False,
        "generate the member key in <data-dir>/peer-tls/ (0600, it never leaves this node) and "
        "take its certificate through the admin API (GET /v1/admin/certificate-request, "
        "PUT /v1/admin/certificate); needs --peer-tls-ca, implies --await-member-certificate",
    ),
    "admin-tls-client-ca": (
        Path,
        None,
        "PEM CA bundle: the admin listener then requires client certificates it signed",
    ),
    "listen-host": (str, "0.0.0.0", "address both servers bind"),
    "advertise-address": (_host_port, None, "gRPC host:port other members use for this node"),
    "advertise-http": (_host_port, None, "HTTP host:port other members use for this node"),
    "data-dir": (Path, Path("./data"), "WAL, snapshots, identity.json"),
    "config": (Path, None, "YAML with symbols and risk limits"),
    "api-keys-file": (Path, None, "file of token=client_id lines"),
    "admin-token-file": (Path, None, "file holding the admin token"),
    "snapshot-bytes": (
        _byte_size,
        64 << 20,
        "take a snapshot once the entries applied since the last one reach this size "
        "(bytes, or with KiB/MiB/GiB): the bound on the in-memory log (docs/snapshots.md)",
    ),
    "snapshot-threshold": (
        _non_negative_int,
        0,
        "also take a snapshot after this many entries since the last one (0: bytes only)",
    ),
    "checkpoint-entries": (
        _non_negative_int,
        50_000,
        "hash the state at every applied index that is a multiple of this (the same on "
        "every replica), for divergence checks (0: no fixed checkpoints)",
    ),
    "exactly-once-horizon": (
        parse_horizon_ns,
        None,
        "how long a client_order_id's result is remembered for retries (24h, 90m, 3600s); "
        "every new leader sets it through the log when it differs (unset: the cluster's "
        "own value, 24h unless changed with PUT /v1/admin/retention)",
    ),
    "exactly-once-max-keys": (
        _retention_count,
        None,
        "the most client_order_id results remembered, all clients together (about 0.7 KB "
        "each; unset: the cluster's own value, 262144 unless changed); set like "
        "--exactly-once-horizon",
    ),
    "finished-orders": (
        _retention_count,
        None,
        "finished orders kept for queries (unset: the cluster's own value, 65536 unless "
        "changed); set like --exactly-once-horizon",
    ),
    "election-ms": (_positive_int, 1_000, "election timeout in milliseconds"),
    "heartbeat-ms": (_positive_int, 100, "heartbeat interval in milliseconds (one core tick)"),
    "shutdown-grace-seconds": (_non_negative_float, 20.0, "SIGTERM: exit within this many seconds"),
    "max-pending-proposals": (
        _positive_int,
        20_000,
        "commands waiting to be proposed or committed before 503",
    ),
    "request-timeout-ms": (_positive_int, 5_000, "a write not applied in time answers 504"),
    "commit-hold-ms": (
        _non_negative_float,
        2.0,
        "a leader holds an append that only carries a new commit index this long, "
        "so that the next append carries it instead (0: send at once)",
    ),
    "log-level": (str, "info", "debug | info | warning | error"),
}


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.upper().replace("-", "_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, (parse, default, help_text) in _OPTIONS.items():
        shown = "" if default is None else f" [default: {default}]"
        # A boolean flag alone means true (``--insecure-peers``); a value is also accepted.
        boolean: dict[str, Any] = {"nargs": "?", "const": "true"} if parse is _bool else {}
        parser.add_argument(
            f"--{flag}",
            dest=flag.replace("-", "_"),
            default=None,
            metavar=flag.split("-")[-1].upper(),
            help=f"{help_text}{shown} (env {env_name(flag)})",
            **boolean,
        )
    _add_api_arguments(parser)


def _add_api_arguments(parser: argparse.ArgumentParser) -> None:
    from exchange_node.api.config import API_FLAGS, ApiConfig

    defaults = ApiConfig()
    for flag, (name, _parse, help_text) in API_FLAGS.items():
        parser.add_argument(
            f"--{flag}",
            dest=flag.replace("-", "_"),
            default=None,
            metavar="VALUE",
            help=f"{help_text} [default: {getattr(defaults, name)}] (env {env_name(flag)})",
        )


def _api_settings(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """The ``--api-*`` flags given (or their variables), checked one by one so that an
    error names the flag."""
    from exchange_node.api.config import (
        API_FLAGS,
        ApiConfig,
        ApiConfigError,
        load_key_rate_limits,
    )

    settings: dict[str, Any] = {}
    for flag, (name, parse, _help) in API_FLAGS.items():
        raw = getattr(args, flag.replace("-", "_"), None)
        source = f"--{flag}"
        if raw is None and env.get(env_name(flag)):
            raw = env[env_name(flag)]
            source = f"--{flag} (from {env_name(flag)})"
        if raw is None:
            continue
        try:
            settings[name] = parse(raw)
            ApiConfig(**{name: settings[name]})
        except (ValueError, ApiConfigError) as exc:
            raise ConfigError(f"{source}: invalid value {raw!r}: {exc}") from None
    path = _value("api-keys-file", args, env)
    if path is not None:
        # Per-key rate limits (``rate_limit``/``rate_burst`` of the YAML list form).
        try:
            settings["key_rate_limits"] = load_key_rate_limits(path)
        except OSError as exc:
            raise ConfigError(f"--api-keys-file: cannot read {path}: {exc}") from None
        except ApiConfigError as exc:
            raise ConfigError(f"--api-keys-file: {exc}") from None
    return settings


def _value(flag: str, args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    parse, default, _help = _OPTIONS[flag]
    raw = getattr(args, flag.replace("-", "_"), None)
    source = f"--{flag}"
    if raw is None and env.get(env_name(flag)):
        raw = env[env_name(flag)]
        source = f"--{flag} (from {env_name(flag)})"
    if raw is None:
        return default
    try:
        return parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: invalid value {raw!r}: {exc}") from None


def load_yaml_config(path: Path) -> tuple[tuple[SymbolConfig, ...], RiskConfig]:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"--config: {path} must hold a mapping")
    symbols: list[SymbolConfig] = []
    for i, item in enumerate(doc.get("symbols") or []):
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"--config: symbols[{i}] needs a name")
        unknown = set(item) - set(SymbolConfig.__slots__)
        if unknown:
            raise ConfigError(f"--config: symbols[{i}] has unknown keys {sorted(unknown)}")
        try:
            symbols.append(
                SymbolConfig(
                    name=str(item["name"]),
                    **{
                        k: _strict_int(v, f"symbols[{i}].{k}")
                        for k, v in item.items()
                        if k != "name"
                    },
                )
            )
        except ValueError as exc:
            raise ConfigError(f"--config: {exc}") from None
    risk_doc = doc.get("risk") or {}
    if not isinstance(risk_doc, dict):
        raise ConfigError("--config: risk must be a mapping")
    unknown = set(risk_doc) - set(RiskConfig.__slots__)
    if unknown:
        raise ConfigError(f"--config: risk has unknown keys {sorted(unknown)}")
    try:
        risk = RiskConfig(**{k: _strict_int(v, f"risk.{k}") for k, v in risk_doc.items()})
    except ValueError as exc:
        raise ConfigError(f"--config: {exc}") from None
    return tuple(symbols) or DEFAULT_SYMBOLS, risk


def _strict_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def _api_keys(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, str]:
    """Keys from ``--api-keys-file`` (YAML/JSON ``token: client_id``) plus ``EXCHANGE_API_KEYS``."""
    from exchange_node.api.config import ApiConfigError, load_api_keys_file, parse_api_keys

    keys: dict[str, str] = {}
    path = _value("api-keys-file", args, env)
    try:
        if path is not None:
            keys.update(load_api_keys_file(path))
        if env.get(f"{ENV_PREFIX}API_KEYS"):
            keys.update(parse_api_keys(env[f"{ENV_PREFIX}API_KEYS"]))
    except OSError as exc:
        raise ConfigError(f"--api-keys-file: cannot read {path}: {exc}") from None
    except ApiConfigError as exc:
        raise ConfigError(f"--api-keys-file / EXCHANGE_API_KEYS: {exc}") from None
    return keys


def _admin_token(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    path = _value("admin-token-file", args, env)
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--admin-token-file: cannot read {path}: {exc}") from None
        if not token:
            raise ConfigError(f"--admin-token-file: {path} is empty")
        return str(token)
    return env.get(f"{ENV_PREFIX}ADMIN_TOKEN") or None


def _admin_and_tls(
    args: argparse.Namespace, env: Mapping[str, str], http_port: int
) -> tuple[int, Path | None, Path | None, Path | None]:
    admin_port = _value("admin-port", args, env)
    if admin_port == http_port and admin_port != 0:
        raise ConfigError(f"--admin-port ({admin_port}) must differ from --http-port")
    cert = _value("http-tls-cert", args, env)
    key = _value("http-tls-key", args, env)
    if (cert is None) != (key is None):
        raise ConfigError("--http-tls-cert and --http-tls-key must be given together")
    client_ca = _value("admin-tls-client-ca", args, env)
    if client_ca is not None and cert is None:
        raise ConfigError("--admin-tls-client-ca needs --http-tls-cert and --http-tls-key")
    for flag, path in (
        ("--http-tls-cert", cert),
        ("--http-tls-key", key),
        ("--admin-tls-client-ca", client_ca),
    ):
        if path is not None and not path.is_file():
            raise ConfigError(f"{flag}: {path} is not a readable file")
    return admin_port, cert, key, client_ca


def _enrolled_files(
    files: dict[str, Path | None], insecure: bool, data_dir: Path
) -> tuple[Path, Path, Path]:
    """--peer-tls-enroll: the member key and certificate live in the data directory."""
    from exchange_node.security.enrollment import MemberEnrollment

    if insecure:
        raise ConfigError("--insecure-peers contradicts --peer-tls-enroll")
    for flag in ("peer-tls-cert", "peer-tls-key"):
        if files[flag] is not None:
            raise ConfigError(
                f"--{flag} contradicts --peer-tls-enroll (the node keeps its member key "
                "and certificate in <data-dir>/peer-tls/)"
            )
    ca = files["peer-tls-ca"]
    if ca is None:
        raise ConfigError("--peer-tls-enroll needs --peer-tls-ca (the CA that signs members)")
    enrollment = MemberEnrollment.for_data_dir(data_dir, ca, "unused", 1)
    return enrollment.cert_file, enrollment.key_file, ca


def _peer_security(
    args: argparse.Namespace, env: Mapping[str, str], node_id: int | None
) -> tuple[str, Path | None, Path | None, Path | None, bool]:
    """Cluster id, peer TLS files and --insecure-peers; secure unless told otherwise."""
    cluster_id = _value("cluster-id", args, env)
    files = {
        flag: _value(flag, args, env) for flag in ("peer-tls-cert", "peer-tls-key", "peer-tls-ca")
    }
    insecure = _value("insecure-peers", args, env)
    given = [flag for flag, path in files.items() if path is not None]
    if _value("peer-tls-enroll", args, env):
        return (cluster_id, *_enrolled_files(files, insecure, _value("data-dir", args, env)), False)
    if given and len(given) < 3:
        missing = ", ".join(f"--{flag}" for flag in files if flag not in given)
        raise ConfigError(
            "--peer-tls-cert, --peer-tls-key and --peer-tls-ca go together; missing: " + missing
        )
    if given and insecure:
        raise ConfigError(
            "--insecure-peers contradicts --peer-tls-cert/--peer-tls-key/--peer-tls-ca"
        )
    if not given and not insecure:
        raise ConfigError(
            "the peer port needs mutual TLS: give --peer-tls-cert, --peer-tls-key and "
            "--peer-tls-ca (create them with `exchange certs`), or --insecure-peers to run "
            "without authentication (local experiments only)"
        )
    cert, key, ca = files["peer-tls-cert"], files["peer-tls-key"], files["peer-tls-ca"]
    if cert is not None and key is not None and ca is not None:
        from exchange_node.transport.tls import PeerTLS, PeerTLSError, check_identity, load_material

        try:
            material = load_material(PeerTLS(cert, key, ca))
            # The node id may still come from identity.json; the transport checks it then.
            check_identity(material, cluster_id, node_id or material.member_id)
        except PeerTLSError as exc:
            raise ConfigError(str(exc)) from None
    return cluster_id, cert, key, ca, insecure


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> NodeConfig:
    env = os.environ if env is None else env
    name = _value("name", args, env) or socket.gethostname()
    http_port = _value("http-port", args, env)
    grpc_port = _value("grpc-port", args, env)
    listen_host = _value("listen-host", args, env)
    peer_grpc: dict[int, str] = _value("peers", args, env) or {}
    peer_http: dict[int, str] = _value("peer-http", args, env) or {}
    extra_http = set(peer_http) - set(peer_grpc)
    if extra_http:
        raise ConfigError(f"--peer-http: ids {sorted(extra_http)} are not in --peers")
    peers = [
        PeerSpec(
            node_id,
            address,
            peer_http.get(node_id) or f"{address.rpartition(':')[0]}:{http_port}",
        )
        for node_id, address in sorted(peer_grpc.items())
    ]
    host = socket.gethostname() if listen_host in ("0.0.0.0", "::", "") else listen_host
    advertise = _value("advertise-address", args, env) or f"{host}:{grpc_port}"
    advertise_http = _value("advertise-http", args, env) or f"{host}:{http_port}"
    config_file = _value("config", args, env)
    symbols, risk = (
        load_yaml_config(config_file) if config_file else (DEFAULT_SYMBOLS, RiskConfig())
    )
    election_ms = _value("election-ms", args, env)
    heartbeat_ms = _value("heartbeat-ms", args, env)
    if election_ms < 2 * heartbeat_ms:
        raise ConfigError(
            f"--election-ms ({election_ms}) must be at least twice --heartbeat-ms ({heartbeat_ms})"
        )
    commit_hold_ms = _value("commit-hold-ms", args, env)
    if commit_hold_ms > heartbeat_ms:
        raise ConfigError(
            f"--commit-hold-ms ({commit_hold_ms}) must not exceed --heartbeat-ms ({heartbeat_ms})"
        )
    admin_port, http_tls_cert, http_tls_key, admin_tls_client_ca = _admin_and_tls(
        args, env, http_port
    )
    node_id = _value("node-id", args, env)
    cluster_id, peer_tls_cert, peer_tls_key, peer_tls_ca, insecure_peers = _peer_security(
        args, env, node_id
    )
    level = _value("log-level", args, env).lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"--log-level: invalid value {level!r}")
    return NodeConfig(
        name=name,
        node_id=node_id,
        peers=peers,
        cluster_state=_value("cluster-state", args, env),
        http_port=http_port,
        grpc_port=grpc_port,
        listen_host=listen_host,
        advertise_address=advertise,
        advertise_http=advertise_http,
        data_dir=_value("data-dir", args, env),
        config_file=config_file,
        symbols=symbols,
        risk=risk,
        api_keys=_api_keys(args, env),
        admin_token=_admin_token(args, env),
        snapshot_threshold=_value("snapshot-threshold", args, env),
        snapshot_bytes=_value("snapshot-bytes", args, env),
        checkpoint_entries=_value("checkpoint-entries", args, env),
        election_ms=election_ms,
        heartbeat_ms=heartbeat_ms,
        shutdown_grace_seconds=_value("shutdown-grace-seconds", args, env),
        max_pending_proposals=_value("max-pending-proposals", args, env),
        request_timeout_ms=_value("request-timeout-ms", args, env),
        log_level=level,
        commit_hold_ms=commit_hold_ms,
        api_settings=_api_settings(args, env),
        admin_port=admin_port,
        http_tls_cert=http_tls_cert,
        http_tls_key=http_tls_key,
        admin_tls_client_ca=admin_tls_client_ca,
        await_member_certificate=_value("await-member-certificate", args, env)
        or _value("peer-tls-enroll", args, env),
        peer_tls_enroll=_value("peer-tls-enroll", args, env),
        cluster_id=cluster_id,
        peer_tls_cert=peer_tls_cert,
        peer_tls_key=peer_tls_key,
        peer_tls_ca=peer_tls_ca,
        insecure_peers=insecure_peers,
        max_snapshot_bytes=_value("max-snapshot-bytes", args, env),
        retention=RetentionConfig(
            _value("exactly-once-horizon", args, env),
            _value("exactly-once-max-keys", args, env),
            _value("finished-orders", args, env),
        ),
    )

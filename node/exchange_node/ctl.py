"""etcdctl-style admin commands: one form for every cluster, local or remote.

    exchange --endpoints URL[,URL] --admin-token-file F COMMAND ...

``--endpoints`` are the nodes' admin listeners (``--admin-port``); the same flags
come from ``EXCHANGE_ENDPOINTS`` and ``EXCHANGE_ADMIN_TOKEN_FILE`` (or the token
itself in ``EXCHANGE_ADMIN_TOKEN``). Without endpoints the commands use the local
cluster that ``exchange local up`` or ``make demo`` started (``--data-root``,
``EXCHANGE_DATA_ROOT``, else ``./.demo`` or ``./local-cluster``). Commands:

    cluster status [--watch]          every endpoint's role, term, indexes, lag
    member list [--watch] | add ID ADDRESS [--http-address A] | promote ID | remove ID
    leader transfer [--to ID]
    snapshot save FILE                take a snapshot now and download it
    symbol halt SYMBOL | resume SYMBOL
    risk get CLIENT | set CLIENT [--max-order-qty N] [--max-notional N] ...
    retention get | set [--horizon 24h] [--max-keys N] [--finished-orders N]
    audit list                        who did what: every endpoint's admin actions
    top                               the terminal UI (public API endpoints)

``-o table|json|yaml`` chooses the output. The caller's ``user@host`` goes to the
node's audit log with each change (``X-Exchange-Actor``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_ROOTS = (".demo", "local-cluster")
OUTPUTS = ("table", "json", "yaml")

# command -> (help, actions)
CTL_COMMANDS: dict[str, str] = {
    "cluster": "cluster status (admin API), --watch to follow it",
    "member": "list, add, promote or remove members",
    "leader": "transfer leadership",
    "snapshot": "take a snapshot now and save it to a file",
    "symbol": "halt or resume trading a symbol",
    "risk": "read or set a client's pre-trade risk limits",
    "retention": "read or set how long and how many exactly-once results are kept",
    "audit": "the admin actions every endpoint's node served: who did what",
    "top": "terminal UI: members, book, trades, throughput, alerts (public API)",
}


class UsageError(Exception):
    """A bad flag or value; the message names it."""


# ---- arguments -----------------------------------------------------------------------


def _connection_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--endpoints",
        default=default,
        metavar="URL[,URL]",
        help="admin listeners of the nodes (env EXCHANGE_ENDPOINTS); for `top`, their public "
        "API. Default: the local cluster in --data-root",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        default=default,
        metavar="FILE",
        help="file holding the admin token (env EXCHANGE_ADMIN_TOKEN_FILE, or the token in "
        "EXCHANGE_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=default,
        help="a local cluster's directory (env EXCHANGE_DATA_ROOT; default ./.demo, "
        "then ./local-cluster)",
    )
    parser.add_argument(
        "-o", "--output", choices=OUTPUTS, default=default, help="output format (default table)"
    )
    parser.add_argument(
        "--cacert", type=Path, default=default, help="CA of https endpoints (env EXCHANGE_CACERT)"
    )
    parser.add_argument(
        "--cert",
        type=Path,
        default=default,
        help="client certificate for an admin listener that requires one "
        "(--admin-tls-client-ca; env EXCHANGE_CERT)",
    )
    parser.add_argument(
        "--key", type=Path, default=default, help="its private key (env EXCHANGE_KEY)"
    )


def add_global_arguments(parser: argparse.ArgumentParser) -> None:
    """The connection flags, accepted before the command (etcdctl style) and after it."""
    _connection_flags(parser, None)


def _watch_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-w", "--watch", action="store_true", help="refresh until Ctrl-C")
    parser.add_argument(
        "--interval",
        type=_positive_float("--interval"),
        default=2.0,
        help="seconds between refreshes (--watch)",
    )
    parser.add_argument(
        "--count",
        type=_non_negative_int("--count"),
        default=0,
        help="with --watch: stop after N refreshes (0: never)",
    )


def register(sub: Any) -> None:
    """Add the ctl commands to the ``exchange`` command's subparsers."""
    for name, help_text in CTL_COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _connection_flags(p, argparse.SUPPRESS)
        actions = p.add_subparsers(dest="action", required=name != "top", metavar="ACTION")
        if name == "cluster":
            _watch_flags(actions.add_parser("status", help="every endpoint's status"))
        elif name == "member":
            _watch_flags(actions.add_parser("list", help="members as the leader sees them"))
            add = actions.add_parser("add", help="add a learner")
            add.add_argument("id", type=_positive_int("ID"))
            add.add_argument("address", help="host:port of its gRPC peer port")
            add.add_argument("--http-address", help="host:port of its HTTP API")
            for action in ("promote", "remove"):
                a = actions.add_parser(action, help=f"{action} a member")
                a.add_argument("id", type=_positive_int("ID"))
        elif name == "leader":
            t = actions.add_parser("transfer", help="hand leadership over")
            t.add_argument("--to", type=_positive_int("--to"), help="target member id")
        elif name == "snapshot":
            s = actions.add_parser("save", help="snapshot now, download it to FILE")
            s.add_argument("file", type=Path)
        elif name == "symbol":
            for action in ("halt", "resume"):
                a = actions.add_parser(action, help=f"{action} trading")
                a.add_argument("symbol")
        elif name == "risk":
            g = actions.add_parser("get", help="a client's limits (* : the defaults)")
            g.add_argument("client")
            s = actions.add_parser("set", help="set some limits (0: unlimited)")
            s.add_argument("client")
            for flag in ("max-order-qty", "max-notional", "max-position", "max-open-orders"):
                s.add_argument(f"--{flag}", type=_non_negative_int(f"--{flag}"))
        elif name == "retention":
            actions.add_parser("get", help="the settings in force and how full the table is")
            s = actions.add_parser("set", help="set some of them, through the log")
            s.add_argument("--horizon", type=_horizon_seconds, help="e.g. 24h, 90m, 3600s")
            s.add_argument("--max-keys", type=_positive_int("--max-keys"))
            s.add_argument("--finished-orders", type=_positive_int("--finished-orders"))
        elif name == "audit":
            actions.add_parser("list", help="every endpoint's recent admin actions, oldest first")
        elif name == "top":
            p.add_argument("--symbol", help="the book and trades shown (default: the first)")
            p.add_argument(
                "--refresh",
                type=_positive_float("--refresh"),
                default=1.0,
                help="seconds between polls",
            )
        for action_parser in actions.choices.values():
            _connection_flags(action_parser, argparse.SUPPRESS)
        p.set_defaults(_main=main, ctl_command=name)


def _horizon_seconds(text: str) -> int:
    from exchange_node.server.config import parse_horizon_ns

    try:
        return parse_horizon_ns(text) // 1_000_000_000
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--horizon: {exc}, got {text!r}") from None


def _positive_int(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 1, got {value}")
        return value

    return parse


def _positive_float(flag: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if not 0 < value < 86_400:
            raise argparse.ArgumentTypeError(f"{flag} must be > 0 seconds, got {text}")
        return value

    return parse


def _non_negative_int(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 0 (0: unlimited), got {value}")
        return value

    return parse


# ---- where the cluster is ---------------------------------------------------------------


@dataclass
class Target:
    admin_endpoints: list[str]
    api_endpoints: list[str]
    token: str | None
    source: str
    ssl_context: Any = None


def _local_root(args: argparse.Namespace, env: dict[str, str]) -> Path | None:
    given = getattr(args, "data_root", None) or env.get("EXCHANGE_DATA_ROOT")
    if given:
        root = Path(given)
        if not (root / "cluster.json").is_file():
            raise UsageError(f"--data-root: {root} holds no local cluster (no cluster.json)")
        return root
    for name in LOCAL_ROOTS:
        if (Path(name) / "cluster.json").is_file():
            return Path(name)
    return None


def _split_endpoints(text: str) -> list[str]:
    endpoints = [e.strip() for e in text.split(",") if e.strip()]
    if not endpoints:
        raise UsageError("--endpoints: give at least one URL or host:port")
    for e in endpoints:
        rest = e.split("://", 1)[1] if "://" in e else e
        host, _, port = rest.rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--endpoints: {e!r} is not URL or host:port with a port")
        if "://" in e and not e.startswith(("http://", "https://")):
            raise UsageError(f"--endpoints: {e!r}: only http:// and https:// are spoken")
    return endpoints


def _tls(args: argparse.Namespace, env: dict[str, str]) -> Any:
    paths = {}
    for name in ("cacert", "cert", "key"):
        value = getattr(args, name, None) or env.get(f"EXCHANGE_{name.upper()}")
        if value and not Path(value).is_file():
            raise UsageError(f"--{name}: {value} is not a readable file")
        paths[name] = str(value) if value else None
    if paths["key"] and not paths["cert"]:
        raise UsageError("--key needs --cert")
    if not any(paths.values()):
        return None
    import ssl

    from exchange_client.admin import tls_context

    try:
        return tls_context(paths["cacert"], paths["cert"], paths["key"])
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--cacert/--cert/--key: cannot load them: {exc}") from None


def resolve(args: argparse.Namespace, env: dict[str, str] | None = None) -> Target:
    env = dict(os.environ if env is None else env)
    tls = _tls(args, env)
    token: str | None = None
    token_file = getattr(args, "admin_token_file", None) or env.get("EXCHANGE_ADMIN_TOKEN_FILE")
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"--admin-token-file: cannot read {token_file}: {exc}") from None
        if not token:
            raise UsageError(f"--admin-token-file: {token_file} is empty")
    elif env.get("EXCHANGE_ADMIN_TOKEN"):
        token = env["EXCHANGE_ADMIN_TOKEN"].strip()
    endpoints = getattr(args, "endpoints", None) or env.get("EXCHANGE_ENDPOINTS")
    if endpoints:
        listed = _split_endpoints(endpoints)
        return Target(listed, listed, token, "--endpoints", tls)
    root = _local_root(args, env)
    if root is None:
        raise UsageError(
            "--endpoints: none given (nor EXCHANGE_ENDPOINTS), and no local cluster in "
            f"{' or '.join('./' + r for r in LOCAL_ROOTS)} (give --data-root)"
        )
    spec = json.loads((root / "cluster.json").read_text())
    members = spec["members"]
    admin = [f"http://{m.get('host', '127.0.0.1')}:{m['admin_port']}" for m in members]
    api = [f"http://{m.get('host', '127.0.0.1')}:{m['http_port']}" for m in members]
    return Target(admin, api, token or spec.get("admin_token"), f"local cluster {root}", tls)


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    actor = f"{user}@{socket.gethostname()}"
    return "".join(c for c in actor if c.isalnum() or c in "@._:-+/ ")[:128]


# ---- output -----------------------------------------------------------------------------


def render(doc: Any, output: str, rows: list[dict[str, Any]] | None = None) -> str:
    if output == "json":
        return json.dumps(doc, indent=2, sort_keys=False)
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump(doc, sort_keys=False)).rstrip()
    rows = rows if rows is not None else ([doc] if isinstance(doc, dict) else list(doc))
    return table(rows)


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    columns = list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---- the commands -------------------------------------------------------------------------


def _status_rows(statuses: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    leader_doc = next((d for d in statuses.values() if d and d["role"] == "leader"), None)
    lag = {m["id"]: m["lag"] for m in leader_doc["members"]} if leader_doc else {}
    healthy = {m["id"]: m["healthy"] for m in leader_doc["members"]} if leader_doc else {}
    rows = []
    for endpoint, doc in statuses.items():
        if doc is None:
            rows.append({"endpoint": endpoint, "id": None, "role": "unreachable"})
            continue
        rows.append(
            {
                "endpoint": endpoint,
                "id": doc["node_id"],
                "name": doc["name"],
                "role": doc["role"],
                "term": doc["term"],
                "leader": doc["leader"] or None,
                "commit": doc["commit_index"],
                "applied": doc["applied_index"],
                "lag": lag.get(doc["node_id"]),
                "healthy": healthy.get(doc["node_id"]),
                "diverged": doc.get("diverged", False),
            }
        )
    return rows


async def _cluster_status(admin: Any, args: argparse.Namespace) -> tuple[Any, Any, int]:
    statuses = await admin.statuses()
    leader = next((d["node_id"] for d in statuses.values() if d and d["role"] == "leader"), None)
    doc = {"leader": leader, "endpoints": statuses}
    rows = _status_rows(statuses)
    for row in rows:  # one table shape, unreachable rows included
        for key in rows[0] if rows[0].get("id") is not None else ():
            row.setdefault(key, None)
    return doc, rows, 0 if leader is not None else 1


async def _member_list(admin: Any, args: argparse.Namespace) -> tuple[Any, Any, int]:
    status = await admin.status()
    members = status.raw.get("members", [])
    rows = [
        {
            "id": m["id"],
            "name": m["name"],
            "voter": m["voter"],
            "leader": m["id"] == status.leader,
            "match": m["match_index"],
            "lag": m["lag"],
            "healthy": m["healthy"],
            "peer_address": m["address"],
            "http_address": m["http_address"],
        }
        for m in members
    ]
    return {"leader": status.leader, "term": status.term, "members": members}, rows, 0


async def _run(args: argparse.Namespace, target: Target) -> int:
    from exchange_client import AdminClient

    output = getattr(args, "output", None) or "table"
    async with AdminClient(
        target.admin_endpoints, target.token or "", actor=_actor(), ssl_context=target.ssl_context
    ) as admin:
        command, action = args.ctl_command, args.action
        watched: Callable[[Any, argparse.Namespace], Coroutine[Any, Any, Any]] | None = None
        if (command, action) == ("cluster", "status"):
            watched = _cluster_status
        elif (command, action) == ("member", "list"):
            watched = _member_list
        if watched is not None:
            return await _watch(admin, args, watched, output)
        result = await _change(admin, args)
        if command == "audit" and output == "table":
            result = [_audit_row(r) for r in result]
        print(render(result, output))
        return 0


async def _watch(admin: Any, args: argparse.Namespace, fn: Any, output: str) -> int:
    refreshes = 0
    while True:
        doc, rows, code = await fn(admin, args)
        if args.watch and sys.stdout.isatty():
            print("\x1b[2J\x1b[H", end="")
        if args.watch:
            print(time.strftime("%H:%M:%S"), f"every {args.interval:g}s (Ctrl-C stops)")
        print(render(doc, output, rows), flush=True)
        refreshes += 1
        if not args.watch or (args.count and refreshes >= args.count):
            return int(code)
        await asyncio.sleep(args.interval)


async def _change(admin: Any, args: argparse.Namespace) -> Any:
    command, action = args.ctl_command, args.action
    if command == "member":
        if action == "add":
            return await admin.add_member(args.id, args.address, args.http_address)
        if action == "promote":
            return await admin.promote_member(args.id)
        return await admin.remove_member(args.id)
    if command == "leader":
        return await admin.transfer_leadership(args.to)
    if command == "symbol":
        return await (admin.halt if action == "halt" else admin.resume)(args.symbol)
    if command == "risk":
        if action == "get":
            return await admin.risk(args.client)
        limits = {
            name: getattr(args, name)
            for name in ("max_order_qty", "max_notional", "max_position", "max_open_orders")
            if getattr(args, name) is not None
        }
        if not limits:
            raise UsageError(
                "risk set: give at least one of --max-order-qty, --max-notional, "
                "--max-position, --max-open-orders"
            )
        return await admin.set_risk(args.client, **limits)
    if command == "retention":
        if action == "get":
            return await admin.retention()
        settings = {
            key: value
            for key, value in (
                ("exactly_once_horizon_seconds", args.horizon),
                ("exactly_once_max_keys", args.max_keys),
                ("finished_orders", args.finished_orders),
            )
            if value is not None
        }
        if not settings:
            raise UsageError(
                "retention set: give at least one of --horizon, --max-keys, --finished-orders"
            )
        return await admin.set_retention(**settings)
    if command == "audit":
        docs = await asyncio.gather(
            *(admin.call_one(e, "GET", "/v1/admin/audit") for e in admin.endpoints),
            return_exceptions=True,
        )
        records = [
            {"endpoint": e, **r}
            for e, doc in zip(admin.endpoints, docs, strict=True)
            if isinstance(doc, dict)
            for r in doc.get("actions", [])
        ]
        return sorted(records, key=lambda r: r.get("at", ""))
    if command == "snapshot":
        taken = await admin.snapshot()
        raw, index, term = await admin.download_snapshot()
        path: Path = args.file
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return {
            "file": str(path),
            "index": index,
            "term": term,
            "bytes": len(raw),
            **{"taken_index": taken["index"]},
        }
    raise UsageError(f"unknown command {command} {action}")


def _audit_row(record: dict[str, Any]) -> dict[str, Any]:
    args = record.get("args") or {}
    outcome = record.get("outcome") or {}
    return {
        "at": record.get("at"),
        "node": record.get("node_id"),
        "action": record.get("action"),
        "args": " ".join(f"{k}={v}" for k, v in args.items()) or None,
        "who": record.get("subject") or record.get("actor"),
        "auth": record.get("auth"),
        "actor": record.get("actor"),
        "log_index": outcome.get("log_index", outcome.get("index")),
        "rejected": (outcome.get("rejected") or {}).get("reason"),
    }


def main(args: argparse.Namespace) -> int:
    try:
        target = resolve(args)
        if args.ctl_command == "top":
            from exchange_node.top import run_top

            return run_top(target.api_endpoints, args)
        if target.token is None:
            raise UsageError(
                "--admin-token-file: none given (nor EXCHANGE_ADMIN_TOKEN_FILE / "
                "EXCHANGE_ADMIN_TOKEN)"
            )
        return asyncio.run(_run(args, target))
    except UsageError as exc:
        print(f"exchange: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from exchange_client import ExchangeError

        if isinstance(exc, ExchangeError):
            print(f"exchange: error: {exc}", file=sys.stderr)
            return 1
        raise


def run(argv: Sequence[str]) -> int:
    """``exchange ARGS`` in-process (tests)."""
    from exchange_node.cli import main as cli_main

    return cli_main(list(argv))

"""`exchange node`: run one Raft exchange node from flags and ``EXCHANGE_*`` variables.

See docs/node-contract.md for every flag. The process serves the HTTP API,
probes and metrics on ``--http-port``, the admin API on ``--admin-port`` and
Raft peers on ``--grpc-port``. SIGTERM (or Ctrl-C): a leader hands leadership over, the
node flushes and exits within ``--shutdown-grace-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
import time
from typing import Any

from exchange_node.server import config as node_config
from exchange_node.server import logs, tracing

log = logging.getLogger("exchange.node")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    node_config.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    try:
        cfg = node_config.from_args(args)
    except node_config.ConfigError as exc:
        print(f"exchange node: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(cfg.log_level)
    # The WAL's fsync runs in a thread; after it returns, that thread needs the
    # GIL back to hand the result over. The default 5 ms switch interval would
    # add up to 5 ms to every commit while the loop is busy serving requests.
    sys.setswitchinterval(0.0005)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(run(cfg))


def await_member_certificate(cfg: node_config.NodeConfig, node_id: int) -> str | None:
    """Why this node must still wait for its member certificate, or None.

    Only with --await-member-certificate, and only for a certificate that is
    readable but names another member id: every other problem is an error.
    With --peer-tls-enroll: until the node holds a valid certificate for its own key.
    """
    if not cfg.await_member_certificate or cfg.peer_tls is None:
        return None
    if cfg.peer_tls_enroll:
        # Our own key: wait until a valid certificate for it is installed (admin API).
        import datetime

        from exchange_node.security.enrollment import MemberEnrollment

        member = MemberEnrollment.for_data_dir(
            cfg.data_dir, cfg.peer_tls_ca, cfg.cluster_id, node_id
        )
        return member.certificate_problem(datetime.datetime.now(datetime.UTC))
    from exchange_node.transport.tls import PeerTLSError, load_material

    try:
        material = load_material(cfg.peer_tls)
    except PeerTLSError as exc:
        return str(exc)  # not there yet (e.g. an optional Secret volume still empty)
    if material.member_id == node_id:
        return None  # node.start() checks the rest (the cluster id) and refuses clearly
    return f"the certificate is for member {material.member_id}"


async def _start_http_or_exit(node: Any, cfg: node_config.NodeConfig, started: bool) -> Any:
    from exchange_node.server.app import ListenError, start_http
    from exchange_node.server.tls import TLSConfigError

    """The HTTP servers, or the exit code after saying why they could not start."""
    try:
        return await start_http(node, cfg.listen_host, cfg.http_port)
    except ListenError as exc:
        print(f"exchange node: error: {exc.strerror}", file=sys.stderr)
        code = 1
    except TLSConfigError as exc:
        print(f"exchange node: error: --http-tls-cert/--http-tls-key: {exc}", file=sys.stderr)
        code = 2
    if started:
        await node.stop(0)
    return code


async def run(cfg: node_config.NodeConfig) -> int:
    from exchange_node.server.identity import IdentityError
    from exchange_node.server.shell import Node
    from exchange_node.storage.errors import StorageError
    from exchange_node.transport.tls import PeerTLSError

    node = Node(cfg)
    try:
        node.open()
    except IdentityError as exc:
        print(f"exchange node: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, StorageError) as exc:
        print(f"exchange node: error: --data-dir {cfg.data_dir}: {exc}", file=sys.stderr)
        return 1
    # Millions of long-lived objects (books, retained results): default cyclic GC
    # thresholds would pause the loop long enough to cost elections.
    tune_gc = getattr(
        importlib.import_module("exchange_node.engine.engine"), "tune_garbage_collector", None
    )
    if tune_gc is not None:
        tune_gc()
    tracing.setup(cfg.name, node.node_id)
    if cfg.insecure_peers:
        log.warning(
            "INSECURE PEERS: --insecure-peers is set; the Raft peer port %s accepts frames "
            "from anyone who can reach it, who can then rewrite this cluster's state. "
            "Local experiments only: give --peer-tls-cert/--peer-tls-key/--peer-tls-ca.",
            cfg.grpc_listen,
        )
    waiting = await_member_certificate(cfg, node.node_id)
    if waiting is not None:
        # Serve HTTP and admin first: the admin status tells the operator our id,
        # and it issues the certificate this node then picks up.
        runner = await _start_http_or_exit(node, cfg, started=False)
        if isinstance(runner, int):
            return runner
        log.warning(
            "waiting for a member certificate for this node (--await-member-certificate)",
            extra={"node_id": node.node_id, "reason": waiting},
        )
        while (waiting := await_member_certificate(cfg, node.node_id)) is not None:
            node._last_loop_beat = time.monotonic()  # alive, only waiting: /healthz 200
            await asyncio.sleep(1.0)
    else:
        runner = None
    try:
        await node.start()
    except PeerTLSError as exc:
        print(f"exchange node: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"exchange node: error: --grpc-port {cfg.grpc_port}: {exc}", file=sys.stderr)
        return 1
    if runner is None:
        runner = await _start_http_or_exit(node, cfg, started=True)
        if isinstance(runner, int):
            return runner
    log.info(
        "serving",
        extra={
            "http": f"{cfg.listen_host}:{cfg.http_port}",
            "admin": f"{cfg.listen_host}:{cfg.admin_port}",
            "tls": cfg.http_tls_cert is not None,
            "grpc": cfg.grpc_listen,
            "advertise": cfg.advertise_address,
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": cfg.shutdown_grace_seconds})
    try:
        await asyncio.wait_for(node.stop(), timeout=cfg.shutdown_grace_seconds + 1.0)
    except TimeoutError:
        log.error("shutdown exceeded the grace period")
    await runner.cleanup()
    tracing.shutdown()
    return 0

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


async def run(cfg: node_config.NodeConfig) -> int:
    from exchange_node.server.app import ListenError, start_http
    from exchange_node.server.identity import IdentityError
    from exchange_node.server.shell import Node
    from exchange_node.server.tls import TLSConfigError
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
    try:
        await node.start()
    except PeerTLSError as exc:
        print(f"exchange node: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"exchange node: error: --grpc-port {cfg.grpc_port}: {exc}", file=sys.stderr)
        return 1
    try:
        runner = await start_http(node, cfg.listen_host, cfg.http_port)
    except ListenError as exc:
        print(f"exchange node: error: {exc.strerror}", file=sys.stderr)
        await node.stop(0)
        return 1
    except TLSConfigError as exc:
        print(f"exchange node: error: --http-tls-cert/--http-tls-key: {exc}", file=sys.stderr)
        await node.stop(0)
        return 2
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

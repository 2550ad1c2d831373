"""`exchange operator`: run the ExchangeCluster operator (kopf)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import kopf

from exchange_operator.handlers import OperatorConfig, register


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="watch this namespace (repeatable; globs allowed); "
        "default: $WATCH_NAMESPACE, else all namespaces",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (cluster-wide)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=float(os.environ.get("EXCHANGE_OPERATOR_INTERVAL", "5")),
        help="seconds between status refreshes and reconcile steps (default 5)",
    )
    parser.add_argument(
        "--admin-url-template",
        default=os.environ.get("EXCHANGE_OPERATOR_ADMIN_URL_TEMPLATE"),
        help="how to reach a node's admin API; fields {pod} {peers} {namespace} {port} {cluster}",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("EXCHANGE_OPERATOR_LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="kopf's liveness endpoint (empty to disable)",
    )
    parser.add_argument(
        "--monitoring-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label on every ServiceMonitor and PrometheusRule, under the cluster's own "
        "spec.monitoring.labels (repeatable; e.g. release=kube-prometheus-stack); "
        "default: $EXCHANGE_OPERATOR_MONITORING_LABELS (KEY=VALUE,...)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def monitoring_labels_from(args: argparse.Namespace) -> dict[str, str]:
    pairs = list(args.monitoring_label) or [
        p.strip()
        for p in os.environ.get("EXCHANGE_OPERATOR_MONITORING_LABELS", "").split(",")
        if p.strip()
    ]
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--monitoring-label: expected KEY=VALUE, got {pair!r}")
        labels[key.strip()] = value.strip()
    return labels


def namespaces_from(args: argparse.Namespace) -> tuple[bool, list[str]]:
    """(clusterwide, namespaces) from the flags and $WATCH_NAMESPACE."""
    if args.all_namespaces:
        return True, []
    names = list(args.namespace) or [
        n.strip() for n in os.environ.get("WATCH_NAMESPACE", "").split(",") if n.strip()
    ]
    return (not names), names


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    config = OperatorConfig(
        reconcile_interval=args.interval,
        operator_namespace=os.environ.get("OPERATOR_NAMESPACE") or None,
        monitoring_labels=monitoring_labels_from(args),
    )
    if args.admin_url_template:
        config.admin_url_template = args.admin_url_template
    registry = kopf.OperatorRegistry()
    runtime = register(registry, config)
    clusterwide, namespaces = namespaces_from(args)

    async def run() -> None:
        try:
            await kopf.operator(
                registry=registry,
                clusterwide=clusterwide,
                namespaces=namespaces,
                standalone=True,
                liveness_endpoint=args.liveness or None,
            )
        finally:
            await runtime.close()

    asyncio.run(run())
    return 0

"""`splitserve operator`: runs the operator out of cluster (kubeconfig) or in cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import warnings

import kopf

from splitserve.operator.runtime import OperatorOptions


def parse_options(argv: list[str], environ: dict[str, str]) -> OperatorOptions:
    """Flags win over the environment (SPLITSERVE_NAMESPACES, KUBECONFIG)."""
    parser = argparse.ArgumentParser(prog="splitserve operator", description=__doc__)
    parser.add_argument("--kubeconfig", default=environ.get("KUBECONFIG"),
                        help="kubeconfig path when running outside a cluster")
    parser.add_argument("--namespace", action="append", default=None,
                        help="watch only this namespace (repeatable); default: all")
    parser.add_argument("--liveness-port", type=int, default=None,
                        help="serve kopf's liveness probe at /healthz on this port")
    parser.add_argument("--resync-seconds", type=float,
                        default=float(environ.get("SPLITSERVE_RESYNC_SECONDS", "30")),
                        help="period of the full re-observation of every object (default 30)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve the operator's Prometheus metrics on this port")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    namespaces = args.namespace
    if namespaces is None:
        namespaces = [n for n in environ.get("SPLITSERVE_NAMESPACES", "").split(",") if n]
    for flag, port in (("--liveness-port", args.liveness_port),
                       ("--metrics-port", args.metrics_port)):
        if port is not None and not 0 < port < 65536:
            parser.error(f"{flag} must be 1..65535, got {port}")
    if not 1 <= args.resync_seconds <= 86400:
        parser.error(f"--resync-seconds must be 1..86400, got {args.resync_seconds}")
    return OperatorOptions(kubeconfig=args.kubeconfig, namespaces=tuple(namespaces),
                           liveness_port=args.liveness_port,
                           metrics_port=args.metrics_port, resync_seconds=args.resync_seconds,
                           verbose=args.verbose)


def main(argv: list[str]) -> int:
    options = parse_options(argv, dict(os.environ))
    logging.basicConfig(level=logging.DEBUG if options.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # a kubeconfig that asks for insecure TLS was the user's choice: say it once, not per call
    warnings.filterwarnings("once", message="Unverified HTTPS request")
    from splitserve.operator import handlers

    handlers.register_timers(options.resync_seconds)

    liveness = (f"http://0.0.0.0:{options.liveness_port}/healthz"
                if options.liveness_port else None)
    asyncio.run(kopf.operator(
        standalone=True,
        clusterwide=not options.namespaces,
        namespaces=list(options.namespaces),
        memo=kopf.Memo(options=options),
        liveness_endpoint=liveness,
    ))
    return 0

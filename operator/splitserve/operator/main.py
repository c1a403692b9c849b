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
    parser.add_argument("--autoscaler-rate-window",
                        default=environ.get("SPLITSERVE_AUTOSCALER_RATE_WINDOW", "1m"),
                        help="PromQL range of the autoscaler's rate() queries, at least four "
                        "scrape intervals (default 1m)")
    parser.add_argument("--autoscaler-half-life", type=float,
                        default=float(environ.get("SPLITSERVE_AUTOSCALER_HALF_LIFE", "60")),
                        help="seconds; half-life of the autoscaler's load average, which sets "
                        "how slowly it scales down (default 60)")
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
    window = args.autoscaler_rate_window
    if len(window) < 2 or window[-1] not in "smh" or not window[:-1].isdigit() \
            or int(window[:-1]) == 0:
        parser.error(f"--autoscaler-rate-window must be like 30s, 1m or 1h, got {window!r}")
    if not 1 <= args.autoscaler_half_life <= 3600:
        parser.error(f"--autoscaler-half-life must be 1..3600 seconds, got "
                     f"{args.autoscaler_half_life}")
    return OperatorOptions(kubeconfig=args.kubeconfig, namespaces=tuple(namespaces),
                           liveness_port=args.liveness_port,
                           metrics_port=args.metrics_port, resync_seconds=args.resync_seconds,
                           verbose=args.verbose, autoscaler_rate_window=window,
                           autoscaler_half_life_seconds=args.autoscaler_half_life)


def main(argv: list[str]) -> int:
    options = parse_options(argv, dict(os.environ))
    logging.basicConfig(level=logging.DEBUG if options.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # a kubeconfig that asks for insecure TLS was the user's choice: say it once, not per call
    warnings.filterwarnings("once", message="Unverified HTTPS request")
    from splitserve.operator import handlers

    handlers.register_timers(options.resync_seconds, options.autoscaler_tick_seconds)

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

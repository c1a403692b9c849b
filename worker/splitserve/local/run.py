"""`splitserve run spec.yaml`: the SplitService's router and pools as local processes."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from datetime import datetime

from splitserve.local.spec import load_spec
from splitserve.local.stack import LocalStack
from splitserve.local.view import log_line, render

CLEAR = "\x1b[H\x1b[2J"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splitserve run",
                                description="Run a SplitService spec as local processes.")
    p.add_argument("spec", help="SplitService YAML (model.source may be left out: built-in "
                                "tiny model)")
    p.add_argument("--port", type=int, default=None,
                   help="router port (default: spec.router.port; 0 picks a free one)")
    p.add_argument("--log-dir", default=None, help="where process logs go (default: a temp dir)")
    p.add_argument("--interval", type=float, default=None,
                   help="seconds between view refreshes (1 on a terminal, 10 otherwise)")
    p.add_argument("--plain", action="store_true", help="log lines even on a terminal")
    return p


def _say(line: str) -> None:
    print(f"{datetime.now():%H:%M:%S} {line}", flush=True)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        plan = load_spec(args.spec)
        stack = LocalStack(plan, args.port, args.log_dir)
    except ValueError as exc:
        print(f"splitserve run: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack.start(_say)
    except (RuntimeError, ValueError) as exc:
        print(f"splitserve run: {exc}", file=sys.stderr)
        return 1
    live = sys.stdout.isatty() and not args.plain
    interval = args.interval or (1.0 if live else 10.0)
    code = 0
    _say(f"serving {plan.service.spec.model.name} at {stack.url}/v1 "
         f"(OpenAI API; Ctrl-C stops)")
    try:
        while not stop.wait(interval):
            if stack.router is None or not stack.router.alive:
                _say(f"the router exited:\n{stack.router.tail() if stack.router else ''}")
                code = 1
                break
            try:
                status = stack.status()
            except OSError as exc:
                _say(f"router status unavailable: {exc}")
                continue
            procs = {role: (sum(c.alive for c in stack.worker_children(role)),
                            len(stack.worker_children(role))) for role in ("prefill", "decode")}
            if live:
                sys.stdout.write(CLEAR + "\n".join(render(status, stack.url, plan.name, procs))
                                 + "\n")
                sys.stdout.flush()
            else:
                _say(log_line(status))
    finally:
        _say("stopping: router, then workers")
        started = time.monotonic()
        stack.stop()
        _say(f"stopped in {time.monotonic() - started:.1f}s")
    return code

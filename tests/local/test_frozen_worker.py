"""Workers frozen (SIGSTOP) under load, 2 prefill + 2 decode, built-in tiny model.

A frozen process keeps its sockets open and answers nothing, as a worker cut off by the network
does: no reset ever arrives. The router notices through gRPC keepalive, retries what it had
there on the other worker and stops offering the frozen one; thawed (SIGCONT), the worker
rejoins with no KV blocks left behind. Every request in flight completes with the colocated
engine's answer; none fails, none hangs.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from stackutil import get, spec_doc, stats, wait_for
from test_failover import (
    HANG_S,
    decode_fault_while_streaming,
    prefill_fault_while_prefilling,
    router_counts,
    worker_urls,
)

from splitserve.api import metrics as names
from splitserve.local.metrics_text import counter_sum
from splitserve.local.spec import parse_spec
from splitserve.local.stack import LocalStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = LocalStack(parse_spec(spec_doc("frozen", 2, 2, 16, kv_blocks=640)), router_port=0,
                   log_dir=tmp_path_factory.mktemp("frozen"))
    s.start()
    try:
        yield s
    finally:
        for _, child in s.workers:
            if child.alive:
                os.kill(child.pid, signal.SIGCONT)
        s.stop()


def pid_of(stack: LocalStack, name: str) -> int:
    return next(c.pid for _, c in stack.workers if c.name == name)


def router_workers(stack: LocalStack, pool: str) -> float:
    return counter_sum(get(stack.url + "/metrics"), names.ROUTER_WORKERS.series, pool=pool)


def thaw_and_rejoin(stack: LocalStack, name: str, pool: str, http: str) -> float:
    """SIGCONT, then wait until the router offers the worker again and it holds nothing."""
    started = time.monotonic()
    os.kill(pid_of(stack, name), signal.SIGCONT)
    wait_for(lambda: router_workers(stack, pool) == 2, HANG_S, f"{name} back in the pool")
    wait_for(lambda: stats(http).get("kvBlocksUsed", 0) == 0
             and not stats(http).get("running") and not stats(http).get("waiting"),
             HANG_S, f"{name} to hold no KV blocks and no requests")
    return time.monotonic() - started


def freeze(stack: LocalStack, name: str) -> None:
    os.kill(pid_of(stack, name), signal.SIGSTOP)


def test_frozen_workers_lose_no_request(stack: LocalStack, reference) -> None:
    http = worker_urls(stack)
    report: list[str] = []

    # 1. a decode worker freezes while requests stream from it
    started = time.monotonic()
    outs, want, victim = decode_fault_while_streaming(stack, reference, 600,
                                                      lambda name: freeze(stack, name))
    wait_for(lambda: router_workers(stack, "decode") == 1, HANG_S, f"{victim} out of the pool")
    failed = [o.error for o in outs if o.error]
    retries = router_counts(stack, names.ROUTER_RETRIES)
    rejoined = thaw_and_rejoin(stack, victim, "decode", http[victim])
    report.append(f"decode frozen: {len(outs)} requests, {len(failed)} failed, slowest "
                  f"{max(o.seconds for o in outs):.1f}s, retries {retries}, back "
                  f"{rejoined:.1f}s after thawing ({time.monotonic() - started:.1f}s in all)")
    assert not failed, failed
    assert retries.get("unavailable", 0) >= 1
    assert [o.tokens for o in outs] == [600] * len(outs)
    assert [o.text for o in outs] == want

    # 2. a prefill worker freezes while long prompts are being prefilled
    retries_before = sum(retries.values())
    outs, want = prefill_fault_while_prefilling(stack, reference, "prefill-0",
                                                lambda name: freeze(stack, name))
    failed = [o.error for o in outs if o.error]
    retries = router_counts(stack, names.ROUTER_RETRIES)
    rejoined = thaw_and_rejoin(stack, "prefill-0", "prefill", http["prefill-0"])
    report.append(f"prefill frozen: {len(outs)} requests, {len(failed)} failed, slowest "
                  f"{max(o.seconds for o in outs):.1f}s, retries {retries}, back "
                  f"{rejoined:.1f}s after thawing")
    assert not failed, failed
    assert sum(retries.values()) > retries_before
    assert [o.text for o in outs] == want
    for name in ("decode-0", "decode-1"):  # no reservation stranded by the frozen sender
        wait_for(lambda n=name: stats(http[n]).get("kvBlocksUsed", 0) == 0, HANG_S,
                 f"{name} to hold no KV blocks")
    print("\n" + "\n".join(report))

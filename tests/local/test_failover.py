"""Workers SIGKILLed under load (2 prefill + 2 decode, built-in tiny model): requests in
flight are retried and complete with the colocated engine's answer; none fails, none hangs.
With the last prefill worker gone requests fall back to local prefill (visible in metrics);
with the last decode worker gone they fail fast with a retryable 503."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import openai
import pytest
from openai import OpenAI
from stackutil import get, reference_text, spec_doc, stats, wait_for

from splitserve.api import metrics as names
from splitserve.local.metrics_text import counter_sum
from splitserve.local.spec import parse_spec
from splitserve.local.stack import LocalStack

HANG_S = 30.0
SENTENCE = "Request {i} asks the decode pool to keep generating while workers fail. "


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = LocalStack(parse_spec(spec_doc("failover", 2, 2, 16, kv_blocks=640)), router_port=0,
                   log_dir=tmp_path_factory.mktemp("failover"))
    s.start()
    yield s
    s.stop()


@dataclass
class Outcome:
    text: str = ""
    tokens: int = 0
    error: str = ""
    first_token_at: float = 0.0
    seconds: float = 0.0
    done: bool = False


def stream_one(url: str, prompt: str, max_tokens: int, out: Outcome) -> None:
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=HANG_S)
    started = time.monotonic()
    try:
        parts = []
        for event in client.completions.create(
                model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0,
                stream=True, stream_options={"include_usage": True},
                extra_body={"ignore_eos": True}):
            if event.usage is not None:
                out.tokens = event.usage.completion_tokens
            for c in event.choices:
                if c.text and not out.first_token_at:
                    out.first_token_at = time.monotonic()
                parts.append(c.text)
        out.text = "".join(parts)
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    out.seconds = time.monotonic() - started
    out.done = True


def run_load(url: str, prompts: list[str], max_tokens: int
             ) -> tuple[list[Outcome], list[threading.Thread]]:
    outs = [Outcome() for _ in prompts]
    threads = [threading.Thread(target=stream_one, args=(url, p, max_tokens, o), daemon=True)
               for p, o in zip(prompts, outs, strict=True)]
    for t in threads:
        t.start()
    return outs, threads


def finish(outs: list[Outcome], threads: list[threading.Thread], deadline_s: float) -> None:
    for t in threads:
        t.join(max(0.0, deadline_s - time.monotonic()))
    hung = [i for i, o in enumerate(outs) if not o.done]
    assert not hung, f"requests {hung} got no answer within {HANG_S}s"


def router_counts(stack: LocalStack, metric: names.Metric) -> dict[str, float]:
    text = get(stack.url + "/metrics")
    return {reason: counter_sum(text, metric.series, reason=reason)
            for reason in ("unavailable", "draining", "reservation_failed", "prefill_failed",
                           "no_room", "timeout", "internal", "short_prompt",
                           "no_prefill_worker")
            if counter_sum(text, metric.series, reason=reason)}


def kill(stack: LocalStack, name: str) -> None:
    child = next(c for _, c in stack.workers if c.name == name)
    os.kill(child.pid, signal.SIGKILL)
    wait_for(lambda: not child.alive, 10, f"{name} to die")


def worker_urls(stack: LocalStack) -> dict[str, str]:
    return {c.name: "http://" + c.ready_fields["http"] for _, c in stack.workers}


def decode_fault_while_streaming(stack: LocalStack, reference, max_tokens: int,
                                 fault: Callable[[str], None]
                                 ) -> tuple[list[Outcome], list[str], str]:
    """Eight requests stream; `fault` hits a decode worker running more than one of them.
    Returns the outcomes (all finished or failed within HANG_S), the colocated answers and the
    victim's name."""
    http = worker_urls(stack)
    prompts = [SENTENCE.format(i=i) * 2 for i in range(8)]
    want = [reference_text(reference, p, max_tokens)[0] for p in prompts]
    outs, threads = run_load(stack.url, prompts, max_tokens)
    victim = wait_for(lambda: next((n for n in ("decode-0", "decode-1")
                                    if stats(http[n]).get("running", 0) > 1), None),
                      HANG_S, "a decode worker with running requests", step_s=0.01)
    fault(victim)
    finish(outs, threads, time.monotonic() + HANG_S)
    return outs, want, victim


def prefill_fault_while_prefilling(stack: LocalStack, reference, victim: str,
                                   fault: Callable[[str], None]
                                   ) -> tuple[list[Outcome], list[str]]:
    """Twelve long prompts (~580 tokens each); `fault` hits `victim` while it prefills."""
    http = worker_urls(stack)
    prompts = [SENTENCE.format(i=100 + i) * 12 for i in range(12)]
    want = [reference_text(reference, p, 8)[0] for p in prompts]
    outs, threads = run_load(stack.url, prompts, 8)

    def prefilling() -> bool:
        s = stats(http[victim])
        return bool(s.get("running", 0) or s.get("waiting", 0))

    wait_for(prefilling, HANG_S, f"{victim} to be prefilling", step_s=0.005)
    fault(victim)
    finish(outs, threads, time.monotonic() + HANG_S)
    return outs, want


def test_workers_killed_under_load(stack: LocalStack, reference) -> None:
    url = stack.url
    http = worker_urls(stack)
    report: list[str] = []

    # 1. a decode worker dies while every request is streaming
    outs, want, victim = decode_fault_while_streaming(
        stack, reference, 900, lambda name: kill(stack, name))
    survivor = "decode-1" if victim == "decode-0" else "decode-0"
    failed = [o.error for o in outs if o.error]
    retries = router_counts(stack, names.ROUTER_RETRIES)
    report.append(f"decode killed: {len(outs)} requests, {len(failed)} failed, "
                  f"retries {retries}")
    assert not failed, failed
    assert retries.get("unavailable", 0) >= 1
    assert [o.tokens for o in outs] == [900] * len(outs)
    assert [o.text for o in outs] == want

    # 2. a prefill worker dies while long prompts are being prefilled
    sent_before = counter_sum(get(http["prefill-1"] + "/metrics"),
                              names.KV_TRANSFER_BYTES.series)
    retries_before = sum(router_counts(stack, names.ROUTER_RETRIES).values())
    outs, want = prefill_fault_while_prefilling(stack, reference, "prefill-0",
                                                lambda name: kill(stack, name))
    failed = [o.error for o in outs if o.error]
    retries = router_counts(stack, names.ROUTER_RETRIES)
    report.append(f"prefill killed: {len(outs)} requests, {len(failed)} failed, "
                  f"retries {retries}")
    assert not failed, failed
    assert sum(retries.values()) > retries_before
    assert [o.text for o in outs] == want
    assert counter_sum(get(http["prefill-1"] + "/metrics"),
                       names.KV_TRANSFER_BYTES.series) > sent_before

    # 3. the last prefill worker dies: prompts are prefilled on decode, visibly
    kill(stack, "prefill-1")
    prompts = [SENTENCE.format(i=100 + i) * 12 for i in range(4)]
    outs, threads = run_load(url, prompts, 8)
    finish(outs, threads, time.monotonic() + HANG_S)
    local = router_counts(stack, names.ROUTER_LOCAL_PREFILL)
    report.append(f"no prefill worker: {len(outs)} requests, "
                  f"{sum(bool(o.error) for o in outs)} failed, local prefill {local}")
    assert not [o.error for o in outs if o.error]
    assert [o.text for o in outs] == want[:4]
    assert local.get("no_prefill_worker", 0) + local.get("prefill_failed", 0) >= 4

    # 4. the last decode worker dies: a fast, clear, retryable error
    kill(stack, survivor)
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=HANG_S)
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            client.completions.create(model="tiny", prompt=prompts[0], max_tokens=4)
        elapsed = time.monotonic() - started
        err = info.value
        assert err.status_code == 503 and elapsed < 5, (err.status_code, elapsed)
        assert "retry" in err.message and err.response.headers.get("retry-after")
    report.append(f"no decode worker: 503 in {elapsed * 1000:.0f} ms: {err.message}")
    print("\n" + "\n".join(report))

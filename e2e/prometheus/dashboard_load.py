"""The world the dashboard test queries: real processes, a real Prometheus, a known load.

- a local stack (router, one prefill and one decode worker on the built-in tiny model) whose
  metrics carry the namespace and name of a SplitService in the real cluster;
- the operator, out of cluster and scoped to that namespace, reconciling that SplitService (its
  pods run the stand-in image; the stand-in answers health checks only), metrics on a port;
- the operator's own autoscaler for that SplitService, reading this Prometheus;
- Prometheus scraping all four every second.

`Load` says what was sent, so the test can hold every panel to it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from openai import NotFoundError, OpenAI

from splitserve.worker import worker_pb2 as pb
from splitserve.worker import worker_pb2_grpc as pb_grpc

SERVICE = "dash"
PREFILL_BLOCKS, DECODE_BLOCKS = 256, 192
SHORT_THRESHOLD = 16
LONG_PROMPT, SHORT_PROMPT, MAX_TOKENS = 40, 6, 8
IGNORE_EOS = {"ignore_eos": True}


def prompt(n: int, seed: int) -> list[int]:
    """A prompt whose first token is unique to `seed` (0..190): no two prompts share a KV
    block, so no prefix cache hit makes the prompt tokens computed differ from those sent."""
    if not 0 <= seed <= 190:
        raise ValueError(f"seed={seed}: expected 0..190")
    return [3 + seed] + [(11 * seed + 3 * j) % 200 + 3 for j in range(1, n)]


@dataclass
class Load:
    """Counts of what one phase sent; every request of a kind is identical in shape."""

    disaggregated: int = 0  # long prompts: prefilled remotely, KV pushed to decode
    local: int = 0  # short prompts: prefilled in place on decode
    unknown_model: int = 0  # 404s
    refused_pushes: int = 0  # Prefill into a reservation decode never made
    expired: int = 0  # reservations left to expire, then asked to generate
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.disaggregated + self.local

    @property
    def requests(self) -> int:
        return self.ok + self.unknown_model


def _stream(client: OpenAI, tokens: list[int]) -> int:
    got = 0
    for chunk in client.completions.create(model="tiny", prompt=tokens, max_tokens=MAX_TOKENS,
                                           temperature=0, stream=True, extra_body=IGNORE_EOS,
                                           stream_options={"include_usage": True}):
        if chunk.usage is not None:
            got = chunk.usage.completion_tokens
    return got


def _unknown_model(client: OpenAI) -> None:
    try:
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)
    except NotFoundError:
        return
    raise AssertionError("a request for an unknown model did not get a 404")


def _refused_push(prefill: str, decode: str, seed: int) -> None:
    rid = uuid.uuid4().hex
    with grpc.insecure_channel(prefill) as ch:
        try:
            pb_grpc.WorkerStub(ch).Prefill(pb.PrefillRequest(
                request_id=rid, prompt_token_ids=prompt(LONG_PROMPT, seed),
                sampling=pb.SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True),
                decode_address=decode, reservation_id="never-reserved"), timeout=60)
        except grpc.RpcError as exc:
            # the decode side answers NOT_FOUND; prefill reports the push as failed
            if exc.code() == grpc.StatusCode.UNAVAILABLE and "KV push failed" in str(
                    exc.details()):
                return
            raise
    raise AssertionError("a push into an unknown reservation succeeded")


def _expired_reservation(decode: str, seed: int, wait: Callable[[str, Callable[[], Any]], Any]
                         ) -> None:
    """Reserve with a short deadline, let it expire (the decode worker frees it), then ask to
    generate from it: one reservation timeout and one failed transfer on decode."""
    rid = uuid.uuid4().hex
    with grpc.insecure_channel(decode) as ch:
        stub = pb_grpc.WorkerStub(ch)
        res = stub.Reserve(pb.ReserveRequest(
            request_id=rid, prompt_token_ids=prompt(SHORT_PROMPT, seed),
            sampling=pb.SamplingParams(max_tokens=2, ignore_eos=True), timeout_ms=100),
            timeout=30)

        def failed() -> bool:
            try:
                for _ in stub.Generate(pb.GenerateRequest(
                        request_id=uuid.uuid4().hex, reservation_id=res.reservation_id),
                        timeout=1):
                    pass
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.ABORTED and "expired" in str(exc.details())
            raise AssertionError("generating from an abandoned reservation succeeded")

        wait("the reservation to expire", failed)


def send(load: Load, router_url: str, prefill: str, decode: str, seed: int,
         wait: Callable[[str, Callable[[], Any]], Any]) -> None:
    """Sends `load` (gRPC addresses for the direct worker calls) and checks each answer;
    prompts use seeds `seed` to `seed + 39`, up to ten of each kind."""
    if max(load.disaggregated, load.local, load.refused_pushes, load.expired) > 10:
        raise ValueError("at most ten requests of each kind per round")
    client = OpenAI(base_url=router_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    jobs = [prompt(LONG_PROMPT, seed + i) for i in range(load.disaggregated)]
    jobs += [prompt(SHORT_PROMPT, seed + 10 + i) for i in range(load.local)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: _stream(client, p), jobs))
    assert got == [MAX_TOKENS] * len(jobs), got
    for _ in range(load.unknown_model):
        _unknown_model(client)
    for i in range(load.refused_pushes):
        _refused_push(prefill, decode, seed + 20 + i)
    for i in range(load.expired):
        _expired_reservation(decode, seed + 30 + i, wait)


def now() -> float:
    return time.time()

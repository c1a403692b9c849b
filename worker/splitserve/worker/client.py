"""A small synchronous client of one worker's gRPC API that times what it receives.

Used by `splitserve profile` to measure a replica's capacity and by tests to send load.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from splitserve.worker import worker_pb2 as pb
from splitserve.worker import worker_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Timing:
    """Timing of one generation, seconds from the moment the request was sent."""

    ttft: float
    token_times: tuple[float, ...]  # arrival of each output token
    finish_reason: str

    @property
    def gaps(self) -> tuple[float, ...]:
        """Times between consecutive output tokens."""
        t = self.token_times
        return tuple(b - a for a, b in itertools.pairwise(t))


class WorkerClient:
    def __init__(self, address: str, timeout: float = 120.0) -> None:
        if ":" not in address:
            raise ValueError(f"address={address!r}: expected host:port")
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.WorkerStub(self._channel)
        self._timeout = timeout

    def generate(self, prompt_token_ids: Sequence[int], max_tokens: int,
                 ignore_eos: bool = True) -> Timing:
        if not prompt_token_ids:
            raise ValueError("prompt_token_ids: expected at least one token")
        request = pb.GenerateRequest(
            request_id=uuid.uuid4().hex, prompt_token_ids=list(prompt_token_ids),
            sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=0.0,
                                       ignore_eos=ignore_eos))
        start = time.perf_counter()
        times: list[float] = []
        finish = ""
        for chunk in self._stub.Generate(request, timeout=self._timeout):
            now = time.perf_counter() - start
            times.extend([now] * len(chunk.token_ids))
            finish = chunk.finish_reason or finish
        if not times:
            raise RuntimeError("worker returned no tokens")
        return Timing(ttft=times[0], token_times=tuple(times), finish_reason=finish)

    def stats(self) -> pb.StatsReply:
        reply: pb.StatsReply = self._stub.Stats(pb.StatsRequest(), timeout=self._timeout)
        return reply

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

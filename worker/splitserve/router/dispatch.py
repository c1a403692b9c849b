"""One request through the pools: pick workers, hand off, stream tokens, retry on failure.

Disaggregated: Reserve on decode, then Prefill on prefill (pushing KV into the reservation)
while decode's Generate waits on that reservation and streams. Local: Generate on decode with
the prompt. A worker that fails or drains mid-request is retried elsewhere within the budget;
the retry resumes from prompt + tokens already streamed with the remaining max_tokens, so the
client never sees a token twice. Every attempt pairs workers of one checkpoint (weights digest),
and a resumed request stays on the checkpoint that produced its first tokens, so no answer
mixes two model versions while a roll replaces one with the other. Cancelling the consuming
task cancels the gRPC calls, which makes the workers abort the request and free its KV blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

import grpc

from splitserve.api import metrics as names
from splitserve.router.errors import ApiError, unavailable
from splitserve.router.policy import Picker, WorkerLoad, decide_retry, plan_prefill
from splitserve.router.registry import Registry
from splitserve.router.workers import WorkerClients
from splitserve.worker import worker_pb2 as pb
from splitserve.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

PREFILL_GRACE_S = 0.5  # after a failed Prefill, time for decode's own error to surface first
NO_ROOM_BACKOFF_MIN_S = 0.05
NO_ROOM_BACKOFF_MAX_S = 0.5
NO_WORKER_POLL_S = 0.1


@dataclass(frozen=True)
class DispatchOptions:
    short_prompt_threshold: int = 64
    max_retries: int = 2
    request_timeout_s: float = 600.0
    reserve_timeout_s: float = 10.0
    reservation_timeout_ms: int = 30_000
    no_room_wait_s: float = 30.0  # how long a request waits for decode KV room
    # how long a request waits for a decode worker when none is available: covers the moment
    # in a roll or a replacement between the last old worker draining and the router's first
    # poll of its successor; with no decode worker at all it then fails with a retryable 503
    no_worker_wait_s: float = 2.0
    compression: str = "COMPRESSION_NONE"  # a kvtransfer Compression enum name
    chunk_blocks: int = 0


@dataclass
class Tokens:
    token_ids: list[int]


@dataclass
class Finished:
    finish_reason: str
    text: str | None  # the worker's final text; None when the request was resumed
    attempts: int = 1
    remote_prefill: bool = False
    model: str = ""  # weights digest of the checkpoint that generated the answer


class _Failed(Exception):
    def __init__(self, kind: str, message: str, worker: str = "", role: str = "") -> None:
        super().__init__(message)
        self.kind, self.message, self.worker, self.role = kind, message, worker, role


@dataclass
class _Attempt:
    request_id: str
    prompt: list[int]
    sampling: pb.SamplingParams
    decode: WorkerLoad
    prefill: WorkerLoad | None
    prefill_error: list[grpc.aio.AioRpcError] = field(default_factory=list)


def classify(exc: grpc.aio.AioRpcError) -> str:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return "draining" if "draining" in details else "unavailable"
    if code == grpc.StatusCode.ABORTED:
        return "reservation_failed"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "no_room"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return "invalid"
    if code == grpc.StatusCode.CANCELLED:
        return "cancelled"
    return "internal"


class Dispatcher:
    def __init__(self, registry: Registry, clients: WorkerClients, picker: Picker,
                 options: DispatchOptions, metrics: WorkerMetrics) -> None:
        self._registry = registry
        self._clients = clients
        self._picker = picker
        self._options = options
        self._metrics = metrics

    async def run(self, request_id: str, prompt: list[int], sampling: pb.SamplingParams
                  ) -> AsyncGenerator[Tokens | Finished, None]:
        generated: list[int] = []
        excluded: dict[str, set[str]] = {"decode": set(), "prefill": set()}
        attempt = 0
        waits_until = time.monotonic() + self._options.no_room_wait_s
        no_worker_until = time.monotonic() + self._options.no_worker_wait_s
        backoff = NO_ROOM_BACKOFF_MIN_S / 2
        model: str | None = None  # pinned once tokens of one checkpoint reached the client
        while True:
            attempt += 1
            remaining = sampling.max_tokens - len(generated)
            params = pb.SamplingParams()
            params.CopyFrom(sampling)
            params.max_tokens = remaining
            try:
                job = self._plan(f"{request_id}-r{attempt - 1}" if attempt > 1 else request_id,
                                 prompt + generated, params, excluded, model)
                async for item in self._attempt(job):
                    if isinstance(item, Finished):
                        item.attempts, item.model = attempt, job.decode.model
                        if attempt > 1:
                            item.text = None
                        yield item
                        return
                    generated.extend(item.token_ids)
                    model = job.decode.model
                    yield item
                raise _Failed("internal", "the worker ended the stream without finishing",
                              job.decode.address, "decode")
            except _Failed as f:
                if f.kind == "no_room" and time.monotonic() < waits_until:
                    attempt -= 1  # a full KV cache is back-pressure, not a failure: wait
                    backoff = min(NO_ROOM_BACKOFF_MAX_S, backoff * 2)
                    await asyncio.sleep(backoff)
                    continue
                if f.kind == "no_decode" and time.monotonic() < no_worker_until:
                    attempt -= 1  # a successor may be joining the pool: wait for it briefly
                    await asyncio.sleep(NO_WORKER_POLL_S)
                    continue
                if f.worker:
                    excluded[f.role].add(f.worker)
                left = sampling.max_tokens - len(generated)
                decision = decide_retry(f.kind, attempt, self._options.max_retries, left)
                log.warning("request %s: attempt %d failed on %s %s (%s: %s); %s", request_id,
                            attempt, f.role, f.worker, f.kind, f.message,
                            "retrying" if decision.retry else f"giving up ({decision.reason})")
                if not decision.retry:
                    raise self._to_api_error(f) from None
                self._metrics.inc(names.ROUTER_RETRIES, reason=f.kind)

    def _plan(self, request_id: str, prompt: list[int], params: pb.SamplingParams,
              excluded: dict[str, set[str]], model: str | None = None) -> _Attempt:
        # a worker excluded after a failure is tried again only if it is the last one up
        # (a dead one is marked down by then and never offered)
        decodes = self._registry.available("decode", excluded["decode"]) \
            or self._registry.available("decode")
        if model is not None:
            decodes = [w for w in decodes if w.model == model]
        decode = self._picker.decode(decodes, len(prompt))
        if decode is None:
            if model is not None:
                raise _Failed("no_decode", "no decode worker serves the checkpoint that "
                              f"began this request (weights {model[:12] or 'unknown'})")
            raise _Failed("no_decode", "no decode worker is available")
        prefills = [w for w in self._registry.available("prefill", excluded["prefill"])
                    if w.model == decode.model]
        plan = plan_prefill(len(prompt), self._options.short_prompt_threshold, bool(prefills),
                            bool(excluded["prefill"]))
        prefill = self._picker.prefill(prefills) if plan.remote else None
        if not plan.remote:
            self._metrics.inc(names.ROUTER_LOCAL_PREFILL, reason=plan.reason)
        log.info("request %s: %d prompt tokens, decode %s, prefill %s", request_id, len(prompt),
                 decode.address, prefill.address if prefill else f"local ({plan.reason})")
        return _Attempt(request_id, prompt, params, decode, prefill)

    def _to_api_error(self, f: _Failed) -> ApiError:
        if f.kind == "no_decode":
            return unavailable(f"{f.message}; retry later", "no_decode_worker")
        if f.kind == "invalid":
            return ApiError(400, f.message, code="invalid_request")
        if f.kind == "timeout":
            return ApiError(504, f"the request timed out: {f.message}", type="timeout",
                            code="timeout")
        return unavailable(f"the request failed on every worker tried ({f.kind}: "
                           f"{f.message}); retry later", "worker_failed")

    async def _attempt(self, job: _Attempt) -> AsyncIterator[Tokens | Finished]:
        d = job.decode.address
        self._registry.begin(d)
        if job.prefill is not None:
            self._registry.begin(job.prefill.address, len(job.prompt))
        try:
            if job.prefill is None:
                call = self._clients.stub(d).Generate(pb.GenerateRequest(
                    request_id=job.request_id, prompt_token_ids=job.prompt,
                    sampling=job.sampling), timeout=self._options.request_timeout_s)
                async for item in self._stream(job, call):
                    yield item
            else:
                async for item in self._disaggregated(job):
                    yield item
        finally:
            self._registry.end(d)
            if job.prefill is not None:
                self._registry.end(job.prefill.address, len(job.prompt))

    async def _disaggregated(self, job: _Attempt) -> AsyncIterator[Tokens | Finished]:
        assert job.prefill is not None
        d, p = job.decode.address, job.prefill.address
        try:
            res = await self._clients.stub(d).Reserve(pb.ReserveRequest(
                request_id=job.request_id, prompt_token_ids=job.prompt, sampling=job.sampling,
                timeout_ms=self._options.reservation_timeout_ms),
                timeout=self._options.reserve_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._failed(exc, d, "decode") from None
        call = self._clients.stub(d).Generate(pb.GenerateRequest(
            request_id=job.request_id, reservation_id=res.reservation_id),
            timeout=self._options.request_timeout_s)
        prefill = asyncio.ensure_future(self._clients.stub(p).Prefill(pb.PrefillRequest(
            request_id=job.request_id, prompt_token_ids=job.prompt, sampling=job.sampling,
            decode_address=d, reservation_id=res.reservation_id,
            compression=self._options.compression, chunk_blocks=self._options.chunk_blocks),
            timeout=self._options.request_timeout_s))
        loop = asyncio.get_running_loop()

        def prefill_done(task: asyncio.Future[pb.PrefillReply]) -> None:
            if task.cancelled():
                return
            exc = task.exception()
            if isinstance(exc, grpc.aio.AioRpcError):
                job.prefill_error.append(exc)
                loop.call_later(PREFILL_GRACE_S, call.cancel)

        prefill.add_done_callback(prefill_done)
        try:
            async for item in self._stream(job, call):
                yield item
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if job.prefill_error and current is not None and not current.cancelling():
                err = job.prefill_error[0]
                raise _Failed("prefill_failed", f"{err.code().name}: {err.details()}", p,
                              "prefill") from None
            raise
        finally:
            if not prefill.done():
                prefill.cancel()
            call.cancel()

    async def _stream(self, job: _Attempt, call: grpc.aio.UnaryStreamCall
                      ) -> AsyncIterator[Tokens | Finished]:
        d = job.decode.address
        try:
            async for chunk in call:
                if chunk.token_ids:
                    yield Tokens(list(chunk.token_ids))
                if chunk.finish_reason:
                    yield Finished(chunk.finish_reason, chunk.text,
                                   remote_prefill=job.prefill is not None)
                    return
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ABORTED and job.prefill is not None:
                # the decode worker is alive and says the KV never arrived: blame the sender
                err = job.prefill_error[0] if job.prefill_error else exc
                raise _Failed("prefill_failed", f"{err.code().name}: {err.details()}",
                              job.prefill.address, "prefill") from None
            raise self._failed(exc, d, "decode") from None
        finally:
            call.cancel()

    def _failed(self, exc: grpc.aio.AioRpcError, address: str, role: str) -> _Failed:
        kind = classify(exc)
        if kind == "unavailable":
            self._registry.mark_down(address)
        elif kind == "draining":
            self._registry.mark_draining(address)
        return _Failed(kind, f"{exc.code().name}: {exc.details()}", address, role)

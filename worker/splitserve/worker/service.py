"""The worker's gRPC API: generation, reservations, prefill with KV push, health, drain, stats."""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from splitserve.api import metrics as names
from splitserve.engine.llm_engine import RequestOutput
from splitserve.engine.sampling_params import SamplingParams
from splitserve.kvtransfer import kvtransfer_pb2 as kv
from splitserve.kvtransfer.receiver import abort
from splitserve.kvtransfer.sender import KVPush, PushOptions, TransferError
from splitserve.kvtransfer.tls import TLSFiles, open_channel
from splitserve.worker import keepalive
from splitserve.worker import worker_pb2 as pb
from splitserve.worker import worker_pb2_grpc as pb_grpc
from splitserve.worker.engine_loop import EngineLoop, EngineStopped
from splitserve.worker.metrics import WorkerMetrics
from splitserve.worker.prefill import LayerStreamer
from splitserve.worker.reservations import ReservationFailed, Reservations

log = logging.getLogger(__name__)

ROLES = ("prefill", "decode", "colocated")


@dataclass(frozen=True)
class ServiceOptions:
    role: str
    model_name: str
    reservation_timeout_s: float = 30.0
    push_timeout_s: float = 60.0
    kv_queue_depth: int = 4
    max_message_bytes: int = 256 << 20
    request_timeout_s: float = 600.0
    tls: TLSFiles | None = None  # mTLS towards decode workers when set


def sampling_from_proto(s: pb.SamplingParams) -> SamplingParams:
    return SamplingParams(
        max_tokens=s.max_tokens or 16,
        temperature=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p if s.top_p else 1.0,
        seed=s.seed if s.HasField("seed") else None,
        stop=tuple(s.stop),
        stop_token_ids=tuple(s.stop_token_ids),
        ignore_eos=s.ignore_eos,
    )


def _chunk(out: RequestOutput) -> pb.GenerateChunk:
    return pb.GenerateChunk(
        token_ids=out.new_token_ids,
        text=out.text or "",
        finish_reason=out.finish_reason or "",
        completion_tokens=len(out.token_ids),
    )


class WorkerService(pb_grpc.WorkerServicer):
    def __init__(self, loop: EngineLoop, reservations: Reservations, options: ServiceOptions,
                 metrics: WorkerMetrics | None = None) -> None:
        if options.role not in ROLES:
            raise ValueError(f"role={options.role!r}: expected one of {ROLES}")
        self._loop = loop
        self._metrics = metrics
        self._reservations = reservations
        self._options = options
        self._draining = threading.Event()
        self._channels: dict[str, grpc.Channel] = {}
        self._channels_lock = threading.Lock()
        self._bytes_sent = 0
        self._bytes_lock = threading.Lock()

    # ---- helpers --------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def _admit(self, context: grpc.ServicerContext, roles: tuple[str, ...], what: str) -> None:
        if self._options.role not in roles:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                  f"{what} is not served by a {self._options.role} worker")
        if self.draining:
            abort(context, grpc.StatusCode.UNAVAILABLE, "worker is draining")

    def _params(self, s: pb.SamplingParams, context: grpc.ServicerContext) -> SamplingParams:
        try:
            return sampling_from_proto(s)
        except ValueError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def _transferred(self, direction: str, nbytes: int, seconds: float | None) -> None:
        if self._metrics is not None:
            self._metrics.inc(names.KV_TRANSFER_BYTES, nbytes, direction=direction)
            if seconds is not None:
                self._metrics.observe(names.KV_TRANSFER_SECONDS, seconds)

    def _transfer_failed(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.inc(names.KV_TRANSFER_FAILURES, reason=reason)

    def _channel(self, address: str) -> grpc.Channel:
        with self._channels_lock:
            channel = self._channels.get(address)
            if channel is None:
                limit = self._options.max_message_bytes
                channel = open_channel(address, self._options.tls, [
                    *keepalive.CLIENT,
                    ("grpc.max_send_message_length", limit),
                    ("grpc.max_receive_message_length", limit),
                ])
                self._channels[address] = channel
            return channel

    def _stream(self, request_id: str, outputs: queue.Queue[RequestOutput | BaseException],
                context: grpc.ServicerContext, prompt_tokens: int) -> Iterator[pb.GenerateChunk]:
        deadline = time.monotonic() + self._options.request_timeout_s
        first = True
        while True:
            try:
                item = outputs.get(timeout=0.5)
            except queue.Empty:
                if not context.is_active() or time.monotonic() > deadline:
                    self._loop.abort(request_id)
                    if context.is_active():
                        abort(context, grpc.StatusCode.DEADLINE_EXCEEDED,
                              f"request {request_id} timed out")
                    return
                continue
            if isinstance(item, BaseException):
                code = grpc.StatusCode.UNAVAILABLE if isinstance(item, EngineStopped) \
                    else grpc.StatusCode.INTERNAL
                abort(context, code, f"request {request_id} failed: {item}")
            chunk = _chunk(item)
            if first:
                chunk.prompt_tokens = prompt_tokens
                first = False
            yield chunk
            if item.finished:
                return

    # ---- RPCs -----------------------------------------------------------------------------

    def Generate(self, request: pb.GenerateRequest, context: grpc.ServicerContext
                 ) -> Iterator[pb.GenerateChunk]:
        self._admit(context, ("decode", "colocated"), "Generate")
        rid = request.request_id
        outputs: queue.Queue[RequestOutput | BaseException] = queue.Queue()
        context.add_callback(lambda: self._loop.abort(rid))
        if request.reservation_id:
            try:
                # silence is bounded by the reservation's own deadline, which progress extends
                res = self._reservations.wait_ready(
                    request.reservation_id, self._options.request_timeout_s)
            except ReservationFailed as exc:
                self._transfer_failed("reservation_failed")
                abort(context, grpc.StatusCode.ABORTED, str(exc))
            assert res.first_token is not None
            if res.request_id != rid:
                self._loop.abort(res.request_id)  # the blocks were handed over: free them
                abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                      f"request_id={rid!r}: reservation {request.reservation_id!r} belongs to "
                      f"request {res.request_id!r}")
            self._transferred("received", res.bytes_received, None)
            try:
                self._loop.commit(rid, res.first_token, outputs.put)
            except ValueError as exc:
                self._loop.abort(rid)
                abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            prompt_tokens = res.num_tokens
        else:
            params = self._params(request.sampling, context)
            try:
                self._loop.submit(rid, list(request.prompt_token_ids), params, outputs.put)
            except ValueError as exc:
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            prompt_tokens = len(request.prompt_token_ids)
        log.info("request %s: generating (%d prompt tokens)", rid, prompt_tokens)
        yield from self._stream(rid, outputs, context, prompt_tokens)

    def Reserve(self, request: pb.ReserveRequest, context: grpc.ServicerContext
                ) -> pb.ReserveReply:
        self._admit(context, ("decode", "colocated"), "Reserve")
        params = self._params(request.sampling, context)
        timeout = request.timeout_ms / 1000 if request.timeout_ms else \
            self._options.reservation_timeout_s
        try:
            res = self._reservations.reserve(
                request.request_id, list(request.prompt_token_ids), params, timeout)
        except ValueError as exc:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if "no room" in str(exc) \
                else grpc.StatusCode.INVALID_ARGUMENT
            abort(context, code, str(exc))
        log.info("request %s: reserved %d blocks as %s", request.request_id,
                 len(res.block_ids), res.id)
        return pb.ReserveReply(reservation_id=res.id, num_blocks=len(res.block_ids),
                               identity=self._reservations.identity)

    def Prefill(self, request: pb.PrefillRequest, context: grpc.ServicerContext
                ) -> pb.PrefillReply:
        self._admit(context, ("prefill", "colocated"), "Prefill")
        rid = request.request_id
        params = dataclasses.replace(self._params(request.sampling, context), max_tokens=1,
                                     stop=(), stop_token_ids=())
        header = kv.PushHeader(request_id=rid, reservation_id=request.reservation_id,
                               identity=self._reservations.identity,
                               num_tokens=len(request.prompt_token_ids),
                               compression=request.compression)
        push = KVPush(self._channel(request.decode_address), header,
                      PushOptions(compression=request.compression,
                                  chunk_blocks=request.chunk_blocks,
                                  queue_depth=self._options.kv_queue_depth,
                                  timeout_s=self._options.push_timeout_s))
        streamer = LayerStreamer(self._loop.engine, push)
        outputs: queue.Queue[RequestOutput | BaseException] = queue.Queue()
        started = time.monotonic()
        try:
            self._loop.submit(rid, list(request.prompt_token_ids), params, outputs.put,
                              hold_kv=True, hook=streamer)
        except ValueError as exc:
            push.abort()
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            first = self._await_first_token(rid, outputs, streamer, context)
            computed = time.monotonic()
            push.finish(first)
        except TransferError as exc:
            push.abort()
            self._transfer_failed("retryable" if exc.retryable else "refused")
            code = grpc.StatusCode.UNAVAILABLE if exc.retryable \
                else grpc.StatusCode.FAILED_PRECONDITION
            abort(context, code, f"request {rid}: {exc}")
        finally:
            self._loop.abort(rid)  # frees the held blocks; the KV now lives on the decode side
        done = time.monotonic()
        with self._bytes_lock:
            self._bytes_sent += push.bytes_sent
        self._transferred("sent", push.bytes_sent, done - started)
        log.info("request %s: prefilled and pushed %d bytes", rid, push.bytes_sent)
        return pb.PrefillReply(first_token=first, bytes_sent=push.bytes_sent,
                               compute_seconds=computed - started,
                               transfer_seconds=done - computed)

    def _await_first_token(self, rid: str, outputs: queue.Queue[RequestOutput | BaseException],
                           streamer: LayerStreamer, context: grpc.ServicerContext) -> int:
        deadline = time.monotonic() + self._options.request_timeout_s
        while True:
            if streamer.failed.is_set():
                assert streamer.error is not None
                raise streamer.error
            if not context.is_active():
                raise TransferError(f"the caller of request {rid} went away", True)
            if time.monotonic() > deadline:
                raise TransferError(f"prefill of request {rid} timed out", True)
            try:
                item = outputs.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise TransferError(f"prefill failed: {item}", True)
            return item.token_ids[0]

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthReply:
        return pb.HealthReply(status="DRAINING" if self.draining else "SERVING",
                              role=self._options.role, identity=self._reservations.identity,
                              model_name=self._options.model_name)

    def Drain(self, request: pb.DrainRequest, context: grpc.ServicerContext) -> pb.StatsReply:
        self._draining.set()
        log.info("draining: new requests are refused, running ones finish")
        return self.stats()

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsReply:
        return self.stats()

    def start_drain(self) -> None:
        self._draining.set()

    def stats(self) -> pb.StatsReply:
        def read() -> pb.StatsReply:
            engine = self._loop.engine
            sched = engine.scheduler
            return pb.StatsReply(
                role=self._options.role,
                draining=self.draining,
                running=len(sched.running),
                waiting=len(sched.waiting),
                queued_prompt_tokens=sum(s.num_pending for s in sched.waiting)
                + sum(s.num_pending for s in sched.running if s.num_pending > 1),
                kv_blocks_used=engine.blocks.num_used_blocks,
                kv_blocks_total=engine.blocks.num_blocks,
                reservations=len(self._reservations),
                kv_bytes_received=self._reservations.bytes_received,
                kv_bytes_sent=self._bytes_sent,
                weights_digest=self._reservations.identity.weights_digest,
            )
        return self._loop.call(read)

    def close(self) -> None:
        with self._channels_lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

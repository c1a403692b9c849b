"""Prefill side of the hand-off: streams layers into a remote reservation as they are computed.

The compute thread hands each finished layer to `send_layer`; a bounded queue between it and the
gRPC stream is the flow control: when the network or the receiver falls behind, the compute
thread waits on the queue instead of buffering without bound. Encoding runs on gRPC's side of
the queue, so it overlaps with the next layer's compute.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import torch

from splitserve.kvtransfer import kvtransfer_pb2 as pb
from splitserve.kvtransfer.codec import encode_chunk_message

_END = object()
PUSH_METHOD = "/splitserve.kvtransfer.v1.KVTransfer/Push"


@dataclass(frozen=True)
class _Slice:
    layer: int
    first_block: int
    k: torch.Tensor  # [blocks, block_size, kv_heads, head_dim]
    v: torch.Tensor


class TransferError(RuntimeError):
    """The push failed; `retryable` says whether another decode worker may succeed."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class PushOptions:
    compression: int = pb.COMPRESSION_NONE
    chunk_blocks: int = 0        # blocks per chunk; 0 sends a whole layer in one chunk
    queue_depth: int = 4         # layers (or chunks) buffered between compute and the network
    timeout_s: float = 60.0      # the whole push, header to acknowledgement


def _failure(exc: grpc.RpcError) -> TransferError:
    code = exc.code() if hasattr(exc, "code") else None
    retryable = code not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT)
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return TransferError(f"KV push failed ({code}): {details}", retryable)


class KVPush:
    def __init__(self, channel: grpc.Channel, header: pb.PushHeader,
                 options: PushOptions) -> None:
        self._options = options
        self._header = header
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, options.queue_depth))
        self._chunks = 0
        self.bytes_sent = 0
        self.started = time.monotonic()
        # Messages go out pre-serialized: chunks are built with a single copy of their payload.
        push = channel.stream_unary(PUSH_METHOD, request_serializer=None,
                                    response_deserializer=pb.PushAck.FromString)
        self._future = push.future(self._messages(), timeout=options.timeout_s)

    def _messages(self) -> Iterator[bytes]:
        yield pb.PushMessage(header=self._header).SerializeToString()
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, pb.PushEnd):
                yield pb.PushMessage(end=item).SerializeToString()
                continue
            assert isinstance(item, _Slice)
            message, payload = encode_chunk_message(item.layer, item.first_block, item.k,
                                                    item.v, self._options.compression)
            self.bytes_sent += payload
            yield message

    def _put(self, item: object) -> None:
        deadline = self.started + self._options.timeout_s
        while True:
            if self._future.done():
                self._raise_from_future()
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                if time.monotonic() > deadline:
                    self.abort()
                    raise TransferError(
                        "KV push timed out waiting for the receiver", True) from None

    def _unblock(self) -> None:
        """Lets the stream's consumer thread finish after the call ended early."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_END)

    def _raise_from_future(self) -> None:
        self._unblock()
        try:
            self._future.result(timeout=0)
        except grpc.RpcError as exc:
            raise _failure(exc) from exc
        raise TransferError("KV push ended before all layers were sent", True)

    def send_layer(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, first_block: int = 0
    ) -> None:
        """k, v: [blocks, block_size, kv_heads, head_dim], blocks starting at `first_block`."""
        step = self._options.chunk_blocks or k.shape[0]
        for start in range(0, k.shape[0], step):
            self._put(_Slice(layer, first_block + start, k[start:start + step],
                             v[start:start + step]))
            self._chunks += 1

    def finish(self, first_token: int) -> pb.PushAck:
        self._put(pb.PushEnd(first_token=first_token, chunks=self._chunks))
        self._put(_END)
        try:
            ack: pb.PushAck = self._future.result()
        except grpc.RpcError as exc:
            raise _failure(exc) from exc
        return ack

    def abort(self) -> None:
        self._future.cancel()
        self._unblock()

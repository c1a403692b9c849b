"""Decode side of the hand-off: validates a push and writes its chunks into reserved blocks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn, Protocol

import grpc
import torch

from splitserve.kvtransfer import kvtransfer_pb2 as pb
from splitserve.kvtransfer import kvtransfer_pb2_grpc as pb_grpc
from splitserve.kvtransfer.codec import ChunkError, ChunkSpec, chunk_bytes, decode_chunk
from splitserve.kvtransfer.identity import identity_mismatch
from splitserve.kvtransfer.reservation import Reservation, ReservationError


class ReservationHost(Protocol):
    """What the receiver needs from the worker that owns the KV cache and the reservations."""

    identity: pb.ModelIdentity

    def chunk_spec(self, reservation: Reservation, compression: int) -> ChunkSpec: ...

    def begin_receive(self, reservation_id: str, num_tokens: int) -> Reservation: ...

    def write(self, reservation: Reservation, layer: int, first_block: int,
              k: torch.Tensor, v: torch.Tensor, nbytes: int) -> None: ...

    def finish(self, reservation_id: str, first_token: int) -> None: ...

    def fail(self, reservation_id: str, reason: str) -> None: ...


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise RuntimeError(message)  # abort raises; this line only tells the type checker


class KVReceiver(pb_grpc.KVTransferServicer):
    def __init__(self, host: ReservationHost) -> None:
        self._host = host

    def Push(self, request_iterator: Iterator[pb.PushMessage], context: grpc.ServicerContext
             ) -> pb.PushAck:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("body") != "header":
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "a push must start with a header")
        header = first.header
        mismatch = identity_mismatch(self._host.identity, header.identity)
        if mismatch:
            # The request cannot complete from this sender; free its blocks for a fresh attempt.
            self._host.fail(header.reservation_id, mismatch)
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, mismatch)
        try:
            res = self._host.begin_receive(header.reservation_id, header.num_tokens)
        except ReservationError as exc:
            abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except ValueError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        spec = self._host.chunk_spec(res, header.compression)
        chunks = 0
        try:
            for msg in request_iterator:
                kind = msg.WhichOneof("body")
                if kind == "chunk":
                    k, v = decode_chunk(msg.chunk, spec)
                    self._host.write(res, msg.chunk.layer, msg.chunk.first_block, k, v,
                                     chunk_bytes(msg.chunk))
                    chunks += 1
                elif kind == "end":
                    if msg.end.chunks != chunks:
                        raise ChunkError(
                            f"end.chunks={msg.end.chunks} but {chunks} chunks arrived")
                    self._host.finish(res.id, msg.end.first_token)
                    return pb.PushAck(bytes_received=res.bytes_received, chunks_received=chunks)
                else:
                    raise ChunkError(f"unexpected {kind!r} message after the header")
            raise ChunkError("the push ended without an end message")
        except ChunkError as exc:
            self._host.fail(res.id, str(exc))
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ReservationError as exc:  # ended meanwhile (expired, or incomplete at the end)
            self._host.fail(res.id, str(exc))
            abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except BaseException as exc:
            # The sender went away (stream cancelled) or the server is stopping.
            self._host.fail(res.id, f"push interrupted: {exc!r}")
            raise

"""Decode side of the hand-off: validates a push and writes its chunks into reserved blocks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn, Protocol

import grpc
import torch

from splitserve.kvtransfer import kvtransfer_pb2 as pb
from splitserve.kvtransfer.codec import ChunkError, ChunkSpec, decode_chunk
from splitserve.kvtransfer.identity import identity_mismatch
from splitserve.kvtransfer.reservation import Reservation, ReservationError
from splitserve.kvtransfer.wire import ChunkView, Malformed, parse_push_message

PushItem = pb.PushMessage | ChunkView | Malformed


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


class KVReceiver:
    def __init__(self, host: ReservationHost) -> None:
        self._host = host

    def Push(self, request_iterator: Iterator[PushItem], context: grpc.ServicerContext
             ) -> pb.PushAck:
        first = next(request_iterator, None)
        if not isinstance(first, pb.PushMessage) or first.WhichOneof("body") != "header":
            reason = first.reason if isinstance(first, Malformed) else ""
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                  f"a push must start with a header {reason}".strip())
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
                if isinstance(msg, Malformed):
                    raise ChunkError(msg.reason)
                chunk = msg if isinstance(msg, ChunkView) else \
                    msg.chunk if msg.WhichOneof("body") == "chunk" else None
                if chunk is not None:
                    got = decode_chunk(chunk, spec)
                    self._host.write(res, chunk.layer, chunk.first_block, got.k, got.v,
                                     got.nbytes)
                    chunks += 1
                elif isinstance(msg, pb.PushMessage) and msg.WhichOneof("body") == "end":
                    if msg.end.chunks != chunks:
                        raise ChunkError(
                            f"end.chunks={msg.end.chunks} but {chunks} chunks arrived")
                    self._host.finish(res.id, msg.end.first_token)
                    return pb.PushAck(bytes_received=res.bytes_received, chunks_received=chunks)
                else:
                    raise ChunkError("unexpected message after the header")
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


def add_to_server(receiver: KVReceiver, server: grpc.Server) -> None:
    """Registers the receiver with the zero-copy chunk parser (see `wire`)."""
    handler = grpc.stream_unary_rpc_method_handler(
        receiver.Push, request_deserializer=parse_push_message,
        response_serializer=pb.PushAck.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "splitserve.kvtransfer.v1.KVTransfer", {"Push": handler}),))

"""Decode-side reservations bound to the engine: blocks held, filled by pushes, then committed.

Thread model: pushes write from gRPC threads, expiry runs on the engine loop, Generate waits on
its reservation from another gRPC thread. One lock guards the table and every write into
reserved blocks, so a reservation that ended (failed, expired) is never written again, and its
blocks are freed exactly once, on the engine loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from splitserve.engine.sampling_params import SamplingParams
from splitserve.kvtransfer import kvtransfer_pb2 as pb
from splitserve.kvtransfer.codec import ChunkError, ChunkSpec
from splitserve.kvtransfer.reservation import Reservation, ReservationError, ReservationTable
from splitserve.worker.engine_loop import EngineLoop


class ReservationFailed(RuntimeError):
    """The reserved request cannot continue here; the router may retry it elsewhere."""


@dataclass
class _Waiter:
    done: threading.Event
    error: str | None = None


class Reservations:
    def __init__(self, loop: EngineLoop, identity: pb.ModelIdentity, max_chunk_bytes: int,
                 clock: Callable[[], float] = time.monotonic,
                 on_end: Callable[[str], None] | None = None) -> None:
        self._loop = loop
        self.identity = identity
        self._max_chunk_bytes = max_chunk_bytes
        self._lock = threading.Lock()
        self._table = ReservationTable(clock)
        self._waiters: dict[str, _Waiter] = {}
        self._on_end = on_end or (lambda outcome: None)
        self.bytes_received = 0
        loop.every_iteration(self.expire_due)

    def __len__(self) -> int:
        with self._lock:
            return len(self._table)

    # ---- reserve (gRPC thread) ------------------------------------------------------------

    def reserve(self, request_id: str, prompt: list[int], params: SamplingParams,
                timeout_s: float) -> Reservation:
        block_ids = self._loop.call(lambda: self._loop.engine.reserve(request_id, prompt, params))
        with self._lock:
            res = self._table.open(request_id, block_ids, len(prompt), timeout_s)
            self._waiters[res.id] = _Waiter(threading.Event())
        return res

    # ---- ReservationHost, used by the KV receiver (gRPC thread) ---------------------------

    def chunk_spec(self, reservation: Reservation, compression: int) -> ChunkSpec:
        engine = self._loop.engine
        return ChunkSpec(
            num_layers=engine.model_config.num_layers,
            num_blocks=len(reservation.block_ids),
            block_size=engine.cache.block_size,
            kv_heads=engine.model_config.num_kv_heads,
            head_dim=engine.model_config.head_dim,
            cache_dtype=engine.cache.dtype,
            compression=compression,
            max_chunk_bytes=self._max_chunk_bytes,
        )

    def begin_receive(self, reservation_id: str, num_tokens: int) -> Reservation:
        with self._lock:
            res = self._table.get(reservation_id)
            if num_tokens != res.num_tokens:
                raise ValueError(f"header.num_tokens={num_tokens}: the reservation holds "
                                 f"{res.num_tokens} prompt tokens")
            return self._table.begin_receive(reservation_id)

    def write(self, reservation: Reservation, layer: int, first_block: int,
              k: torch.Tensor, v: torch.Tensor, nbytes: int) -> None:
        n = k.shape[0]
        with self._lock:
            self._table.touch(reservation.id)  # raises once the reservation ended
            blocks = reservation.block_ids[first_block:first_block + n]
            self._loop.engine.cache.import_layer(layer, blocks, k, v)
            reservation.received.update((layer, first_block + i) for i in range(n))
            reservation.bytes_received += nbytes
            self.bytes_received += nbytes

    def finish(self, reservation_id: str, first_token: int) -> None:
        layers = self._loop.engine.model_config.num_layers
        vocab = self._loop.engine.model_config.vocab_size
        if not 0 <= first_token < vocab:
            raise ChunkError(f"end.first_token={first_token}: expected a token id in "
                             f"[0, {vocab})")
        with self._lock:
            self._table.mark_ready(reservation_id, first_token, layers)
            self._waiters[reservation_id].done.set()

    def fail(self, reservation_id: str, reason: str) -> None:
        with self._lock:
            res = self._table.cancel(reservation_id)
            self._end(reservation_id, reason)
        if res is not None:
            self._loop.call_soon(lambda: self._loop.engine.release(res.request_id))
            self._on_end("failed")

    def _end(self, reservation_id: str, reason: str) -> None:
        waiter = self._waiters.pop(reservation_id, None)
        if waiter is not None:
            waiter.error = reason
            waiter.done.set()

    # ---- engine loop ----------------------------------------------------------------------

    def expire_due(self) -> None:
        with self._lock:
            expired = self._table.expire()
            for res in expired:
                self._end(res.id, f"reservation {res.id!r} expired before its KV arrived")
                self._loop.engine.release(res.request_id)
        for _ in expired:
            self._on_end("expired")

    # ---- Generate (gRPC thread) -----------------------------------------------------------

    def wait_ready(self, reservation_id: str, timeout_s: float) -> Reservation:
        """Blocks until the push completed; returns the reservation, now owned by the caller."""
        with self._lock:
            waiter = self._waiters.get(reservation_id)
        if waiter is None:
            raise ReservationFailed(f"reservation {reservation_id!r} is unknown or expired")
        if not waiter.done.wait(timeout_s):
            self.fail(reservation_id, "timed out waiting for the KV transfer")
            raise ReservationFailed(f"reservation {reservation_id!r}: KV transfer timed out")
        with self._lock:
            if waiter.error is not None:
                raise ReservationFailed(waiter.error)
            self._waiters.pop(reservation_id, None)
            try:
                res = self._table.take(reservation_id)
            except ReservationError as exc:
                raise ReservationFailed(str(exc)) from exc
        self._on_end("completed")
        return res

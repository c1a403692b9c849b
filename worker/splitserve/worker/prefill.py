"""Prefill side: computes a prompt and streams each layer's new KV blocks as soon as it exists."""

from __future__ import annotations

import threading

from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.sequence import Sequence
from splitserve.kvtransfer.sender import KVPush, TransferError


class LayerStreamer:
    """A layer hook for one request: after layer L of a step, sends layer L's blocks that the
    step wrote (the whole prefix on the first step, which may come from the prefix cache).

    Runs on the engine thread and never raises into the engine step; a failed push is recorded
    in `error` and `failed` is set, and the caller aborts the request.
    """

    def __init__(self, engine: LLMEngine, push: KVPush) -> None:
        self._engine = engine
        self._push = push
        self._started: set[int] = set()  # layers whose leading (cached) blocks were sent
        self.failed = threading.Event()
        self.error: TransferError | None = None

    def __call__(self, layer: int, seq: Sequence, start: int, end: int) -> None:
        if self.failed.is_set():
            return
        if layer not in self._started:
            self._started.add(layer)
            start = 0
        bs = self._engine.cache.block_size
        first, last = start // bs, -(-end // bs)
        blocks = seq.block_table[first:last]
        k, v = self._engine.cache.export_layer(layer, blocks)
        try:
            self._push.send_layer(layer, k, v, first_block=first)
        except TransferError as exc:
            self.error = exc
            self.failed.set()

"""Packs a scheduled step into tensors, runs the model over the paged cache, samples."""

from __future__ import annotations

from collections.abc import Callable

import torch

from splitserve.engine.attention import AttentionMetadata, PrefillChunk
from splitserve.engine.kv_cache import KVCache
from splitserve.engine.model import CausalLM
from splitserve.engine.scheduler import ScheduledSeq, SchedulerOutput


class ModelRunner:
    def __init__(self, model: CausalLM, cache: KVCache, device: torch.device) -> None:
        self.model = model
        self.cache = cache
        self.device = device
        self.block_size = cache.block_size

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64, device=self.device)

    def _slots(self, item: ScheduledSeq) -> list[int]:
        seq, bs = item.seq, self.block_size
        start = seq.num_computed_tokens
        end = start + item.num_tokens
        return [seq.block_table[p // bs] * bs + p % bs for p in range(start, end)]

    def prepare(self, out: SchedulerOutput) -> tuple[
            torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]:
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        rows: list[int] = []
        for item in out.decodes:
            seq = item.seq
            p = seq.num_computed_tokens
            rows.append(len(ids))
            ids.append(seq.token_ids[p])
            positions.append(p)
            slots.append(seq.block_table[p // self.block_size] * self.block_size
                         + p % self.block_size)
        decode_tables = None
        decode_mask = None
        max_blocks = 0
        if out.decodes:
            max_blocks = max(len(i.seq.block_table) for i in out.decodes)
            table: list[int] = []
            for item in out.decodes:
                bt = item.seq.block_table
                table += bt + [0] * (max_blocks - len(bt))
            decode_tables = self._tensor(table)
            lens = self._tensor([i.seq.num_computed_tokens + 1 for i in out.decodes])
            span = torch.arange(max_blocks * self.block_size, device=self.device)
            decode_mask = (span[None, :] < lens[:, None]).view(len(out.decodes), 1, 1, -1)
        chunks: list[PrefillChunk] = []
        for item in out.prefills:
            seq, n = item.seq, item.num_tokens
            start = seq.num_computed_tokens
            context = start + n
            first = len(ids)
            ids += seq.token_ids[start:context]
            positions += range(start, context)
            slots += self._slots(item)
            if item.completes:
                rows.append(len(ids) - 1)
            mask = None
            if start:
                keys = torch.arange(context, device=self.device)
                queries = torch.arange(start, context, device=self.device)
                mask = keys[None, :] <= queries[:, None]  # [n, context]
            used = -(-context // self.block_size)
            chunks.append(PrefillChunk(first, len(ids), context,
                                       self._tensor(seq.block_table[:used]), mask))
        meta = AttentionMetadata(self._tensor(slots), len(out.decodes), decode_tables,
                                 max_blocks, decode_mask, chunks)
        return self._tensor(ids), self._tensor(positions), meta, self._tensor(rows)

    @torch.inference_mode()
    def run(
        self, out: SchedulerOutput, on_layer_done: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        """Computes the step's tokens into the cache -> float32 logits [sampling rows, vocab]."""
        input_ids, positions, meta, rows = self.prepare(out)
        return self.model(input_ids, positions, self.cache.layers, meta, rows, on_layer_done)

"""The paged KV cache tensors and block-level copies in and out of them."""

from __future__ import annotations

import torch

from splitserve.engine.config import ModelConfig


class KVCache:
    """Per layer `k, v: [num_blocks, block_size, kv_heads, head_dim]`."""

    def __init__(
        self,
        config: ModelConfig,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.dtype = dtype
        shape = (num_blocks, block_size, config.num_kv_heads, config.head_dim)
        self.layers = [
            (torch.zeros(shape, dtype=dtype, device=device),
             torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(config.num_layers)
        ]

    @property
    def block_shape(self) -> tuple[int, ...]:
        return tuple(self.layers[0][0].shape[1:])

    @property
    def num_bytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size()
                   for k, v in self.layers)

    def _index(self, block_ids: list[int]) -> torch.Tensor:
        if any(not 0 <= b < self.num_blocks for b in block_ids):
            raise ValueError(f"block ids {block_ids} outside [0, {self.num_blocks})")
        return torch.tensor(block_ids, dtype=torch.int64, device=self.layers[0][0].device)

    def export_layer(self, layer: int, block_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> copies of k, v: [len(block_ids), block_size, kv_heads, head_dim]."""
        index = self._index(block_ids)
        k, v = self.layers[layer]
        return k.index_select(0, index), v.index_select(0, index)

    def import_layer(
        self, layer: int, block_ids: list[int], k: torch.Tensor, v: torch.Tensor
    ) -> None:
        """k, v: [len(block_ids), block_size, kv_heads, head_dim], written into `block_ids`."""
        if not 0 <= layer < len(self.layers):
            raise ValueError(f"layer={layer}: expected 0..{len(self.layers) - 1}")
        expected = (len(block_ids), *self.block_shape)
        for name, t in (("k", k), ("v", v)):
            if tuple(t.shape) != expected:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {expected}")
            if t.dtype != self.dtype:
                raise ValueError(f"{name} has dtype {t.dtype}, expected {self.dtype}")
        index = self._index(block_ids)
        kc, vc = self.layers[layer]
        kc.index_copy_(0, index, k.to(kc.device))
        vc.index_copy_(0, index, v.to(vc.device))

"""Attention over a paged KV cache for a packed batch of decode tokens and prefill chunks.

A step's tokens are packed: first one token per decoding sequence, then the prefill chunks.
Per layer the cache is `k, v: [num_blocks, block_size, kv_heads, head_dim]`; a token's slot is
`block * block_size + offset`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PrefillChunk:
    start: int  # first row of the chunk in the packed batch
    end: int
    context_len: int  # tokens of the sequence in the cache once this chunk is written
    block_table: torch.Tensor  # [blocks] int64
    mask: torch.Tensor | None  # [chunk, context] bool; None when the chunk is the whole context


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [tokens] int64
    num_decode: int
    decode_block_tables: torch.Tensor | None  # [num_decode * blocks] int64, flattened
    decode_blocks: int  # blocks per decoding sequence after padding
    decode_mask: torch.Tensor | None  # [num_decode, 1, 1, blocks * block_size] bool
    prefills: list[PrefillChunk]


def write_kv(cache: torch.Tensor, slots: torch.Tensor, new: torch.Tensor) -> None:
    # cache: [num_blocks, block_size, kv_heads, head_dim]; new: [tokens, kv_heads, head_dim]
    cache.view(-1, *cache.shape[2:]).index_copy_(0, slots, new)


def gather_blocks(cache: torch.Tensor, table: torch.Tensor, rows: int) -> torch.Tensor:
    # table: [rows * blocks] -> [rows, kv_heads, blocks * block_size, head_dim]
    picked = cache.index_select(0, table)  # [rows * blocks, block_size, kv_heads, head_dim]
    return picked.view(rows, -1, *cache.shape[2:]).transpose(1, 2)


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """q: [tokens, heads, head_dim]; k, v: [tokens, kv_heads, head_dim] -> [tokens, heads*dim]."""
    write_kv(k_cache, meta.slot_mapping, k)
    write_kv(v_cache, meta.slot_mapping, v)
    tokens, heads, head_dim = q.shape
    kv_heads = k.shape[1]
    out = q.new_empty(tokens, heads, head_dim)
    d = meta.num_decode
    if d:
        assert meta.decode_block_tables is not None
        keys = gather_blocks(k_cache, meta.decode_block_tables, d)
        values = gather_blocks(v_cache, meta.decode_block_tables, d)
        # grouped queries ride as extra rows: [d, kv_heads, group, head_dim]
        grouped = q[:d].view(d, kv_heads, heads // kv_heads, head_dim)
        attn = F.scaled_dot_product_attention(
            grouped, keys, values, attn_mask=meta.decode_mask, scale=scale
        )
        out[:d] = attn.view(d, heads, head_dim)
    for chunk in meta.prefills:
        qc = q[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)  # [1, heads, T, dim]
        if chunk.mask is None:
            keys = k[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)
            values = v[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)
            attn = F.scaled_dot_product_attention(
                qc, keys, values, is_causal=True, scale=scale, enable_gqa=True
            )
        else:
            n = chunk.context_len
            keys = gather_blocks(k_cache, chunk.block_table, 1)[:, :, :n]
            values = gather_blocks(v_cache, chunk.block_table, 1)[:, :, :n]
            attn = F.scaled_dot_product_attention(
                qc, keys, values, attn_mask=chunk.mask, scale=scale, enable_gqa=True
            )
        out[chunk.start : chunk.end] = attn[0].transpose(0, 1)
    return out.view(tokens, heads * head_dim)

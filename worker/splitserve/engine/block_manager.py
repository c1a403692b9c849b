"""KV-cache block accounting: allocation, reference counts and a prefix cache (pure Python).

Invariants:
- a block with `ref_count == 0` is free and sits in `_free` (least recently freed first); it may
  still hold a cached prefix (its `hash` is set) until it is handed out again;
- a full block's hash chains the previous block's hash with its own tokens, so equal hashes mean
  equal prefixes (tokens are compared too, guarding against collisions);
- only full blocks are shared; a sequence only writes into blocks it owns alone.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from splitserve.engine.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()


class BlockManager:
    def __init__(
        self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True
    ) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(
                f"num_blocks={num_blocks}, block_size={block_size}: expected positive integers")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[int, int] = {}  # chained hash -> block id
        self.prefix_hit_tokens = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def blocks_for_tokens(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        total = self.blocks_for_tokens(seq.num_computed_tokens + num_new_tokens)
        return max(0, total - len(seq.block_table))

    def can_allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        return self.blocks_needed(seq, num_new_tokens) <= len(self._free)

    def allocate(self, seq: Sequence, num_new_tokens: int) -> None:
        """Makes room in `seq.block_table` for `num_new_tokens` more computed tokens."""
        needed = self.blocks_needed(seq, num_new_tokens)
        if needed > len(self._free):
            raise ValueError(f"{needed} blocks needed, {len(self._free)} free")
        for _ in range(needed):
            seq.block_table.append(self._take_free())

    def _take_free(self) -> int:
        block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None and self._cached.get(block.hash) == block_id:
            del self._cached[block.hash]
        block.hash, block.token_ids, block.ref_count = None, (), 1
        return block_id

    def free(self, seq: Sequence) -> None:
        """Returns the sequence's blocks; full ones stay findable by their prefix hash."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block_id] = None
                if block.hash is None:
                    self._free.move_to_end(block_id, last=False)  # reuse uncached blocks first
        seq.block_table = []
        seq.num_hashed_blocks = 0

    def _chain(self, prev: int | None, tokens: tuple[int, ...]) -> int:
        return hash((prev, tokens))

    def match_prefix(self, seq: Sequence) -> int:
        """Shares cached full blocks of the sequence's leading tokens; returns tokens matched.

        At least one token is always left to compute, so the step produces logits.
        """
        if not self.enable_prefix_caching or seq.block_table:
            return 0
        prev: int | None = None
        limit = (seq.num_tokens - 1) // self.block_size
        for i in range(limit):
            tokens = tuple(seq.token_ids[i * self.block_size : (i + 1) * self.block_size])
            h = self._chain(prev, tokens)
            block_id = self._cached.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
            prev = h
        matched = len(seq.block_table) * self.block_size
        seq.num_computed_tokens = seq.num_cached_tokens = matched
        seq.num_hashed_blocks = len(seq.block_table)
        self.prefix_hit_tokens += matched
        return matched

    def register_full_blocks(self, seq: Sequence) -> None:
        """Makes newly completed full blocks of `seq` findable by later requests."""
        if not self.enable_prefix_caching:
            return
        full = seq.num_computed_tokens // self.block_size
        prev = self.blocks[seq.block_table[seq.num_hashed_blocks - 1]].hash \
            if seq.num_hashed_blocks else None
        for i in range(seq.num_hashed_blocks, full):
            tokens = tuple(seq.token_ids[i * self.block_size : (i + 1) * self.block_size])
            h = self._chain(prev, tokens)
            block = self.blocks[seq.block_table[i]]
            if block.hash is None:
                block.hash, block.token_ids = h, tokens
                self._cached.setdefault(h, block.block_id)
            prev = h
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, full)

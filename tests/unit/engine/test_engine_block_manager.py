"""BlockManager on its own: allocation, reference counts, prefix cache, free-block accounting."""

from __future__ import annotations

import pytest

from splitserve.engine.block_manager import BlockManager
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.sequence import Sequence


def seq(name: str, tokens: list[int]) -> Sequence:
    return Sequence(name, tokens, SamplingParams(), arrival=0)


def compute(bm: BlockManager, s: Sequence, n: int) -> None:
    bm.allocate(s, n)
    s.num_computed_tokens += n
    bm.register_full_blocks(s)


def test_allocate_grows_by_blocks_and_free_returns_them() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    s = seq("a", list(range(10)))
    assert bm.blocks_needed(s, 10) == 3
    compute(bm, s, 10)
    assert len(s.block_table) == 3 and bm.num_free_blocks == 5
    compute(bm, s, 2)  # 12 tokens still fit in 3 blocks
    assert len(s.block_table) == 3
    s.append_token(99)
    compute(bm, s, 1)
    assert len(s.block_table) == 4 and bm.num_used_blocks == 4
    bm.free(s)
    assert bm.num_free_blocks == 8 and s.block_table == []


def test_allocate_beyond_free_blocks_raises_and_changes_nothing() -> None:
    bm = BlockManager(num_blocks=2, block_size=4)
    s = seq("a", list(range(12)))
    assert not bm.can_allocate(s, 12)
    with pytest.raises(ValueError, match="3 blocks needed, 2 free"):
        bm.allocate(s, 12)
    assert bm.num_free_blocks == 2 and s.block_table == []


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="num_blocks=0"):
        BlockManager(num_blocks=0, block_size=4)


def test_prefix_cache_shares_full_blocks_and_counts_refs() -> None:
    bm = BlockManager(num_blocks=10, block_size=4)
    a = seq("a", [1, 2, 3, 4, 5, 6, 7, 8, 9])
    compute(bm, a, 9)
    b = seq("b", [1, 2, 3, 4, 5, 6, 7, 8, 42, 43])
    assert bm.match_prefix(b) == 8
    assert b.block_table == a.block_table[:2] and b.num_computed_tokens == 8
    assert bm.blocks[a.block_table[0]].ref_count == 2
    compute(bm, b, 2)
    assert b.block_table[2] != a.block_table[2]
    bm.free(a)
    assert bm.blocks[b.block_table[0]].ref_count == 1
    bm.free(b)
    assert bm.num_free_blocks == 10


def test_prefix_match_leaves_one_token_to_compute() -> None:
    bm = BlockManager(num_blocks=10, block_size=4)
    a = seq("a", list(range(8)))
    compute(bm, a, 8)
    bm.free(a)
    again = seq("b", list(range(8)))
    assert bm.match_prefix(again) == 4  # the last full block is recomputed for its logits
    assert bm.num_free_blocks == 9


def test_prefix_must_match_from_the_start() -> None:
    bm = BlockManager(num_blocks=10, block_size=2)
    a = seq("a", [1, 2, 3, 4, 5])
    compute(bm, a, 5)
    b = seq("b", [9, 9, 3, 4, 5])  # same second block, different first block
    assert bm.match_prefix(b) == 0 and b.block_table == []


def test_freed_cached_blocks_are_evicted_last_and_forgotten_when_reused() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a = seq("a", [1, 2, 3, 4, 5])
    compute(bm, a, 5)
    bm.free(a)  # blocks 0,1 cached; block 2 held a partial block and is reused first
    b = seq("b", [7, 7])
    compute(bm, b, 2)
    assert b.block_table == [2]
    big = seq("c", [8] * 6)
    compute(bm, big, 6)  # needs 3 blocks: 3, then the cached 0 and 1 are evicted
    probe = seq("d", [1, 2, 3, 4, 5])
    assert bm.match_prefix(probe) == 0


def test_disabled_prefix_cache_never_matches() -> None:
    bm = BlockManager(num_blocks=8, block_size=2, enable_prefix_caching=False)
    a = seq("a", [1, 2, 3, 4, 5])
    compute(bm, a, 5)
    bm.free(a)
    assert bm.match_prefix(seq("b", [1, 2, 3, 4, 5])) == 0

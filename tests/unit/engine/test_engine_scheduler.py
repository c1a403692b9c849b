"""Scheduler on its own with a stand-in for the model step that only advances token counts."""

from __future__ import annotations

import pytest

from splitserve.engine.block_manager import BlockManager
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.scheduler import Scheduler, SchedulerOutput
from splitserve.engine.sequence import Sequence, SequenceStatus


def make(num_blocks: int = 64, block_size: int = 4, seqs: int = 8, tokens: int = 16,
         prefix: bool = True) -> Scheduler:
    return Scheduler(BlockManager(num_blocks, block_size, prefix), seqs, tokens)


def add(s: Scheduler, name: str, n: int, max_tokens: int = 4) -> Sequence:
    seq = Sequence(name, [1000 + hash(name) % 1000 + i for i in range(n)],
                   SamplingParams(max_tokens=max_tokens), arrival=len(s.waiting))
    s.add(seq)
    return seq


def advance(s: Scheduler, out: SchedulerOutput) -> None:
    """What the engine does after the model ran: count tokens, sample, finish."""
    for item in out.scheduled:
        seq = item.seq
        completes = item.completes
        seq.num_computed_tokens += item.num_tokens
        s.blocks.register_full_blocks(seq)
        if completes:
            seq.append_token(7)
            if len(seq.output_token_ids) >= seq.params.max_tokens:
                seq.finish("length")
                s.remove(seq)


def run_all(s: Scheduler, limit: int = 500) -> list[SchedulerOutput]:
    outs: list[SchedulerOutput] = []
    while s.has_work and len(outs) < limit:
        out = s.schedule()
        assert out.num_tokens <= s.max_num_batched_tokens
        advance(s, out)
        outs.append(out)
    assert not s.has_work
    return outs


def test_long_prompt_is_chunked_by_the_token_budget() -> None:
    s = make(tokens=8)
    seq = add(s, "a", 20)
    first = s.schedule()
    assert [(i.seq, i.num_tokens) for i in first.prefills] == [(seq, 8)]
    advance(s, first)
    assert seq.num_computed_tokens == 8 and not seq.output_token_ids
    outs = [first, *run_all(s)]
    assert [o.num_tokens for o in outs[:3]] == [8, 8, 4]
    assert s.counters.prefill_chunks == 2
    assert s.blocks.num_free_blocks == 64


def test_decodes_go_first_and_share_the_step_with_a_prefill_chunk() -> None:
    s = make(tokens=8)
    a = add(s, "a", 3, max_tokens=10)
    advance(s, s.schedule())  # a prefilled, now decoding
    b = add(s, "b", 30)
    out = s.schedule()
    assert [i.seq for i in out.decodes] == [a]
    assert [(i.seq, i.num_tokens) for i in out.prefills] == [(b, 7)]
    assert s.counters.mixed_steps == 1


def test_max_num_seqs_bounds_the_running_set() -> None:
    s = make(seqs=2, tokens=100)
    for i in range(4):
        add(s, f"s{i}", 3)
    out = s.schedule()
    assert len(out.prefills) == 2 and len(s.waiting) == 2
    run_all(s)


def test_preemption_by_recompute_when_blocks_run_out() -> None:
    s = make(num_blocks=6, block_size=4, tokens=64, prefix=False)
    a = add(s, "a", 7, max_tokens=10)
    b = add(s, "b", 7, max_tokens=10)
    c = add(s, "c", 7, max_tokens=10)
    out = s.schedule()
    assert len(out.prefills) == 3
    advance(s, out)
    preempted: list[Sequence] = []
    while not preempted:
        out = s.schedule()
        preempted = out.preempted
        advance(s, out)
    assert preempted == [c] and c.status is SequenceStatus.WAITING
    assert c.num_computed_tokens == 0 and c.block_table == []
    assert len(c.output_token_ids) == 2  # outputs survive; they are recomputed as prompt
    assert s.waiting[0] is c
    run_all(s)
    assert all(len(x.output_token_ids) == 10 for x in (a, b, c))
    assert s.counters.preemptions >= 1 and s.blocks.num_free_blocks == 6


def test_waiting_request_that_does_not_fit_waits_without_side_effects() -> None:
    s = make(num_blocks=3, block_size=4, tokens=64)
    add(s, "a", 9)
    b = add(s, "b", 9)
    out = s.schedule()
    assert len(out.prefills) == 1 and s.waiting[0] is b
    assert b.block_table == [] and b.num_computed_tokens == 0
    run_all(s)
    assert s.blocks.num_free_blocks == 3


def test_prefix_cache_hit_skips_computed_blocks() -> None:
    s = make(block_size=4, tokens=64)
    a = Sequence("a", list(range(13)), SamplingParams(max_tokens=1), 0)
    s.add(a)
    run_all(s)
    b = Sequence("b", [*range(12), 99], SamplingParams(max_tokens=1), 1)
    s.add(b)
    out = s.schedule()
    assert out.prefills[0].num_tokens == 1 and b.num_cached_tokens == 12


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_num_seqs=0"):
        Scheduler(BlockManager(4, 4), 0, 8)

"""Worker selection, conditional disaggregation and retry decisions."""

from __future__ import annotations

import random
from typing import Any

import pytest

from splitserve.router.policy import Picker, WorkerLoad, decide_retry, plan_prefill


def name(w: WorkerLoad | None) -> str:
    assert w is not None
    return w.address


def load(addr: str, **kw: Any) -> WorkerLoad:
    return WorkerLoad(addr, **kw)


def test_decode_prefers_fewer_sequences_then_kv_headroom() -> None:
    a = load("a", running=3, kv_blocks_used=10, kv_blocks_total=100)
    b = load("b", running=1, kv_blocks_used=90, kv_blocks_total=100)
    c = load("c", running=1, kv_blocks_used=20, kv_blocks_total=100)
    assert name(Picker().decode([a, b, c], 10)) == "c"


def test_decode_skips_workers_without_room_for_the_prompt() -> None:
    full = load("a", kv_blocks_used=99, kv_blocks_total=100)  # 16 tokens free
    roomy = load("b", running=5, kv_blocks_used=0, kv_blocks_total=100)
    assert name(Picker().decode([full, roomy], 40)) == "b"
    assert name(Picker().decode([full], 40)) == "a"  # none has room: still try one


def test_router_inflight_counts_before_the_next_stats_poll() -> None:
    a = load("a", running=0, inflight=4, kv_blocks_total=100)
    b = load("b", running=2, inflight=2, kv_blocks_total=100)
    assert name(Picker().decode([a, b], 1)) == "b"


def test_prefill_by_queued_prompt_tokens() -> None:
    a = load("a", queued_prompt_tokens=500)
    b = load("b", queued_prompt_tokens=100, inflight_prompt_tokens=800)
    c = load("c", queued_prompt_tokens=300)
    assert name(Picker().prefill([a, b, c])) == "c"
    assert Picker().prefill([]) is None


def test_round_robin_and_power_of_two() -> None:
    loads = [load(x) for x in "cab"]
    rr = Picker("round-robin")
    assert [name(rr.prefill(loads)) for _ in range(4)] == ["a", "b", "c", "a"]
    p2 = Picker("power-of-two", random.Random(1))
    busy = [load("a", queued_prompt_tokens=9), load("b", queued_prompt_tokens=1),
            load("c", queued_prompt_tokens=5)]
    picks = {name(p2.prefill(busy)) for _ in range(50)}
    assert "a" not in picks and picks <= {"b", "c"}
    with pytest.raises(ValueError, match="policy"):
        Picker("fastest")


def test_plan_prefill() -> None:
    assert plan_prefill(10, 64, True).reason == "short_prompt"
    assert plan_prefill(100, 64, True).remote
    assert plan_prefill(100, 0, False).reason == "no_prefill_worker"
    assert plan_prefill(100, 64, False, prefill_failed=True).reason == "prefill_failed"
    assert plan_prefill(1, 0, True).remote


def test_retry_decisions() -> None:
    assert decide_retry("unavailable", 1, 2, 10).retry
    assert decide_retry("unavailable", 2, 2, 10).retry
    assert not decide_retry("unavailable", 3, 2, 10).retry
    assert not decide_retry("invalid", 1, 2, 10).retry
    assert not decide_retry("cancelled", 1, 2, 10).retry
    assert not decide_retry("no_decode", 1, 2, 10).retry
    assert not decide_retry("prefill_failed", 1, 2, 0).retry
    assert decide_retry("prefill_failed", 1, 2, 1).reason == "prefill_failed"

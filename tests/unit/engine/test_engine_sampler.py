"""The sampler on hand-made logits: greedy, top-k, top-p, temperature and seeds."""

from __future__ import annotations

import math

import torch

from splitserve.engine.sampler import Sampler, sample_row
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.sequence import Sequence


def logits_for(probs: list[float]) -> torch.Tensor:
    return torch.tensor([math.log(p) for p in probs])


def draws(logits: torch.Tensor, params: SamplingParams, n: int = 300) -> set[int]:
    g = torch.Generator().manual_seed(0)
    return {sample_row(logits, params, g) for _ in range(n)}


def test_greedy_takes_the_argmax() -> None:
    assert sample_row(logits_for([0.1, 0.6, 0.3]), SamplingParams(), None) == 1


def test_top_k_keeps_only_the_k_most_likely() -> None:
    logits = logits_for([0.3, 0.05, 0.25, 0.2, 0.2])
    assert draws(logits, SamplingParams(temperature=1.0, top_k=2)) == {0, 2}


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = logits_for([0.1, 0.5, 0.3, 0.1])
    assert draws(logits, SamplingParams(temperature=1.0, top_p=0.5)) == {1}
    assert draws(logits, SamplingParams(temperature=1.0, top_p=0.75)) == {1, 2}


def test_low_temperature_sharpens_towards_greedy() -> None:
    logits = logits_for([0.3, 0.35, 0.35 - 1e-3, 1e-3 + 0.0])
    assert draws(logits, SamplingParams(temperature=1e-3)) <= {1, 2}
    assert len(draws(logits, SamplingParams(temperature=1.0))) >= 3


def test_seeded_draws_depend_on_seed_and_position_only() -> None:
    sampler = Sampler(torch.device("cpu"))
    logits = torch.zeros(2, 50)
    params = SamplingParams(temperature=1.0, seed=7, max_tokens=50)
    a = Sequence("a", [1, 2, 3], params, 0)
    b = Sequence("b", [9, 9, 9], params, 1)
    first = sampler.sample(logits, [a, b])
    assert first[0] == first[1]  # same seed, same position
    again = sampler.sample(logits, [a, Sequence("c", [4, 4], params, 2)])
    assert again[0] == first[0]
    a.append_token(first[0])
    later = [sampler.sample(logits[:1], [a])[0] for _ in range(3)]
    assert len(set(later)) == 1

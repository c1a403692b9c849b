"""Turns a step's logits into next tokens, honouring each request's sampling parameters."""

from __future__ import annotations

import torch

from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.sequence import Sequence


def sample_row(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> int:
    """logits: [vocab] float32 -> token id. Greedy when temperature is 0."""
    if params.greedy:
        return int(logits.argmax())
    scaled = logits / params.temperature
    if params.top_k and params.top_k < scaled.shape[0]:
        kth = torch.topk(scaled, params.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = scaled.sort(descending=True)
        probs = ordered.softmax(-1)
        # drop a token once the mass before it already reaches top_p (the first always stays)
        drop = probs.cumsum(-1) - probs >= params.top_p
        scaled = scaled.scatter(0, order, ordered.masked_fill(drop, float("-inf")))
    probs = scaled.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class Sampler:
    """Seeded requests draw token i from a generator seeded by (seed, i): the same answer in any
    batch, after preemption, or when decoding continues on another engine."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.unseeded = torch.Generator(device=device)
        self.unseeded.seed()

    def generator(self, params: SamplingParams, output_index: int) -> torch.Generator:
        if params.seed is None:
            return self.unseeded
        g = torch.Generator(device=self.device)
        g.manual_seed((params.seed * 1_000_003 + output_index) % (2**63))
        return g

    def sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """logits: [rows, vocab] float32, one row per sequence -> one token per row."""
        if all(s.params.greedy for s in seqs):
            return [int(t) for t in logits.argmax(-1).tolist()]
        return [
            sample_row(logits[i], s.params,
                       None if s.params.greedy else self.generator(s.params, len(s.token_ids)))
            for i, s in enumerate(seqs)
        ]

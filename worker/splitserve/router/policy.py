"""Worker selection, conditional disaggregation and retry decisions (pure).

Load of a worker = what its last Stats reply said, corrected by what this router itself has
sent it since (stats are polled about every half second, requests arrive faster).
- decode: a worker must have KV room for the prompt; among those the lowest
  `running sequences + DECODE_KV_WEIGHT * used KV fraction` wins.
- prefill: the fewest queued prompt tokens wins, among workers serving the decode worker's
  checkpoint (during a model roll both versions run; KV never crosses versions).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

POLICIES = ("least-loaded", "power-of-two", "round-robin")
DECODE_KV_WEIGHT = 4.0


@dataclass(frozen=True)
class WorkerLoad:
    address: str
    running: int = 0
    waiting: int = 0
    queued_prompt_tokens: int = 0
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0
    block_size: int = 16
    inflight: int = 0  # requests this router has on the worker now
    inflight_prompt_tokens: int = 0  # prompt tokens this router has sent it, not yet done
    model: str = ""  # weights digest of the checkpoint it serves; "" before the first poll

    def free_tokens(self) -> int | None:
        """KV room in tokens, or None before the first Stats reply."""
        if self.kv_blocks_total <= 0:
            return None
        return (self.kv_blocks_total - self.kv_blocks_used) * self.block_size

    def decode_score(self) -> float:
        seqs = max(self.running + self.waiting, self.inflight)
        used = self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0
        return seqs + DECODE_KV_WEIGHT * used

    def prefill_score(self) -> float:
        return float(max(self.queued_prompt_tokens, self.inflight_prompt_tokens))


@dataclass
class Picker:
    """Chooses among candidates by policy; holds the round-robin cursor and the random source."""

    policy: str = "least-loaded"
    rng: random.Random | None = None
    _cursor: int = 0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r}: expected one of {list(POLICIES)}")
        self.rng = self.rng or random.Random()

    def _choose(self, loads: Sequence[WorkerLoad], score: str) -> WorkerLoad | None:
        if not loads:
            return None
        ordered = sorted(loads, key=lambda w: w.address)
        if self.policy == "round-robin":
            self._cursor += 1
            return ordered[(self._cursor - 1) % len(ordered)]
        if self.policy == "power-of-two" and len(ordered) > 2:
            assert self.rng is not None
            ordered = self.rng.sample(ordered, 2)
        return min(ordered, key=lambda w: (getattr(w, score)(), w.address))

    def decode(self, loads: Sequence[WorkerLoad], prompt_tokens: int) -> WorkerLoad | None:
        """A decode worker with KV room for the prompt (unknown room counts as room)."""
        room = [w for w in loads if (w.free_tokens() is None
                                     or (w.free_tokens() or 0) >= prompt_tokens + 1)]
        return self._choose(room or list(loads), "decode_score")

    def prefill(self, loads: Sequence[WorkerLoad]) -> WorkerLoad | None:
        return self._choose(loads, "prefill_score")


@dataclass(frozen=True)
class PrefillPlan:
    remote: bool
    reason: str  # why local: "short_prompt", "no_prefill_worker", "prefill_failed"; "" if remote


def plan_prefill(prompt_tokens: int, threshold: int, prefill_available: bool,
                 prefill_failed: bool = False) -> PrefillPlan:
    """Conditional disaggregation: prompts shorter than `threshold` are prefilled on decode,
    and so is every prompt when no prefill worker is left (after failures or at all)."""
    if prompt_tokens < threshold:
        return PrefillPlan(False, "short_prompt")
    if not prefill_available:
        return PrefillPlan(False, "prefill_failed" if prefill_failed else "no_prefill_worker")
    return PrefillPlan(True, "")


# Failure kinds the dispatcher reports; all but "invalid" and "cancelled" may be retried.
RETRYABLE = frozenset({"unavailable", "draining", "reservation_failed", "no_room",
                       "prefill_failed", "timeout", "internal"})


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    reason: str


def decide_retry(kind: str, attempts_done: int, max_retries: int,
                 remaining_tokens: int) -> RetryDecision:
    """Whether attempt number `attempts_done + 1` should run after a failure of `kind`.

    A retry resumes from prompt + tokens already streamed, so it needs tokens left to make.
    """
    if kind not in RETRYABLE:
        return RetryDecision(False, f"{kind} is not retryable")
    if remaining_tokens < 1:
        return RetryDecision(False, "nothing left to generate")
    if attempts_done > max_retries:
        return RetryDecision(False, f"retry budget of {max_retries} used up")
    return RetryDecision(True, kind)

"""Capacity profiles: what one replica of each pool sustains, measured by `splitserve profile`.

JSON format (`format` = `splitserve.io/capacity-profile/v1`), every time in seconds:

    {"format": ..., "model": "small", "device": "cpu", "command": "splitserve profile ...",
     "startupSeconds": 9.5,                 # pod start until ready (model load included)
     "maxContext": 2048,
     "prefill": {"overheadSeconds": 0.03,   # idle prefill = overhead + tokens * secondsPerToken
                 "secondsPerToken": 0.0004, # marginal cost of one prompt token when saturated
                 "referenceTokens": 512},   # prompt length the idle TTFT was measured at
     "decode":  {"stepSecondsBase": 0.02,   # one decode step = base + perSequence * batch
                 "stepSecondsPerSequence": 0.001,
                 "contextTokens": 512,      # context length the steps were measured at
                 "maxSequences": 64, "kvBlocks": 512, "blockSize": 16}}

From these the policy derives the capacity at an SLO target: prompt tokens/s a prefill replica
sustains with TTFT within the target, and output tokens/s (and concurrent sequences) a decode
replica sustains with TPOT within the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

FORMAT = "splitserve.io/capacity-profile/v1"


def _number(data: dict[str, Any], key: str, where: str, *, positive: bool = True) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}.{key}: expected a number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{where}.{key}: expected a positive number, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}.{key}: expected a non-negative number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PrefillProfile:
    overhead_seconds: float
    seconds_per_token: float
    reference_tokens: int

    @property
    def tokens_per_second(self) -> float:
        """Saturated prompt throughput of one replica."""
        return 1.0 / self.seconds_per_token

    def idle_seconds(self, tokens: float) -> float:
        """Prefill time of one prompt on an idle replica (its TTFT without queueing)."""
        return self.overhead_seconds + tokens * self.seconds_per_token

    def capacity(self, ttft_target: float) -> float:
        """Prompt tokens/s one replica sustains with TTFT within `ttft_target`.

        Queueing delay must fit in the slack between the target and the idle TTFT of the
        reference prompt; the busy fraction that allows is approximated as 1 - idle/target
        (bounded to [0.05, 0.95]). Online correction fixes what this model gets wrong.
        """
        idle = self.idle_seconds(self.reference_tokens)
        busy = min(0.95, max(0.05, 1.0 - idle / ttft_target))
        return self.tokens_per_second * busy


@dataclass(frozen=True)
class DecodeProfile:
    step_seconds_base: float
    step_seconds_per_sequence: float
    context_tokens: int
    max_sequences: int
    kv_blocks: int
    block_size: int

    def step_seconds(self, batch: float) -> float:
        return self.step_seconds_base + self.step_seconds_per_sequence * batch

    @property
    def idle_tpot(self) -> float:
        return self.step_seconds(1)

    def sequences(self, tpot_target: float) -> float:
        """Concurrent sequences one replica runs with each step within `tpot_target`."""
        room = (tpot_target - self.step_seconds_base) / self.step_seconds_per_sequence
        blocks_per_seq = math.ceil(self.context_tokens / self.block_size)
        kv_limit = self.kv_blocks / max(1, blocks_per_seq)
        return max(1.0, min(room, float(self.max_sequences), kv_limit))

    def capacity(self, tpot_target: float) -> float:
        """Output tokens/s one replica sustains with TPOT within `tpot_target`."""
        b = self.sequences(tpot_target)
        return b / self.step_seconds(b)


@dataclass(frozen=True)
class CapacityProfile:
    model: str
    device: str
    startup_seconds: float
    max_context: int
    prefill: PrefillProfile
    decode: DecodeProfile
    command: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CapacityProfile:
        if not isinstance(data, dict):
            raise ValueError(f"profile: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise ValueError(f"profile.format: expected {FORMAT!r}, got {data.get('format')!r}")
        p, d = data.get("prefill"), data.get("decode")
        if not isinstance(p, dict):
            raise ValueError("profile.prefill: expected an object")
        if not isinstance(d, dict):
            raise ValueError("profile.decode: expected an object")
        return cls(
            model=str(data.get("model", "")),
            device=str(data.get("device", "")),
            command=str(data.get("command", "")),
            startup_seconds=_number(data, "startupSeconds", "profile", positive=False),
            max_context=int(_number(data, "maxContext", "profile")),
            prefill=PrefillProfile(
                overhead_seconds=_number(p, "overheadSeconds", "profile.prefill", positive=False),
                seconds_per_token=_number(p, "secondsPerToken", "profile.prefill"),
                reference_tokens=int(_number(p, "referenceTokens", "profile.prefill")),
            ),
            decode=DecodeProfile(
                step_seconds_base=_number(d, "stepSecondsBase", "profile.decode"),
                step_seconds_per_sequence=_number(d, "stepSecondsPerSequence", "profile.decode"),
                context_tokens=int(_number(d, "contextTokens", "profile.decode")),
                max_sequences=int(_number(d, "maxSequences", "profile.decode")),
                kv_blocks=int(_number(d, "kvBlocks", "profile.decode")),
                block_size=int(_number(d, "blockSize", "profile.decode")),
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        p, d = self.prefill, self.decode
        return {
            "format": FORMAT, "model": self.model, "device": self.device,
            "command": self.command, "startupSeconds": self.startup_seconds,
            "maxContext": self.max_context,
            "prefill": {"overheadSeconds": p.overhead_seconds,
                        "secondsPerToken": p.seconds_per_token,
                        "referenceTokens": p.reference_tokens},
            "decode": {"stepSecondsBase": d.step_seconds_base,
                       "stepSecondsPerSequence": d.step_seconds_per_sequence,
                       "contextTokens": d.context_tokens, "maxSequences": d.max_sequences,
                       "kvBlocks": d.kv_blocks, "blockSize": d.block_size},
        }

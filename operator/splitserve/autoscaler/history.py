"""What the policy looks back on: load samples, raw recommendations, last scale-up times.

Immutable: `History.record` returns a new history with the plan's samples appended and
everything older than the window dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

POOLS = ("prefill", "decode")


@dataclass(frozen=True)
class PoolHistory:
    demand: tuple[tuple[float, float], ...] = ()  # (time, tokens/s arriving)
    backlog: tuple[tuple[float, float], ...] = ()  # (time, queued prompt tokens) — prefill
    concurrency: tuple[tuple[float, float], ...] = ()  # (time, sequences) — decode
    kv_blocks: tuple[tuple[float, float], ...] = ()  # (time, blocks used) — decode
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, raw replicas)
    last_scale_up: float | None = None
    last_change: float | None = None  # last decision that changed the replicas
    factor: float = 1.0  # online capacity correction

    def trimmed(self, since: float) -> PoolHistory:
        return replace(
            self,
            demand=tuple(s for s in self.demand if s[0] >= since),
            backlog=tuple(s for s in self.backlog if s[0] >= since),
            concurrency=tuple(s for s in self.concurrency if s[0] >= since),
            kv_blocks=tuple(s for s in self.kv_blocks if s[0] >= since),
            recommendations=tuple(s for s in self.recommendations if s[0] >= since),
        )


@dataclass(frozen=True)
class History:
    prefill: PoolHistory = field(default_factory=PoolHistory)
    decode: PoolHistory = field(default_factory=PoolHistory)

    def pool(self, name: str) -> PoolHistory:
        if name not in POOLS:
            raise ValueError(f"pool={name!r}: expected one of {POOLS}")
        return self.prefill if name == "prefill" else self.decode

    def with_pool(self, name: str, value: PoolHistory) -> History:
        if name not in POOLS:
            raise ValueError(f"pool={name!r}: expected one of {POOLS}")
        return replace(self, **{name: value})

    def trimmed(self, since: float) -> History:
        return History(self.prefill.trimmed(since), self.decode.trimmed(since))

"""One observation of a service's two pools, as read from Prometheus.

Every field is None when its series is missing ("no data"), never zero in its place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


def _check(obj: object, where: str) -> None:
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if isinstance(value, float | int) and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{where}.{f.name}={value!r}: expected a finite non-negative number")


@dataclass(frozen=True)
class PoolMetrics:
    """Load of one pool, summed over its replicas."""

    token_rate: float | None = None  # prompt tokens/s (prefill) or output tokens/s (decode)
    queued_prompt_tokens: float | None = None
    queue_depth: float | None = None  # sequences waiting to be scheduled
    running: float | None = None  # sequences running
    kv_blocks_used: float | None = None
    kv_blocks_total: float | None = None

    def __post_init__(self) -> None:
        _check(self, "pool")


@dataclass(frozen=True)
class MetricsSnapshot:
    """Both pools plus the service's latency at the SLO percentile (seconds)."""

    time: float
    prefill: PoolMetrics
    decode: PoolMetrics
    ttft: float | None = None
    tpot: float | None = None

    def __post_init__(self) -> None:
        _check(self, "snapshot")

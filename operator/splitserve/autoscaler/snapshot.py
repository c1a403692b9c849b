"""One observation of a service's two pools, as read from Prometheus.

Every field is None when its series is missing ("no data"), never zero in its place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolMetrics:
    """Load of one pool, summed over its replicas."""

    token_rate: float | None = None  # prompt tokens/s (prefill) or output tokens/s (decode)
    queued_prompt_tokens: float | None = None
    queue_depth: float | None = None  # sequences waiting to be scheduled
    running: float | None = None  # sequences running
    kv_blocks_used: float | None = None
    kv_blocks_total: float | None = None


@dataclass(frozen=True)
class MetricsSnapshot:
    """Both pools plus the service's latency at the SLO percentile (seconds)."""

    time: float
    prefill: PoolMetrics
    decode: PoolMetrics
    ttft: float | None = None
    tpot: float | None = None

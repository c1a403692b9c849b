"""Load prediction over the recent window.

prediction = max(latest, EWMA) + max(0, trend) * horizon, where the EWMA is time-weighted
(half-life `half_life`) and the trend is the least-squares slope over the samples of the last
`trend_window` seconds. The trend only counts when those samples (at least three) never fall —
a ramp, not noise or a dip and recovery — and its term is capped at `max_rise` times the latest
value. The horizon is how far ahead new capacity must be right: a pod's start-up time plus one
decision interval.
Taking the max of latest and EWMA makes scale-up fast (the latest burst counts at once) and
scale-down slow (the EWMA remembers the recent past).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    value: float
    latest: float
    ewma: float
    slope: float


def ewma(samples: Sequence[tuple[float, float]], half_life: float) -> float:
    """Time-weighted exponential moving average of (time, value) samples in time order."""
    if not samples:
        raise ValueError("ewma: expected at least one sample")
    if half_life <= 0:
        raise ValueError(f"half_life: expected a positive number, got {half_life}")
    level = samples[0][1]
    for (t0, _), (t1, v) in itertools.pairwise(samples):
        keep = math.pow(0.5, max(0.0, t1 - t0) / half_life)
        level = keep * level + (1.0 - keep) * v
    return level


def slope(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope (per second) of (time, value) samples; 0 with fewer than 3."""
    if len(samples) < 3:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var <= 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in samples) / var


def predict(samples: Sequence[tuple[float, float]], *, now: float, horizon: float,
            half_life: float, trend_window: float, max_rise: float = 0.5) -> Prediction:
    """Predicted load `horizon` seconds after `now` from (time, value) samples up to `now`."""
    if not samples:
        raise ValueError("predict: expected at least one sample")
    latest = samples[-1][1]
    level = ewma(samples, half_life)
    recent = [(t, v) for t, v in samples if t >= now - trend_window]
    trend = slope(recent)
    rising = all(b[1] >= a[1] for a, b in itertools.pairwise(recent))
    rise = min(max(0.0, trend) * max(0.0, horizon), max_rise * max(0.0, latest)) if rising else 0.0
    return Prediction(value=max(latest, level) + rise, latest=latest, ewma=level, slope=trend)

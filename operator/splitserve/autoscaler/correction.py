"""Online correction of the modelled per-replica capacity from observed latency.

A pool's modelled capacity is `profile capacity * factor`. Each decision compares the observed
latency at the SLO percentile with its target, at the load each ready replica carried (the caller
passes no load while the pool is not settled: pods starting, or replicas changed within the
latency window, so a backlog left by earlier under-provisioning is not blamed on the profile):
- latency above target while a replica carried between `busy_fraction` of its modelled capacity
  and that capacity: the model promised more than the replica delivers, so the factor drops to
  `margin * load / capacity` (never more than halving in one step). Above the modelled capacity
  the miss is explained by overload, which is the prediction's business, not the profile's;
- latency below `relax_fraction` of the target while a replica carried at least `busy_fraction`
  of its modelled capacity: the model was pessimistic, so the factor moves a quarter of the way
  up — to the observed load when that exceeds the modelled capacity, else back towards 1;
- otherwise (idle, no data) the factor is kept.
Factors stay within [min_factor, max_factor].
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CorrectionConfig:
    busy_fraction: float = 0.5
    relax_fraction: float = 0.8
    margin: float = 0.9
    min_factor: float = 0.2
    max_factor: float = 2.0


@dataclass(frozen=True)
class Corrected:
    factor: float
    changed: bool
    reason: str


def correct(factor: float, *, observed: float | None, target: float, load_per_replica: float | None,
            capacity: float, config: CorrectionConfig = CorrectionConfig()) -> Corrected:
    """The next correction factor for one pool (pure)."""
    if target <= 0 or capacity <= 0:
        raise ValueError(f"target and capacity must be positive (got {target}, {capacity})")
    if observed is None or load_per_replica is None:
        return Corrected(factor, False, "no latency or load data")
    modelled = capacity * factor
    busy = load_per_replica >= config.busy_fraction * modelled
    if observed > target and busy and load_per_replica <= modelled:
        new = max(factor * 0.5, config.margin * load_per_replica / capacity)
        new = max(config.min_factor, min(factor, new))
        return Corrected(new, new != factor,
                         f"latency {observed:.3g}s above target {target:.3g}s at "
                         f"{load_per_replica:.4g}/s per replica")
    if observed < config.relax_fraction * target and busy:
        goal = max(load_per_replica / capacity, 1.0)
        if goal <= factor:
            return Corrected(factor, False, "latency consistent with the model")
        new = min(config.max_factor, factor + 0.25 * (goal - factor))
        return Corrected(new, new != factor,
                         f"latency {observed:.3g}s well within target {target:.3g}s at "
                         f"{load_per_replica:.4g}/s per replica")
    return Corrected(factor, False, "latency consistent with the model")

"""One SplitService's autoscaler: read, plan, apply — once per interval, history kept between.

The operator keeps one `ServiceAutoscaler` per SplitService (in its memo) and calls `step` from
a timer every `autoscaling.intervalSeconds`, passing the objects it already watches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from splitserve.api.serving import AutoscalingSpec
from splitserve.autoscaler.applier import Gauges, ScaleClient, apply, pool_bounds, pool_state
from splitserve.autoscaler.capacity import CapacityProfile
from splitserve.autoscaler.history import POOLS, History
from splitserve.autoscaler.policy import Plan, PlanInputs, PolicyConfig, plan
from splitserve.autoscaler.prom import PrometheusError, Scope
from splitserve.autoscaler.snapshot import MetricsSnapshot, PoolMetrics

log = logging.getLogger(__name__)


class SnapshotSource(Protocol):
    def snapshot(self, scope: Scope, now: float) -> MetricsSnapshot: ...


@dataclass
class ServiceAutoscaler:
    profile: CapacityProfile
    config: PolicyConfig = field(default_factory=PolicyConfig)
    history: History = field(default_factory=History)
    rate_window: str = "1m"  # PromQL range of the rate() queries
    status: dict[str, Any] = field(default_factory=dict)  # status fields of the last step

    def scope(self, service: Mapping[str, Any], autoscaling: AutoscalingSpec) -> Scope:
        meta = service["metadata"]
        return Scope(namespace=meta["namespace"], service=meta["name"],
                     percentile=autoscaling.percentile, rate_window=self.rate_window)

    def step(self, *, client: ScaleClient, prom: SnapshotSource, service: Mapping[str, Any],
             autoscaling: AutoscalingSpec, pools: Mapping[str, Mapping[str, Any]],
             pods: Mapping[str, Sequence[Mapping[str, Any]]], now: datetime,
             gauges: Gauges | None = None) -> Plan:
        """One decision. `pools`/`pods` map "prefill" and "decode" to the SplitPool object and
        its pods. An unreachable Prometheus is no data: both pools hold."""
        missing = [p for p in POOLS if p not in pools]
        if missing:
            raise ValueError(f"pools: expected SplitPool objects for {missing}")
        meta = service["metadata"]
        t = now.timestamp()
        scope = self.scope(service, autoscaling)
        try:
            snap = prom.snapshot(scope, t)
        except PrometheusError as exc:
            log.debug("%s/%s: no metrics: %s", meta["namespace"], meta["name"], exc)
            snap = MetricsSnapshot(time=t, prefill=PoolMetrics(), decode=PoolMetrics())
        states = {p: pool_state(pools[p], pods.get(p, ()), pool_bounds(service, p))
                  for p in POOLS}
        result = plan(PlanInputs(now=t, snapshot=snap, slo=autoscaling, profile=self.profile,
                                 prefill=states["prefill"], decode=states["decode"],
                                 history=self.history, config=self.config))
        applied = apply(client, service, {p: pools[p]["metadata"]["name"] for p in POOLS},
                        result, now, gauges)
        self.history, self.status = result.history, applied.status
        return result

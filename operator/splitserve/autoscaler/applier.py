"""Apply a plan: SplitPool replicas through the scale subresource, status, events, metrics.

The only write to a pool's replica count is a merge patch of `{"spec": {"replicas": n}}` on the
SplitPool's `scale` subresource, and only when the plan changes it. The SplitService status gets
the decisions (newest last, at most `MAX_DECISIONS`) and the ScalingActive / ScalingLimited
conditions, written on the `status` subresource only when they differ from the status the
service object passed in holds (so a steady service costs no write). Every change posts an
event on the service.

`ScaleClient` is the slice of the operator's Kubernetes layer this needs (the operator's `Kube`
satisfies it). Everything that builds objects is pure and tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from splitserve.api import metrics as names
from splitserve.api.names import MANAGER, ConditionType, Reason
from splitserve.api.pool import PoolSpec
from splitserve.api.splitservice import MAX_DECISIONS
from splitserve.api.status import Condition, ConditionStatus, ScalingDecision
from splitserve.autoscaler.policy import Plan, PoolDecision, PoolState


class ScaleClient(Protocol):
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(self, kind: str, namespace: str, label_selector: str = "",
             field_selector: str = "") -> list[dict[str, Any]]: ...

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]: ...

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any],
              subresource: str | None = None) -> dict[str, Any]: ...


class Gauges(Protocol):
    """Where decisions are exported (the operator's prometheus_client registry wrapper).

    `export` passes `pool`, `role` and the metric's extra labels; the implementation adds the
    service's `namespace` and `service` labels.
    """

    def set(self, metric: names.Metric, value: float, **labels: str) -> None: ...

    def inc(self, metric: names.Metric, amount: float = 1.0, **labels: str) -> None: ...


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- reading the state the policy needs ----------------------------------------------------

def unschedulable(pods: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """Pods the scheduler reported it cannot place, and the first such message."""
    count, message = 0, ""
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if (cond.get("type") == "PodScheduled" and cond.get("status") == "False"
                    and cond.get("reason") == "Unschedulable"):
                count += 1
                message = message or str(cond.get("message", ""))
    return count, message


def pool_bounds(service: Mapping[str, Any], role: str) -> tuple[int, int] | None:
    """(minReplicas, maxReplicas) of one pool from the SplitService spec (the SplitPool does
    not carry them), with the API's defaults; None when the object has no spec."""
    spec = service.get("spec")
    if not isinstance(spec, Mapping):
        return None
    pool = spec.get(role) or {}
    fields = PoolSpec.model_fields
    return (int(pool.get("minReplicas", fields["min_replicas"].default)),
            int(pool.get("maxReplicas", fields["max_replicas"].default)))


def pool_state(pool: Mapping[str, Any], pods: Sequence[Mapping[str, Any]],
               bounds: tuple[int, int] | None = None) -> PoolState:
    """The policy's view of one SplitPool object and its pods; `bounds` (min, max) from the
    service, else from the pool object (else 1 and the current count)."""
    spec, status = pool.get("spec") or {}, pool.get("status") or {}
    n, why = unschedulable(pods)
    replicas = int(spec.get("replicas", 0))
    lo, hi = bounds or (int(spec.get("minReplicas", 1)),
                        int(spec.get("maxReplicas", max(replicas, 1))))
    return PoolState(replicas=replicas, ready=int(status.get("readyReplicas", 0)),
                     min_replicas=lo, max_replicas=max(lo, hi), unschedulable=n,
                     unschedulable_reason=why)


# ---- what gets written -----------------------------------------------------------------------

def scale_patch(replicas: int) -> dict[str, Any]:
    if replicas < 0:
        raise ValueError(f"replicas={replicas}: expected a non-negative count")
    return {"spec": {"replicas": replicas}}


def changes(plan: Plan) -> list[PoolDecision]:
    return [d for d in plan.decisions if d.desired != d.current]


def decision_records(plan: Plan, at: datetime,
                     previous: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The status list with this plan's changes appended, newest last, trimmed."""
    new = [ScalingDecision(time=rfc3339(at), pool=d.pool, from_replicas=d.current,
                           to_replicas=d.desired, reason=f"{d.reason}: {d.message}"[:1024],
                           inputs=dict(list(d.inputs.items())[:64])).to_wire()
           for d in changes(plan)]
    return [*(dict(p) for p in previous), *new][-MAX_DECISIONS:]


def conditions(plan: Plan, at: datetime, previous: Sequence[Mapping[str, Any]],
               generation: int | None = None) -> list[dict[str, Any]]:
    """ScalingActive and ScalingLimited from the plan; other conditions are kept as they are.

    A condition's lastTransitionTime only moves when its status changes.
    """
    nodata = [d.pool for d in plan.decisions if d.reason == "NoData"]
    if len(nodata) == 2:
        active = (ConditionStatus.FALSE, Reason.AS_NO_METRICS,
                  "no metrics for either pool; holding replicas")
    else:
        note = f"; no metrics for the {nodata[0]} pool (holding it)" if nodata else ""
        active = (ConditionStatus.TRUE, Reason.AS_ACTIVE, "autoscaler is sizing the pools" + note)
    limits = [d for d in plan.decisions if d.limited]
    if limits:
        limited = (ConditionStatus.TRUE, limits[0].limited or "",
                   "; ".join(f"{d.pool}: {d.limited_message or d.limited}" for d in limits))
    else:
        limited = (ConditionStatus.FALSE, Reason.AS_WITHIN_LIMITS, "within bounds")
    old = {c.get("type"): c for c in previous}
    out = [dict(c) for c in previous if c.get("type") not in
           (ConditionType.SCALING_ACTIVE, ConditionType.SCALING_LIMITED)]
    for ctype, (status, reason, message) in ((ConditionType.SCALING_ACTIVE, active),
                                             (ConditionType.SCALING_LIMITED, limited)):
        before = old.get(ctype) or {}
        since = before.get("lastTransitionTime") if before.get("status") == status else None
        out.append(Condition(type=ctype, status=status, reason=reason, message=message[:32768],
                             last_transition_time=since or rfc3339(at),
                             observed_generation=generation).to_wire())
    return out


def event(service: Mapping[str, Any], decision: PoolDecision, at: datetime) -> dict[str, Any]:
    meta = service["metadata"]
    direction = "up" if decision.desired > decision.current else "down"
    stamp = rfc3339(at)
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": service.get("apiVersion", ""),
                           "kind": service.get("kind", ""), "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid", "")},
        "reason": "ScaledUp" if direction == "up" else "ScaledDown",
        "message": (f"{decision.pool} {decision.current} -> {decision.desired}: "
                    f"{decision.message}")[:1024],
        "type": "Normal", "source": {"component": MANAGER},
        "reportingComponent": MANAGER, "reportingInstance": MANAGER,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


# ---- the shell ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Applied:
    scaled: list[PoolDecision]
    status: dict[str, Any]  # the autoscaler's status fields after this plan
    wrote_status: bool = False


def status_changed(status: Mapping[str, Any], previous: Mapping[str, Any]) -> bool:
    """Whether any of the autoscaler's status fields differs from what is stored."""
    return any(status[k] != (previous.get(k) or []) for k in status)


def apply(client: ScaleClient, service: Mapping[str, Any], pool_names: Mapping[str, str],
          plan: Plan, at: datetime, gauges: Gauges | None = None) -> Applied:
    """Write the plan: scale subresource per changed pool, then status, events and metrics.

    `pool_names` maps "prefill"/"decode" to the SplitPool object names.
    """
    meta = service["metadata"]
    ns = meta["namespace"]
    scaled = []
    for d in changes(plan):
        client.patch("SplitPool", ns, pool_names[d.pool], scale_patch(d.desired),
                     subresource="scale")
        scaled.append(d)
    previous = service.get("status") or {}
    status = {
        "lastScalingDecisions": decision_records(plan, at,
                                                 previous.get("lastScalingDecisions") or []),
        "conditions": conditions(plan, at, previous.get("conditions") or [],
                                 meta.get("generation")),
    }
    wrote = status_changed(status, previous)
    if wrote:
        client.patch("SplitService", ns, meta["name"], {"status": status},
                     subresource="status")
    for d in scaled:
        try:
            client.create(event(service, d, at))
        except Exception:  # an event that cannot be posted must not undo a scale
            continue
    if gauges is not None:
        export(gauges, plan)
    return Applied(scaled, status, wrote)


# (direction, reason) of every decision that changes a pool
DECISION_KINDS = (("up", "ScaleUp"), ("down", "ScaleDown"))


def export(gauges: Gauges, plan: Plan) -> None:
    """Every series exists from the first step (decision counters at 0), so a rate over the
    decision counter also counts a pool's first scaling decision."""
    for d in plan.decisions:
        labels = {"pool": d.pool, "role": d.pool}
        for direction, reason in DECISION_KINDS:
            gauges.inc(names.AUTOSCALER_DECISIONS, 0.0, direction=direction, reason=reason,
                       **labels)
        gauges.set(names.AUTOSCALER_DESIRED_REPLICAS, d.desired, **labels)
        for key, value in d.inputs.items():
            gauges.set(names.AUTOSCALER_INPUT, value, input=key, **labels)
        for key in ("predictedTokensPerSecond", "predictedSequences", "predictedKvBlocks"):
            if key in d.inputs:
                gauges.set(names.AUTOSCALER_PREDICTED_LOAD, d.inputs[key], quantity=key, **labels)
        for reason in (Reason.AS_AT_MAX, Reason.AS_PENDING_PODS, Reason.PODS_NOT_READY,
                       Reason.AS_RATIO_BOUND):
            gauges.set(names.AUTOSCALER_LIMITED, 1.0 if d.limited == reason else 0.0,
                       reason=str(reason), **labels)
        if d.desired != d.current:
            direction = "up" if d.desired > d.current else "down"
            gauges.inc(names.AUTOSCALER_DECISIONS, 1.0, direction=direction, reason=d.reason,
                       **labels)

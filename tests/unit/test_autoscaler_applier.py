"""The applier: what it writes (scale subresource only), status, conditions, events, metrics.

`RecordingApi` stands in for the Kubernetes API server (outside this project) and only records
the calls; the applier against a real API server is the cluster integration test's business.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from test_autoscaler_parts import PROFILE

from splitserve.api import metrics as names
from splitserve.api.serving import AutoscalingSpec
from splitserve.api.splitservice import MAX_DECISIONS
from splitserve.api.status import ScalingDecision
from splitserve.autoscaler.applier import (
    apply,
    conditions,
    decision_records,
    event,
    pool_bounds,
    pool_state,
    scale_patch,
    unschedulable,
)
from splitserve.autoscaler.capacity import CapacityProfile
from splitserve.autoscaler.policy import Plan, PlanInputs, PoolState, plan
from splitserve.autoscaler.prom import PrometheusError, Scope
from splitserve.autoscaler.service_autoscaler import ServiceAutoscaler
from splitserve.autoscaler.snapshot import MetricsSnapshot, PoolMetrics

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PROF = CapacityProfile.from_dict(PROFILE)
READY = {"type": "Ready", "status": "True", "reason": "AllReplicasReady",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}
SERVICE: dict[str, Any] = {
    "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
    "metadata": {"name": "chat", "namespace": "llm", "uid": "u-1", "generation": 4},
    "status": {"conditions": [READY]}}
POOLS = {"prefill": "chat-prefill", "decode": "chat-decode"}


def make_plan(prompt: float | None = 100.0, out: float | None = 10.0,
              prefill: PoolState | None = None, decode: PoolState | None = None) -> Plan:
    snap = MetricsSnapshot(time=0.0, prefill=PoolMetrics(token_rate=prompt),
                           decode=PoolMetrics(token_rate=out, running=1.0 if out else None))
    return plan(PlanInputs(now=0.0, snapshot=snap, slo=AutoscalingSpec(), profile=PROF,
                           prefill=prefill or PoolState(1, 1), decode=decode or PoolState(1, 1)))


class RecordingApi:
    def __init__(self, fail_events: bool = False) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.bodies: list[dict[str, Any]] = []
        self.fail_events = fail_events

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def list(self, kind: str, namespace: str, label_selector: str = "",
             field_selector: str = "") -> list[dict[str, Any]]:
        return []

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        self.calls.append(("create", obj["kind"]))
        self.bodies.append(obj)
        if self.fail_events:
            raise RuntimeError("events are forbidden")
        return obj

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any],
              subresource: str | None = None) -> dict[str, Any]:
        self.calls.append(("patch", kind, namespace, name, subresource or ""))
        self.bodies.append(patch)
        return patch


class RecordingGauges:
    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def set(self, metric: names.Metric, value: float, **labels: str) -> None:
        self.values[(metric.name, tuple(sorted(labels.items())))] = value

    def inc(self, metric: names.Metric, amount: float = 1.0, **labels: str) -> None:
        key = (metric.name, tuple(sorted(labels.items())))
        self.values[key] = self.values.get(key, 0.0) + amount


def pending_pod(message: str = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.") -> dict:
    return {"status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": message}]}}


# ---- reading state --------------------------------------------------------------------------

def test_unschedulable_counts_pods_the_scheduler_refused() -> None:
    running = {"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}
    starting = {"status": {"conditions": [{"type": "PodScheduled", "status": "False",
                                           "reason": "SchedulingGated"}]}}
    n, why = unschedulable([running, starting, pending_pod(), pending_pod("other"), {}])
    assert n == 2
    assert "Insufficient nvidia.com/gpu" in why


def test_pool_state_from_a_splitpool_and_its_pods() -> None:
    pool = {"spec": {"replicas": 4, "minReplicas": 2, "maxReplicas": 8},
            "status": {"readyReplicas": 3}}
    s = pool_state(pool, [pending_pod()])
    assert s == PoolState(replicas=4, ready=3, min_replicas=2, max_replicas=8, unschedulable=1,
                          unschedulable_reason=s.unschedulable_reason)
    assert pool_state({"spec": {"replicas": 2}}, []).ready == 0


# ---- building what gets written -------------------------------------------------------------

def test_scale_patch_sets_only_replicas() -> None:
    assert scale_patch(3) == {"spec": {"replicas": 3}}
    with pytest.raises(ValueError, match="replicas=-1"):
        scale_patch(-1)


def test_decision_records_append_changes_validly_and_trim() -> None:
    p = make_plan(prompt=20_000.0)
    assert p.prefill.desired > 1
    old = [{"time": "2026-01-01T00:00:00Z", "pool": "decode", "fromReplicas": 1,
            "toReplicas": 2, "reason": "x", "inputs": {}}] * (MAX_DECISIONS - 1)
    records = decision_records(p, AT, old)
    assert len(records) == MAX_DECISIONS
    newest = ScalingDecision.model_validate(records[-1])
    assert newest.pool == "prefill" and newest.from_replicas == 1
    assert newest.to_replicas == p.prefill.desired
    assert newest.time == "2026-01-02T03:04:05Z"
    assert newest.inputs["promptTokensPerSecond"] == 20_000.0
    assert records[-1]["fromReplicas"] == 1  # camelCase on the wire


def test_no_change_records_nothing() -> None:
    assert decision_records(make_plan(), AT, []) == []


def test_conditions_active_and_within_limits() -> None:
    conds = {c["type"]: c for c in conditions(make_plan(), AT, [READY], 4)}
    assert conds["Ready"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert conds["ScalingActive"]["status"] == "True"
    assert conds["ScalingActive"]["reason"] == "AutoscalerActive"
    assert conds["ScalingLimited"]["status"] == "False"
    assert conds["ScalingLimited"]["observedGeneration"] == 4


def test_conditions_report_pending_pods_as_scaling_limited() -> None:
    p = make_plan(prompt=50_000.0, prefill=PoolState(3, 2, unschedulable=1,
                                                     unschedulable_reason="Insufficient gpu"))
    conds = {c["type"]: c for c in conditions(p, AT, [])}
    assert conds["ScalingLimited"]["status"] == "True"
    assert conds["ScalingLimited"]["reason"] == "PendingPods"
    assert "prefill" in conds["ScalingLimited"]["message"]
    assert "Insufficient gpu" in conds["ScalingLimited"]["message"]


def test_conditions_report_missing_metrics() -> None:
    conds = {c["type"]: c for c in conditions(make_plan(prompt=None, out=None), AT, [])}
    assert conds["ScalingActive"]["status"] == "False"
    assert conds["ScalingActive"]["reason"] == "NoMetrics"
    one = {c["type"]: c for c in conditions(make_plan(prompt=None), AT, [])}
    assert one["ScalingActive"]["status"] == "True"
    assert "prefill pool" in one["ScalingActive"]["message"]


def test_transition_time_moves_only_when_status_changes() -> None:
    first = conditions(make_plan(), AT, [])
    later = datetime(2026, 1, 3, tzinfo=UTC)
    same = {c["type"]: c for c in conditions(make_plan(), later, first)}
    assert same["ScalingActive"]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    flipped = {c["type"]: c for c in conditions(make_plan(prompt=None, out=None), later, first)}
    assert flipped["ScalingActive"]["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def test_event_names_the_pool_and_direction() -> None:
    p = make_plan(prompt=20_000.0)
    e = event(SERVICE, p.prefill, AT)
    assert e["reason"] == "ScaledUp" and e["type"] == "Normal"
    assert e["involvedObject"]["name"] == "chat" and e["involvedObject"]["uid"] == "u-1"
    assert e["message"].startswith(f"prefill 1 -> {p.prefill.desired}:")


def test_decision_counters_exist_at_zero_before_the_first_decision() -> None:
    gauges = RecordingGauges()
    apply(RecordingApi(), SERVICE, POOLS, make_plan(), AT, gauges)
    counters = {k: v for k, v in gauges.values.items()
                if k[0] == names.AUTOSCALER_DECISIONS.name}
    kinds = {(dict(k[1])["pool"], dict(k[1])["direction"], dict(k[1])["reason"])
             for k in counters}
    assert kinds == {(p, d, r) for p in ("prefill", "decode")
                     for d, r in (("up", "ScaleUp"), ("down", "ScaleDown"))}
    assert set(counters.values()) == {0.0}


# ---- applying -------------------------------------------------------------------------------

def test_apply_writes_replicas_only_through_the_scale_subresource() -> None:
    api, gauges = RecordingApi(), RecordingGauges()
    p = make_plan(prompt=20_000.0)
    result = apply(api, SERVICE, POOLS, p, AT, gauges)
    assert [d.pool for d in result.scaled] == ["prefill"]
    assert api.calls[0] == ("patch", "SplitPool", "llm", "chat-prefill", "scale")
    assert api.bodies[0] == {"spec": {"replicas": p.prefill.desired}}
    assert api.calls[1] == ("patch", "SplitService", "llm", "chat", "status")
    assert set(api.bodies[1]["status"]) == {"lastScalingDecisions", "conditions"}
    assert api.calls[2] == ("create", "Event")
    assert not any(c[:2] == ("patch", "SplitPool") and c[4] != "scale" for c in api.calls)
    assert gauges.values[(names.AUTOSCALER_DESIRED_REPLICAS.name,
                          (("pool", "prefill"), ("role", "prefill")))] == p.prefill.desired
    up = (names.AUTOSCALER_DECISIONS.name, (("direction", "up"), ("pool", "prefill"),
                                            ("reason", "ScaleUp"), ("role", "prefill")))
    assert gauges.values[up] == 1.0


def test_apply_without_changes_writes_only_status_and_then_nothing() -> None:
    api = RecordingApi()
    first = apply(api, SERVICE, POOLS, make_plan(), AT)
    assert api.calls == [("patch", "SplitService", "llm", "chat", "status")]
    assert first.wrote_status
    stored = {**SERVICE, "status": {**SERVICE["status"], **first.status}}
    again = apply(api, stored, POOLS, make_plan(), datetime(2026, 1, 2, 3, 5, tzinfo=UTC))
    assert api.calls == [("patch", "SplitService", "llm", "chat", "status")]
    assert not again.wrote_status and again.status == first.status


def test_a_failing_event_does_not_fail_the_scale() -> None:
    api = RecordingApi(fail_events=True)
    result = apply(api, SERVICE, POOLS, make_plan(prompt=20_000.0), AT)
    assert len(result.scaled) == 1
    assert api.calls[0][4] == "scale"


def test_limited_gauge_marks_the_reason() -> None:
    gauges = RecordingGauges()
    p = make_plan(prompt=50_000.0, prefill=PoolState(2, 1, unschedulable=1))
    apply(RecordingApi(), SERVICE, POOLS, p, AT, gauges)
    key = (names.AUTOSCALER_LIMITED.name, (("pool", "prefill"), ("reason", "PendingPods"),
                                           ("role", "prefill")))
    assert gauges.values[key] == 1.0


# ---- one service's loop ---------------------------------------------------------------------

class FixedSnapshots:
    """Stands in for Prometheus (tested for real in e2e/prometheus): returns given snapshots."""

    def __init__(self, *snaps: MetricsSnapshot | Exception) -> None:
        self.snaps = list(snaps)
        self.scopes: list[Scope] = []

    def snapshot(self, scope: Scope, now: float) -> MetricsSnapshot:
        self.scopes.append(scope)
        item = self.snaps.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def splitpool(name: str, replicas: int) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"replicas": replicas, "minReplicas": 1,
                                                 "maxReplicas": 20},
            "status": {"readyReplicas": replicas}}


def test_service_autoscaler_reads_plans_applies_and_keeps_history() -> None:
    burst = MetricsSnapshot(time=0.0, prefill=PoolMetrics(token_rate=20_000.0),
                            decode=PoolMetrics(token_rate=10.0, running=1.0))
    prom = FixedSnapshots(burst, PrometheusError("connection refused"))
    api = RecordingApi()
    auto = ServiceAutoscaler(PROF)
    spec = AutoscalingSpec(enabled=True, prometheus_url="http://prom:9090", percentile=99.0)
    pools = {"prefill": splitpool("chat-prefill", 1), "decode": splitpool("chat-decode", 1)}
    first = auto.step(client=api, prom=prom, service=SERVICE, autoscaling=spec, pools=pools,
                      pods={"prefill": [], "decode": []}, now=AT)
    assert prom.scopes[0] == Scope(namespace="llm", service="chat", percentile=99.0)
    assert first.prefill.desired > 1
    assert ("patch", "SplitPool", "llm", "chat-prefill", "scale") in api.calls
    assert auto.history.prefill.demand  # kept for the next decision
    second = auto.step(client=api, prom=prom, service=SERVICE, autoscaling=spec, pools=pools,
                       pods={}, now=datetime(2026, 1, 2, 3, 4, 35, tzinfo=UTC))
    assert second.prefill.reason == "NoData" and second.decode.reason == "NoData"
    status = api.bodies[-1]["status"]
    active = next(c for c in status["conditions"] if c["type"] == "ScalingActive")
    assert active["reason"] == "NoMetrics"


def test_service_autoscaler_needs_both_pools() -> None:
    with pytest.raises(ValueError, match="decode"):
        ServiceAutoscaler(PROF).step(
            client=RecordingApi(), prom=FixedSnapshots(), service=SERVICE,
            autoscaling=AutoscalingSpec(), pools={"prefill": splitpool("p", 1)}, pods={}, now=AT)


def test_pool_bounds_come_from_the_service_spec() -> None:
    svc = {"spec": {"prefill": {"minReplicas": 2, "maxReplicas": 9}, "decode": {}}}
    assert pool_bounds(svc, "prefill") == (2, 9)
    assert pool_bounds(svc, "decode") == (1, 16)  # the API's defaults
    assert pool_bounds({"metadata": {}}, "prefill") is None
    state = pool_state({"spec": {"replicas": 3}}, [], pool_bounds(svc, "prefill"))
    assert (state.min_replicas, state.max_replicas) == (2, 9)

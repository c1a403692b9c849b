"""The autoscaler inside the operator: one step against stored objects, the status merge with
the reconcile, profiles from ConfigMaps, metrics on the operator's registry.

`StoredApi` stands in for the Kubernetes API server (outside this project): it keeps objects
by kind and name and applies merge patches to them; the cluster tests cover the real one.
"""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from prometheus_client import generate_latest
from test_autoscaler_parts import PROFILE

from splitserve.api import metrics as names
from splitserve.autoscaler.prom import PrometheusError, Scope
from splitserve.autoscaler.snapshot import MetricsSnapshot, PoolMetrics
from splitserve.operator import autoscaling
from splitserve.operator.autoscaling import Prefetched, Slot
from splitserve.operator.kube import Kube
from splitserve.operator.main import parse_options
from splitserve.operator.reconcile import TemplateCache
from splitserve.operator.runtime import OperatorOptions, Runtime

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NS, NAME = "llm", "chat"
READY = {"type": "Ready", "status": "True", "reason": "AllReplicasReady",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)


class StoredApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []

    def put(self, obj: dict[str, Any]) -> None:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found is not None else None

    def list(self, kind: str, namespace: str, label_selector: str = "",
             field_selector: str = "") -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (k, _), o in self.objects.items() if k == kind]

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        self.writes.append(("create", obj["kind"], obj.get("reason", "")))
        return obj

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any],
              subresource: str | None = None) -> dict[str, Any]:
        self.writes.append(("patch", f"{kind}/{name}", subresource or ""))
        merge(self.objects[(kind, name)], patch)
        return self.objects[(kind, name)]


def service(enabled: bool = True, **autoscaling_fields: Any) -> dict[str, Any]:
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": NAME, "namespace": NS, "uid": "u", "generation": 2},
            "spec": {"prefill": {"replicas": 1, "maxReplicas": 6},
                     "decode": {"replicas": 1, "minReplicas": 1, "maxReplicas": 6},
                     "autoscaling": {"enabled": enabled, "prometheusUrl": "http://prom:9090",
                                     "intervalSeconds": 5, **autoscaling_fields}},
            "status": {"conditions": [dict(READY)]}}


def pool(role: str, replicas: int = 1) -> dict[str, Any]:
    """A SplitPool as the operator creates it: replicas, no bounds (those are the service's)."""
    return {"kind": "SplitPool", "metadata": {"name": f"{NAME}-{role}", "namespace": NS},
            "spec": {"replicas": replicas, "role": role}, "status": {"readyReplicas": replicas}}


def world(**autoscaling_fields: Any) -> tuple[StoredApi, Runtime]:
    api = StoredApi()
    for obj in (service(**autoscaling_fields), pool("prefill"), pool("decode")):
        api.put(obj)
    rt = Runtime(OperatorOptions(autoscaler_rate_window="10s"), cast(Kube, api),
                 TemplateCache())
    return api, rt


def snapshot(prompt: float | None) -> MetricsSnapshot:
    return MetricsSnapshot(time=0.0, prefill=PoolMetrics(token_rate=prompt),
                           decode=PoolMetrics(token_rate=5.0 if prompt else None,
                                              running=1.0 if prompt else None))


def scope() -> Scope:
    return Scope(namespace=NS, service=NAME, rate_window="10s")


def run_step(api: StoredApi, rt: Runtime, prompt: float | None,
             at: datetime = AT) -> Slot:
    slot = rt.autoscalers.setdefault((NS, NAME), Slot())
    autoscaling.step(rt, slot, NS, NAME, Prefetched(scope(), snapshot(prompt)), at)
    return slot


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj or {}).get("status", {}).get("conditions", [])}


def test_a_burst_scales_through_the_scale_subresource_with_status_and_event() -> None:
    api, rt = world()
    slot = run_step(api, rt, 50_000.0)
    assert ("patch", "SplitPool/chat-prefill", "scale") in api.writes
    prefill = api.get("SplitPool", NS, "chat-prefill")
    assert prefill is not None and prefill["spec"]["replicas"] == 5  # 1 + 4, within max 6
    assert not any(w[1].startswith("SplitPool") and w[2] != "scale" for w in api.writes)
    assert ("create", "Event", "ScaledUp") in api.writes
    stored = api.get("SplitService", NS, NAME)
    assert stored is not None
    decision = stored["status"]["lastScalingDecisions"][-1]
    assert decision["pool"] == "prefill" and decision["inputs"]["promptTokensPerSecond"] == 50_000
    assert conditions(stored)["ScalingActive"]["status"] == "True"
    assert conditions(stored)["Ready"] == READY  # the reconcile's conditions are kept
    assert slot.status["conditions"] == stored["status"]["conditions"]


def test_a_steady_service_is_written_once_then_never() -> None:
    api, rt = world()
    run_step(api, rt, None)
    assert api.writes == [("patch", "SplitService/chat", "status")]
    assert conditions(api.get("SplitService", NS, NAME))["ScalingActive"]["reason"] == "NoMetrics"
    for minute in range(1, 4):
        run_step(api, rt, None, AT.replace(minute=4 + minute))
    assert len(api.writes) == 1


def test_a_disabled_service_is_never_written_and_its_slot_dropped() -> None:
    api, rt = world()
    api.put(service(enabled=False))
    run_step(api, rt, 50_000.0)
    assert api.writes == []
    assert (NS, NAME) not in rt.autoscalers


def test_missing_pools_wait_for_the_reconcile() -> None:
    api, rt = world()
    del api.objects[("SplitPool", "chat-decode")]
    run_step(api, rt, 50_000.0)
    assert api.writes == []


def test_profile_from_a_config_map() -> None:
    api, rt = world(profileConfigMap="prof")
    small = copy.deepcopy(PROFILE)
    small["prefill"]["secondsPerToken"] = 0.5  # 2 prompt tokens/s per replica
    api.put({"kind": "ConfigMap", "metadata": {"name": "prof", "resourceVersion": "1"},
             "data": {"profile.json": json.dumps(small)}})
    slot = run_step(api, rt, 10.0)
    assert slot.autoscaler is not None
    assert slot.autoscaler.profile.prefill.seconds_per_token == 0.5
    assert ("patch", "SplitPool/chat-prefill", "scale") in api.writes


@pytest.mark.parametrize(("data", "message"), [
    (None, "no such ConfigMap"),
    ({}, "has no 'profile.json' key"),
    ({"profile.json": "{"}, "is not JSON"),
    ({"profile.json": json.dumps({**PROFILE, "format": "x"})}, "profile.format"),
])
def test_a_bad_profile_deactivates_scaling_with_the_reason(data: dict[str, str] | None,
                                                           message: str) -> None:
    api, rt = world(profileConfigMap="prof")
    if data is not None:
        api.put({"kind": "ConfigMap", "metadata": {"name": "prof", "resourceVersion": "1"},
                 "data": data})
    run_step(api, rt, 50_000.0)
    active = conditions(api.get("SplitService", NS, NAME))["ScalingActive"]
    assert (active["status"], active["reason"]) == ("False", "InvalidProfile")
    assert "autoscaling.profileConfigMap=prof" in active["message"] and message in \
        active["message"]
    assert [w for w in api.writes if w[2] == "scale"] == []
    run_step(api, rt, 50_000.0)
    assert len(api.writes) == 1  # reported once


def test_the_reconcile_carries_the_autoscalers_conditions() -> None:
    api, rt = world()
    run_step(api, rt, 50_000.0)
    stale = service()  # what a reconcile read before the autoscaler wrote
    reconciled = {"conditions": [dict(READY), {"type": "ScalingActive", "status": "Unknown",
                                               "reason": "AutoscalerActive"}],
                  "lastScalingDecisions": []}
    out = autoscaling.reconciled_status(rt, stale, reconciled)
    stored = api.get("SplitService", NS, NAME)
    assert stored is not None
    assert out["conditions"] == [dict(READY), *autoscaling.owned_conditions(stored["status"])]
    assert out["lastScalingDecisions"] == stored["status"]["lastScalingDecisions"]
    # switched off: the reconcile's own conditions, and the slot is gone
    off = autoscaling.reconciled_status(rt, service(enabled=False), reconciled)
    assert off == reconciled and (NS, NAME) not in rt.autoscalers


def test_autoscaler_metrics_on_the_operator_registry() -> None:
    api, rt = world()
    run_step(api, rt, 50_000.0)
    text = generate_latest(rt.telemetry.registry).decode()
    labels = 'namespace="llm",pool="prefill",role="prefill",service="chat"'
    assert f"{names.AUTOSCALER_DESIRED_REPLICAS.name}{{{labels}}}" in text
    assert f'{names.AUTOSCALER_INPUT.name}{{input="promptTokensPerSecond",{labels}}} 50000.0' \
        in text
    assert f"{names.AUTOSCALER_DECISIONS.series}{{direction=\"up\"" in text
    assert names.AUTOSCALER_PREDICTED_LOAD.name in text and names.AUTOSCALER_LIMITED.name in text
    autoscaling.forget(rt, NS, NAME)  # the service was deleted
    assert 'service="chat"' not in generate_latest(rt.telemetry.registry).decode()


def test_an_unreachable_prometheus_holds_both_pools() -> None:
    api, rt = world()
    slot = rt.autoscalers.setdefault((NS, NAME), Slot())
    autoscaling.step(rt, slot, NS, NAME, Prefetched(scope(), PrometheusError("refused")), AT)
    assert [w for w in api.writes if w[2] == "scale"] == []
    assert conditions(api.get("SplitService", NS, NAME))["ScalingActive"]["reason"] == "NoMetrics"


def test_a_snapshot_of_another_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="was read"):
        Prefetched(scope(), snapshot(1.0)).snapshot(Scope(namespace=NS, service="other"), 0.0)


def test_operator_options_of_the_autoscaler() -> None:
    opts = parse_options(["--autoscaler-rate-window", "10s", "--autoscaler-half-life", "8"], {})
    assert (opts.autoscaler_rate_window, opts.autoscaler_half_life_seconds) == ("10s", 8.0)
    env = parse_options([], {"SPLITSERVE_AUTOSCALER_RATE_WINDOW": "2m"})
    assert (env.autoscaler_rate_window, env.autoscaler_half_life_seconds) == ("2m", 60.0)
    for bad in (["--autoscaler-rate-window", "10"], ["--autoscaler-rate-window", "0s"],
                ["--autoscaler-half-life", "0"]):
        with pytest.raises(SystemExit):
            parse_options(bad, {})


def test_a_tick_steps_only_when_the_service_is_due() -> None:
    """The timer ticks more often than services decide; Prometheus here is an address nothing
    listens on (no metrics)."""
    api, rt = world(prometheusUrl="http://127.0.0.1:9")
    body = api.get("SplitService", NS, NAME)
    assert body is not None
    asyncio.run(autoscaling.tick(rt, NS, NAME, body))
    assert api.writes == [("patch", "SplitService/chat", "status")]
    slot = rt.autoscalers[(NS, NAME)]
    due = slot.due
    asyncio.run(autoscaling.tick(rt, NS, NAME, body))  # not due: nothing read or written
    assert slot.due == due and len(api.writes) == 1
    slot.due = 0.0
    api.objects[("SplitService", NAME)]["status"]["conditions"] = []
    asyncio.run(autoscaling.tick(rt, NS, NAME, body))
    assert len(api.writes) == 2 and slot.due > due

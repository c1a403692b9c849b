"""The built-in autoscaler inside the operator: one `ServiceAutoscaler` per SplitService.

A kopf timer ticks every `OperatorOptions.autoscaler_tick_seconds` for each SplitService with
`autoscaling.enabled`; a tick whose service is due (its `intervalSeconds` since the last step)
1. queries Prometheus (outside the service's lock: a slow Prometheus delays nobody else);
2. under the service's lock, re-reads the SplitService, both SplitPools and the service's pods,
   loads the capacity profile (the ConfigMap named by `autoscaling.profileConfigMap`, key
   `profile.json`, else the built-in profile) and runs `ServiceAutoscaler.step`, which writes
   replicas only through the SplitPool scale subresource and the status only when it changed.

Status has one writer at a time: the reconcile and the autoscaler both hold the service's lock
while they write `.status`, and the reconcile carries the autoscaler's latest ScalingActive /
ScalingLimited conditions (`overlay`) instead of the ones in the object it read, so neither
undoes the other. `lastScalingDecisions` is written by the autoscaler alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

import splitserve.autoscaler as autoscaler_package
from splitserve.api.names import LABEL_ROLE, LABEL_SERVICE, ConditionType, Reason
from splitserve.api.serving import AutoscalingSpec
from splitserve.api.status import Condition, ConditionStatus
from splitserve.autoscaler.applier import rfc3339
from splitserve.autoscaler.capacity import CapacityProfile
from splitserve.autoscaler.history import POOLS
from splitserve.autoscaler.policy import PolicyConfig
from splitserve.autoscaler.prom import PrometheusClient, PrometheusError, Scope
from splitserve.autoscaler.service_autoscaler import ServiceAutoscaler
from splitserve.autoscaler.snapshot import MetricsSnapshot
from splitserve.operator.kube import Kube, KubeError
from splitserve.operator.planner import naming

if TYPE_CHECKING:
    from splitserve.operator.runtime import Runtime

BUILTIN_PROFILE = Path(autoscaler_package.__file__).parent / "profiles" / "small-cpu.json"
PROFILE_KEY = "profile.json"
OWNED_CONDITIONS = (ConditionType.SCALING_ACTIVE.value, ConditionType.SCALING_LIMITED.value)
log = logging.getLogger(__name__)


@dataclass
class Slot:
    """One service's autoscaler state in the operator's Runtime."""

    autoscaler: ServiceAutoscaler | None = None
    due: float = 0.0  # monotonic time of the next step
    profile_source: tuple[str, str] = ("", "")  # (ConfigMap name or "", resourceVersion)
    status: dict[str, Any] = field(default_factory=dict)  # last status fields written
    prometheus_error: str = ""  # the last query error, logged when it changes


@dataclass(frozen=True)
class Prefetched:
    """A snapshot (or the error) read from Prometheus before the lock was taken."""

    scope: Scope
    result: MetricsSnapshot | PrometheusError

    def snapshot(self, scope: Scope, now: float) -> MetricsSnapshot:
        if scope != self.scope:
            raise ValueError(f"snapshot of {scope} asked; {self.scope} was read")
        if isinstance(self.result, PrometheusError):
            raise self.result
        return self.result


def autoscaling_spec(service: Mapping[str, Any]) -> AutoscalingSpec | None:
    """The service's autoscaling section when the built-in autoscaler is on, else None."""
    raw = (service.get("spec") or {}).get("autoscaling") or {}
    if not raw.get("enabled"):
        return None
    try:
        return AutoscalingSpec.model_validate(raw)
    except ValidationError:
        return None  # the reconcile reports the invalid spec; nothing to size meanwhile


def builtin_profile() -> CapacityProfile:
    return CapacityProfile.from_dict(json.loads(BUILTIN_PROFILE.read_text()))


def profile_from_config_map(config_map: Mapping[str, Any] | None, name: str) -> CapacityProfile:
    """The profile in a ConfigMap; ValueError naming the ConfigMap and what is wrong."""
    where = f"autoscaling.profileConfigMap={name}"
    if config_map is None:
        raise ValueError(f"{where}: no such ConfigMap in the service's namespace")
    text = (config_map.get("data") or {}).get(PROFILE_KEY)
    if text is None:
        raise ValueError(f"{where}: the ConfigMap has no {PROFILE_KEY!r} key")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {PROFILE_KEY} is not JSON ({exc})") from None
    try:
        return CapacityProfile.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def owned_conditions(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for c in status.get("conditions") or [] if c.get("type") in OWNED_CONDITIONS]


def overlay(status: dict[str, Any], slot: Slot | None) -> dict[str, Any]:
    """The reconcile's status with the autoscaler's latest conditions and decisions in place
    of what the reconcile read (pure)."""
    if slot is None or not slot.status:
        return status
    mine = {c["type"]: c for c in owned_conditions(slot.status)}
    conditions = [mine.pop(c.get("type"), c) for c in status.get("conditions") or []]
    out = {**status, "conditions": conditions + list(mine.values())}
    if "lastScalingDecisions" in slot.status:
        out["lastScalingDecisions"] = slot.status["lastScalingDecisions"]
    return out


def inactive_status(service: Mapping[str, Any], reason: str, message: str,
                    at: datetime) -> dict[str, Any]:
    """ScalingActive=False with `reason` (e.g. an unusable profile); the rest as stored."""
    previous = service.get("status") or {}
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    old = before.get(ConditionType.SCALING_ACTIVE.value) or {}
    since = old.get("lastTransitionTime") if old.get("status") == "False" else None
    active = Condition(type=ConditionType.SCALING_ACTIVE, status=ConditionStatus.FALSE,
                       reason=reason, message=message[:32768],
                       last_transition_time=since or rfc3339(at),
                       observed_generation=service["metadata"].get("generation")).to_wire()
    conditions = [active if c.get("type") == active["type"] else dict(c)
                  for c in previous.get("conditions") or []]
    if active["type"] not in before:
        conditions.append(active)
    return {"conditions": conditions,
            "lastScalingDecisions": list(previous.get("lastScalingDecisions") or [])}


def pods_by_role(pods: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {p: [] for p in POOLS}
    for pod in pods:
        role = (pod.get("metadata", {}).get("labels") or {}).get(LABEL_ROLE)
        if role in out:
            out[role].append(pod)
    return out


def _load_profile(kube: Kube, slot: Slot, namespace: str, spec: AutoscalingSpec
                  ) -> CapacityProfile:
    name = spec.profile_config_map or ""
    if not name:
        source = ("", "builtin")
        if slot.autoscaler is not None and slot.profile_source == source:
            return slot.autoscaler.profile
        profile = builtin_profile()
    else:
        cm = kube.get("ConfigMap", namespace, name)
        source = (name, str((cm or {}).get("metadata", {}).get("resourceVersion", "")))
        if slot.autoscaler is not None and slot.profile_source == source and cm is not None:
            return slot.autoscaler.profile
        profile = profile_from_config_map(cm, name)
    slot.profile_source = source
    return profile


def step(rt: Runtime, slot: Slot, namespace: str, name: str, prefetched: Prefetched | None,
         now: datetime) -> None:
    """One decision for one service (blocking; runs in a thread under the service's lock)."""
    kube = rt.kube
    service = kube.get("SplitService", namespace, name)
    spec = autoscaling_spec(service) if service is not None else None
    if service is None or spec is None or service["metadata"].get("deletionTimestamp"):
        forget(rt, namespace, name)
        return
    pools = {p: kube.get("SplitPool", namespace, naming.pool_name(name, p)) for p in POOLS}
    found = {p: pool for p, pool in pools.items() if pool is not None}
    if len(found) != len(POOLS):
        return  # the reconcile has not created both pools yet
    try:
        profile = _load_profile(kube, slot, namespace, spec)
    except ValueError as exc:
        status = inactive_status(service, Reason.AS_INVALID_PROFILE, str(exc), now)
        if status["conditions"] != (service.get("status") or {}).get("conditions"):
            kube.patch("SplitService", namespace, name, {"status": status}, "status")
        slot.status = status
        return
    if slot.autoscaler is None:
        slot.autoscaler = ServiceAutoscaler(profile, config=policy_config(rt),
                                            rate_window=rt.options.autoscaler_rate_window)
    auto = slot.autoscaler
    auto.profile = profile
    pods = kube.list("Pod", namespace, label_selector=f"{LABEL_SERVICE}={name}")
    scope = auto.scope(service, spec)
    source = prefetched if prefetched is not None and prefetched.scope == scope else \
        Prefetched(scope, PrometheusError("no snapshot was read for this scope"))
    result = auto.step(client=kube, prom=source, service=service, autoscaling=spec,
                       pools=found, pods=pods_by_role(pods), now=now,
                       gauges=rt.telemetry.for_service(namespace, name))
    slot.status = auto.status
    for d in result.decisions:
        if d.desired != d.current:
            log.info("autoscaled %s/%s %s %d -> %d: %s", namespace, name, d.pool, d.current,
                     d.desired, d.message)


def policy_config(rt: Runtime) -> PolicyConfig:
    return replace(PolicyConfig(), half_life=rt.options.autoscaler_half_life_seconds)


def _read_prometheus(url: str, scope: Scope) -> Prefetched:
    try:
        return Prefetched(scope, PrometheusClient(url).snapshot(scope, time.time()))
    except PrometheusError as exc:
        return Prefetched(scope, exc)


async def tick(rt: Runtime, namespace: str, name: str, service: Mapping[str, Any]) -> None:
    """Called by the timer of every autoscaled service; steps when the service is due."""
    key = (namespace, name)
    slot = rt.autoscalers.setdefault(key, Slot())
    if time.monotonic() < slot.due:
        return
    spec = autoscaling_spec(service)
    if spec is None or not spec.prometheus_url:
        return
    slot.due = time.monotonic() + spec.interval_seconds
    meta = service["metadata"]
    scope = Scope(namespace=meta["namespace"], service=meta["name"],
                  percentile=spec.percentile, rate_window=rt.options.autoscaler_rate_window)
    prefetched = await asyncio.to_thread(_read_prometheus, spec.prometheus_url, scope)
    error = str(prefetched.result) if isinstance(prefetched.result, PrometheusError) else ""
    if error != slot.prometheus_error:
        if error:
            log.warning("%s/%s: no metrics, holding both pools: %s", namespace, name, error)
        else:
            log.info("%s/%s: metrics from %s again", namespace, name, spec.prometheus_url)
        slot.prometheus_error = error
    async with rt.lock(namespace, name):
        try:
            await asyncio.to_thread(step, rt, slot, namespace, name, prefetched,
                                    datetime.now(UTC))
        except KubeError as exc:
            slot.due = time.monotonic() + min(5.0, spec.interval_seconds)
            log.warning("autoscaling %s/%s deferred: %s", namespace, name, exc)


def forget(rt: Runtime, namespace: str, name: str) -> None:
    """A service that is gone or no longer autoscaled: its state and its series go."""
    rt.autoscalers.pop((namespace, name), None)
    rt.telemetry.forget_service(namespace, name)


def reconciled_status(rt: Runtime, obj: Mapping[str, Any], status: dict[str, Any]
                      ) -> dict[str, Any]:
    """The status a reconcile of `obj` writes, with the autoscaler's part carried over; a
    service whose autoscaler was switched off loses its slot."""
    meta = obj["metadata"]
    key = (meta["namespace"], meta["name"])
    if autoscaling_spec(obj) is None:
        if key in rt.autoscalers:
            forget(rt, *key)
        return status
    return overlay(status, rt.autoscalers.get(key))

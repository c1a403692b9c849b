"""The SplitService status as a pure function of what was observed in the cluster.

Reasons tell capacity problems (pods unschedulable for lack of GPUs) apart from readiness
problems (image pulls, crash loops, missing weights, pods not ready yet) and from a rollout that
is simply in progress. Messages hold no timestamps, so an unchanged world yields an unchanged
status and the operator writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from splitserve.api.names import ConditionType, Reason, Role
from splitserve.operator.planner.pods import GPU_RESOURCE, MODEL_CHECK_CONTAINER, MODEL_VOLUME

IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
MODEL_EVENT_REASONS = frozenset({"FailedMount", "FailedAttachVolume"})
START_EVENT_REASONS = frozenset({"FailedCreatePodSandBox", "FailedCreatePodContainer"})
START_WAITING_REASONS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
# most severe first: the Ready/Degraded reason is the first problem found in this order
SEVERITY = [
    Reason.INVALID_POD_TEMPLATE, Reason.MODEL_NOT_FOUND, Reason.IMAGE_PULL_FAILED,
    Reason.CRASH_LOOP, Reason.POD_START_FAILED, Reason.INSUFFICIENT_GPU, Reason.UNSCHEDULABLE,
]
POOL_ROLES = (Role.PREFILL, Role.DECODE, Role.ROUTER)


@dataclass
class Observed:
    """What the thin layer read from the API server for one SplitService."""

    deployments: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # by role
    pools: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # by role
    pods: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # Warning events of those pods
    router_service: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)  # "Kind/name" not found after apply
    template_errors: dict[str, str] = field(default_factory=dict)  # role -> API server message


@dataclass(frozen=True)
class Problem:
    reason: Reason
    role: str
    message: str


def pod_problems(pods: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[Problem]:
    """Problems visible on individual pods, deduplicated by (reason, role)."""
    found: dict[tuple[Reason, str], Problem] = {}

    def add(reason: Reason, role: str, message: str) -> None:
        found.setdefault((reason, role), Problem(reason, role, message))

    failing_mounts = {
        e.get("involvedObject", {}).get("name"): e.get("message", "")
        for e in events if e.get("reason") in MODEL_EVENT_REASONS
        and f'volume "{MODEL_VOLUME}"' in e.get("message", "")
    }
    failing_starts = {
        e.get("involvedObject", {}).get("name"): e.get("message", "")
        for e in events if e.get("reason") in START_EVENT_REASONS
    }
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("name", "")):
        meta, status = pod.get("metadata", {}), pod.get("status", {})
        role = meta.get("labels", {}).get("splitserve.io/role", "unknown")
        name = meta.get("name", "")
        for cond in status.get("conditions", []):
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                    and cond.get("reason") == "Unschedulable":
                text = cond.get("message", "")
                if "persistentvolumeclaim" in text.lower() and "not found" in text.lower():
                    add(Reason.MODEL_NOT_FOUND, role, _short(text))
                elif GPU_RESOURCE in text:
                    add(Reason.INSUFFICIENT_GPU, role,
                        f"{role} pods cannot be scheduled: {_short(text)}")
                else:
                    add(Reason.UNSCHEDULABLE, role, f"{role} pods cannot be scheduled: "
                        f"{_short(text)}")
        for cs in status.get("initContainerStatuses", []):
            terminated = (cs.get("state", {}).get("terminated")
                          or cs.get("lastState", {}).get("terminated") or {})
            if cs.get("name") == MODEL_CHECK_CONTAINER and terminated.get("exitCode", 0) != 0:
                add(Reason.MODEL_NOT_FOUND, role,
                    _short(terminated.get("message", "") or "model check failed"))
        for cs in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
            waiting = cs.get("state", {}).get("waiting") or {}
            if waiting.get("reason") in IMAGE_PULL_REASONS:
                add(Reason.IMAGE_PULL_FAILED, role,
                    f"{role}: cannot pull image {cs.get('image', '')}")
            elif waiting.get("reason") == "CrashLoopBackOff" and \
                    cs.get("name") != MODEL_CHECK_CONTAINER:
                add(Reason.CRASH_LOOP, role, f"{role}: container {cs.get('name')} keeps crashing")
            elif waiting.get("reason") in START_WAITING_REASONS:
                add(Reason.POD_START_FAILED, role, f"{role}: container {cs.get('name')}: "
                    f"{_short(waiting.get('message', '') or waiting['reason'])}")
        if name in failing_mounts:
            add(Reason.MODEL_NOT_FOUND, role, _short(failing_mounts[name]))
        if name in failing_starts:
            add(Reason.POD_START_FAILED, role, f"{role}: {_short(failing_starts[name])}")
    return sorted(found.values(), key=lambda p: (SEVERITY.index(p.reason), p.role))


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def replica_counts(desired: int, deployment: dict[str, Any] | None) -> dict[str, Any]:
    status = (deployment or {}).get("status", {})
    ready = int(status.get("readyReplicas", 0))
    return {
        "desiredReplicas": desired,
        "readyReplicas": ready,
        "updatedReplicas": int(status.get("updatedReplicas", 0)),
        "summary": f"{ready}/{desired}",
    }


def rolling_out(deployment: dict[str, Any] | None, desired: int) -> bool:
    if deployment is None:
        return True
    status = deployment.get("status", {})
    generation = deployment.get("metadata", {}).get("generation", 0)
    return (
        status.get("observedGeneration", 0) < generation
        or status.get("updatedReplicas", 0) < desired
        or status.get("replicas", 0) > status.get("updatedReplicas", 0)
    )


def endpoint(obj: dict[str, Any], service: dict[str, Any] | None) -> str:
    if service is None:
        return ""
    spec = service.get("spec", {})
    port = (spec.get("ports") or [{}])[0].get("port", "")
    ingress = service.get("status", {}).get("loadBalancer", {}).get("ingress") or []
    if spec.get("type") == "LoadBalancer" and ingress:
        host = ingress[0].get("ip") or ingress[0].get("hostname", "")
        return f"{host}:{port}"
    meta = obj["metadata"]
    return f"{meta['name']}.{meta.get('namespace', 'default')}.svc:{port}"


def _desired(obj: dict[str, Any], observed: Observed, role: str) -> int:
    if role == Role.ROUTER:
        return int(obj["spec"].get("router", {}).get("replicas", 2))
    pool = observed.pools.get(role)
    if pool is not None:
        return int(pool.get("spec", {}).get("replicas", 0))
    return int(obj["spec"].get(role, {}).get("replicas", 1))


def condition(kind: ConditionType, ok: bool, reason: Reason, message: str,
              generation: int | None) -> dict[str, Any]:
    return {"type": kind.value, "status": "True" if ok else "False", "reason": reason.value,
            "message": message, "observedGeneration": generation}


def merge_conditions(previous: list[dict[str, Any]], new: list[dict[str, Any]],
                     now: str) -> list[dict[str, Any]]:
    """New conditions, keeping each one's lastTransitionTime while its status is unchanged."""
    before = {c.get("type"): c for c in previous}
    merged = []
    for cond in new:
        old = before.get(cond["type"])
        keep = old is not None and old.get("status") == cond["status"] \
            and old.get("lastTransitionTime")
        merged.append({**cond, "lastTransitionTime": old["lastTransitionTime"] if keep and old
                       else now})
    return merged


def service_status(obj: dict[str, Any], observed: Observed, now: str) -> dict[str, Any]:
    """The full status of one SplitService. `now` (RFC 3339) stamps condition transitions."""
    generation = obj.get("metadata", {}).get("generation")
    previous = obj.get("status") or {}
    counts = {role.value: replica_counts(_desired(obj, observed, role),
                                         observed.deployments.get(role))
              for role in POOL_ROLES}
    problems = [Problem(Reason.INVALID_POD_TEMPLATE, role, f"{role}: {_short(msg)}")
                for role, msg in sorted(observed.template_errors.items())]
    problems += pod_problems(observed.pods, observed.events)
    rollout = [role.value for role in POOL_ROLES if rolling_out(
        observed.deployments.get(role), counts[role.value]["desiredReplicas"])]
    not_ready = [role.value for role in POOL_ROLES
                 if counts[role.value]["readyReplicas"] < counts[role.value]["desiredReplicas"]]
    all_ready = not not_ready and not observed.missing and not rollout

    if all_ready:
        ready = condition(ConditionType.READY, True, Reason.ALL_READY,
                          "every pool and the router are ready", generation)
    elif problems:
        ready = condition(ConditionType.READY, False, problems[0].reason, problems[0].message,
                          generation)
    elif observed.missing:
        ready = condition(ConditionType.READY, False, Reason.CHILDREN_MISSING,
                          "missing: " + ", ".join(sorted(observed.missing)), generation)
    elif rollout:
        ready = condition(ConditionType.READY, False, Reason.ROLLOUT_IN_PROGRESS,
                          "rolling out: " + ", ".join(rollout), generation)
    else:
        ready = condition(ConditionType.READY, False, Reason.PODS_NOT_READY,
                          "; ".join(f"{r} {counts[r]['summary']} ready" for r in not_ready),
                          generation)
    if problems:
        degraded = condition(ConditionType.DEGRADED, True, problems[0].reason,
                             "; ".join(p.message for p in problems[:4]), generation)
    else:
        degraded = condition(ConditionType.DEGRADED, False, Reason.NO_PROBLEM,
                             "no problem observed", generation)
    if rollout:
        progressing = condition(ConditionType.PROGRESSING, True, Reason.ROLLOUT_IN_PROGRESS,
                                "rolling out: " + ", ".join(rollout), generation)
    else:
        progressing = condition(ConditionType.PROGRESSING, False, Reason.RECONCILED,
                                "every child matches the spec", generation)
    conditions = [ready, progressing, degraded, *_scaling_conditions(obj, previous, generation)]
    return {
        "observedGeneration": generation,
        "conditions": merge_conditions(previous.get("conditions", []), conditions, now),
        "prefill": counts[Role.PREFILL],
        "decode": counts[Role.DECODE],
        "router": counts[Role.ROUTER],
        "endpoint": endpoint(obj, observed.router_service),
        "lastScalingDecisions": previous.get("lastScalingDecisions", []),
    }


def _scaling_conditions(obj: dict[str, Any], previous: dict[str, Any],
                        generation: int | None) -> list[dict[str, Any]]:
    """When the built-in autoscaler is on it owns ScalingActive/ScalingLimited: keep them."""
    enabled = bool(obj["spec"].get("autoscaling", {}).get("enabled", False))
    kinds = (ConditionType.SCALING_ACTIVE, ConditionType.SCALING_LIMITED)
    if enabled:
        kept = {c.get("type"): c for c in previous.get("conditions", [])}
        return [
            {k: v for k, v in kept[kind.value].items() if k != "lastTransitionTime"}
            if kind.value in kept else
            {"type": kind.value, "status": "Unknown", "reason": Reason.AS_ACTIVE.value,
             "message": "waiting for the first autoscaling decision",
             "observedGeneration": generation}
            for kind in kinds
        ]
    message = "built-in autoscaling is disabled; SplitPool replicas follow their scale subresource"
    return [condition(kind, False, Reason.AS_NOT_ENABLED, message, generation) for kind in kinds]

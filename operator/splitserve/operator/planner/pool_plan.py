"""A SplitPool → its Deployment, and the SplitPool's status from that Deployment."""

from __future__ import annotations

from typing import Any

from splitserve.api import SplitPool
from splitserve.api.names import LABEL_VERSION
from splitserve.operator.planner import naming
from splitserve.operator.planner.pods import worker_pod_template


def parse_pool(obj: dict[str, Any]) -> SplitPool:
    return SplitPool.model_validate({k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec")
                                     if k in obj})


def plan_pool(obj: dict[str, Any]) -> dict[str, Any]:
    """The Deployment of one SplitPool (owned by it), replicas taken from the pool's spec."""
    pool = parse_pool(obj)
    spec = pool.spec
    name = obj["metadata"]["name"]
    pool_labels = naming.labels(spec.service, spec.role)
    pod_labels = {k: v for k, v in pool_labels.items() if k != LABEL_VERSION}
    gpu_bound = spec.resources.gpus > 0
    strategy = {
        "type": "RollingUpdate",
        # no spare GPU is assumed: replace one worker at a time instead of surging
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1} if gpu_bound
        else {"maxSurge": 1, "maxUnavailable": 0},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": naming.child_metadata(obj, name, pool_labels),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": naming.selector(spec.service, spec.role)},
            "strategy": strategy,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 900,
            "template": worker_pod_template(spec, pod_labels),
        },
    }


def pool_status(obj: dict[str, Any], deployment: dict[str, Any] | None) -> dict[str, Any]:
    """SplitPool status (scale subresource fields included) from its observed Deployment."""
    spec = obj["spec"]
    dstatus = (deployment or {}).get("status", {})
    desired = int(spec.get("replicas", 0))
    ready = int(dstatus.get("readyReplicas", 0))
    updated = int(dstatus.get("updatedReplicas", 0))
    rolled = deployment is not None and _rollout_complete(deployment, desired)
    ready_status = "True" if ready >= desired and rolled else "False"
    if deployment is None:
        ready_reason, progressing = "DeploymentMissing", ("True", "Creating")
    elif not rolled:
        ready_reason, progressing = "RolloutInProgress", ("True", "RolloutInProgress")
    elif ready < desired:
        ready_reason, progressing = "PodsNotReady", ("False", "RolloutComplete")
    else:
        ready_reason, progressing = "AllReplicasReady", ("False", "RolloutComplete")
    return {
        "observedGeneration": obj["metadata"].get("generation"),
        "replicas": int(dstatus.get("replicas", 0)),
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "selector": naming.selector_string(spec["service"], spec["role"]),
        "conditions": [
            {"type": "Ready", "status": ready_status, "reason": ready_reason,
             "message": f"{ready}/{desired} workers ready"},
            {"type": "Progressing", "status": progressing[0], "reason": progressing[1],
             "message": f"{updated}/{desired} workers on the current template"},
        ],
    }


def _rollout_complete(deployment: dict[str, Any], desired: int) -> bool:
    status = deployment.get("status", {})
    generation = deployment.get("metadata", {}).get("generation", 0)
    return (
        status.get("observedGeneration", 0) >= generation
        and status.get("updatedReplicas", 0) >= desired
        and status.get("replicas", 0) == status.get("updatedReplicas", 0)
    )

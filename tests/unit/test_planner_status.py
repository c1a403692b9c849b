"""The SplitService status from observed objects: counts, endpoint and conditions with reasons."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from splitserve.operator.planner import Observed, service_status
from splitserve.operator.planner.status import merge_conditions, pod_problems

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def service(autoscaling: bool = False, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
        "metadata": {"name": "llama", "namespace": "ml", "uid": "u", "generation": 7},
        "spec": {"model": {"name": "m", "source": {"hostPath": "/m"}},
                 "prefill": {"replicas": 1}, "decode": {"replicas": 2},
                 "router": {"replicas": 1},
                 "autoscaling": {"enabled": autoscaling,
                                 "prometheusUrl": "http://prom:9090"}},
    }
    if status is not None:
        obj["status"] = status
    return obj


def deployment(replicas: int, ready: int | None = None, updated: int | None = None,
               total: int | None = None, generation: int = 1,
               observed: int = 1) -> dict[str, Any]:
    ready = replicas if ready is None else ready
    updated = replicas if updated is None else updated
    return {"metadata": {"generation": generation},
            "status": {"observedGeneration": observed,
                       "replicas": replicas if total is None else total,
                       "readyReplicas": ready, "updatedReplicas": updated,
                       "availableReplicas": ready}}


def split_pool(replicas: int) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}}


def healthy() -> Observed:
    return Observed(
        deployments={"prefill": deployment(1), "decode": deployment(2), "router": deployment(1)},
        pools={"prefill": split_pool(1), "decode": split_pool(2)},
        router_service={"spec": {"type": "ClusterIP", "ports": [{"port": 8000}]}},
    )


def pod(role: str, name: str = "p", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"splitserve.io/role": role}},
            "status": status}


def unschedulable(message: str) -> dict[str, Any]:
    return {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": message}]}


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_healthy_service_is_ready_with_counts_and_endpoint() -> None:
    status = service_status(service(), healthy(), NOW)
    assert status["observedGeneration"] == 7
    assert status["prefill"] == {"desiredReplicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                                 "summary": "1/1"}
    assert status["decode"]["summary"] == "2/2"
    assert status["router"]["summary"] == "1/1"
    assert status["endpoint"] == "llama.ml.svc:8000"
    c = conds(status)
    assert c["Ready"]["status"] == "True" and c["Ready"]["reason"] == "AllReplicasReady"
    assert c["Progressing"]["status"] == "False"
    assert c["Degraded"]["status"] == "False"
    assert all(x["observedGeneration"] == 7 for x in status["conditions"])
    assert all(x["lastTransitionTime"] == NOW for x in status["conditions"])


def test_status_is_a_pure_function() -> None:
    obj, observed = service(), healthy()
    before = (copy.deepcopy(obj), copy.deepcopy(observed))
    assert service_status(obj, observed, NOW) == service_status(obj, observed, NOW)
    assert (obj, observed) == before


def test_unchanged_world_keeps_status_identical_later() -> None:
    first = service_status(service(), healthy(), NOW)
    second = service_status(service(status=first), healthy(), LATER)
    assert second == first


def test_transition_time_moves_only_when_status_flips() -> None:
    first = service_status(service(), healthy(), NOW)
    broken = healthy()
    broken.deployments["decode"] = deployment(2, ready=1)
    second = service_status(service(status=first), broken, LATER)
    c = conds(second)
    assert c["Ready"]["lastTransitionTime"] == LATER
    assert c["Degraded"]["lastTransitionTime"] == NOW


def test_desired_replicas_come_from_the_split_pool_not_the_seed() -> None:
    observed = healthy()
    observed.pools["decode"] = split_pool(5)
    observed.deployments["decode"] = deployment(5, ready=2)
    status = service_status(service(), observed, NOW)
    assert status["decode"]["summary"] == "2/5"
    assert conds(status)["Ready"]["status"] == "False"


def test_seed_used_before_the_pool_exists() -> None:
    observed = healthy()
    observed.pools = {}
    assert service_status(service(), observed, NOW)["decode"]["desiredReplicas"] == 2


def test_pods_not_ready_reason() -> None:
    observed = healthy()
    observed.deployments["prefill"] = deployment(1, ready=0)
    c = conds(service_status(service(), observed, NOW))
    assert c["Ready"]["reason"] == "PodsNotReady"
    assert "prefill 0/1" in c["Ready"]["message"]
    assert c["Degraded"]["status"] == "False"


def test_rollout_in_progress_reason() -> None:
    observed = healthy()
    observed.deployments["decode"] = deployment(2, updated=1, total=3)
    c = conds(service_status(service(), observed, NOW))
    assert c["Progressing"]["status"] == "True"
    assert c["Progressing"]["reason"] == "RolloutInProgress"
    assert c["Ready"]["reason"] == "RolloutInProgress"
    assert "decode" in c["Progressing"]["message"]


def test_unobserved_deployment_generation_is_progressing() -> None:
    observed = healthy()
    observed.deployments["router"] = deployment(1, generation=2, observed=1)
    assert conds(service_status(service(), observed, NOW))["Progressing"]["status"] == "True"


def test_missing_deployment_is_progressing_and_not_ready() -> None:
    observed = healthy()
    observed.deployments["router"] = None
    status = service_status(service(), observed, NOW)
    assert status["router"]["summary"] == "0/1"
    assert conds(status)["Ready"]["status"] == "False"


def test_missing_children_reason() -> None:
    observed = healthy()
    observed.missing = ["Service/llama-decode"]
    c = conds(service_status(service(), observed, NOW))
    assert c["Ready"]["reason"] == "ChildrenMissing"
    assert "Service/llama-decode" in c["Ready"]["message"]


def test_insufficient_gpu_is_a_capacity_problem() -> None:
    observed = healthy()
    observed.deployments["decode"] = deployment(2, ready=1)
    observed.pods = [pod("decode", **unschedulable(
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes"))]
    c = conds(service_status(service(), observed, NOW))
    assert c["Ready"]["reason"] == "InsufficientGPU"
    assert c["Degraded"]["status"] == "True" and c["Degraded"]["reason"] == "InsufficientGPU"
    assert "decode" in c["Degraded"]["message"] and "nvidia.com/gpu" in c["Degraded"]["message"]


def test_other_unschedulable_reason() -> None:
    observed = healthy()
    observed.pods = [pod("prefill", **unschedulable("0/1 nodes are available: 1 Insufficient "
                                                    "cpu."))]
    observed.deployments["prefill"] = deployment(1, ready=0)
    assert conds(service_status(service(), observed, NOW))["Degraded"]["reason"] == \
        "Unschedulable"


def test_missing_pvc_is_model_not_found() -> None:
    observed = healthy()
    observed.pods = [pod("prefill", **unschedulable(
        '0/1 nodes are available: persistentvolumeclaim "weights" not found.'))]
    observed.deployments["prefill"] = deployment(1, ready=0)
    assert conds(service_status(service(), observed, NOW))["Degraded"]["reason"] == \
        "ModelNotFound"


def test_image_pull_failure_is_a_readiness_problem() -> None:
    observed = healthy()
    observed.deployments["decode"] = deployment(2, ready=0)
    observed.pods = [pod("decode", phase="Pending", containerStatuses=[
        {"name": "worker", "image": "nope:1", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
    ])]
    c = conds(service_status(service(), observed, NOW))
    assert c["Ready"]["reason"] == "ImagePullFailed"
    assert "nope:1" in c["Ready"]["message"]


def test_failed_model_check_is_model_not_found() -> None:
    observed = healthy()
    observed.deployments["decode"] = deployment(2, ready=0)
    observed.pods = [pod("decode", phase="Pending", initContainerStatuses=[
        {"name": "model-check", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {
             "exitCode": 1, "message": "model not found: no config.json in hostPath /m\n"}}}
    ])]
    c = conds(service_status(service(), observed, NOW))
    assert c["Degraded"]["reason"] == "ModelNotFound"
    assert "no config.json in hostPath /m" in c["Degraded"]["message"]


def test_failed_mount_event_is_model_not_found() -> None:
    observed = healthy()
    observed.deployments["prefill"] = deployment(1, ready=0)
    observed.pods = [pod("prefill", name="llama-prefill-x", phase="Pending")]
    observed.events = [{"reason": "FailedMount", "involvedObject": {"name": "llama-prefill-x"},
                        "message": 'MountVolume.SetUp failed for volume "model" : hostPath '
                                   "type check failed: /m is not a directory"}]
    c = conds(service_status(service(), observed, NOW))
    assert c["Degraded"]["reason"] == "ModelNotFound"
    assert "/m is not a directory" in c["Degraded"]["message"]


def test_crash_loop_reason() -> None:
    observed = healthy()
    observed.deployments["router"] = deployment(1, ready=0)
    observed.pods = [pod("router", phase="Running", containerStatuses=[
        {"name": "router", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])]
    c = conds(service_status(service(), observed, NOW))
    assert c["Degraded"]["reason"] == "CrashLoopBackOff"


def test_invalid_pod_template_outranks_everything() -> None:
    observed = healthy()
    observed.template_errors = {"decode": 'Deployment.apps "x" is invalid: spec.template.spec.'
                                          'containers[1].image: Required value'}
    observed.pods = [pod("decode", **unschedulable("Insufficient nvidia.com/gpu"))]
    observed.deployments["decode"] = deployment(2, ready=0)
    c = conds(service_status(service(), observed, NOW))
    assert c["Degraded"]["reason"] == "InvalidPodTemplate"
    assert "containers[1].image: Required value" in c["Degraded"]["message"]
    assert "InsufficientGPU" not in c["Degraded"]["message"]
    assert "nvidia.com/gpu" in c["Degraded"]["message"]


def test_problems_deduplicate_per_reason_and_role() -> None:
    pods = [pod("decode", name=f"p{i}", **unschedulable("Insufficient nvidia.com/gpu"))
            for i in range(5)]
    assert len(pod_problems(pods, [])) == 1


def test_problems_order_by_severity() -> None:
    pods = [
        pod("decode", name="a", **unschedulable("Insufficient nvidia.com/gpu")),
        pod("prefill", name="b", phase="Pending", containerStatuses=[
            {"name": "worker", "image": "x", "state": {"waiting": {"reason": "ErrImagePull"}}}]),
    ]
    assert [p.reason.value for p in pod_problems(pods, [])] == ["ImagePullFailed",
                                                                 "InsufficientGPU"]


def test_long_messages_are_shortened() -> None:
    pods = [pod("decode", **unschedulable("Insufficient nvidia.com/gpu " + "x" * 2000))]
    (problem,) = pod_problems(pods, [])
    assert len(problem.message) <= 300 + len("decode pods cannot be scheduled: ")


def test_load_balancer_endpoint() -> None:
    observed = healthy()
    observed.router_service = {"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
                               "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}}
    assert service_status(service(), observed, NOW)["endpoint"] == "203.0.113.9:80"


def test_no_endpoint_without_service() -> None:
    observed = healthy()
    observed.router_service = None
    assert service_status(service(), observed, NOW)["endpoint"] == ""


def test_scaling_conditions_when_autoscaling_is_disabled() -> None:
    c = conds(service_status(service(), healthy(), NOW))
    assert c["ScalingActive"]["status"] == "False"
    assert c["ScalingActive"]["reason"] == "AutoscalingDisabled"
    assert c["ScalingLimited"]["status"] == "False"


def test_autoscaler_conditions_and_decisions_are_preserved() -> None:
    decisions = [{"time": NOW, "pool": "decode", "fromReplicas": 1, "toReplicas": 2,
                  "reason": "tpot above target", "inputs": {"tpot_p95_ms": 140.0}}]
    previous = {"conditions": [
        {"type": "ScalingActive", "status": "True", "reason": "AutoscalerActive", "message": "ok",
         "lastTransitionTime": NOW, "observedGeneration": 7},
        {"type": "ScalingLimited", "status": "True", "reason": "PendingPods",
         "message": "decode pods pending", "lastTransitionTime": NOW, "observedGeneration": 7},
    ], "lastScalingDecisions": decisions}
    status = service_status(service(autoscaling=True, status=previous), healthy(), LATER)
    c = conds(status)
    assert c["ScalingLimited"]["reason"] == "PendingPods"
    assert c["ScalingLimited"]["lastTransitionTime"] == NOW
    assert c["ScalingActive"]["status"] == "True"
    assert status["lastScalingDecisions"] == decisions


def test_autoscaler_conditions_start_unknown() -> None:
    c = conds(service_status(service(autoscaling=True), healthy(), NOW))
    assert c["ScalingActive"]["status"] == "Unknown"


@pytest.mark.parametrize("old_status,new_status,expected", [
    ("True", "True", NOW), ("True", "False", LATER), ("False", "True", LATER)])
def test_merge_conditions(old_status: str, new_status: str, expected: str) -> None:
    old = [{"type": "Ready", "status": old_status, "lastTransitionTime": NOW}]
    new = [{"type": "Ready", "status": new_status, "reason": "X", "message": ""}]
    assert merge_conditions(old, new, LATER)[0]["lastTransitionTime"] == expected


def test_sandbox_failure_event_is_pod_start_failed() -> None:
    observed = healthy()
    observed.deployments["router"] = deployment(1, ready=0)
    observed.pods = [pod("router", name="r-1", phase="Pending")]
    observed.events = [{"reason": "FailedCreatePodSandBox", "involvedObject": {"name": "r-1"},
                        "message": "Failed to create pod sandbox: runc create failed"}]
    c = conds(service_status(service(), observed, NOW))
    assert c["Degraded"]["reason"] == "PodStartFailed"
    assert "runc create failed" in c["Degraded"]["message"]


def test_missing_config_map_is_pod_start_failed() -> None:
    observed = healthy()
    observed.deployments["decode"] = deployment(2, ready=0)
    observed.pods = [pod("decode", phase="Pending", containerStatuses=[
        {"name": "worker", "state": {"waiting": {"reason": "CreateContainerConfigError",
                                                 "message": 'secret "kv-tls" not found'}}}])]
    c = conds(service_status(service(), observed, NOW))
    assert c["Ready"]["reason"] == "PodStartFailed"
    assert 'secret "kv-tls" not found' in c["Ready"]["message"]


def test_failed_mount_of_another_volume_is_not_model_not_found() -> None:
    observed = healthy()
    observed.deployments["router"] = deployment(1, ready=0)
    observed.pods = [pod("router", name="r-1", phase="Pending")]
    observed.events = [{"reason": "FailedMount", "involvedObject": {"name": "r-1"},
                        "message": 'MountVolume.SetUp failed for volume "kube-api-access-x" : '
                                   "failed to fetch token"}]
    c = conds(service_status(service(), observed, NOW))
    assert c["Degraded"]["status"] == "False"
    assert c["Ready"]["reason"] == "PodsNotReady"

"""Planning a SplitPool's Deployment: resources, GPUs, model volumes, probes, override."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from splitserve.operator.planner import plan_pool, pool_status


def pool(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "role": "decode", "service": "llama", "replicas": 2, "image": "splitserve/worker:0.1.0",
        "model": {"name": "llama", "source": {"hostPath": "/models/llama"}},
        "configMapName": "llama-config", "configHash": "abc123",
    }
    base.update(spec)
    return {
        "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitPool",
        "metadata": {"name": "llama-decode", "namespace": "ml", "uid": "pool-uid",
                     "generation": 4},
        "spec": base,
    }


def template(obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = plan_pool(obj)["spec"]["template"]
    return result


def container(obj: dict[str, Any], name: str = "worker") -> dict[str, Any]:
    return next(c for c in template(obj)["spec"]["containers"] if c["name"] == name)


def init(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in template(obj)["spec"]["initContainers"] if c["name"] == name)


def test_deployment_is_owned_by_the_pool_and_sized_by_it() -> None:
    dep = plan_pool(pool(replicas=5))
    assert dep["kind"] == "Deployment" and dep["metadata"]["name"] == "llama-decode"
    assert dep["spec"]["replicas"] == 5
    (owner,) = dep["metadata"]["ownerReferences"]
    assert owner["kind"] == "SplitPool" and owner["uid"] == "pool-uid" and owner["controller"]


def test_zero_replicas_is_allowed() -> None:
    assert plan_pool(pool(replicas=0))["spec"]["replicas"] == 0


def test_selector_matches_pod_labels() -> None:
    dep = plan_pool(pool())
    selector = dep["spec"]["selector"]["matchLabels"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector == {"splitserve.io/service": "llama", "splitserve.io/role": "decode"}
    assert all(labels[k] == v for k, v in selector.items())


def test_gpu_count_is_requested_and_limited() -> None:
    res = container(pool(resources={"gpus": 2, "requests": {"cpu": "4", "memory": "16Gi"},
                                    "limits": {"memory": "24Gi"}}))["resources"]
    assert res["requests"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert res["limits"] == {"memory": "24Gi", "nvidia.com/gpu": "2"}


def test_cpu_only_pool_requests_no_gpu() -> None:
    res = container(pool(resources={"gpus": 0, "requests": {"cpu": "100m"}}))["resources"]
    assert res == {"requests": {"cpu": "100m"}}


def test_ephemeral_storage_uses_kubernetes_name() -> None:
    res = container(pool(resources={"gpus": 0, "limits": {"ephemeralStorage": "5Gi"}}))
    assert res["resources"]["limits"] == {"ephemeral-storage": "5Gi"}


def test_gpu_pools_roll_without_surge_cpu_pools_with_surge() -> None:
    gpu = plan_pool(pool(resources={"gpus": 1}))["spec"]["strategy"]["rollingUpdate"]
    cpu = plan_pool(pool(resources={"gpus": 0}))["spec"]["strategy"]["rollingUpdate"]
    assert gpu == {"maxSurge": 0, "maxUnavailable": 1}
    assert cpu == {"maxSurge": 1, "maxUnavailable": 0}


def test_worker_container_is_hardened() -> None:
    pod = template(pool())["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"] + pod["initContainers"]:
        sec = c["securityContext"]
        assert sec["allowPrivilegeEscalation"] is False, c["name"]
        assert sec["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sec["runAsNonRoot"] is True, c["name"]
        assert sec["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]


def test_worker_probes_drain_and_grace_period() -> None:
    obj = pool(drainSeconds=120)
    c = container(obj)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["lifecycle"]["preStop"]["httpGet"] == {"path": "/drain?timeout=120", "port": "http"}
    assert template(obj)["spec"]["terminationGracePeriodSeconds"] > 120


def test_worker_ports_and_arguments() -> None:
    c = container(pool(httpPort=9090, kvPort=6000, role="prefill"))
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 9090, "kv": 6000}
    args = c["args"]
    assert args[:3] == ["worker", "--role", "prefill"]
    assert args[args.index("--http-port") + 1] == "9090"
    assert args[args.index("--grpc-port") + 1] == "6000"
    assert args[args.index("--model") + 1] == "/models"
    assert args[args.index("--host") + 1] == "0.0.0.0"


def test_worker_environment_names_pod_and_service() -> None:
    env = {e["name"]: e for e in container(pool())["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["SPLITSERVE_SERVICE"]["value"] == "llama"
    assert env["SPLITSERVE_ROLE"]["value"] == "decode"


def test_config_hash_annotation_rolls_pods() -> None:
    a = template(pool(configHash="one"))["metadata"]["annotations"]
    b = template(pool(configHash="two"))["metadata"]["annotations"]
    assert a["splitserve.io/config-hash"] == "one" and b["splitserve.io/config-hash"] == "two"


def test_config_map_is_mounted() -> None:
    pod = template(pool())["spec"]
    assert {"name": "config", "configMap": {"name": "llama-config"}} in pod["volumes"]
    mounts = {m["name"]: m for m in container(pool())["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/splitserve"


def test_host_path_model_mount_is_checked() -> None:
    obj = pool()
    pod = template(obj)["spec"]
    assert {"name": "model", "hostPath": {"path": "/models/llama", "type": "Directory"}} \
        in pod["volumes"]
    check = init(obj, "model-check")
    assert "config.json" in check["command"][-1] and "/models/llama" in check["command"][-1]
    assert check["volumeMounts"][0]["mountPath"] == "/models"


def test_pvc_model_is_mounted_read_only_with_sub_path() -> None:
    obj = pool(model={"name": "m", "source": {"pvc": {"claimName": "weights",
                                                      "subPath": "llama"}}})
    pod = template(obj)["spec"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "weights",
                                                       "readOnly": True}} in pod["volumes"]
    mount = next(m for m in container(obj)["volumeMounts"] if m["name"] == "model")
    assert mount == {"name": "model", "mountPath": "/models", "readOnly": True,
                     "subPath": "llama"}


def test_image_model_is_copied_by_an_init_container_before_the_check() -> None:
    obj = pool(model={"name": "m", "source": {"image": {"reference": "weights/llama:1",
                                                        "path": "/weights"}}})
    pod = template(obj)["spec"]
    assert {"name": "model", "emptyDir": {}} in pod["volumes"]
    names = [c["name"] for c in pod["initContainers"]]
    assert names == ["model-fetch", "model-check"]
    fetch = pod["initContainers"][0]
    assert fetch["image"] == "weights/llama:1" and "/weights/." in fetch["command"][-1]


def test_placement_fields() -> None:
    obj = pool(nodeSelector={"gpu": "h100"}, priorityClassName="serving",
               tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoSchedule"}])
    pod = template(obj)["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["priorityClassName"] == "serving"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]


def test_no_placement_fields_when_unset() -> None:
    pod = template(pool())["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "priorityClassName" not in pod


def test_override_adds_pod_fields_and_merges_containers_by_name() -> None:
    override = {
        "metadata": {"annotations": {"team": "ml"}, "labels": {"cost-center": "42"}},
        "spec": {
            "hostIPC": True,
            "containers": [
                {"name": "worker", "env": [{"name": "EXTRA", "value": "1"}]},
                {"name": "sidecar", "image": "busybox"},
            ],
            "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}],
        },
    }
    tpl = template(pool(podTemplateOverride=override))
    assert tpl["metadata"]["annotations"]["team"] == "ml"
    assert tpl["metadata"]["annotations"]["splitserve.io/config-hash"] == "abc123"
    assert tpl["metadata"]["labels"]["cost-center"] == "42"
    assert tpl["metadata"]["labels"]["splitserve.io/role"] == "decode"
    spec = tpl["spec"]
    assert spec["hostIPC"] is True
    assert [c["name"] for c in spec["containers"]] == ["worker", "sidecar"]
    env = {e["name"] for e in spec["containers"][0]["env"]}
    assert {"EXTRA", "POD_NAME", "SPLITSERVE_SERVICE"} <= env
    assert spec["containers"][0]["image"] == "splitserve/worker:0.1.0"
    assert {"name": "shm", "emptyDir": {"medium": "Memory"}} in spec["volumes"]
    assert any(v["name"] == "model" for v in spec["volumes"])


def test_override_can_replace_a_rendered_value() -> None:
    override = {"spec": {"terminationGracePeriodSeconds": 5,
                         "containers": [{"name": "worker", "args": ["worker", "--debug"]}]}}
    spec = template(pool(podTemplateOverride=override))["spec"]
    assert spec["terminationGracePeriodSeconds"] == 5
    assert spec["containers"][0]["args"] == ["worker", "--debug"]


def test_override_null_removes_a_rendered_field() -> None:
    override = {"spec": {"enableServiceLinks": None}}
    assert "enableServiceLinks" not in template(pool(podTemplateOverride=override))["spec"]


def test_override_with_unnamed_container_is_a_clear_error() -> None:
    override = {"spec": {"containers": [{"image": "x"}]}}
    with pytest.raises(ValueError, match=r"podTemplateOverride\.spec\.containers"):
        plan_pool(pool(podTemplateOverride=override))


def test_invalid_pool_is_rejected_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="role"):
        plan_pool(pool(role="router"))
    with pytest.raises(ValidationError, match="configMapName"):
        plan_pool(pool(configMapName=""))


def test_plan_does_not_modify_the_pool() -> None:
    obj = pool(podTemplateOverride={"spec": {"containers": [{"name": "worker", "env": []}]}})
    before = copy.deepcopy(obj)
    plan_pool(obj)
    assert obj == before


def deployment(replicas: int = 2, ready: int = 2, updated: int = 2, available: int = 2,
               generation: int = 1, observed: int = 1, total: int | None = None
               ) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": observed, "replicas": replicas if total is None
                   else total, "readyReplicas": ready, "updatedReplicas": updated,
                   "availableReplicas": available},
    }


def test_pool_status_reports_scale_fields() -> None:
    status = pool_status(pool(replicas=2), deployment())
    assert status["replicas"] == 2 and status["readyReplicas"] == 2
    assert status["selector"] == "splitserve.io/service=llama,splitserve.io/role=decode"
    assert status["observedGeneration"] == 4
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert conds["Progressing"]["status"] == "False"


def test_pool_status_without_deployment() -> None:
    status = pool_status(pool(), None)
    assert status["replicas"] == 0
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"] == {"type": "Ready", "status": "False", "reason": "DeploymentMissing",
                              "message": "0/2 workers ready"}


def test_pool_status_during_rollout() -> None:
    status = pool_status(pool(replicas=2), deployment(updated=1, ready=2, total=3, available=2))
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["reason"] == "RolloutInProgress"
    assert conds["Progressing"]["status"] == "True"


def test_pool_status_unobserved_generation_is_rollout() -> None:
    status = pool_status(pool(replicas=2), deployment(generation=3, observed=2))
    assert {c["type"]: c for c in status["conditions"]}["Ready"]["status"] == "False"


def test_pool_status_pods_not_ready() -> None:
    status = pool_status(pool(replicas=2), deployment(ready=1, available=2))
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["reason"] == "PodsNotReady" and ready["message"] == "1/2 workers ready"

"""Invariants of the planner over many spec combinations: every plan is well formed."""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

import pytest

from splitserve.api import SplitPool
from splitserve.operator.planner import Observed, plan_pool, plan_service, service_status
from splitserve.operator.planner.merge import differences

DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

SOURCES: list[dict[str, Any]] = [
    {"hostPath": "/models/m"},
    {"pvc": {"claimName": "weights"}},
    {"pvc": {"claimName": "weights", "subPath": "llama/8b"}},
    {"image": {"reference": "registry.local/weights:1", "path": "/weights"}},
]
RESOURCES: list[dict[str, Any]] = [
    {"gpus": 0},
    {"gpus": 1, "requests": {"cpu": "2", "memory": "8Gi"}},
    {"gpus": 8, "requests": {"cpu": "500m"}, "limits": {"cpu": 4, "memory": "64Gi",
                                                        "ephemeralStorage": "20Gi"}},
]
OVERRIDES: list[dict[str, Any] | None] = [
    None,
    {"spec": {"shareProcessNamespace": True}},
    {"metadata": {"labels": {"team": "ml"}},
     "spec": {"containers": [{"name": "worker", "env": [{"name": "X", "value": "1"}]}],
              "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}]}},
]
EXTRAS: list[dict[str, Any]] = [
    {},
    {"kvTransfer": {"tlsSecretName": "kv-tls", "compression": "int8", "port": 7000}},
    {"router": {"serviceType": "LoadBalancer", "replicas": 3, "port": 80},
     "autoscaling": {"enabled": True, "prometheusUrl": "http://prom:9090"}},
]
NAMES = ["a", "llama", "llama-3-70b-instruct-long-service-name"]

CASES = list(itertools.product(SOURCES, RESOURCES, OVERRIDES, EXTRAS))


def service(source: dict[str, Any], resources: dict[str, Any], override: dict[str, Any] | None,
            extra: dict[str, Any], name: str = "llama") -> dict[str, Any]:
    pool: dict[str, Any] = {"resources": resources, "replicas": 2, "maxReplicas": 4}
    if override is not None:
        pool["podTemplateOverride"] = override
    spec: dict[str, Any] = {"model": {"name": "m", "source": source},
                            "prefill": copy.deepcopy(pool), "decode": copy.deepcopy(pool)}
    spec.update(copy.deepcopy(extra))
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": name, "namespace": "ns", "uid": "svc-uid", "generation": 1},
            "spec": spec}


def deployments_of(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    deps = [o for o in objs if o["kind"] == "Deployment"]
    for pool in (o for o in objs if o["kind"] == "SplitPool"):
        pool = copy.deepcopy(pool)
        pool["metadata"]["uid"] = f"uid-{pool['metadata']['name']}"
        deps.append(plan_pool(pool))
    return deps


@pytest.mark.parametrize("source,resources,override,extra", CASES)
def test_every_plan_is_well_formed(source: dict[str, Any], resources: dict[str, Any],
                                   override: dict[str, Any] | None,
                                   extra: dict[str, Any]) -> None:
    objs = plan_service(service(source, resources, override, extra))
    for obj in objs:
        meta = obj["metadata"]
        assert DNS_1123.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
        assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in meta["labels"].values())
        assert meta["ownerReferences"][0]["uid"] == "svc-uid"
    for pool in (o for o in objs if o["kind"] == "SplitPool"):
        SplitPool.model_validate(pool)
    for dep in deployments_of(objs):
        selector = dep["spec"]["selector"]["matchLabels"]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels.get(k) == v for k, v in selector.items())
        pod = dep["spec"]["template"]["spec"]
        names = [c["name"] for c in pod["containers"] + pod.get("initContainers", [])]
        assert len(names) == len(set(names))
        volumes = [v["name"] for v in pod.get("volumes", [])]
        assert len(volumes) == len(set(volumes))
        for container in pod["containers"] + pod.get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, (container["name"], mount["name"])
            if "securityContext" in container:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
        main = pod["containers"][0]
        assert "readinessProbe" in main and "livenessProbe" in main
        assert main["lifecycle"]["preStop"]["httpGet"]["path"].startswith("/drain")
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["splitserve.io/config-hash"]


@pytest.mark.parametrize("source,resources,override,extra", CASES[::5])
def test_gpu_requests_equal_limits(source: dict[str, Any], resources: dict[str, Any],
                                   override: dict[str, Any] | None,
                                   extra: dict[str, Any]) -> None:
    for dep in deployments_of(plan_service(service(source, resources, override, extra))):
        res = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
        gpu_req = res.get("requests", {}).get("nvidia.com/gpu")
        gpu_lim = res.get("limits", {}).get("nvidia.com/gpu")
        assert gpu_req == gpu_lim
        if dep["metadata"]["name"].endswith("router"):
            assert gpu_req is None
        else:
            assert gpu_req == (str(resources["gpus"]) if resources["gpus"] else None)


@pytest.mark.parametrize("name", NAMES)
def test_names_of_children_derive_from_the_service(name: str) -> None:
    objs = plan_service(service(SOURCES[0], RESOURCES[0], None, {}, name=name))
    for obj in objs:
        assert obj["metadata"]["name"].startswith(name)
        assert obj["metadata"]["labels"]["splitserve.io/service"] == name


@pytest.mark.parametrize("source,resources,override,extra", CASES[::7])
def test_a_plan_compared_with_itself_has_no_differences(
        source: dict[str, Any], resources: dict[str, Any], override: dict[str, Any] | None,
        extra: dict[str, Any]) -> None:
    objs = plan_service(service(source, resources, override, extra))
    for obj in objs + deployments_of(objs):
        assert differences(obj, copy.deepcopy(obj)) == []


@pytest.mark.parametrize("field,value", [
    ("image", "other:2"), ("imagePullPolicy", "Always"),
    ("decode", {"resources": {"gpus": 2}}), ("decode", {"nodeSelector": {"a": "b"}}),
    ("decode", {"engine": {"maxBatchTokens": 1024}}), ("kvTransfer", {"chunkBytes": 65536}),
    ("model", {"name": "n", "source": {"hostPath": "/other"}}),
])
def test_every_decode_relevant_change_changes_the_decode_deployment(field: str,
                                                                    value: Any) -> None:
    base = service(SOURCES[0], RESOURCES[1], None, {})
    changed = copy.deepcopy(base)
    if isinstance(value, dict) and isinstance(changed["spec"].get(field), dict) and \
            field != "model":
        changed["spec"][field].update(value)
    else:
        changed["spec"][field] = value

    def decode_template(obj: dict[str, Any]) -> dict[str, Any]:
        dep = next(d for d in deployments_of(plan_service(obj))
                   if d["metadata"]["name"] == "llama-decode")
        template: dict[str, Any] = dep["spec"]["template"]
        return template

    assert differences(decode_template(changed), decode_template(base))


@pytest.mark.parametrize("replicas", [0, 1, 3, 10])
def test_status_counts_follow_the_pool_for_any_size(replicas: int) -> None:
    obj = service(SOURCES[0], RESOURCES[0], None, {})
    deployment = {"metadata": {"generation": 1},
                  "status": {"observedGeneration": 1, "replicas": replicas,
                             "readyReplicas": replicas, "updatedReplicas": replicas}}
    observed = Observed(
        deployments={"prefill": deployment, "decode": deployment,
                     "router": {"metadata": {"generation": 1},
                                "status": {"observedGeneration": 1, "replicas": 2,
                                           "readyReplicas": 2, "updatedReplicas": 2}}},
        pools={"prefill": {"spec": {"replicas": replicas}},
               "decode": {"spec": {"replicas": replicas}}},
    )
    status = service_status(obj, observed, "2026-01-01T00:00:00Z")
    assert status["decode"]["summary"] == f"{replicas}/{replicas}"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"

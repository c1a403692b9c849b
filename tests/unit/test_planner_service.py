"""Planning a SplitService: every child, its labels, owner, pod template and config hash."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from splitserve.api.names import ANNOTATION_CONFIG_HASH
from splitserve.operator.planner import plan_pool, plan_service

UID = "0b7c2f9e-1111-4c1a-9d5e-000000000001"


def service(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"name": "llama-3-8b", "source": {"hostPath": "/models/llama"}},
        "router": {"replicas": 1},
    }
    base.update(spec)
    return {
        "apiVersion": "splitserve.io/v1alpha1",
        "kind": "SplitService",
        "metadata": {"name": "llama", "namespace": "ml", "uid": UID, "generation": 3},
        "spec": base,
    }


def by_kind(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def pool_of(objs: list[dict[str, Any]], role: str) -> dict[str, Any]:
    pool = copy.deepcopy(by_kind(objs)[("SplitPool", f"llama-{role}")])
    pool["metadata"]["uid"] = f"pool-{role}"
    pool["metadata"]["generation"] = 1
    return pool


def worker_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "worker")


def test_every_child_kind_is_planned_once() -> None:
    objs = plan_service(service())
    keys = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys))
    assert set(keys) == {
        ("ServiceAccount", "llama-router"), ("Role", "llama-router"),
        ("RoleBinding", "llama-router"), ("ConfigMap", "llama-config"),
        ("Service", "llama-prefill"), ("Service", "llama-decode"), ("Service", "llama"),
        ("SplitPool", "llama-prefill"), ("SplitPool", "llama-decode"),
        ("Deployment", "llama-router"), ("PodDisruptionBudget", "llama-prefill"),
        ("PodDisruptionBudget", "llama-decode"), ("PodDisruptionBudget", "llama-router"),
        ("NetworkPolicy", "llama-workers"), ("NetworkPolicy", "llama-router"),
        ("NetworkPolicy", "llama-quarantine"),
    }


def test_every_child_is_owned_by_the_service_in_its_namespace() -> None:
    for obj in plan_service(service()):
        meta = obj["metadata"]
        assert meta["namespace"] == "ml"
        (owner,) = meta["ownerReferences"]
        assert owner == {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
                         "name": "llama", "uid": UID, "controller": True,
                         "blockOwnerDeletion": True}


def test_every_child_carries_recommended_and_product_labels() -> None:
    for obj in plan_service(service()):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "llama"
        assert labels["app.kubernetes.io/part-of"] == "splitserve"
        assert labels["app.kubernetes.io/managed-by"] == "splitserve-operator"
        assert labels["splitserve.io/service"] == "llama"


def test_role_labels_on_pool_children() -> None:
    objs = by_kind(plan_service(service()))
    labels = objs[("SplitPool", "llama-decode")]["metadata"]["labels"]
    assert labels["splitserve.io/role"] == "decode"
    assert labels["splitserve.io/pool"] == "llama-decode"
    assert labels["app.kubernetes.io/component"] == "decode"
    router = objs[("Deployment", "llama-router")]["metadata"]["labels"]
    assert router["splitserve.io/role"] == "router"
    assert "splitserve.io/pool" not in router


def test_planning_without_uid_is_an_error_naming_the_field() -> None:
    obj = service()
    del obj["metadata"]["uid"]
    with pytest.raises(ValueError, match=r"metadata\.uid"):
        plan_service(obj)


def test_invalid_spec_raises_validation_error_naming_the_field() -> None:
    obj = service(decode={"replicas": 9, "maxReplicas": 2})
    with pytest.raises(ValidationError, match="replicas"):
        plan_service(obj)


def test_planning_is_deterministic_and_does_not_modify_its_input() -> None:
    obj = service(prefill={"podTemplateOverride": {"spec": {"hostIPC": True}}})
    before = copy.deepcopy(obj)
    assert plan_service(obj) == plan_service(obj)
    assert obj == before


def test_split_pools_carry_the_pool_template_and_seed_replicas() -> None:
    objs = plan_service(service(
        prefill={"replicas": 2, "maxReplicas": 4, "resources": {"gpus": 2},
                 "nodeSelector": {"gpu": "a100"}},
        decode={"replicas": 3, "image": "custom/decode:1"},
    ))
    prefill = by_kind(objs)[("SplitPool", "llama-prefill")]["spec"]
    decode = by_kind(objs)[("SplitPool", "llama-decode")]["spec"]
    assert prefill["replicas"] == 2 and decode["replicas"] == 3
    assert prefill["role"] == "prefill" and prefill["service"] == "llama"
    assert prefill["resources"]["gpus"] == 2
    assert prefill["nodeSelector"] == {"gpu": "a100"}
    assert "minReplicas" not in prefill and "maxReplicas" not in prefill
    assert prefill["image"] == "splitserve/worker:0.1.0"
    assert decode["image"] == "custom/decode:1"
    assert prefill["configMapName"] == "llama-config"
    assert prefill["model"]["source"] == {"hostPath": "/models/llama"}


def test_split_pool_spec_validates_as_a_split_pool() -> None:
    from splitserve.api import SplitPool

    for role in ("prefill", "decode"):
        SplitPool.model_validate(pool_of(plan_service(service()), role))


def test_config_hash_follows_engine_settings_but_not_replicas() -> None:
    def digest(obj: dict[str, Any]) -> str:
        return str(by_kind(plan_service(obj))[("SplitPool", "llama-decode")]["spec"]["configHash"])

    base = digest(service())
    assert digest(service(decode={"replicas": 4})) == base
    assert digest(service(decode={"engine": {"maxRunningSeqs": 32}})) != base
    assert digest(service(kvTransfer={"compression": "int8"})) != base
    assert digest(service(model={"name": "other", "source": {"hostPath": "/models/llama"}})) \
        != base


def test_config_map_holds_engine_configuration() -> None:
    import yaml

    objs = by_kind(plan_service(service(decode={"engine": {"maxBatchTokens": 2048}})))
    data = objs[("ConfigMap", "llama-config")]["data"]
    config = yaml.safe_load(data["splitserve.yaml"])
    assert config["decode"]["engine"]["maxBatchTokens"] == 2048
    assert config["model"]["path"] == "/models"
    assert config["model"]["name"] == "llama-3-8b"
    assert config["kvTransfer"]["chunkBytes"] == 1 << 20
    assert config["router"]["shortPromptThreshold"] == 64
    assert config["service"] == "llama" and config["namespace"] == "ml"


def test_router_and_pods_share_the_config_hash() -> None:
    objs = plan_service(service())
    router = by_kind(objs)[("Deployment", "llama-router")]
    digest = router["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
    pool = pool_of(objs, "prefill")
    deployment = plan_pool(pool)
    assert deployment["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH] \
        == digest


def test_headless_services_select_their_pool() -> None:
    objs = by_kind(plan_service(service(kvTransfer={"port": 6000})))
    for role in ("prefill", "decode"):
        svc = objs[("Service", f"llama-{role}")]["spec"]
        assert svc["clusterIP"] == "None"
        assert svc["selector"] == {"splitserve.io/service": "llama", "splitserve.io/role": role}
        ports = {p["name"]: p["port"] for p in svc["ports"]}
        assert ports == {"http": 8080, "kv": 6000}


def test_router_service_follows_router_spec() -> None:
    objs = by_kind(plan_service(service(router={"serviceType": "LoadBalancer", "port": 9000})))
    svc = objs[("Service", "llama")]["spec"]
    assert svc["type"] == "LoadBalancer"
    assert svc["ports"] == [{"name": "http", "port": 9000, "targetPort": "http",
                             "protocol": "TCP"}]
    assert svc["selector"]["splitserve.io/role"] == "router"


def test_router_deployment_discovers_pools_with_its_own_account() -> None:
    objs = by_kind(plan_service(service(router={"replicas": 3, "port": 9000})))
    router = objs[("Deployment", "llama-router")]
    assert router["spec"]["replicas"] == 3
    pod = router["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "llama-router"
    (container,) = pod["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SPLITSERVE_PREFILL_SERVICE"] == "llama-prefill"
    assert env["SPLITSERVE_DECODE_SERVICE"] == "llama-decode"
    assert "--discovery" in container["args"]
    assert container["resources"]["requests"]["cpu"] == "100m"


def test_router_resources_from_spec() -> None:
    objs = by_kind(plan_service(service(router={
        "replicas": 1, "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                     "limits": {"memory": "2Gi"}}})))
    container = objs[("Deployment", "llama-router")]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"},
                                      "limits": {"memory": "2Gi"}}
    assert "nvidia.com/gpu" not in str(container["resources"])


def test_router_rbac_reads_endpointslices_only() -> None:
    objs = by_kind(plan_service(service()))
    role = objs[("Role", "llama-router")]
    assert role["rules"] == [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                              "verbs": ["list", "watch"]}]
    binding = objs[("RoleBinding", "llama-router")]
    assert binding["roleRef"]["name"] == "llama-router"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "llama-router",
                                    "namespace": "ml"}]
    assert objs[("ServiceAccount", "llama-router")]["metadata"]["name"] == "llama-router"


def test_rbac_objects_do_not_share_metadata() -> None:
    objs = by_kind(plan_service(service()))
    role, binding = objs[("Role", "llama-router")], objs[("RoleBinding", "llama-router")]
    assert role["metadata"] is not binding["metadata"]


def test_pdbs_allow_one_disruption_per_pool() -> None:
    objs = by_kind(plan_service(service()))
    for name, role in (("llama-prefill", "prefill"), ("llama-decode", "decode"),
                       ("llama-router", "router")):
        pdb = objs[("PodDisruptionBudget", name)]["spec"]
        assert pdb == {"maxUnavailable": 1,
                       "selector": {"matchLabels": {"splitserve.io/service": "llama",
                                                    "splitserve.io/role": role}}}


def test_router_pod_is_hardened_and_probed() -> None:
    router = by_kind(plan_service(service()))[("Deployment", "llama-router")]
    pod = router["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    sec = container["securityContext"]
    assert sec["allowPrivilegeEscalation"] is False
    assert sec["capabilities"] == {"drop": ["ALL"]}
    assert sec["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["lifecycle"]["preStop"]["httpGet"]["path"].startswith("/drain")


def test_tls_secret_reaches_the_pools() -> None:
    objs = plan_service(service(kvTransfer={"tlsSecretName": "kv-tls"}))
    pool = pool_of(objs, "decode")
    assert pool["spec"]["tlsSecretName"] == "kv-tls"
    pod = plan_pool(pool)["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "kv-tls"}} in pod["volumes"]
    mounts = worker_container(plan_pool(pool))["volumeMounts"]
    assert any(m["name"] == "tls" and m["readOnly"] for m in mounts)


def test_no_tls_volume_without_secret() -> None:
    pool = pool_of(plan_service(service()), "decode")
    assert all(v["name"] != "tls" for v in plan_pool(pool)["spec"]["template"]["spec"]["volumes"])


def test_pull_policy_reaches_every_container() -> None:
    objs = plan_service(service(imagePullPolicy="Never"))
    router = by_kind(objs)[("Deployment", "llama-router")]
    assert router["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Never"
    pod = plan_pool(pool_of(objs, "prefill"))["spec"]["template"]["spec"]
    for c in pod["containers"] + pod["initContainers"]:
        assert c["imagePullPolicy"] == "Never"


def test_image_change_changes_pool_spec_and_router() -> None:
    a = by_kind(plan_service(service(image="img:1")))
    b = by_kind(plan_service(service(image="img:2")))
    assert a[("SplitPool", "llama-prefill")]["spec"]["image"] == "img:1"
    assert b[("SplitPool", "llama-prefill")]["spec"]["image"] == "img:2"
    ra = a[("Deployment", "llama-router")]["spec"]["template"]["spec"]["containers"][0]["image"]
    rb = b[("Deployment", "llama-router")]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert (ra, rb) == ("img:1", "img:2")


def test_default_namespace_when_missing() -> None:
    obj = service()
    del obj["metadata"]["namespace"]
    for child in plan_service(obj):
        assert child["metadata"]["namespace"] == "default"

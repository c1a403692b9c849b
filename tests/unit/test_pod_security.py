"""Every pod the operator renders passes the Pod Security Standards' "restricted" level, and
every container runs on a read-only root filesystem.

`violations` restates the restricted checks that apply to these pods (the kube-apiserver
enforces the same in e2e/test_restricted_namespace.py); the unit test covers every model source and
option that adds containers or volumes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from splitserve.operator.planner import plan_pool, plan_service

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
SECCOMP = {"RuntimeDefault", "Localhost"}


def violations(pod: dict[str, Any]) -> list[str]:
    """Why `pod` (a pod spec) fails the restricted level; empty when it passes."""
    found = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(flag)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds - RESTRICTED_VOLUMES)}")
    pod_ctx = pod.get("securityContext", {})
    pod_non_root = pod_ctx.get("runAsNonRoot") is True
    pod_seccomp = pod_ctx.get("seccompProfile", {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP:
        found.append(f"pod seccompProfile {pod_seccomp}")
    if pod_ctx.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        name, ctx = c["name"], c.get("securityContext", {})
        if ctx.get("privileged"):
            found.append(f"{name}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation not false")
        non_root = ctx.get("runAsNonRoot", pod_non_root if "runAsNonRoot" not in ctx else None)
        if non_root is not True:
            found.append(f"{name}: runAsNonRoot not true")
        if ctx.get("runAsUser") == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = ctx.get("seccompProfile", {}).get("type", pod_seccomp)
        if seccomp not in SECCOMP:
            found.append(f"{name}: seccompProfile {seccomp}")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{name}: capabilities not dropped")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds {caps['add']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{name}: hostPort")
        if ctx.get("readOnlyRootFilesystem") is not True:
            found.append(f"{name}: writable root filesystem")
    return found


def service(source: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
        "metadata": {"name": "llama", "namespace": "ml", "uid": "svc-uid", "generation": 1},
        "spec": {"model": {"name": "llama", "source": source}, "router": {"replicas": 1},
                 **spec},
    }


def pods(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """role -> the pod spec the operator renders for it."""
    objs = plan_service(obj)
    out = {}
    for child in objs:
        if child["kind"] == "Deployment":
            out["router"] = child["spec"]["template"]["spec"]
        if child["kind"] == "SplitPool":
            pool = copy.deepcopy(child)
            pool["metadata"].update(uid="pool-uid", generation=1)
            out[pool["spec"]["role"]] = plan_pool(pool)["spec"]["template"]["spec"]
    assert set(out) == {"prefill", "decode", "router"}
    return out


SOURCES = {
    "pvc": {"pvc": {"claimName": "weights", "subPath": "llama"}},
    "image": {"image": {"reference": "registry.example/weights:1", "path": "/weights"}},
}
OPTIONS = {
    "plain": {},
    "tls-and-keys": {"kvTransfer": {"tlsSecretName": "kv-tls"},
                     "router": {"replicas": 1, "apiKeySecret": {"name": "keys"}}},
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_rendered_pods_pass_restricted(source: str, option: str) -> None:
    for role, pod in pods(service(SOURCES[source], **OPTIONS[option])).items():
        assert violations(pod) == [], role


def test_writable_paths_are_emptydirs_only() -> None:
    """The only writable mounts are emptyDirs (with a size limit); the rest is read-only."""
    for role, pod in pods(service(SOURCES["pvc"], **OPTIONS["tls-and-keys"])).items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in [*pod["initContainers"], *pod["containers"]]:
            for mount in c["volumeMounts"]:
                if not mount.get("readOnly"):
                    volume = volumes[mount["name"]]
                    assert "emptyDir" in volume, (role, c["name"], mount)
                    if c in pod["containers"]:
                        assert volume["emptyDir"].get("sizeLimit"), (role, mount)


def test_a_host_path_model_is_the_one_source_restricted_refuses() -> None:
    for role, pod in pods(service({"hostPath": "/models/llama"})).items():
        assert violations(pod) == ["volume model: ['hostPath']"], role


def test_the_checker_catches_what_it_checks() -> None:
    pod = pods(service(SOURCES["pvc"]))["decode"]
    loose = copy.deepcopy(pod)
    loose["securityContext"].pop("runAsNonRoot")
    ctx = loose["containers"][0]["securityContext"]
    ctx.pop("runAsNonRoot")
    ctx.update(allowPrivilegeEscalation=True, capabilities={"add": ["NET_ADMIN"]},
               readOnlyRootFilesystem=False)
    assert len(violations(loose)) == 5, violations(loose)

"""Helpers of the install tests (Helm chart and kustomize bases): helm, the operator image built
once per source content, a sample SplitService on the stand-in data plane, pod snapshots.

The data plane runs the stand-in image of operator_lib (busybox answering the workers' health
endpoints), so that a SplitService becomes Ready without a model; the install tests check the
operator as installed, not the engine.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from operator_lib import (
    CACHE,
    ROOT,
    STANDIN_IMAGE,
    build_standin_archive,
    condition,
    import_standin,
    kubectl,
    wait_for,
)

from splitserve.operator.kube import Kube

CHART = ROOT / "charts" / "splitserve"
IMAGE_REPOSITORY = "splitserve/operator"
PRELOADED_TAG = "smoke"  # the name e2e/kind/images.txt loads when images are preloaded
IMAGE_INPUTS = ("operator/Dockerfile", "pyproject.toml", "setup.py", "README.md", "operator",
                "worker")
SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}


def helm_path() -> str:
    for candidate in sorted(CACHE.glob("bin/helm-v*/helm"), reverse=True):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("helm")
    if not found:
        raise RuntimeError("helm not found in the cluster's binaries or on PATH")
    return found


def helm(kubeconfig: str, *args: str, check: bool = True,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([helm_path(), "--kubeconfig", kubeconfig, *args], capture_output=True,
                         text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {out.stderr}")
    return out


def source_hash() -> str:
    """Content hash of everything the operator image is built from (the tag of its build)."""
    digest = hashlib.sha256()
    for name in IMAGE_INPUTS:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            and not p.name.endswith(".pyc") and ".egg-info" not in str(p))
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def containerd_address() -> str:
    state = os.environ.get("SS_STATE", "/var/lib/splitserve-cluster")
    return os.environ.get("SS_CONTAINERD_SOCK", f"{state}/containerd/containerd.sock")


def _in_containerd(name: str) -> bool:
    out = subprocess.run(["ctr", "--address", containerd_address(), "-n", "k8s.io", "images",
                          "ls", "-q", f"name==docker.io/{name}"], capture_output=True, text=True,
                         timeout=60, check=False)
    return out.returncode == 0 and bool(out.stdout.strip())


def operator_image(cluster: Any) -> tuple[str, str]:
    """(repository, tag) of the operator image built from this tree, on the cluster's node.
    Built once per source content: the tag is the content hash, so an unchanged tree reuses it."""
    if cluster.images_preloaded:
        return IMAGE_REPOSITORY, PRELOADED_TAG
    tag = f"src-{source_hash()}"
    name = f"{IMAGE_REPOSITORY}:{tag}"
    if not _in_containerd(name):
        cluster.build_image(ROOT / "operator" / "Dockerfile", ROOT, name)
    return IMAGE_REPOSITORY, tag


def load_standin(cluster: Any, workdir: Path) -> None:
    if cluster.images_preloaded:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    import_standin(build_standin_archive(workdir / "standin.tar"), containerd_address())


def crd_names() -> list[str]:
    return ["splitservices.splitserve.io", "splitpools.splitserve.io"]


def crds_exist(kubeconfig: str) -> bool:
    return all(kubectl(kubeconfig, "get", "crd", n, check=False).returncode == 0
               for n in crd_names())


def sample_service(name: str, model_dir: Path) -> dict[str, Any]:
    """manifests/samples/small.yaml on the stand-in data plane, with tiny requests and no GPU."""
    doc: dict[str, Any] = yaml.safe_load((ROOT / "manifests" / "samples" / "small.yaml")
                                         .read_text())
    doc["metadata"] = {"name": name}
    spec = doc["spec"]
    spec["model"]["source"] = {"hostPath": str(model_dir)}
    spec["image"], spec["imagePullPolicy"] = STANDIN_IMAGE, "Never"
    for pool in ("prefill", "decode"):
        spec[pool]["resources"] = {"gpus": 0, **SMALL}
        spec[pool]["drainSeconds"] = 1
    spec["router"]["resources"] = SMALL
    return doc


def model_dir(workdir: Path) -> Path:
    """A directory on this machine (the cluster's only node) that passes the model check."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text('{"model_type": "llama"}\n')
    workdir.chmod(0o755)  # mounted into pods whose containers run as another user
    return workdir


@dataclass(frozen=True)
class PodState:
    uid: str
    restarts: int


def pod_states(kube: Kube, namespace: str, service: str) -> dict[str, PodState]:
    pods = kube.list("Pod", namespace, label_selector=f"splitserve.io/service={service}")
    return {p["metadata"]["name"]: PodState(
        p["metadata"]["uid"],
        sum(c.get("restartCount", 0) for c in p.get("status", {}).get("containerStatuses", [])))
        for p in pods if not p["metadata"].get("deletionTimestamp")}


def service_ready(kube: Kube, namespace: str, name: str, timeout: float = 240,
                  diagnose: Any = None) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        svc = kube.get("SplitService", namespace, name)
        if svc and condition(svc, "Ready").get("status") == "True" and \
                svc["status"].get("observedGeneration") == svc["metadata"]["generation"]:
            return svc
        return None

    try:
        return wait_for(f"SplitService {namespace}/{name} Ready", probe, timeout)
    except AssertionError as exc:
        svc = kube.get("SplitService", namespace, name)
        detail = diagnose() if diagnose else ""
        raise AssertionError(f"not ready: {svc and svc.get('status')}\n{detail}") from exc


def deployment_ready(kube: Kube, namespace: str, name: str, timeout: float = 180) -> str:
    """Waits for a one-replica Deployment's pod to be Ready; returns that pod's UID."""
    def probe() -> str | None:
        dep = kube.get("Deployment", namespace, name)
        if not dep:
            return None
        selector = ",".join(f"{k}={v}" for k, v in
                            dep["spec"]["selector"]["matchLabels"].items())
        pods = [p for p in kube.list("Pod", namespace, label_selector=selector)
                if not p["metadata"].get("deletionTimestamp")]
        ready = [p for p in pods if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in p.get("status", {}).get("conditions", []))]
        return str(ready[0]["metadata"]["uid"]) if len(pods) == 1 and ready else None

    return wait_for(f"Deployment {namespace}/{name} Ready", probe, timeout)


def operator_log(kubeconfig: str, namespace: str, deployment: str) -> str:
    out = kubectl(kubeconfig, "-n", namespace, "logs", f"deployment/{deployment}", "--tail=80",
                  check=False)
    return out.stdout + out.stderr


def apply_service(kubeconfig: str, namespace: str, doc: dict[str, Any]) -> None:
    kubectl(kubeconfig, "-n", namespace, "apply", "--server-side", "--field-manager=e2e", "-f",
            "-", stdin=yaml.safe_dump(doc))


def can_i(kubeconfig: str, account: str, *args: str) -> bool:
    out = kubectl(kubeconfig, "auth", "can-i", *args, f"--as={account}", check=False)
    return out.stdout.strip() == "yes"


def delete_service(kube: Kube, kubeconfig: str, namespace: str, name: str) -> None:
    """Deletes a SplitService while its operator still runs, and waits until it is gone."""
    kubectl(kubeconfig, "-n", namespace, "delete", "splitservice", name, "--wait=false")
    wait_for(f"SplitService {namespace}/{name} deleted",
             functools.partial(lambda: kube.get("SplitService", namespace, name) is None),
             timeout=120)

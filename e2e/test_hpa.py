"""A HorizontalPodAutoscaler drives a SplitPool while the built-in autoscaler is off.

The metric is the CPU utilization of the decode pool's pods, served by metrics-server (built from
the Go module proxy and started by e2e/cluster/up.sh). The pods run the stand-in image (busybox
answering the workers' health endpoints; see operator_lib) until the data-plane image exists;
the load is a real busy loop run inside the decode pod, so the kubelet measures real CPU use.
The operator runs as a real process under its own ServiceAccount (the shipped RBAC), watching
only this test's namespace.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from audit_log import operator_identity
from operator_lib import (
    STANDIN_IMAGE,
    OperatorProcess,
    build_standin_archive,
    condition,
    import_standin,
    install_crds,
    kubectl,
    kubectl_path,
    wait_for,
)

from splitserve.operator.kube import Kube, load_config

pytestmark = pytest.mark.cluster

SERVICE = "hpa"
POOL = f"{SERVICE}-decode"
# a 10m request and a 50m limit: the busy loop reads as 500% utilization but takes a twentieth
# of a core from the shared machine
WORKER = {"gpus": 0, "requests": {"cpu": "10m", "memory": "16Mi"},
          "limits": {"cpu": "50m", "memory": "64Mi"}}
ROUTER = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
RESYNC_SECONDS = 5
STOP_FILE = "/tmp/stop-load"


@dataclass
class Env:
    kube: Kube
    kubeconfig: str
    namespace: str
    operator: OperatorProcess
    operator_metrics: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def containerd_address() -> str:
    state = os.environ.get("SS_STATE", "/var/lib/splitserve-cluster")
    return os.environ.get("SS_CONTAINERD_SOCK", f"{state}/containerd/containerd.sock")


def metrics_api_available(kubeconfig: str) -> bool:
    out = kubectl(kubeconfig, "get", "apiservice", "v1beta1.metrics.k8s.io", "-o",
                  'jsonpath={.status.conditions[?(@.type=="Available")].status}', check=False)
    return out.stdout.strip() == "True"


@pytest.fixture
def env(cluster: Any, namespace: str, tmp_path: Path) -> Iterator[Env]:
    kubeconfig = str(cluster.kubeconfig)
    try:
        wait_for("the metrics.k8s.io API (metrics-server) to be available",
                 functools.partial(metrics_api_available, kubeconfig), timeout=60)
    except AssertionError as exc:
        raise AssertionError("metrics.k8s.io is not served: e2e/cluster/up.sh starts "
                             "metrics-server; on another cluster, install it") from exc
    install_crds(kubeconfig)
    if not cluster.images_preloaded:
        if not cluster.local:
            pytest.fail(f"load {STANDIN_IMAGE} into the cluster's nodes and set "
                        "SPLITSERVE_E2E_IMAGES_PRELOADED=1 (see e2e/operator_lib.py)")
        import_standin(build_standin_archive(tmp_path / "standin.tar"), containerd_address())
    # the operator runs as its own ServiceAccount with the shipped RBAC, bound in this namespace
    identity, _ = operator_identity(kubeconfig, namespace, tmp_path)
    port = free_port()
    operator = OperatorProcess(identity, tmp_path / "operator.log", (
        "--namespace", namespace, "--resync-seconds", str(RESYNC_SECONDS),
        "--metrics-port", str(port)))
    operator.start()
    kube = Kube(load_config(kubeconfig))
    try:
        yield Env(kube, kubeconfig, namespace, operator, f"http://127.0.0.1:{port}/metrics")
    finally:
        operator.stop()
        kube.close()


def apply(env: Env, obj: dict[str, Any]) -> None:
    kubectl(env.kubeconfig, "-n", env.namespace, "apply", "--server-side",
            "--field-manager=e2e", "-f", "-", stdin=yaml.safe_dump(obj))


def split_service(env: Env, model_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
        "metadata": {"name": SERVICE, "namespace": env.namespace},
        "spec": {
            "model": {"name": "tiny", "source": {"hostPath": str(model_dir)}},
            "image": STANDIN_IMAGE, "imagePullPolicy": "Never",
            "autoscaling": {"enabled": False},
            "prefill": {"replicas": 1, "resources": WORKER, "drainSeconds": 1},
            "decode": {"replicas": 1, "resources": WORKER, "drainSeconds": 1},
            "router": {"replicas": 1, "resources": ROUTER},
        },
    }


def hpa(env: Env) -> dict[str, Any]:
    quick = {"stabilizationWindowSeconds": 0,
             "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": POOL, "namespace": env.namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitPool",
                               "name": POOL},
            "minReplicas": 1, "maxReplicas": 2,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
            "behavior": {"scaleUp": quick, "scaleDown": quick},
        },
    }


def pool(env: Env) -> dict[str, Any]:
    obj = env.kube.get("SplitPool", env.namespace, POOL)
    assert obj is not None, f"SplitPool {POOL} is gone"
    return obj


def deployment_replicas(env: Env) -> tuple[int, int]:
    """(spec.replicas, status.readyReplicas) of the decode pool's Deployment."""
    dep = env.kube.get("Deployment", env.namespace, POOL) or {}
    return (int(dep.get("spec", {}).get("replicas", -1)),
            int(dep.get("status", {}).get("readyReplicas", 0)))


def hpa_status(env: Env) -> dict[str, Any]:
    out = kubectl(env.kubeconfig, "-n", env.namespace, "get", "hpa", POOL, "-o", "json")
    status: dict[str, Any] = json.loads(out.stdout).get("status", {})
    return status


def pool_reconciles(env: Env) -> float:
    """Reconciles of SplitPools the operator has run (from its own metrics)."""
    with urllib.request.urlopen(env.operator_metrics, timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("splitserve_reconciles_total{") and 'kind="SplitPool"' in line)


def decode_pod(env: Env) -> str:
    out = kubectl(env.kubeconfig, "-n", env.namespace, "get", "pods", "-l",
                  "splitserve.io/service=hpa,splitserve.io/role=decode",
                  "--field-selector=status.phase=Running", "-o", "name")
    names = out.stdout.split()
    assert len(names) == 1, f"expected one running decode pod, got {names}"
    return names[0]


def top_shows(env: Env, pod: str) -> bool:
    out = kubectl(env.kubeconfig, "-n", env.namespace, "top", "pods", "--no-headers",
                  check=False)
    return out.returncode == 0 and pod.removeprefix("pod/") in out.stdout


def scale_state(env: Env) -> dict[str, Any]:
    """What the HPA wants and what the SplitPool and its Deployment have."""
    assert env.operator.alive(), env.operator.log()
    status, obj = hpa_status(env), pool(env)
    return {"hpa": status.get("desiredReplicas"), "hpaMetrics": status.get("currentMetrics"),
            "pool": obj["spec"]["replicas"], "poolStatus": obj.get("status", {}).get("replicas"),
            "deployment": deployment_replicas(env)}


def wait_scaled(env: Env, replicas: int, what: str, timeout: float = 150) -> None:
    """Waits until the HPA, the SplitPool and its Deployment all agree on `replicas`, all of
    them ready."""
    seen: dict[str, Any] = {}

    def probe() -> bool:
        seen.update(scale_state(env))
        return (seen["hpa"] == seen["pool"] == seen["poolStatus"] == replicas
                and seen["deployment"] == (replicas, replicas))

    try:
        wait_for(what, probe, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {seen}") from exc


def assert_not_reverted(env: Env, replicas: int) -> None:
    """Across the operator's next pool reconciles (both pools resync every RESYNC_SECONDS: at
    least four reconciles) it leaves the HPA's count and the pool's generation (nobody rewrote
    its spec) alone, and the Deployment keeps that count."""
    generation, start = pool(env)["metadata"]["generation"], pool_reconciles(env)
    wait_for("four pool reconciles of the operator", lambda: pool_reconciles(env) >= start + 4,
             timeout=RESYNC_SECONDS * 8)
    after = pool(env)
    assert after["spec"]["replicas"] == replicas, after["spec"]
    assert after["metadata"]["generation"] == generation, "someone rewrote the pool's spec"
    assert deployment_replicas(env)[0] == replicas


def test_hpa_scales_the_decode_pool_and_the_operator_follows(env: Env, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "llama"}\n')
    model_dir.chmod(0o755)
    apply(env, split_service(env, model_dir))

    def ready() -> bool:
        assert env.operator.alive(), env.operator.log()
        svc = env.kube.get("SplitService", env.namespace, SERVICE)
        return condition(svc, "Ready").get("status") == "True"

    wait_for(f"SplitService {SERVICE} Ready", ready, timeout=180)
    selector = pool(env).get("status", {}).get("selector")
    assert selector == "splitserve.io/service=hpa,splitserve.io/role=decode", selector
    pod = decode_pod(env)
    # `kubectl top` reads the same metrics.k8s.io API as the HPA
    wait_for(f"kubectl top to show {pod}", functools.partial(top_shows, env, pod), timeout=90)

    apply(env, hpa(env))
    wait_for("the HPA to read the pool's CPU utilization", lambda: hpa_status(env)
             .get("currentMetrics"), timeout=90)
    assert pool(env)["spec"]["replicas"] == 1

    started = time.monotonic()
    load = subprocess.Popen(
        [kubectl_path(), "--kubeconfig", env.kubeconfig, "-n", env.namespace, "exec", pod,
         "--", "sh", "-c", f"while [ ! -e {STOP_FILE} ]; do :; done"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_scaled(env, 2, "the HPA to scale the decode pool to 2 and the Deployment to follow")
        print(f"hpa_scale_up_seconds={time.monotonic() - started:.0f}")
        assert_not_reverted(env, 2)
    finally:
        # the image has busybox and `sh` only: the shell creates the file
        stop = kubectl(env.kubeconfig, "-n", env.namespace, "exec", pod, "--", "sh", "-c",
                       f": > {STOP_FILE}", check=False)
        try:
            load.wait(timeout=30)
        except subprocess.TimeoutExpired:
            load.kill()
    assert stop.returncode == 0, f"could not stop the load: {stop.stderr}"
    assert load.returncode == 0, f"the load loop failed: {load.stderr and load.stderr.read()!r}"
    stopped = time.monotonic()
    wait_scaled(env, 1, "the HPA to scale the decode pool back to 1 and the Deployment to follow")
    print(f"hpa_scale_down_seconds={time.monotonic() - stopped:.0f}")
    assert_not_reverted(env, 1)
    # the built-in autoscaler is off: it decided nothing
    svc = env.kube.get("SplitService", env.namespace, SERVICE) or {}
    assert not svc.get("status", {}).get("lastScalingDecisions"), svc.get("status")

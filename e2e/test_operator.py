"""The operator against the real single-node cluster (issue: API and operator acceptance).

Until the data-plane image exists, pods run a stand-in image (busybox answering the workers'
health endpoints; see operator_lib) so that Deployments can become Ready without a model.
"""

from __future__ import annotations

import copy
import functools
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from audit_log import AuditLog, operator_identity, wait_quiet
from operator_lib import (
    STANDIN_IMAGE,
    OperatorProcess,
    build_standin_archive,
    condition,
    create_namespace,
    import_standin,
    install_crds,
    kubectl,
    operator_kind_writes,
    wait_for,
)

from splitserve.operator.kube import Kube, load_config

pytestmark = pytest.mark.cluster

CHILDREN = [
    ("ServiceAccount", "{n}-router"), ("Role", "{n}-router"), ("RoleBinding", "{n}-router"),
    ("ConfigMap", "{n}-config"), ("Service", "{n}-prefill"), ("Service", "{n}-decode"),
    ("Service", "{n}"), ("SplitPool", "{n}-prefill"), ("SplitPool", "{n}-decode"),
    ("Deployment", "{n}-router"), ("Deployment", "{n}-prefill"), ("Deployment", "{n}-decode"),
    ("PodDisruptionBudget", "{n}-prefill"), ("PodDisruptionBudget", "{n}-decode"),
    ("PodDisruptionBudget", "{n}-router"), ("NetworkPolicy", "{n}-workers"),
    ("NetworkPolicy", "{n}-router"), ("NetworkPolicy", "{n}-quarantine"),
]
SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}


@dataclass
class Env:
    kube: Kube
    kubeconfig: str
    operator: OperatorProcess
    namespace: str
    model_dir: Path
    user: str  # the operator's identity in the API server's audit log


def containerd_address() -> str:
    state = os.environ.get("SS_STATE", "/var/lib/splitserve-cluster")
    return os.environ.get("SS_CONTAINERD_SOCK", f"{state}/containerd/containerd.sock")


@pytest.fixture(scope="module")
def kubeconfig(cluster: Any) -> str:
    return str(cluster.kubeconfig)


def load_standin(cluster: Any, workdir: Path) -> None:
    if cluster.images_preloaded:
        return
    if not cluster.local:
        pytest.fail(f"load {STANDIN_IMAGE} into the cluster's nodes and set "
                    "SPLITSERVE_E2E_IMAGES_PRELOADED=1 (see e2e/operator_lib.py)")
    import_standin(build_standin_archive(workdir / "standin.tar"), containerd_address())


@pytest.fixture(scope="module")
def env(cluster: Any, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Env]:
    kube = Kube(load_config(kubeconfig))
    install_crds(kubeconfig)
    load_standin(cluster, tmp_path_factory.mktemp("image"))
    # the model directory lives on this machine, which is the cluster's only node
    model_dir = Path(tmp_path_factory.mktemp("model"))
    (model_dir / "config.json").write_text('{"model_type": "llama"}\n')
    model_dir.chmod(0o755)
    namespace = f"ssvc-e2e-{uuid.uuid4().hex[:6]}"
    create_namespace(kubeconfig, namespace)
    # the operator runs as its own ServiceAccount with the shipped RBAC, bound in this namespace
    # only, so the API server's audit log tells its writes from everything else on the cluster
    workdir = tmp_path_factory.mktemp("operator")
    identity, user = operator_identity(kubeconfig, namespace, workdir)
    operator = OperatorProcess(identity, workdir / "operator.log", ("--namespace", namespace))
    operator.start()
    try:
        yield Env(kube, kubeconfig, operator, namespace, model_dir, user)
    finally:
        operator.stop()
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)
        kube.close()


def manifest(env: Env, name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": "tiny", "source": {"hostPath": str(env.model_dir)}},
        "image": STANDIN_IMAGE,
        "imagePullPolicy": "Never",
        "prefill": {"replicas": 1, "resources": {"gpus": 1, **SMALL}, "drainSeconds": 1},
        "decode": {"replicas": 1, "resources": {"gpus": 1, **SMALL}, "drainSeconds": 1},
        "router": {"replicas": 1, "resources": SMALL},
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": name, "namespace": env.namespace}, "spec": body}


def apply(env: Env, obj: dict[str, Any]) -> None:
    import yaml

    kubectl(env.kubeconfig, "apply", "--server-side", "--field-manager=e2e", "-f", "-",
            stdin=yaml.safe_dump(obj))


def get(env: Env, kind: str, name: str) -> dict[str, Any] | None:
    return env.kube.get(kind, env.namespace, name)


def ready(env: Env, name: str, timeout: float = 240) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        svc = get(env, "SplitService", name)
        assert env.operator.alive(), env.operator.log()
        if svc and condition(svc, "Ready").get("status") == "True" and \
                svc["status"].get("observedGeneration") == svc["metadata"]["generation"]:
            return svc
        return None

    try:
        return wait_for(f"SplitService {name} Ready", probe, timeout)
    except AssertionError as exc:
        svc = get(env, "SplitService", name)
        raise AssertionError(f"not ready: {svc and svc.get('status')}\n{env.operator.log()}") \
            from exc


def children(env: Env, name: str) -> dict[tuple[str, str], dict[str, Any] | None]:
    return {(k, n.format(n=name)): get(env, k, n.format(n=name)) for k, n in CHILDREN}


def test_apply_creates_every_child_and_becomes_ready(env: Env) -> None:
    apply(env, manifest(env, "basic"))
    found = wait_for("every child of basic",
                     lambda: (lambda c: c if all(c.values()) else None)(children(env, "basic")))
    uid = get(env, "SplitService", "basic")["metadata"]["uid"]  # type: ignore[index]
    for (kind, name), obj in found.items():
        assert obj is not None
        refs = obj["metadata"]["ownerReferences"]
        owner = "SplitPool" if kind == "Deployment" and not name.endswith("router") else \
            "SplitService"
        assert refs[0]["kind"] == owner and refs[0]["controller"], (kind, name)
        if owner == "SplitService":
            assert refs[0]["uid"] == uid
    svc = ready(env, "basic")
    status = svc["status"]
    assert status["prefill"]["summary"] == "1/1" and status["decode"]["summary"] == "1/1"
    assert status["router"]["summary"] == "1/1"
    assert status["endpoint"] == f"basic.{env.namespace}.svc:8000"
    assert condition(svc, "Degraded")["status"] == "False"
    pool = get(env, "SplitPool", "basic-decode")
    assert pool is not None and pool["status"]["readyReplicas"] == 1
    assert pool["status"]["selector"] == "splitserve.io/service=basic,splitserve.io/role=decode"
    worker = get(env, "Deployment", "basic-decode")["spec"]["template"]["spec"]  # type: ignore[index]
    gpu = worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert gpu == "1"


def pod_hashes(env: Env, service: str, role: str) -> set[str]:
    pods = env.kube.list("Pod", env.namespace,
                         label_selector=f"splitserve.io/service={service},splitserve.io/role={role}")
    return {p["metadata"]["annotations"].get("splitserve.io/config-hash", "") for p in pods
            if not p["metadata"].get("deletionTimestamp")}


def test_spec_edit_rolls_the_pods(env: Env) -> None:
    ready(env, "basic")
    before = pod_hashes(env, "basic", "decode")
    obj = manifest(env, "basic")
    obj["spec"]["decode"]["engine"] = {"maxRunningSeqs": 17}
    apply(env, obj)
    svc = wait_for("new generation observed", lambda: (
        lambda s: s if s and s["status"]["observedGeneration"] == s["metadata"]["generation"]
        and s["metadata"]["generation"] > 1 else None)(get(env, "SplitService", "basic")))
    assert svc
    pool = get(env, "SplitPool", "basic-decode")
    assert pool is not None
    new_hash = pool["spec"]["configHash"]
    assert {new_hash} != before
    wait_for("decode pods rolled to the new config",
             lambda: pod_hashes(env, "basic", "decode") == {new_hash}, timeout=240)
    ready(env, "basic")


def recreated(env: Env, kind: str, name: str, old_uid: str) -> bool:
    obj = get(env, kind, name)
    if obj is None:
        return False
    return obj["metadata"]["uid"] != old_uid and not obj["metadata"].get("deletionTimestamp")


def test_deleted_children_are_restored(env: Env) -> None:
    ready(env, "basic")
    for kind, name in [("Service", "basic-decode"), ("Deployment", "basic-router"),
                       ("ConfigMap", "basic-config"), ("SplitPool", "basic-prefill")]:
        old = get(env, kind, name)
        assert old is not None
        env.kube.delete(kind, env.namespace, name)
        wait_for(f"{kind}/{name} recreated",
                 functools.partial(recreated, env, kind, name, old["metadata"]["uid"]),
                 timeout=120)
    ready(env, "basic")


def test_edited_child_is_repaired(env: Env) -> None:
    ready(env, "basic")
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "router", "image": "tampered:1"}]}}}}
    kubectl(env.kubeconfig, "-n", env.namespace, "patch", "deployment", "basic-router",
            "--type=strategic", "-p", __import__("json").dumps(patch))

    def repaired() -> bool:
        dep = get(env, "Deployment", "basic-router")
        if dep is None:
            return False
        return bool(dep["spec"]["template"]["spec"]["containers"][0]["image"] == STANDIN_IMAGE)

    wait_for("router image restored", repaired, timeout=90)


def test_scale_subresource_is_followed_and_not_reverted(env: Env) -> None:
    ready(env, "basic")
    kubectl(env.kubeconfig, "-n", env.namespace, "scale", "splitpool/basic-decode",
            "--replicas=2")
    wait_for("decode Deployment follows the scale", lambda: (
        lambda d: d and d["spec"]["replicas"] == 2)(get(env, "Deployment", "basic-decode")))
    # force a full reconcile of the service and wait until it has observed the new generation
    obj = manifest(env, "basic")
    obj["spec"]["decode"]["engine"] = {"maxRunningSeqs": 17}
    obj["spec"]["router"]["maxRetries"] = 3
    apply(env, obj)
    svc = ready(env, "basic", timeout=300)
    assert svc["status"]["decode"]["desiredReplicas"] == 2
    pool = get(env, "SplitPool", "basic-decode")
    assert pool is not None and pool["spec"]["replicas"] == 2
    assert get(env, "Deployment", "basic-decode")["spec"]["replicas"] == 2  # type: ignore[index]
    scale = kubectl(env.kubeconfig, "-n", env.namespace, "get", "splitpool/basic-decode",
                    "-o", "jsonpath={.status.replicas}/{.status.selector}").stdout
    assert scale == "2/splitserve.io/service=basic,splitserve.io/role=decode"


def operator_alive(env: Env) -> None:
    assert env.operator.alive(), env.operator.log()


def autoscaled(env: Env) -> dict[str, Any]:
    """A service with the built-in autoscaler on, deciding every 5 s against a Prometheus
    address nothing listens on (no metrics: it holds both pools), on CPU-only pools."""
    cpu = {"resources": {"gpus": 0, **SMALL}}
    return manifest(env, "auto", prefill=cpu, decode=cpu, autoscaling={
        "enabled": True, "prometheusUrl": "http://127.0.0.1:9", "intervalSeconds": 5})


def autoscaler_holding(env: Env) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        cond = condition(get(env, "SplitService", "auto"), "ScalingActive")
        return cond if cond.get("reason") == "NoMetrics" else None

    return wait_for("the autoscaler's first decision on auto", probe, timeout=60)


def test_steady_state_writes_nothing(env: Env) -> None:
    """Zero writes by the operator over 60 s once converged, counted by the API server: its
    audit log on the local cluster, else (another cluster) its request counters. A second
    service has the built-in autoscaler on: it decides every 5 s and writes nothing either."""
    apply(env, autoscaled(env))
    ready(env, "basic", timeout=300)
    ready(env, "auto", timeout=300)
    active = autoscaler_holding(env)
    assert active["status"] == "False"
    audit = AuditLog()
    window = 60.0
    if audit.available():
        # pods finishing their start-up still change statuses right after Ready
        start = wait_quiet(audit, env.user, quiet=20, timeout=300,
                           alive=lambda: operator_alive(env))
        t0 = time.monotonic()
        while time.monotonic() - t0 < window:
            operator_alive(env)
            time.sleep(2)  # sampling period of a fixed measurement window, not a wait for state
        end = audit.flush(env.kubeconfig, env.namespace)
        writes = audit.writes(since=start, until=end, user=env.user)
        print(f"steady_state_writes_per_min={len(writes) * 60 / window:.1f}")
        assert not writes, "\n".join(w.describe() for w in writes) + env.operator.log()
        autoscaler_unchanged(env, active)
        return
    before = operator_kind_writes(env.kube)
    t0 = time.monotonic()
    while time.monotonic() - t0 < window:
        operator_alive(env)
        time.sleep(2)
    count = operator_kind_writes(env.kube) - before
    print(f"steady_state_writes_per_min={count * 60 / window:.1f}")
    assert count == 0, env.operator.log()
    autoscaler_unchanged(env, active)


def autoscaler_unchanged(env: Env, active: dict[str, Any]) -> None:
    """The autoscaled service kept its condition and its replicas; then it is removed."""
    assert condition(get(env, "SplitService", "auto"), "ScalingActive") == active
    pools = [get(env, "SplitPool", f"auto-{role}") for role in ("prefill", "decode")]
    assert [p and p["spec"]["replicas"] for p in pools] == [1, 1]
    env.kube.delete("SplitService", env.namespace, "auto")


def test_insufficient_gpu_is_degraded_with_event(env: Env) -> None:
    obj = manifest(env, "greedy", decode={"replicas": 1, "resources": {"gpus": 16, **SMALL}})
    apply(env, obj)

    def degraded() -> dict[str, Any] | None:
        svc = get(env, "SplitService", "greedy")
        return svc if condition(svc, "Degraded").get("reason") == "InsufficientGPU" else None

    svc = wait_for("greedy Degraded/InsufficientGPU", degraded, timeout=180)
    assert condition(svc, "Ready")["status"] == "False"
    assert "nvidia.com/gpu" in condition(svc, "Degraded")["message"]
    assert_event(env, "greedy", "InsufficientGPU")
    assert env.operator.alive()
    env.kube.delete("SplitService", env.namespace, "greedy")


def assert_event(env: Env, name: str, reason: str) -> None:
    def found() -> bool:
        events = env.kube.list("Event", env.namespace,
                               field_selector=f"involvedObject.name={name},"
                                              "involvedObject.kind=SplitService")
        return any(e.get("reason") == reason for e in events)

    wait_for(f"event {reason} on {name}", found, timeout=60)


def test_missing_model_is_degraded_with_event(env: Env) -> None:
    obj = manifest(env, "nomodel", model={"name": "tiny",
                                          "source": {"hostPath": "/nonexistent/splitserve"}})
    apply(env, obj)

    def degraded() -> dict[str, Any] | None:
        svc = get(env, "SplitService", "nomodel")
        return svc if condition(svc, "Degraded").get("reason") == "ModelNotFound" else None

    svc = wait_for("nomodel Degraded/ModelNotFound", degraded, timeout=180)
    assert "/nonexistent/splitserve" in condition(svc, "Degraded")["message"]
    assert_event(env, "nomodel", "ModelNotFound")
    env.kube.delete("SplitService", env.namespace, "nomodel")


def test_bad_override_is_degraded_with_the_api_server_message(env: Env) -> None:
    override = {"spec": {"containers": [{"name": "sidecar"}]}}
    obj = manifest(env, "badoverride", prefill={"podTemplateOverride": override})
    apply(env, obj)

    def degraded() -> dict[str, Any] | None:
        svc = get(env, "SplitService", "badoverride")
        return svc if condition(svc, "Degraded").get("reason") == "InvalidPodTemplate" else None

    svc = wait_for("badoverride Degraded/InvalidPodTemplate", degraded, timeout=120)
    message = condition(svc, "Degraded")["message"]
    assert "image" in message and "Required value" in message, message
    assert get(env, "SplitPool", "badoverride-prefill") is None
    assert get(env, "SplitPool", "badoverride-decode") is not None
    assert_event(env, "badoverride", "InvalidPodTemplate")
    assert env.operator.alive()
    env.kube.delete("SplitService", env.namespace, "badoverride")


def test_operator_restart_converges_without_duplicates(env: Env) -> None:
    cpu_only = {"resources": {"gpus": 0, **SMALL}, "drainSeconds": 1}
    apply(env, manifest(env, "restart", prefill=cpu_only, decode=cpu_only))
    wait_for("first child of restart", lambda: get(env, "ServiceAccount", "restart-router"),
             timeout=60)
    env.operator.kill()
    env.operator.start()
    ready(env, "restart", timeout=300)
    selector = "splitserve.io/service=restart"
    counts = {kind: len(env.kube.list(kind, env.namespace, label_selector=selector))
              for kind in ("SplitPool", "Deployment", "Service", "ConfigMap",
                           "PodDisruptionBudget", "ServiceAccount", "Role", "RoleBinding",
                           "NetworkPolicy")}
    assert counts == {"SplitPool": 2, "Deployment": 3, "Service": 3, "ConfigMap": 1,
                      "PodDisruptionBudget": 3, "ServiceAccount": 1, "Role": 1,
                      "RoleBinding": 1, "NetworkPolicy": 3}


def test_delete_removes_every_child(env: Env) -> None:
    cpu_only = {"resources": {"gpus": 0, **SMALL}, "drainSeconds": 1}
    apply(env, manifest(env, "doomed", prefill=cpu_only, decode=cpu_only))
    wait_for("children of doomed", lambda: all(children(env, "doomed").values()), timeout=120)
    env.kube.delete("SplitService", env.namespace, "doomed")
    wait_for("every child of doomed gone",
             lambda: not any(children(env, "doomed").values()), timeout=180)


def test_invalid_spec_changes_nothing(env: Env) -> None:
    obj = manifest(env, "basic")
    bad = copy.deepcopy(obj)
    bad["spec"]["decode"]["replicas"] = 50
    import yaml

    out = kubectl(env.kubeconfig, "apply", "--server-side", "--field-manager=e2e", "-f", "-",
                  stdin=yaml.safe_dump(bad), check=False)
    assert out.returncode != 0 and "replicas" in out.stderr
    svc = get(env, "SplitService", "basic")
    assert svc is not None and svc["spec"]["decode"]["replicas"] == 1

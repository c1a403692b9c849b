"""NetworkPolicies of a SplitService, enforced by the real cluster's network layer.

Two services run in one namespace under a namespace-scoped operator; connections are made from
inside pods (`kubectl exec` + busybox nc) and from this host. The workers run the stand-in
image (busybox httpd, see operator_lib), with a second httpd on the gRPC/KV port so that port
accepts connections: what is tested is who may connect, not what the port speaks.
On the local cluster the enforcing layer is the node's netpol daemon (e2e/cluster/lib/netpol.sh).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid
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
    create_namespace,
    import_standin,
    install_crds,
    kubectl,
    wait_for,
)

from splitserve.operator.kube import Kube, load_config

pytestmark = pytest.mark.cluster

KV, HTTP, ROUTER = 50051, 8080, 8000
SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
# the stand-in worker, plus an httpd on the port given by --grpc-port
KV_LISTENER = ('kv=; prev=; for a; do [ "$prev" = --grpc-port ] && kv=$a; prev=$a; done; '
               '/bin/busybox httpd -p "$kv" -h /www && exec /standin "$@"')
POLICY_DEADLINE = 60.0  # rules follow API changes asynchronously


@dataclass
class Env:
    kube: Kube
    kubeconfig: str
    operator: OperatorProcess
    namespace: str   # both services, a plain pod
    metrics_ns: str  # named in metricsNamespaces
    other_ns: str    # named nowhere
    model_dir: Path


def load_standin(cluster: Any, workdir: Path) -> None:
    if cluster.images_preloaded:
        return
    if not cluster.local:
        pytest.fail(f"load {STANDIN_IMAGE} into the cluster's nodes and set "
                    "SPLITSERVE_E2E_IMAGES_PRELOADED=1 (see e2e/operator_lib.py)")
    state = os.environ.get("SS_STATE", "/var/lib/splitserve-cluster")
    address = os.environ.get("SS_CONTAINERD_SOCK", f"{state}/containerd/containerd.sock")
    import_standin(build_standin_archive(workdir / "standin.tar"), address)


@pytest.fixture(scope="module")
def env(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    kubeconfig = str(cluster.kubeconfig)
    kube = Kube(load_config(kubeconfig))
    install_crds(kubeconfig)
    load_standin(cluster, tmp_path_factory.mktemp("image"))
    model_dir = Path(tmp_path_factory.mktemp("model"))
    (model_dir / "config.json").write_text('{"model_type": "llama"}\n')
    model_dir.chmod(0o755)
    suffix = uuid.uuid4().hex[:6]
    names = [f"e2e-netpol-{suffix}", f"e2e-netpol-mon-{suffix}", f"e2e-netpol-other-{suffix}"]
    for ns in names:
        create_namespace(kubeconfig, ns)
    workdir = tmp_path_factory.mktemp("operator")
    identity, _ = operator_identity(kubeconfig, names[0], workdir)
    operator = OperatorProcess(identity, workdir / "operator.log", ("--namespace", names[0]))
    operator.start()
    try:
        yield Env(kube, kubeconfig, operator, names[0], names[1], names[2], model_dir)
    finally:
        operator.stop()
        for ns in names:
            kubectl(kubeconfig, "delete", "namespace", ns, "--wait=false", check=False)
        kube.close()


def service(env: Env, name: str, **network: Any) -> dict[str, Any]:
    worker_override = {"spec": {"containers": [
        {"name": "worker", "command": ["/bin/sh", "-c", KV_LISTENER, "standin"]}]}}
    pool = {"replicas": 1, "resources": {"gpus": 0, **SMALL}, "drainSeconds": 1,
            "podTemplateOverride": worker_override}
    return {
        "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
        "metadata": {"name": name, "namespace": env.namespace},
        "spec": {
            "model": {"name": "tiny", "source": {"hostPath": str(env.model_dir)}},
            "image": STANDIN_IMAGE, "imagePullPolicy": "Never",
            "prefill": pool, "decode": pool,
            "router": {"replicas": 1, "resources": SMALL},
            "networkPolicy": {"metricsNamespaces": [env.metrics_ns], **network},
        },
    }


def apply(env: Env, obj: dict[str, Any]) -> None:
    kubectl(env.kubeconfig, "apply", "--server-side", "--field-manager=e2e", "-f", "-",
            stdin=yaml.safe_dump(obj))


def ready(env: Env, name: str) -> None:
    def probe() -> bool:
        assert env.operator.alive(), env.operator.log()
        svc = env.kube.get("SplitService", env.namespace, name)
        return bool(svc and condition(svc, "Ready").get("status") == "True"
                    and svc["status"].get("observedGeneration") == svc["metadata"]["generation"])

    wait_for(f"SplitService {name} Ready", probe, timeout=240)


def prober(env: Env, namespace: str, name: str) -> str:
    """A plain long-running pod (no splitserve labels) to connect from."""
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "prober"}},
        "spec": {
            "containers": [{"name": "c", "image": STANDIN_IMAGE, "imagePullPolicy": "Never",
                            "command": ["/bin/busybox", "sleep", "3600"],
                            "resources": SMALL,
                            "securityContext": {"allowPrivilegeEscalation": False,
                                                "capabilities": {"drop": ["ALL"]}}}],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
            "terminationGracePeriodSeconds": 0,
            "enableServiceLinks": False,
        },
    }
    apply(env, pod)
    return name


def pod_running(env: Env, namespace: str, name: str) -> bool:
    pod = env.kube.get("Pod", namespace, name)
    return bool(pod and pod.get("status", {}).get("phase") == "Running")


def pod_of(env: Env, service_name: str, role: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        pods = env.kube.list("Pod", env.namespace, label_selector=(
            f"splitserve.io/service={service_name},splitserve.io/role={role}"))
        running = [p for p in pods if p.get("status", {}).get("phase") == "Running"
                   and p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")]
        return running[0] if running else None

    return wait_for(f"a running {role} pod of {service_name}", probe, timeout=120)


def connect(env: Env, namespace: str, pod: str, ip: str, port: int) -> str:
    """'ok', 'refused' or another failure, connecting from inside `pod`."""
    out = kubectl(env.kubeconfig, "-n", namespace, "exec", pod, "--", "/bin/busybox", "nc",
                  "-w", "5", ip, str(port), check=False)
    if out.returncode == 0:
        return "ok"
    return "refused" if "refused" in out.stderr else f"failed: {out.stderr.strip()}"


def expect(env: Env, namespace: str, pod: str, ip: str, port: int, outcome: str) -> None:
    wait_for(f"{namespace}/{pod} -> {ip}:{port} to be {outcome}",
             lambda: connect(env, namespace, pod, ip, port) == outcome, timeout=POLICY_DEADLINE,
             interval=1.0)


def from_host(ip: str, port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/healthz", timeout=5) as resp:
            return "ok" if resp.status == 200 else f"status {resp.status}"
    except (urllib.error.URLError, OSError) as exc:
        return f"failed: {exc}"


@pytest.fixture(scope="module")
def deployed(env: Env) -> Env:
    apply(env, service(env, "alpha"))
    apply(env, service(env, "beta"))
    for ns, name in ((env.namespace, "plain"), (env.metrics_ns, "scraper"),
                     (env.other_ns, "stranger")):
        prober(env, ns, name)
    ready(env, "alpha")
    ready(env, "beta")
    for ns, name in ((env.namespace, "plain"), (env.metrics_ns, "scraper"),
                     (env.other_ns, "stranger")):
        wait_for(f"pod {ns}/{name} running", lambda ns=ns, name=name: pod_running(env, ns, name),
                 timeout=120)
    for name in ("alpha", "beta"):
        for suffix in ("workers", "router", "quarantine"):
            assert env.kube.get("NetworkPolicy", env.namespace, f"{name}-{suffix}"), suffix
    return env


def test_worker_grpc_port_only_from_the_same_service(deployed: Env) -> None:
    env = deployed
    alpha_decode = pod_of(env, "alpha", "decode")["status"]["podIP"]
    alpha_router = pod_of(env, "alpha", "router")["metadata"]["name"]
    alpha_prefill = pod_of(env, "alpha", "prefill")["metadata"]["name"]
    beta_router = pod_of(env, "beta", "router")["metadata"]["name"]
    # another service's pod and a plain pod of the same namespace are refused ...
    expect(env, env.namespace, beta_router, alpha_decode, KV, "refused")
    expect(env, env.namespace, "plain", alpha_decode, KV, "refused")
    # ... while the service's own router and peer pool connect
    assert connect(env, env.namespace, alpha_router, alpha_decode, KV) == "ok"
    assert connect(env, env.namespace, alpha_prefill, alpha_decode, KV) == "ok"
    # traffic from the node (probes, this host) is not filtered
    assert from_host(alpha_decode, KV) == "ok"
    assert from_host(alpha_decode, HTTP) == "ok"


def test_metrics_port_from_the_named_namespace_only(deployed: Env) -> None:
    env = deployed
    alpha_prefill = pod_of(env, "alpha", "prefill")["status"]["podIP"]
    expect(env, env.other_ns, "stranger", alpha_prefill, HTTP, "refused")
    assert connect(env, env.metrics_ns, "scraper", alpha_prefill, HTTP) == "ok"
    # the named namespace gets the metrics port, not the gRPC/KV port
    assert connect(env, env.metrics_ns, "scraper", alpha_prefill, KV) == "refused"


def test_router_port_open_by_default_and_limited_on_request(deployed: Env) -> None:
    env = deployed
    beta_router = pod_of(env, "beta", "router")["status"]["podIP"]
    expect(env, env.other_ns, "stranger", beta_router, ROUTER, "ok")
    limited = service(env, "beta", routerFrom=[{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": env.metrics_ns}}}])
    apply(env, limited)
    expect(env, env.other_ns, "stranger", beta_router, ROUTER, "refused")
    assert connect(env, env.metrics_ns, "scraper", beta_router, ROUTER) == "ok"


def test_quarantine_label_cuts_a_pod_off_and_back(deployed: Env) -> None:
    env = deployed
    decode = pod_of(env, "alpha", "decode")
    name, ip = decode["metadata"]["name"], decode["status"]["podIP"]
    alpha_router = pod_of(env, "alpha", "router")["metadata"]["name"]
    prefill = pod_of(env, "alpha", "prefill")
    assert connect(env, env.namespace, alpha_router, ip, KV) == "ok"
    kubectl(env.kubeconfig, "-n", env.namespace, "label", "pod", name,
            "splitserve.io/quarantine=inspect")
    try:
        # nothing of its own service reaches it, and it reaches nothing (egress too)
        expect(env, env.namespace, alpha_router, ip, KV, "refused")
        assert connect(env, env.namespace, prefill["metadata"]["name"], ip, HTTP) == "refused"
        assert connect(env, env.metrics_ns, "scraper", ip, HTTP) == "refused"
        assert connect(env, env.namespace, name, prefill["status"]["podIP"], KV) == "refused"
        # the node still reaches it, so its probes pass and it stays in its ReplicaSet
        assert from_host(ip, HTTP) == "ok"
        assert connect(env, env.namespace, alpha_router, prefill["status"]["podIP"], KV) == "ok"
    finally:
        kubectl(env.kubeconfig, "-n", env.namespace, "label", "pod", name,
                "splitserve.io/quarantine-")
    expect(env, env.namespace, alpha_router, ip, KV, "ok")
    assert connect(env, env.namespace, name, prefill["status"]["podIP"], KV) == "ok"


def test_disabling_removes_the_policies(deployed: Env) -> None:
    env = deployed
    alpha_decode = pod_of(env, "alpha", "decode")["status"]["podIP"]
    beta_router = pod_of(env, "beta", "router")["metadata"]["name"]
    expect(env, env.namespace, beta_router, alpha_decode, KV, "refused")
    apply(env, service(env, "alpha", enabled=False))
    wait_for("alpha's NetworkPolicies removed", lambda: not any(
        env.kube.get("NetworkPolicy", env.namespace, f"alpha-{s}")
        for s in ("workers", "router", "quarantine")),
        timeout=POLICY_DEADLINE)
    expect(env, env.namespace, beta_router, alpha_decode, KV, "ok")
    assert env.kube.get("NetworkPolicy", env.namespace, "beta-workers"), "beta's stay"

"""Pod Security "restricted", enforced by the real API server, and API keys on the router.

A namespace labelled `pod-security.kubernetes.io/enforce=restricted` refuses a pod that does
not harden itself (so the label is live), admits the operator's pod as the Helm chart and the
kustomize base render it, and runs a real SplitService on the real data-plane image: one
prefill and one decode worker (1 GPU each) and a router on read-only root filesystems, the
weights from a PersistentVolumeClaim (restricted forbids hostPath volumes). The router takes
its API keys from a Secret: a request without a key gets 401, one with the key is served and
equals a colocated engine's answer. The operator runs out of cluster as its own
ServiceAccount with the shipped RBAC, watching the test's namespace only.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
import yaml
from audit_log import operator_identity
from chart_lib import CHART, helm
from dataplane_lib import (
    ENGINE,
    MAX_CONTEXT,
    ensure_image,
    reference_answer,
    reference_engine,
    scrape,
    tiny_model_dir,
)
from operator_lib import (
    ROOT,
    SESSION_LABEL,
    OperatorProcess,
    condition,
    install_crds,
    kubectl,
    session_label,
    wait_for,
)

pytestmark = pytest.mark.cluster

NAME = "tiny"
ENFORCE = "pod-security.kubernetes.io/enforce"
WORKER_RESOURCES = {"gpus": 1, "requests": {"cpu": "10m", "memory": "256Mi"},
                    "limits": {"memory": "1Gi"}}
ROUTER_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
PROMPT = "A hardened pod still computes the same prompt. " * 3


@dataclass
class Served:
    kubeconfig: str
    namespace: str
    base_url: str  # the router pod's address
    api_key: str


def report(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[pod-security] {line}")


def apply(kubeconfig: str, *docs: dict[str, Any]) -> None:
    kubectl(kubeconfig, "apply", "--server-side", "--field-manager=e2e", "-f", "-",
            stdin=yaml.safe_dump_all(docs))


def dry_run_pod(kubeconfig: str, namespace: str, name: str, spec: dict[str, Any]) -> Any:
    """Creates `spec` as a Pod with server-side dry run: admission (Pod Security included)
    decides, nothing is stored."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
           "spec": spec}
    return kubectl(kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod),
                   check=False)


@pytest.fixture(scope="module")
def kubeconfig(cluster: Any) -> str:
    if not cluster.local:
        pytest.fail("test_pod_security reaches the router's pod from this machine; it "
                    "runs on the e2e/cluster node")
    return str(cluster.kubeconfig)


@pytest.fixture(scope="module")
def psa_namespace(kubeconfig: str) -> Iterator[str]:
    name = f"e2e-psa-{uuid.uuid4().hex[:6]}"
    apply(kubeconfig, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": name, "labels": {SESSION_LABEL: session_label(), ENFORCE: "restricted"}}})
    try:
        yield name
    finally:
        kubectl(kubeconfig, "delete", "namespace", name, "--wait=false", check=False)


def model_volume(namespace: str) -> list[dict[str, Any]]:
    """A PersistentVolume of the tiny model's directory on the node, bound to a claim in
    `namespace` (the PV is cluster-scoped and named after the namespace)."""
    claim = "weights"
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": namespace},
          "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadOnlyMany"],
                   "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                   "hostPath": {"path": str(tiny_model_dir()), "type": "Directory"},
                   "claimRef": {"namespace": namespace, "name": claim}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": claim, "namespace": namespace},
           "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "",
                    "volumeName": namespace, "resources": {"requests": {"storage": "64Mi"}}}}
    return [pv, pvc]


def manifest(namespace: str, image: str) -> dict[str, Any]:
    pool = {"replicas": 1, "resources": WORKER_RESOURCES, "drainSeconds": 5, "engine": ENGINE}
    return {
        "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"name": NAME, "source": {"pvc": {"claimName": "weights"}},
                      "dtype": "float32", "maxContext": MAX_CONTEXT},
            "image": image, "imagePullPolicy": "Never",
            "prefill": pool, "decode": pool,
            "router": {"replicas": 1, "resources": ROUTER_RESOURCES, "shortPromptThreshold": 0,
                       "apiKeySecret": {"name": "router-keys"}},
        },
    }


def test_the_namespace_refuses_an_unhardened_pod(kubeconfig: str, psa_namespace: str) -> None:
    namespace = psa_namespace
    out = dry_run_pod(kubeconfig, namespace, "loose", {"containers": [
        {"name": "c", "image": "docker.io/library/debian:bookworm-slim"}]})
    assert out.returncode != 0 and "violates PodSecurity" in out.stderr, out.stderr
    assert '"restricted:latest"' in out.stderr


def test_the_operator_deployment_passes_restricted(kubeconfig: str, psa_namespace: str) -> None:
    namespace = psa_namespace
    rendered = helm(kubeconfig, "template", "splitserve", str(CHART), "--namespace",
                    namespace).stdout
    kustomize = (ROOT / "manifests" / "operator" / "deployment.yaml").read_text()
    for source, text in (("chart", rendered), ("manifests", kustomize)):
        (deployment,) = [d for d in yaml.safe_load_all(text)
                         if d and d.get("kind") == "Deployment"]
        spec = deployment["spec"]["template"]["spec"]
        spec.pop("serviceAccountName")  # its account does not exist here; not a security field
        out = dry_run_pod(kubeconfig, namespace, f"operator-{source}", spec)
        assert out.returncode == 0, (source, out.stderr)
        assert "Warning" not in out.stderr, (source, out.stderr)


def apply_service(kubeconfig: str, doc: dict[str, Any]) -> None:
    """Applies `doc` under this tree's CRDs. The CRDs are shared by every session on the
    cluster, and one applied from a tree without `router.apiKeySecret` makes the API server
    refuse the field; the CRDs are installed again until the apply goes through."""
    def applied() -> bool:
        install_crds(kubeconfig)
        out = kubectl(kubeconfig, "apply", "--server-side", "--field-manager=e2e", "-f", "-",
                      stdin=yaml.safe_dump(doc), check=False)
        assert out.returncode == 0 or "field not declared in schema" in out.stderr, out.stderr
        return out.returncode == 0

    wait_for("the SplitService applied under this tree's CRDs", applied, 120, 1.0)


def router_pods(kubeconfig: str, namespace: str) -> list[dict[str, Any]]:
    out = kubectl(kubeconfig, "get", "pods", "-n", namespace, "-l",
                  f"splitserve.io/service={NAME},splitserve.io/role=router", "-o", "json")
    pods: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return pods


@pytest.fixture(scope="module")
def served(cluster: Any, kubeconfig: str, psa_namespace: str, pytestconfig: pytest.Config,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    namespace = psa_namespace
    image = ensure_image(cluster)
    if image.built:
        report(pytestconfig, f"built {image.name} in {image.seconds:.0f}s")
    workdir = tmp_path_factory.mktemp("operator")
    identity, _ = operator_identity(kubeconfig, namespace, workdir)
    operator = OperatorProcess(identity, workdir / "operator.log", ("--namespace", namespace))
    key = "sk-" + secrets.token_urlsafe(24)
    keys = {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "router-keys", "namespace": namespace},
            "stringData": {"api-keys": f"# accepted by the router\n{key}\n"}}
    operator.start()
    try:
        apply(kubeconfig, *model_volume(namespace), keys)
        applied = time.monotonic()
        apply_service(kubeconfig, manifest(namespace, image.name))

        def ready() -> dict[str, Any] | None:
            assert operator.alive(), operator.log()
            out = kubectl(kubeconfig, "get", "splitservice", NAME, "-n", namespace, "-o",
                          "json", check=False)
            if out.returncode != 0:
                return None
            svc = json.loads(out.stdout)
            return svc if condition(svc, "Ready").get("status") == "True" else None

        try:
            wait_for("SplitService Ready in the restricted namespace", ready, 600, 1.0)
        except AssertionError as exc:
            pods = kubectl(kubeconfig, "get", "pods,events", "-n", namespace, "-o", "wide",
                           check=False).stdout
            raise AssertionError(f"{exc}\n{pods}\n{operator.log()}") from exc
        report(pytestconfig, f"apply -> Ready in {time.monotonic() - applied:.1f}s")

        def keys_enforced() -> str | None:
            """The serving router pod's IP once it runs with the API keys."""
            # a write under another session's older CRD prunes the field: put it back
            svc = json.loads(kubectl(kubeconfig, "get", "splitservice", NAME, "-n", namespace,
                                     "-o", "json").stdout)
            if "apiKeySecret" not in svc["spec"]["router"]:
                apply_service(kubeconfig, manifest(namespace, image.name))
                return None
            pods = [p for p in router_pods(kubeconfig, namespace)
                    if not p["metadata"].get("deletionTimestamp")]
            if len(pods) != 1 or "--api-keys-file" not in pods[0]["spec"]["containers"][0]["args"]:
                return None
            ready = all(s.get("ready") for s in pods[0]["status"].get("containerStatuses", [{}]))
            return str(pods[0]["status"]["podIP"]) if ready else None

        # the pod's own address: a ClusterIP may still lead to a router replaced a moment ago
        router_ip = wait_for("the router to run with its API keys", keys_enforced, 300, 1.0)
        served = Served(kubeconfig, namespace, f"http://{router_ip}:8000", key)

        def router_sees_both_pools() -> bool:
            pools = json.loads(scrape(served.base_url + "/status"))["pools"]
            return bool(pools["prefill"]["ready"] == 1 and pools["decode"]["ready"] == 1)

        wait_for("the router to discover both pools", router_sees_both_pools, 120, 0.5)
        yield served
        # deleted while its operator runs, so the finalizers are released and the GPUs freed
        kubectl(kubeconfig, "delete", "splitservice", NAME, "-n", namespace, "--wait=false")
        wait_for("the SplitService and its pods to be deleted", lambda: not kubectl(
            kubeconfig, "get", "splitservices,splitpools,pods", "-n", namespace, "-o", "name",
            check=False).stdout.strip(), 180, 1.0)
    finally:
        operator.stop()
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)
        kubectl(kubeconfig, "delete", "persistentvolume", namespace, "--wait=false",
                check=False)


def test_service_serves_with_the_api_key(served: Served) -> None:
    reference = reference_engine(tiny_model_dir())
    want, n = reference_answer(reference, PROMPT, 12)
    refused = openai.OpenAI(base_url=served.base_url + "/v1", api_key="sk-not-a-key",
                            max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as err:
        refused.completions.create(model=NAME, prompt=PROMPT, max_tokens=12)
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    # the client's own retries honour a 503's Retry-After: on this shared two-core machine a
    # stats poll of a busy worker can time out and take it out of rotation for a moment
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key=served.api_key,
                           max_retries=5, timeout=60)
    done = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=12, temperature=0,
                                     extra_body={"ignore_eos": True})
    assert done.choices[0].text == want
    assert done.usage is not None and done.usage.completion_tokens == n


def test_pods_ran_hardened_on_a_read_only_root(served: Served,
                                               pytestconfig: pytest.Config) -> None:
    """As admitted: non-root, read-only root filesystem, no restarts, and nothing in the
    logs about a write the root filesystem refused; reports what the processes wrote to
    their /tmp emptyDir."""
    pods = [p for p in json.loads(kubectl(served.kubeconfig, "get", "pods", "-n",
                                          served.namespace, "-o", "json").stdout)["items"]
            if not p["metadata"].get("deletionTimestamp")]
    assert sorted(p["metadata"]["labels"]["splitserve.io/role"] for p in pods) == \
        ["decode", "prefill", "router"]
    for pod in pods:
        name, role = pod["metadata"]["name"], pod["metadata"]["labels"]["splitserve.io/role"]
        (container,) = pod["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert [s["restartCount"] for s in pod["status"]["containerStatuses"]] == [0], name
        probe = kubectl(served.kubeconfig, "exec", "-n", served.namespace, name, "--", "sh",
                        "-c", "id -u; touch /opt/probe 2>&1; find /tmp -mindepth 1 -maxdepth 3",
                        check=False).stdout.splitlines()
        assert probe[0] == "10001", probe
        assert "Read-only file system" in probe[1], probe
        written = probe[2:]
        log = kubectl(served.kubeconfig, "logs", "-n", served.namespace, name,
                      check=False).stdout
        assert "Read-only file system" not in log, log[-3000:]
        report(pytestconfig, f"{role}: wrote under /tmp: {written or 'nothing'}")

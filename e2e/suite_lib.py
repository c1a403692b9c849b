"""Parts of the end-to-end suite (e2e/test_e2e_suite.py): the installation under test, a load
generator that counts every outcome, and readers of the node's and the release's state."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from dataplane_lib import ENGINE, MAX_CONTEXT, scrape
from openai import APITimeoutError, OpenAI
from operator_lib import kubectl, wait_for

NAME = "suite"
REPLICAS = 2
GPUS_NEEDED = 2 * REPLICAS  # one per worker
THRESHOLD = 16  # prompts shorter than this are prefilled on the decode worker
WORKER_RESOURCES = {"gpus": 1, "requests": {"cpu": "10m", "memory": "256Mi"},
                    "limits": {"memory": "1Gi"}}
ROUTER_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
IGNORE_EOS = {"ignore_eos": True}
CHILD_KINDS = ("splitpools,deployments,replicasets,pods,services,configmaps,"
               "poddisruptionbudgets,serviceaccounts,roles,rolebindings,"
               "horizontalpodautoscalers")
# The autoscaler's view of one tiny worker on this CPU: one prefill replica serves about 100
# prompt tokens a second, one decode replica far more output tokens than the suite asks for,
# so prompt-heavy load needs a second prefill replica and never a second decode one.
PROFILE = {
    "format": "splitserve.io/capacity-profile/v1", "model": "tiny", "device": "cpu",
    "command": "hand-made for the end-to-end suite", "startupSeconds": 15.0,
    "maxContext": MAX_CONTEXT,
    "prefill": {"overheadSeconds": 0.01, "secondsPerToken": 0.01, "referenceTokens": 16},
    "decode": {"stepSecondsBase": 0.05, "stepSecondsPerSequence": 0.001, "contextTokens": 64,
               "maxSequences": 8, "kvBlocks": ENGINE["kvCacheBlocks"],
               "blockSize": ENGINE["blockSize"]},
}
PROFILE_CONFIGMAP = "suite-profile"


@dataclass
class Suite:
    kubeconfig: str
    namespace: str
    release: str
    base_url: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def operator(self) -> str:
        return f"{self.release}-splitserve-operator"

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> Any:
        return kubectl(self.kubeconfig, "-n", self.namespace, *args, check=check, stdin=stdin)

    def pods(self, role: str, terminating: bool = False) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-l",
                           f"splitserve.io/service={NAME},splitserve.io/role={role}", "-o",
                           "json")
        return [p for p in json.loads(out.stdout)["items"]
                if terminating or not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self, role: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(role) if p["status"].get("podIP") and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", []))]

    def metrics(self, role: str) -> list[str]:
        return [scrape(url) for url in self.metrics_urls(role)]

    def metrics_urls(self, role: str) -> list[str]:
        port = 8000 if role == "router" else 8080
        return [f"http://{p['status']['podIP']}:{port}/metrics" for p in self.ready_pods(role)]

    def pool_counts(self) -> dict[str, int]:
        pools = json.loads(scrape(self.base_url + "/status"))["pools"]
        return {role: int(pools[role]["ready"]) for role in ("prefill", "decode")}

    def replicas(self, role: str) -> int:
        pool = json.loads(self.kubectl("get", "splitpool", f"{NAME}-{role}", "-o",
                                       "json").stdout)
        return int(pool["spec"]["replicas"])

    def service(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(
            self.kubectl("get", "splitservice", NAME, "-o", "json").stdout)
        return out

    def patch(self, patch: dict[str, Any]) -> None:
        self.kubectl("patch", "splitservice", NAME, "--type=merge", "-p", json.dumps(patch))

    def diagnose(self) -> str:
        pods = self.kubectl("get", "pods", "-o", "wide", check=False).stdout
        svc = self.kubectl("get", "splitservice", NAME, "-o", "yaml", check=False).stdout
        log = self.kubectl("logs", f"deployment/{self.operator}", "--tail=60",
                           check=False).stdout
        return f"{pods}\n{svc}\n{log}"


@dataclass(frozen=True)
class LoadCounts:
    completed: int
    failed: list[str]
    hung: int  # no answer within the per-request timeout
    mismatched: int  # an answer other than the colocated engine's on the checkpoint named
    by_version: dict[str, int]  # completed requests per system_fingerprint


class LoadRunner:
    """A stream of requests from a few threads, each with its own `openai` client and no
    client-side retry, so that every failure the router lets through is counted.

    `answers` maps each acceptable `system_fingerprint` to the colocated engine's answer on
    that checkpoint: an answer from one checkpoint that is not that checkpoint's own (a request
    that mixed two versions) counts as mismatched. `period` spaces each thread's requests
    (open-loop pacing; 0 sends the next request as soon as the last one is answered)."""

    def __init__(self, base_url: str, model: str, prompt: str, max_tokens: int,
                 answers: dict[str, str], threads: int, timeout: float,
                 period: float = 0.0) -> None:
        self._args = (model, prompt, max_tokens)
        self._answers = answers
        self._period = period
        self._clients = [OpenAI(base_url=base_url, api_key="unused", max_retries=0,
                                timeout=timeout) for _ in range(threads)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._completed, self._hung, self._mismatched = 0, 0, 0
        self._versions: Counter[str] = Counter()
        self._failed: list[str] = []
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                         for c in self._clients]

    def __enter__(self) -> LoadRunner:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        for http in self._clients:
            http.close()

    def _run(self, http: OpenAI) -> None:
        model, prompt, max_tokens = self._args
        while not self._stop.is_set():
            try:
                done = http.completions.create(model=model, prompt=prompt,
                                               max_tokens=max_tokens, temperature=0,
                                               extra_body=IGNORE_EOS)
            except APITimeoutError:
                with self._lock:
                    self._hung += 1
                continue
            except Exception as exc:  # every failure is counted and reported
                with self._lock:
                    self._failed.append(f"{type(exc).__name__}: {exc}")
                continue
            version = done.system_fingerprint or ""
            with self._lock:
                self._completed += 1
                self._versions[version] += 1
                self._mismatched += done.choices[0].text != self._answers.get(version)
            if self._period:
                self._stop.wait(self._period)  # pacing of the load, not a wait for a state

    def snapshot(self) -> LoadCounts:
        with self._lock:
            return LoadCounts(self._completed, list(self._failed), self._hung,
                              self._mismatched, dict(self._versions))

    def wait_completed(self, count: int, timeout: float) -> None:
        wait_for(f"{count} completed requests", lambda: self.snapshot().completed >= count,
                 timeout, 0.2)


def assert_clean(counts: LoadCounts) -> None:
    assert counts.failed == [] and counts.hung == 0 and counts.mismatched == 0, counts


def report(config: pytest.Config, line: str, prefix: str = "suite") -> None:
    """A line in the terminal report, shown also when output is captured (without `-s`)."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(f"[{prefix}] {line}")


def free_gpus(kubeconfig: str) -> tuple[int, list[str]]:
    """GPUs of the node not held by a pod bound to it, and the pods that hold the rest (a
    pending pod the scheduler could not place holds nothing)."""
    nodes = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    total = sum(int(n["status"].get("allocatable", {}).get("nvidia.com/gpu", "0"))
                for n in nodes)
    pods = json.loads(kubectl(kubeconfig, "get", "pods", "-A", "-o", "json").stdout)["items"]
    holders = []
    for pod in pods:
        if pod["status"].get("phase") in ("Succeeded", "Failed") or \
                not pod["spec"].get("nodeName"):
            continue
        held = sum(int(c.get("resources", {}).get("requests", {}).get("nvidia.com/gpu", "0"))
                   for c in pod["spec"]["containers"])
        if held:
            holders.append(f"{pod['metadata']['namespace']}/{pod['metadata']['name']} ({held})")
            total -= held
    return total, holders


def wait_free_gpus(kubeconfig: str, needed: int, timeout: float) -> None:
    """Waits until `needed` GPUs are free: pods of tests that ran before may still be
    terminating in their deleted namespaces."""
    last: tuple[int, list[str]] = (0, [])

    def enough() -> bool:
        nonlocal last
        last = free_gpus(kubeconfig)
        return last[0] >= needed

    try:
        wait_for(f"{needed} free nvidia.com/gpu on the node", enough, timeout, 2.0)
    except AssertionError:
        pytest.fail(f"the suite needs {needed} free nvidia.com/gpu on the node, {last[0]} "
                    f"stayed free for {timeout:.0f}s; held by: {', '.join(last[1]) or 'nobody'}")


def node_pressure(kubeconfig: str) -> list[str]:
    """Pressure conditions of the nodes: under disk pressure the kubelet refuses new pods and
    garbage-collects unused images, the data-plane image among them."""
    nodes = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    return [f"{n['metadata']['name']}: {c['type']} ({c.get('message', '')})"
            for n in nodes for c in n["status"].get("conditions", [])
            if c["type"].endswith("Pressure") and c["status"] == "True"]


def node_address(kubeconfig: str) -> str:
    """The node's InternalIP: where pods reach processes on this machine."""
    nodes = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    return str(next(a["address"] for a in nodes[0]["status"]["addresses"]
                    if a["type"] == "InternalIP"))


def manifest(namespace: str, image: str, model_dir: str) -> dict[str, Any]:
    pool = {"replicas": REPLICAS, "resources": WORKER_RESOURCES, "drainSeconds": 5,
            "engine": ENGINE}
    return {
        "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"name": NAME, "source": {"hostPath": model_dir}, "dtype": "float32",
                      "maxContext": MAX_CONTEXT},
            "image": image, "imagePullPolicy": "Never",
            "prefill": pool, "decode": pool,
            "router": {"replicas": 1, "resources": ROUTER_RESOURCES,
                       "shortPromptThreshold": THRESHOLD},
        },
    }


def autoscaling_patch(prometheus_url: str) -> dict[str, Any]:
    """Turns the built-in autoscaler on, deciding every 5 s, each pool between 1 and 2."""
    bounds = {"minReplicas": 1, "maxReplicas": REPLICAS}
    return {"spec": {"prefill": bounds, "decode": bounds, "autoscaling": {
        "enabled": True, "prometheusUrl": prometheus_url, "ttftTargetMs": 2000,
        "tpotTargetMs": 1000, "percentile": 90, "intervalSeconds": 5,
        "scaleDownStabilizationSeconds": 10, "profileConfigMap": PROFILE_CONFIGMAP}}}


def profile_configmap(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": PROFILE_CONFIGMAP, "namespace": namespace},
            "data": {"profile.json": json.dumps(PROFILE)}}


class PodTargets:
    """Keeps a Prometheus file-discovery list of the service's pods current from the API server
    (Debian's Prometheus is built without Kubernetes discovery): every pod's `http` port, as
    a PodMonitor would select them. Prometheus watches the file and picks changes up at once."""

    def __init__(self, suite: Suite, path: Path, every: float = 1.0) -> None:
        self._suite, self.path, self._every = suite, path, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.write()

    def job(self) -> dict[str, object]:
        return {"job_name": "splitserve-pods", "honor_labels": True,
                "file_sd_configs": [{"files": [str(self.path)]}]}

    def write(self) -> None:
        targets = sorted(
            f"{p['status']['podIP']}:{port['containerPort']}"
            for role in ("prefill", "decode", "router") for p in self._suite.pods(role)
            if p["status"].get("podIP")
            for port in p["spec"]["containers"][0].get("ports", []) if port["name"] == "http")
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": targets, "labels": {}}]))
        tmp.replace(self.path)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.write()
            except Exception:  # keep the last list while the API server does not answer
                continue

    def __enter__(self) -> PodTargets:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def model_paths(pod: dict[str, Any]) -> set[str]:
    return {v["hostPath"]["path"] for v in pod["spec"].get("volumes", []) if "hostPath" in v}


def release_objects(suite: Suite) -> list[str]:
    selector = f"app.kubernetes.io/instance={suite.release}"
    found: list[str] = suite.kubectl(
        "get", "deployment,serviceaccount,service,configmap,role,rolebinding", "-l", selector,
        "-o", "name").stdout.split()
    return found + kubectl(suite.kubeconfig, "get", "clusterrole,clusterrolebinding", "-l",
                           selector, "-o", "name").stdout.split()


def children(suite: Suite) -> list[str]:
    out = suite.kubectl("get", CHILD_KINDS, "-l", f"splitserve.io/service={NAME}", "-o",
                        "name")
    return list(out.stdout.split())


def install_operator(suite: Suite, cluster: Any, *extra: str) -> None:
    """`helm install` of the chart with the operator image built from this tree, watching only
    the suite's namespace; `extra` are more helm arguments."""
    from chart_lib import CHART, helm, operator_image

    repository, tag = operator_image(cluster)
    helm(suite.kubeconfig, "install", suite.release, str(CHART), "-n", suite.namespace,
         "--set", "watch.scope=namespaces", "--set", f"image.repository={repository}",
         "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
         "--set", "resources.requests.cpu=10m", *extra, "--wait", "--timeout", "180s")
    dep = json.loads(suite.kubectl("get", "deployment", suite.operator, "-o", "json").stdout)
    assert dep["status"].get("readyReplicas") == 1, dep["status"]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={suite.namespace}" in args  # scoped to the suite's namespace


def apply_service(suite: Suite, image: str, model_dir: Path, routers: int = 1
                  ) -> dict[str, str]:
    """Applies the service and waits until `kubectl get splitservices` shows it Ready with its
    endpoint, every pod is Ready and the router sees every worker; sets `suite.base_url`;
    returns the printed row."""
    from test_serving import printed_row

    doc = manifest(suite.namespace, image, str(model_dir))
    doc["spec"]["router"]["replicas"] = routers
    suite.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                  stdin=yaml.safe_dump(doc))

    def ready() -> dict[str, str] | None:
        row = printed_row(suite.kubeconfig, suite.namespace)
        return row if row and row.get("READY") == "True" and row.get("ENDPOINT") else None

    try:
        row: dict[str, str] = wait_for("SplitService Ready in kubectl get splitservices",
                                       ready, 600, 1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{suite.diagnose()}") from exc
    assert row["ENDPOINT"] == f"{NAME}.{suite.namespace}.svc:8000"
    for role, count in (("prefill", REPLICAS), ("decode", REPLICAS), ("router", routers)):
        wait_for(f"{count} {role} pods Ready",
                 lambda r=role, c=count: len(suite.ready_pods(r)) == c, 120, 1.0)
    svc = json.loads(suite.kubectl("get", "service", NAME, "-o", "json").stdout)
    suite.base_url = f"http://{svc['spec']['clusterIP']}:8000"
    wait_for("the router to see every worker", lambda: suite.pool_counts() == {
        "prefill": REPLICAS, "decode": REPLICAS}, 120, 0.5)
    return row

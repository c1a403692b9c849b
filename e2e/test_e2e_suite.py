"""The product as a user meets it, end to end in the real cluster, one step after the other.

1. `helm install` of the chart in this repository: the operator (its image built from this
   tree) runs in the cluster, namespace-scoped to the suite's own namespace.
2. `kubectl apply` of a SplitService on the real data-plane image with the tiny model on a
   hostPath: two prefill and two decode workers (one GPU each) and a router become Ready, and
   `kubectl get splitservices` shows it Ready with its endpoint.
3. The official `openai` client through the router Service: completions, chat and streaming
   equal a colocated engine's answers token for token, and the KV cache crosses pods.
4. Under a steady stream of concurrent requests, a prefill pod and then a decode pod are
   deleted (default grace, so their drain runs): every request completes with the colocated
   answer (the router retries elsewhere), none fails or hangs, the Deployments restore the pods.
5. `kubectl delete splitservice` removes every child; `helm uninstall` leaves only the CRDs.

The tests run in order and share the installation; a failed step fails the steps after it.
Request counts and step durations are printed in the terminal report ([suite] lines).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from chart_lib import CHART, crds_exist, helm, operator_image
from dataplane_lib import (
    ENGINE,
    MAX_CONTEXT,
    ensure_image,
    metric_sum,
    reference_answer,
    reference_engine,
    scrape,
    tiny_model_dir,
)
from openai import APITimeoutError, OpenAI
from operator_lib import create_namespace, install_crds, kubectl, wait_for
from test_serving import printed_row

from splitserve.api import metrics as names

pytestmark = pytest.mark.cluster

NAME = "suite"
REPLICAS = 2
GPUS_NEEDED = 2 * REPLICAS  # one per worker
THRESHOLD = 16  # prompts shorter than this are prefilled on the decode worker
WORKER_RESOURCES = {"gpus": 1, "requests": {"cpu": "10m", "memory": "256Mi"},
                    "limits": {"memory": "1Gi"}}
ROUTER_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
PROMPT = "A split service prefills on one pod and decodes on another one. " * 3
LOAD_TOKENS = 12
IGNORE_EOS = {"ignore_eos": True}
CHILD_KINDS = ("splitpools,deployments,replicasets,pods,services,configmaps,"
               "poddisruptionbudgets,serviceaccounts,roles,rolebindings,"
               "horizontalpodautoscalers")


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

    def pods(self, role: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-l",
                           f"splitserve.io/service={NAME},splitserve.io/role={role}", "-o",
                           "json")
        return [p for p in json.loads(out.stdout)["items"]
                if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self, role: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(role) if p["status"].get("podIP") and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", []))]

    def metrics(self, role: str) -> list[str]:
        port = 8000 if role == "router" else 8080
        return [scrape(f"http://{p['status']['podIP']}:{port}/metrics")
                for p in self.ready_pods(role)]

    def pool_counts(self) -> dict[str, int]:
        pools = json.loads(scrape(self.base_url + "/status"))["pools"]
        return {role: int(pools[role]["ready"]) for role in ("prefill", "decode")}

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
    mismatched: int  # completed with another answer than the colocated engine's


class LoadRunner:
    """A steady stream of requests from a few threads, each with its own `openai` client and
    no client-side retry, so that every failure the router lets through is counted."""

    def __init__(self, base_url: str, model: str, prompt: str, max_tokens: int, want: str,
                 threads: int, timeout: float) -> None:
        self._args = (model, prompt, max_tokens, want)
        self._clients = [OpenAI(base_url=base_url, api_key="unused", max_retries=0,
                                timeout=timeout) for _ in range(threads)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._completed, self._hung, self._mismatched = 0, 0, 0
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
        model, prompt, max_tokens, want = self._args
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
            with self._lock:
                self._completed += 1
                self._mismatched += done.choices[0].text != want

    def snapshot(self) -> LoadCounts:
        with self._lock:
            return LoadCounts(self._completed, list(self._failed), self._hung,
                              self._mismatched)

    def wait_completed(self, count: int, timeout: float) -> None:
        wait_for(f"{count} completed requests", lambda: self.snapshot().completed >= count,
                 timeout, 0.2)


def report(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[suite] {line}")


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


def node_pressure(kubeconfig: str) -> list[str]:
    """Pressure conditions of the nodes: under disk pressure the kubelet refuses new pods and
    garbage-collects unused images, the data-plane image among them."""
    nodes = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    return [f"{n['metadata']['name']}: {c['type']} ({c.get('message', '')})"
            for n in nodes for c in n["status"].get("conditions", [])
            if c["type"].endswith("Pressure") and c["status"] == "True"]


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


@pytest.fixture(scope="module")
def suite(cluster: Any, pytestconfig: pytest.Config) -> Iterator[Suite]:
    if not cluster.local:
        pytest.fail("the suite reaches pod and Service addresses from this machine; it runs "
                    "on the e2e/cluster node")
    started = time.monotonic()
    kubeconfig = str(cluster.kubeconfig)
    pressure = node_pressure(kubeconfig)
    if pressure:
        pytest.fail(f"the node cannot take the suite's pods: {'; '.join(pressure)}")
    install_crds(kubeconfig)
    namespace = f"e2e-suite-{uuid.uuid4().hex[:6]}"
    create_namespace(kubeconfig, namespace)
    state = Suite(kubeconfig, namespace, f"ss{uuid.uuid4().hex[:6]}")
    try:
        yield state
    finally:
        if state.kubectl("get", "splitservice", NAME, check=False).returncode == 0:
            with contextlib.suppress(AssertionError):  # while the operator still runs
                state.kubectl("delete", "splitservice", NAME, "--wait=false")
                wait_for("the SplitService deleted", lambda: state.kubectl(
                    "get", "splitservice", NAME, check=False).returncode != 0, 120, 1.0)
        helm(kubeconfig, "uninstall", state.release, "-n", namespace, check=False)
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)
        report(pytestconfig, "durations: " + ", ".join(
            f"{k} {v:.1f}s" for k, v in state.timings.items()) +
            f"; module {time.monotonic() - started:.1f}s")


@pytest.fixture(scope="module")
def reference() -> Any:
    return reference_engine(tiny_model_dir())


@pytest.fixture(scope="module")
def client(suite: Suite) -> OpenAI:
    return OpenAI(base_url=suite.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_1_helm_install_runs_the_operator(suite: Suite, cluster: Any) -> None:
    repository, tag = operator_image(cluster)
    started = time.monotonic()
    helm(suite.kubeconfig, "install", suite.release, str(CHART), "-n", suite.namespace,
         "--set", "watch.scope=namespaces", "--set", f"image.repository={repository}",
         "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
         "--set", "resources.requests.cpu=10m", "--wait", "--timeout", "180s")
    dep = json.loads(suite.kubectl("get", "deployment", suite.operator, "-o", "json").stdout)
    assert dep["status"].get("readyReplicas") == 1, dep["status"]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={suite.namespace}" in args  # scoped to the suite's namespace
    suite.timings["install"] = time.monotonic() - started


def test_2_apply_brings_the_service_ready(suite: Suite, cluster: Any,
                                          pytestconfig: pytest.Config) -> None:
    free, holders = free_gpus(suite.kubeconfig)
    if free < GPUS_NEEDED:
        pytest.fail(f"the suite needs {GPUS_NEEDED} free nvidia.com/gpu on the node, "
                    f"{free} are free; held by: {', '.join(holders) or 'nobody'}")
    image = ensure_image(cluster)
    if image.built:
        report(pytestconfig, f"built {image.name} in {image.seconds:.0f}s")
    started = time.monotonic()
    suite.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                  stdin=yaml.safe_dump(manifest(suite.namespace, image.name,
                                                str(tiny_model_dir()))))

    def ready() -> dict[str, str] | None:
        row = printed_row(suite.kubeconfig, suite.namespace)
        return row if row and row.get("READY") == "True" and row.get("ENDPOINT") else None

    try:
        row = wait_for("SplitService Ready in kubectl get splitservices", ready, 600, 1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{suite.diagnose()}") from exc
    assert row["ENDPOINT"] == f"{NAME}.{suite.namespace}.svc:8000"
    for role, count in (("prefill", REPLICAS), ("decode", REPLICAS), ("router", 1)):
        assert len(suite.ready_pods(role)) == count, (role, suite.diagnose())
    svc = json.loads(suite.kubectl("get", "service", NAME, "-o", "json").stdout)
    suite.base_url = f"http://{svc['spec']['clusterIP']}:8000"
    wait_for("the router to see every worker", lambda: suite.pool_counts() == {
        "prefill": REPLICAS, "decode": REPLICAS}, 120, 0.5)
    suite.timings["apply->ready"] = time.monotonic() - started
    report(pytestconfig, f"kubectl get splitservices: {row}")


def test_3_openai_answers_equal_colocated(suite: Suite, client: OpenAI, reference: Any,
                                          pytestconfig: pytest.Config) -> None:
    started = time.monotonic()
    series = names.KV_TRANSFER_BYTES.series
    sent_before = sum(metric_sum(t, series, direction="sent") for t in suite.metrics("prefill"))
    received_before = sum(metric_sum(t, series, direction="received")
                          for t in suite.metrics("decode"))
    requests = 0
    want, n = reference_answer(reference, PROMPT, 24)
    done = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=24, temperature=0,
                                     extra_body=IGNORE_EOS)
    requests += 1
    assert done.choices[0].text == want
    assert done.usage is not None and done.usage.completion_tokens == n

    messages: list[Any] = [{"role": "user", "content": "Why split prefill from decode? " * 3}]
    want_chat, n_chat = reference_answer(reference, reference.tokenizer.encode_chat(messages), 20)
    chat = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20,
                                          temperature=0, extra_body=IGNORE_EOS)
    requests += 1
    assert chat.choices[0].message.content == want_chat
    assert chat.usage is not None and chat.usage.completion_tokens == n_chat

    parts = [c.text for event in client.completions.create(
        model=NAME, prompt=PROMPT, max_tokens=24, temperature=0, stream=True,
        extra_body=IGNORE_EOS) for c in event.choices if c.text]
    requests += 1
    assert "".join(parts) == want and len(parts) > 3
    stream: Any = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20,
                                                 temperature=0, stream=True,
                                                 extra_body=IGNORE_EOS)
    assert "".join(e.choices[0].delta.content or "" for e in stream if e.choices) == want_chat
    requests += 1

    sent = sum(metric_sum(t, series, direction="sent") for t in suite.metrics("prefill")) \
        - sent_before
    received = sum(metric_sum(t, series, direction="received")
                   for t in suite.metrics("decode")) - received_before
    assert sent > 0 and received == sent, (sent, received)
    suite.timings["requests"] = time.monotonic() - started
    report(pytestconfig, f"{requests} requests equal the colocated engine; KV moved across "
           f"pods: {sent:.0f} bytes")


def delete_under_load(suite: Suite, load: LoadRunner, role: str,
                      pytestconfig: pytest.Config) -> None:
    """Deletes one `role` pod while requests run; waits until the pool is whole again."""
    load.wait_completed(load.snapshot().completed + 3, 120)
    victim = suite.ready_pods(role)[0]["metadata"]["name"]
    started = time.monotonic()
    suite.kubectl("delete", "pod", victim, "--timeout=120s")  # default grace: the drain runs
    deleted = time.monotonic() - started

    def restored() -> bool:
        names_now = {p["metadata"]["name"] for p in suite.ready_pods(role)}
        return len(names_now) == REPLICAS and victim not in names_now and \
            suite.pool_counts()[role] == REPLICAS

    wait_for(f"the {role} Deployment to restore its pod", restored, 300, 1.0)
    seconds = time.monotonic() - started
    suite.timings[f"delete {role}"] = seconds
    load.wait_completed(load.snapshot().completed + 3, 120)  # traffic flows after recovery
    report(pytestconfig, f"deleted {role} pod {victim}: gone after {deleted:.1f}s, "
           f"replaced and Ready after {seconds:.1f}s; load so far {load.snapshot()}")


def test_4_deleted_pods_under_load_lose_no_request(suite: Suite, reference: Any,
                                                   pytestconfig: pytest.Config) -> None:
    started = time.monotonic()
    retries_before = sum(metric_sum(t, names.ROUTER_RETRIES.series)
                         for t in suite.metrics("router"))
    errors_before = sum(metric_sum(t, names.ROUTER_ERRORS.series)
                        for t in suite.metrics("router"))
    want, _ = reference_answer(reference, PROMPT, LOAD_TOKENS)
    with LoadRunner(suite.base_url + "/v1", NAME, PROMPT, LOAD_TOKENS, want, threads=3,
                    timeout=30) as load:
        delete_under_load(suite, load, "prefill", pytestconfig)
        delete_under_load(suite, load, "decode", pytestconfig)
    counts = load.snapshot()
    retries = sum(metric_sum(t, names.ROUTER_RETRIES.series)
                  for t in suite.metrics("router")) - retries_before
    errors = sum(metric_sum(t, names.ROUTER_ERRORS.series)
                 for t in suite.metrics("router")) - errors_before
    suite.timings["faults"] = time.monotonic() - started
    report(pytestconfig, f"under load: {counts}; router retries {retries:.0f}, router errors "
           f"{errors:.0f}")
    assert counts.failed == [] and counts.hung == 0 and counts.mismatched == 0, counts
    assert counts.completed >= 12 and errors == 0


def test_5_delete_and_uninstall_leave_only_the_crds(suite: Suite) -> None:
    started = time.monotonic()
    assert children(suite)
    suite.kubectl("delete", "splitservice", NAME, "--wait=false")
    wait_for("every child of the SplitService removed", lambda: not children(suite) and
             suite.kubectl("get", "splitservice", NAME, check=False).returncode != 0,
             180, 1.0)
    assert release_objects(suite)
    helm(suite.kubeconfig, "uninstall", suite.release, "-n", suite.namespace, "--wait")
    wait_for("every object and pod of the release removed", lambda: not release_objects(suite)
             and not suite.kubectl("get", "pods", "-o", "name").stdout.strip(), 120, 1.0)
    assert crds_exist(suite.kubeconfig)
    suite.timings["delete+uninstall"] = time.monotonic() - started

"""A SplitService served by the real data-plane image in the real cluster.

`kubectl apply` of a SplitService with the tiny model (1 prefill + 1 decode worker + 1 router)
brings its pods up and `kubectl get splitservices` shows it Ready with its endpoint; the
official `openai` client talks to the router Service's ClusterIP (kube-proxy routes it from
this machine, the cluster's only node); the KV cache crosses pods over gRPC (the prefill pod's
transfer counters, read from its /metrics); answers equal a colocated engine's, token for
token. The operator runs out of cluster as its own ServiceAccount with the shipped RBAC,
watching the test's namespace only.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from audit_log import operator_identity
from dataplane_lib import (
    ENGINE,
    MAX_CONTEXT,
    ensure_image,
    image_size,
    metric_sum,
    reference_answer,
    reference_engine,
    scrape,
    tiny_model_dir,
)
from openai import OpenAI
from operator_lib import (
    OperatorProcess,
    condition,
    create_namespace,
    install_crds,
    kubectl,
    wait_for,
)

from splitserve.api import metrics as names

pytestmark = pytest.mark.cluster

NAME = "tiny"
THRESHOLD = 16  # prompts shorter than this are prefilled on the decode worker
WORKER_RESOURCES = {"gpus": 1, "requests": {"cpu": "10m", "memory": "256Mi"},
                    "limits": {"memory": "1Gi"}}
ROUTER_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
PROMPT = "Prefill computes the prompt; decode generates tokens one at a time. " * 4
IGNORE_EOS = {"ignore_eos": True}


@dataclass
class Served:
    kubeconfig: str
    namespace: str
    operator: OperatorProcess
    base_url: str  # the router Service's ClusterIP
    ready_seconds: float

    def pod_ip(self, role: str) -> str:
        out = kubectl(self.kubeconfig, "get", "pods", "-n", self.namespace, "-l",
                      f"splitserve.io/service={NAME},splitserve.io/role={role}", "-o", "json")
        pods = [p for p in json.loads(out.stdout)["items"]
                if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
        assert len(pods) == 1, f"expected one running {role} pod, found {len(pods)}"
        return str(pods[0]["status"]["podIP"])

    def metrics(self, role: str) -> str:
        port = 8000 if role == "router" else 8080
        return scrape(f"http://{self.pod_ip(role)}:{port}/metrics")


def report(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[serving] {line}")


def manifest(namespace: str, image: str, model_dir: Path) -> dict[str, Any]:
    pool = {"replicas": 1, "resources": WORKER_RESOURCES, "drainSeconds": 5, "engine": ENGINE}
    return {
        "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"name": NAME, "source": {"hostPath": str(model_dir)}, "dtype": "float32",
                      "maxContext": MAX_CONTEXT},
            "image": image, "imagePullPolicy": "Never",
            "prefill": pool, "decode": pool,
            "router": {"replicas": 1, "resources": ROUTER_RESOURCES,
                       "shortPromptThreshold": THRESHOLD},
        },
    }


def printed_row(kubeconfig: str, namespace: str) -> dict[str, str] | None:
    """`kubectl get splitservices` as the on-call engineer reads it: header -> cell."""
    out = kubectl(kubeconfig, "get", "splitservices", "-n", namespace, check=False)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or len(lines) < 2:
        return None
    header, row = lines[0], lines[1]
    # columns are aligned under their headers; an empty cell stays empty
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    bounds = zip(starts, [*starts[1:], None], strict=True)
    return {header[a:b].strip(): row[a:b].strip() for a, b in bounds}


@pytest.fixture(scope="module")
def served(cluster: Any, pytestconfig: pytest.Config,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not cluster.local:
        pytest.fail("test_serving reaches pod and Service addresses from this machine; it "
                    "runs on the e2e/cluster node")
    kubeconfig = str(cluster.kubeconfig)
    image = ensure_image(cluster)
    if image.built:
        report(pytestconfig, f"built {image.name} in {image.seconds:.0f}s")
    report(pytestconfig, f"image {image.name}: {image_size(image.name) / 2**30:.2f} GiB "
           "(compressed layers in containerd)")
    model_dir = tiny_model_dir()
    install_crds(kubeconfig)
    namespace = f"e2e-serve-{uuid.uuid4().hex[:6]}"
    create_namespace(kubeconfig, namespace)
    # the operator runs as its own ServiceAccount with the shipped RBAC, bound here only
    workdir = tmp_path_factory.mktemp("operator")
    identity, _ = operator_identity(kubeconfig, namespace, workdir)
    operator = OperatorProcess(identity, workdir / "operator.log", ("--namespace", namespace))
    operator.start()
    try:
        applied = time.monotonic()
        kubectl(kubeconfig, "apply", "--server-side", "--field-manager=e2e", "-f", "-",
                stdin=yaml.safe_dump(manifest(namespace, image.name, model_dir)))

        def ready() -> dict[str, str] | None:
            assert operator.alive(), operator.log()
            row = printed_row(kubeconfig, namespace)
            return row if row and row.get("READY") == "True" and row.get("ENDPOINT") else None

        try:
            row = wait_for("SplitService Ready in kubectl get splitservices", ready, 600, 1.0)
        except AssertionError as exc:
            pods = kubectl(kubeconfig, "get", "pods", "-n", namespace, "-o", "wide",
                           check=False).stdout
            svc = kubectl(kubeconfig, "get", "splitservice", NAME, "-n", namespace, "-o",
                          "yaml", check=False).stdout
            raise AssertionError(f"{exc}\n{pods}\n{svc}\n{operator.log()}") from exc
        ready_seconds = time.monotonic() - applied
        report(pytestconfig, f"apply -> Ready in {ready_seconds:.1f}s; "
               f"kubectl get splitservices: {row}")
        assert row["ENDPOINT"] == f"{NAME}.{namespace}.svc:8000"
        svc = json.loads(kubectl(kubeconfig, "get", "service", NAME, "-n", namespace, "-o",
                                 "json").stdout)
        served = Served(kubeconfig, namespace, operator,
                        f"http://{svc['spec']['clusterIP']}:8000", ready_seconds)

        def router_sees_both_pools() -> bool:
            pools = json.loads(scrape(served.base_url + "/status"))["pools"]
            return bool(pools["prefill"]["ready"] == 1 and pools["decode"]["ready"] == 1)

        wait_for("the router to discover both pools through the ClusterIP",
                 router_sees_both_pools, 120, 0.5)
        yield served
        # deleted while its operator runs, so the finalizers are released and every child goes
        kubectl(kubeconfig, "delete", "splitservice", NAME, "-n", namespace, "--wait=false")
        wait_for("the SplitService and its pools to be deleted", lambda: not kubectl(
            kubeconfig, "get", "splitservices,splitpools", "-n", namespace, "-o", "name",
            check=False).stdout.strip(), 120, 1.0)
    finally:
        operator.stop()
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def client(served: Served) -> OpenAI:
    return OpenAI(base_url=served.base_url + "/v1", api_key="unused", max_retries=0,
                  timeout=60)


@pytest.fixture(scope="module")
def reference() -> Any:
    return reference_engine(tiny_model_dir())


def test_service_is_ready_with_its_children(served: Served) -> None:
    svc = json.loads(kubectl(served.kubeconfig, "get", "splitservice", NAME, "-n",
                             served.namespace, "-o", "json").stdout)
    assert condition(svc, "Ready")["status"] == "True"
    assert svc["status"]["observedGeneration"] == svc["metadata"]["generation"]
    for role in ("prefill", "decode"):
        assert svc["status"][role]["readyReplicas"] == 1, svc["status"][role]


def test_models(client: OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [NAME]


def test_completion_equals_colocated_and_crosses_pods(served: Served, client: OpenAI,
                                                     reference: Any,
                                                     pytestconfig: pytest.Config) -> None:
    series = names.KV_TRANSFER_BYTES.series
    sent_before = metric_sum(served.metrics("prefill"), series, direction="sent")
    received_before = metric_sum(served.metrics("decode"), series, direction="received")
    want, n = reference_answer(reference, PROMPT, 24)
    started = time.monotonic()
    done = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=24, temperature=0,
                                     extra_body=IGNORE_EOS)
    seconds = time.monotonic() - started
    assert done.usage is not None and done.usage.completion_tokens == n == 24
    report(pytestconfig, f"completion of 24 tokens after a {done.usage.prompt_tokens}-token "
           f"prompt: {seconds:.2f}s")
    assert done.choices[0].text == want
    sent = metric_sum(served.metrics("prefill"), series, direction="sent") - sent_before
    received = metric_sum(served.metrics("decode"), series, direction="received") \
        - received_before
    assert sent > 0 and received == sent
    router = served.metrics("router")
    assert metric_sum(router, names.ROUTER_LOCAL_PREFILL.series) == 0


def test_chat_equals_colocated(client: OpenAI, reference: Any) -> None:
    messages: list[Any] = [{"role": "system", "content": "Answer briefly."},
                           {"role": "user", "content": "Why split prefill from decode? " * 3}]
    ids = reference.tokenizer.encode_chat(messages)
    want, n = reference_answer(reference, ids, 20)
    chat = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20,
                                          temperature=0, extra_body=IGNORE_EOS)
    assert chat.choices[0].message.content == want
    assert chat.usage is not None and chat.usage.prompt_tokens == len(ids)
    assert chat.usage.completion_tokens == n


def test_streaming_equals_colocated(client: OpenAI, reference: Any,
                                    pytestconfig: pytest.Config) -> None:
    want, n = reference_answer(reference, PROMPT, 30)
    parts, usage, arrivals = [], None, []
    started = time.monotonic()
    for event in client.completions.create(model=NAME, prompt=PROMPT, max_tokens=30,
                                           temperature=0, stream=True, extra_body=IGNORE_EOS,
                                           stream_options={"include_usage": True}):
        if event.usage is not None:
            usage = event.usage
        texts = [c.text for c in event.choices if c.text]
        if texts:
            arrivals.append(time.monotonic() - started)
        parts += texts
    assert "".join(parts) == want
    assert usage is not None and usage.completion_tokens == n
    assert len(arrivals) > 3  # really incremental
    report(pytestconfig, f"streamed 30 tokens: first after {arrivals[0]:.2f}s, "
           f"all after {arrivals[-1]:.2f}s")
    messages: list[Any] = [{"role": "user", "content": PROMPT}]
    want_chat, _ = reference_answer(reference, reference.tokenizer.encode_chat(messages), 30)
    stream: Any = client.chat.completions.create(
        model=NAME, messages=messages, max_tokens=30, temperature=0, stream=True,
        extra_body=IGNORE_EOS)
    deltas = [e.choices[0].delta.content or "" for e in stream if e.choices]
    assert "".join(deltas) == want_chat


def test_pods_ran_without_restarts_within_their_limits(served: Served,
                                                       pytestconfig: pytest.Config) -> None:
    """After the requests above: no container restarted (no OOM kill, no crash); reports each
    pod's peak memory (cgroup) against its limit."""
    out = kubectl(served.kubeconfig, "get", "pods", "-n", served.namespace, "-o", "json")
    pods = json.loads(out.stdout)["items"]
    assert sorted(p["metadata"]["labels"]["splitserve.io/role"] for p in pods) == \
        ["decode", "prefill", "router"]
    for pod in pods:
        name, role = pod["metadata"]["name"], pod["metadata"]["labels"]["splitserve.io/role"]
        statuses = pod["status"]["containerStatuses"]
        assert [s["restartCount"] for s in statuses] == [0], (name, statuses)
        # cgroup v1: peak usage (page cache included) and the anonymous memory now
        out = kubectl(served.kubeconfig, "exec", "-n", served.namespace, name, "--", "sh", "-c",
                      "cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes; "
                      "grep '^total_rss ' /sys/fs/cgroup/memory/memory.stat", check=False)
        numbers = [int(w) for w in out.stdout.split() if w.isdigit()]
        limit = pod["spec"]["containers"][0]["resources"]["limits"]["memory"]
        text = (f"peak {numbers[0] / 2**20:.0f} MiB with page cache, anonymous now "
                f"{numbers[1] / 2**20:.0f} MiB" if len(numbers) == 2 else "unreadable")
        report(pytestconfig, f"{role} pod memory: {text} (limit {limit})")

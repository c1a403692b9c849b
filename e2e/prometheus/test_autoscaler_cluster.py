"""The built-in autoscaler end to end: real Prometheus, real workers, real operator, real cluster.

- Data plane: a prefill worker, a decode worker and the router (`splitserve worker` /
  `splitserve router` through the local runner, built-in tiny model) run as processes on this
  host, labelled with the test namespace and the SplitService's name, so their series are the
  ones the autoscaler queries. The data-plane image is not used: the SplitServices' pods in the
  cluster run the busybox stand-in image (e2e/operator_lib.py), which only answers health
  checks; the autoscaler sizes those pools from the local workers' load.
- Prometheus (e2e/prometheus/install.sh) scrapes the workers and the router every second. A
  second scrape job relabels the same series as a second service (`service="as-limited"`),
  whose prefill pool asks for more `nvidia.com/gpu` than the node has, so its pods cannot be
  scheduled; it holds no GPU.
- The operator runs out of cluster (`OperatorProcess`), limited to this test's namespace, with
  short autoscaler time constants (10 s rate window, 10 s load half-life); the services decide
  every 5 s with a 10 s scale-down window, and read a small capacity profile from a ConfigMap
  (one prefill replica serves ~35 prompt tokens/s, one decode replica ~33 output tokens/s), so
  a modest CPU load needs several replicas. (The operator's RBAC for the autoscaler is checked
  by e2e/test_operator_rbac.py.)

Phases, in order: prompt-heavy load raises prefill (not decode) and the limited service reports
ScalingLimited/PendingPods without adding; the load stops and prefill is lowered after the
window; long outputs raise decode (not prefill).
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai import OpenAI
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
from prometheus_server import PrometheusServer, free_port, install

from splitserve.api import metrics as names
from splitserve.local.spec import parse_spec
from splitserve.local.stack import LocalStack
from splitserve.operator.kube import Kube, load_config

pytestmark = pytest.mark.cluster

SERVICE, LIMITED = "as", "as-limited"
SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
PROFILE = {
    "format": "splitserve.io/capacity-profile/v1", "model": "tiny", "device": "cpu",
    "command": "hand-made for the autoscaler cluster test", "startupSeconds": 5.0,
    "maxContext": 1024,
    "prefill": {"overheadSeconds": 0.01, "secondsPerToken": 0.02, "referenceTokens": 16},
    "decode": {"stepSecondsBase": 0.2, "stepSecondsPerSequence": 0.001, "contextTokens": 64,
               "maxSequences": 8, "kvBlocks": 512, "blockSize": 16},
}
PROMPT_TOKENS, SHORT_THRESHOLD = 150, 32


@dataclass
class Env:
    kube: Kube
    kubeconfig: str
    namespace: str
    operator: OperatorProcess
    metrics_url: str
    router_url: str
    prometheus: PrometheusServer
    docs: list[dict[str, Any]]  # the profile ConfigMap and both SplitServices


def apply_services(env: Env) -> bool:
    """Server-side applies `env.docs`; False after re-installing this tree's CRDs when the
    cluster's are of another version (the cluster is shared with sessions of other versions)."""
    out = kubectl(env.kubeconfig, "apply", "--server-side", "--field-manager=e2e", "-f", "-",
                  stdin=yaml.safe_dump_all(env.docs), check=False)
    if out.returncode != 0 and "field not declared in schema" in out.stderr:
        install_crds(env.kubeconfig)
        return False
    assert out.returncode == 0, out.stderr
    return True


def keep_schema(env: Env) -> None:
    """Re-installs this tree's CRDs and re-applies the services when a session of another
    version installed CRDs without `autoscaling.profileConfigMap` (the API server then drops
    the field from the stored objects)."""
    for name in (SERVICE, LIMITED):
        obj = env.kube.get("SplitService", env.namespace, name) or {}
        if not obj.get("spec", {}).get("autoscaling", {}).get("profileConfigMap"):
            install_crds(env.kubeconfig)
            wait_for("the SplitServices re-applied", lambda: apply_services(env), timeout=60)
            return


def containerd_address() -> str:
    state = os.environ.get("SS_STATE", "/var/lib/splitserve-cluster")
    return os.environ.get("SS_CONTAINERD_SOCK", f"{state}/containerd/containerd.sock")


def local_spec(namespace: str) -> dict[str, Any]:
    engine = {"maxBatchTokens": 512, "maxRunningSeqs": 32, "kvCacheBlocks": 256}
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": SERVICE, "namespace": namespace},
            "spec": {"model": {"name": "tiny", "dtype": "float32", "maxContext": 1024},
                     "prefill": {"replicas": 1, "drainSeconds": 2, "engine": engine},
                     "decode": {"replicas": 1, "drainSeconds": 2, "engine": engine},
                     "router": {"shortPromptThreshold": SHORT_THRESHOLD, "maxRetries": 2}}}


def cluster_spec(namespace: str, name: str, model_dir: Path, prometheus_url: str,
                 prefill_gpus: int = 0) -> dict[str, Any]:
    def pool(gpus: int) -> dict[str, Any]:
        return {"replicas": 1, "minReplicas": 1, "maxReplicas": 3, "drainSeconds": 1,
                "resources": {"gpus": gpus, **copy.deepcopy(SMALL)}}

    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"name": "tiny", "source": {"hostPath": str(model_dir)}},
                     "image": STANDIN_IMAGE, "imagePullPolicy": "Never",
                     "prefill": pool(prefill_gpus), "decode": pool(0),
                     "router": {"replicas": 1, "resources": copy.deepcopy(SMALL)},
                     "autoscaling": {"enabled": True, "prometheusUrl": prometheus_url,
                                     "ttftTargetMs": 2000, "tpotTargetMs": 500,
                                     "percentile": 90, "intervalSeconds": 5,
                                     "scaleDownStabilizationSeconds": 10,
                                     "profileConfigMap": "as-profile"}}}


def scrape_jobs(targets: list[str]) -> list[dict[str, object]]:
    relabel = {"source_labels": ["service"], "regex": SERVICE, "target_label": "service",
               "replacement": LIMITED, "action": "replace"}
    return [{"job_name": "as", "honor_labels": True, "static_configs": [{"targets": targets}]},
            {"job_name": "as-limited", "honor_labels": True,
             "static_configs": [{"targets": targets}], "metric_relabel_configs": [relabel]}]


@pytest.fixture(scope="module")
def env(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    kubeconfig = str(cluster.kubeconfig)
    work = tmp_path_factory.mktemp("autoscaler")
    install_crds(kubeconfig)
    if not cluster.images_preloaded:
        import_standin(build_standin_archive(work / "standin.tar"), containerd_address())
    namespace = f"e2e-as-{uuid.uuid4().hex[:6]}"
    kube = Kube(load_config(kubeconfig))
    create_namespace(kubeconfig, namespace)
    stack = LocalStack(parse_spec(local_spec(namespace)), router_port=0, log_dir=work / "stack",
                       ready_timeout_s=180)
    prometheus: PrometheusServer | None = None
    operator: OperatorProcess | None = None
    try:
        stack.start()
        children = [c for _, c in stack.workers] + [stack.router]
        targets = [c.ready_fields["http"] for c in children if c is not None]
        prometheus = PrometheusServer(install(), work, [], jobs=scrape_jobs(targets))
        metrics_port = free_port()
        operator = OperatorProcess(kubeconfig, work / "operator.log", (
            "--namespace", namespace, "--metrics-port", str(metrics_port),
            "--autoscaler-rate-window", "10s", "--autoscaler-half-life", "10"))
        operator.start()
        model_dir = work / "model"
        model_dir.mkdir()
        (model_dir / "config.json").write_text('{"model_type": "llama"}\n')
        work.chmod(0o755)
        model_dir.chmod(0o755)
        profile = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "as-profile", "namespace": namespace},
                   "data": {"profile.json": json.dumps(PROFILE)}}
        docs = [profile, cluster_spec(namespace, SERVICE, model_dir, prometheus.url),
                cluster_spec(namespace, LIMITED, model_dir, prometheus.url, prefill_gpus=5)]

        env = Env(kube, kubeconfig, namespace, operator, f"http://127.0.0.1:{metrics_port}",
                  stack.url, prometheus, docs)
        wait_for("the SplitServices applied", lambda: apply_services(env), timeout=60)
        yield env
    finally:
        if operator is not None:
            operator.stop()
        if prometheus is not None:
            prometheus.stop()
        stack.stop()
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)
        kube.close()


class Load:
    """Requests through the router at `rate` per second until stopped (open loop: the CPU the
    load takes is bounded). Every request must succeed."""

    def __init__(self, url: str, prompt_tokens: int, max_tokens: int, rate: float) -> None:
        self.client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                             timeout=60)
        self.prompt_tokens, self.max_tokens, self.rate = prompt_tokens, max_tokens, rate
        self.stopped = threading.Event()
        self.done = 0
        self.errors: list[str] = []
        self.pool = ThreadPoolExecutor(8)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def one(self, i: int) -> None:
        prompt = [(13 * i + j) % 200 + 3 for j in range(self.prompt_tokens)]
        try:
            out = self.client.completions.create(
                model="tiny", prompt=prompt, max_tokens=self.max_tokens, temperature=0,
                extra_body={"ignore_eos": True})
            assert out.usage is not None and out.usage.completion_tokens == self.max_tokens
            self.done += 1
        except Exception as exc:  # every failure is reported by the test
            self.errors.append(repr(exc))

    def _run(self) -> None:
        i, start = 0, time.monotonic()
        while not self.stopped.is_set():
            self.pool.submit(self.one, i)
            i += 1
            # pacing of an open-loop load generator, not a wait for a state
            self.stopped.wait(max(0.0, start + i / self.rate - time.monotonic()))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join()
        self.pool.shutdown(wait=True)


def replicas(env: Env, service: str, role: str) -> int:
    pool = env.kube.get("SplitPool", env.namespace, f"{service}-{role}")
    assert pool is not None, f"SplitPool {service}-{role} missing"
    return int(pool["spec"]["replicas"])


def service_obj(env: Env, name: str) -> dict[str, Any]:
    obj = env.kube.get("SplitService", env.namespace, name)
    assert obj is not None
    return obj


def watch(env: Env, what: str, probe: Callable[[], Any], timeout: float,
          invariant: Callable[[], None] = lambda: None) -> Any:
    """`wait_for` that also checks the operator is alive and an invariant on every poll."""
    def checked() -> Any:
        assert env.operator.alive(), env.operator.log()
        keep_schema(env)
        invariant()
        return probe()

    try:
        return wait_for(what, checked, timeout=timeout, interval=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnosis(env)}") from None


def diagnosis(env: Env) -> str:
    """What the autoscaler saw and did, for a failure message."""
    lines = []
    for name in (SERVICE, LIMITED):
        svc = env.kube.get("SplitService", env.namespace, name) or {}
        status = svc.get("status", {})
        lines.append(f"{name} conditions: {status.get('conditions')}")
        lines.append(f"{name} decisions: {status.get('lastScalingDecisions')}")
    try:
        with urllib.request.urlopen(env.metrics_url + "/metrics", timeout=5) as resp:
            lines += [line for line in resp.read().decode().splitlines()
                      if line.startswith(names.AUTOSCALER_INPUT.name) and f'service="{SERVICE}"'
                      in line]
    except OSError as exc:
        lines.append(f"operator metrics: {exc}")
    return "\n".join(lines) + f"\noperator log:\n{env.operator.log()}"


def limited_holds(env: Env) -> None:
    assert replicas(env, LIMITED, "prefill") == 1, "the limited pool was scaled up"


def operator_metric(env: Env, metric: str, **labels: str) -> float | None:
    with urllib.request.urlopen(env.metrics_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(metric + "{") and all(f'{k}="{v}"' in line for k, v in
                                                   labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_prompt_heavy_load_raises_prefill_and_a_pool_without_gpus_is_limited(env: Env) -> None:
    def both_active() -> bool:
        return all(condition(service_obj(env, n), "ScalingActive").get("status") == "True"
                   for n in (SERVICE, LIMITED))

    # the autoscaler runs on both services and sees the idle workers' series
    watch(env, "ScalingActive=True on both services", both_active, 120)
    decode_before = replicas(env, SERVICE, "decode")
    with Load(env.router_url, PROMPT_TOKENS, 1, rate=2.0) as load:
        watch(env, "prefill raised", lambda: replicas(env, SERVICE, "prefill") > 1, 90,
              lambda: limited_holds(env))

        def limited() -> dict[str, Any] | None:
            cond = condition(service_obj(env, LIMITED), "ScalingLimited")
            return cond if cond.get("reason") == "PendingPods" else None

        cond = watch(env, "ScalingLimited/PendingPods on the limited service", limited, 60,
                     lambda: limited_holds(env))
    assert not load.errors, load.errors[:3]
    assert load.done > 0
    assert cond["status"] == "True" and "nvidia.com/gpu" in cond["message"], cond
    assert replicas(env, SERVICE, "decode") == decode_before  # prompt-heavy: decode unchanged
    svc = service_obj(env, SERVICE)
    ups = [d for d in svc["status"]["lastScalingDecisions"] if d["pool"] == "prefill"]
    assert ups and ups[-1]["toReplicas"] > ups[-1]["fromReplicas"]
    assert ups[-1]["inputs"]["promptTokensPerSecond"] > 0
    assert ups[-1]["inputs"]["capacityPerReplica"] > 0
    events = env.kube.list("Event", env.namespace, field_selector=(
        f"involvedObject.kind=SplitService,involvedObject.name={SERVICE},reason=ScaledUp"))
    assert any(e["message"].startswith("prefill 1 -> ") for e in events), events
    lim = service_obj(env, LIMITED)
    assert not [d for d in lim["status"].get("lastScalingDecisions", [])
                if d["pool"] == "prefill"]
    wanted = operator_metric(env, names.AUTOSCALER_INPUT.name, service=LIMITED, pool="prefill",
                             input="unschedulable")
    assert wanted == 1.0
    desired = operator_metric(env, names.AUTOSCALER_DESIRED_REPLICAS.name, service=SERVICE,
                              pool="prefill")
    assert desired is not None and desired > 1


def test_prefill_is_lowered_after_the_load_stops(env: Env) -> None:
    peak = replicas(env, SERVICE, "prefill")
    assert peak > 1, "the previous test raised prefill"
    watch(env, "prefill lowered", lambda: replicas(env, SERVICE, "prefill") < peak, 150,
          lambda: limited_holds(env))
    downs = [d for d in service_obj(env, SERVICE)["status"]["lastScalingDecisions"]
             if d["pool"] == "prefill" and d["toReplicas"] < d["fromReplicas"]]
    assert downs and downs[-1]["fromReplicas"] == peak
    events = env.kube.list("Event", env.namespace, field_selector=(
        f"involvedObject.kind=SplitService,involvedObject.name={SERVICE},reason=ScaledDown"))
    assert events


def test_long_outputs_raise_decode_not_prefill(env: Env) -> None:
    decode_before = replicas(env, SERVICE, "decode")
    prefill_before = replicas(env, SERVICE, "prefill")

    def prefill_not_raised() -> None:
        assert replicas(env, SERVICE, "prefill") <= prefill_before, "prefill raised"

    with Load(env.router_url, 8, 64, rate=2.0) as load:
        watch(env, "decode raised", lambda: replicas(env, SERVICE, "decode") > decode_before,
              90, prefill_not_raised)
    assert not load.errors, load.errors[:3]
    ups = [d for d in service_obj(env, SERVICE)["status"]["lastScalingDecisions"]
           if d["pool"] == "decode"]
    assert ups and ups[-1]["inputs"]["outputTokensPerSecond"] > 0

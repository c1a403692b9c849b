"""Every panel query of every shipped Grafana dashboard, run against a real Prometheus that
scraped real processes under a known load (see dashboard_load for what runs).

A query fails the test when Prometheus refuses it, when it returns nothing (or NaN), when a
series lacks a label its legend shows, or when its value disagrees with the load that was sent.
Counters are first created by a priming round that Prometheus scrapes before the counted round
(a counter's first scraped value cannot count as an increase), so the counted round's numbers
are what rates over the window must add up to.

The operator runs out of cluster against the real cluster, with the built-in autoscaler enabled
on the SplitService (reading this Prometheus); the SplitService's pods are the stand-in image,
the serving processes are local (they carry the SplitService's namespace and name as labels).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dashboard_load import (
    DECODE_BLOCKS,
    LONG_PROMPT,
    MAX_TOKENS,
    PREFILL_BLOCKS,
    SERVICE,
    SHORT_PROMPT,
    SHORT_THRESHOLD,
    Load,
    send,
)
from operator_lib import (
    STANDIN_IMAGE,
    OperatorProcess,
    build_standin_archive,
    import_standin,
    install_crds,
    kubectl,
)
from prometheus_server import PrometheusServer, free_port, install, wait_for

import splitserve.autoscaler as autoscaler_pkg
from splitserve.local.spec import parse_spec
from splitserve.local.stack import LocalStack
from splitserve.observability.dashboards import all_dashboards
from splitserve.operator.kube import Kube, load_config

pytestmark = pytest.mark.cluster

SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
PROFILE = Path(autoscaler_pkg.__file__).parent / "profiles" / "small-cpu.json"
PROFILE_MAP = "dash-profile"
PRIME = Load(disaggregated=1, local=1, unknown_model=1, refused_pushes=1, expired=1)
COUNTED = Load(disaggregated=6, local=3, unknown_model=2, refused_pushes=1, expired=1)
TOLERANCE = 0.2  # rates over a window: Prometheus extrapolates to the window's edges
MIN_WINDOW_S = 20  # scrapes are every second


def containerd_address() -> str:
    state = os.environ.get("SS_STATE", "/var/lib/splitserve-cluster")
    return os.environ.get("SS_CONTAINERD_SOCK", f"{state}/containerd/containerd.sock")


@dataclass
class World:
    kube: Kube
    kubeconfig: str
    namespace: str
    stack: LocalStack
    operator: OperatorProcess
    prom: PrometheusServer

    def http(self, role: str) -> str:
        return self.stack.worker_children(role)[0].ready_fields["http"]

    def grpc(self, role: str) -> str:
        return self.stack.worker_children(role)[0].ready_fields["grpc"]


def slow_profile(namespace: str) -> dict[str, Any]:
    """The built-in profile with a slow prefill (about one prompt token per second per
    replica), so the CPU-sized load reads as a burst to the operator's autoscaler."""
    data = json.loads(PROFILE.read_text())
    data["prefill"].update(overheadSeconds=0.01, secondsPerToken=1.0, referenceTokens=16)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": PROFILE_MAP, "namespace": namespace},
            "data": {"profile.json": json.dumps(data)}}


def service_manifest(namespace: str, model_dir: Path, prometheus_url: str, prefill_max: int
                     ) -> dict[str, Any]:
    pool = {"replicas": 1, "minReplicas": 1, "maxReplicas": prefill_max,
            "resources": {"gpus": 0, **SMALL}, "drainSeconds": 1}
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": SERVICE, "namespace": namespace},
            "spec": {"model": {"name": "tiny", "source": {"hostPath": str(model_dir)}},
                     "image": STANDIN_IMAGE, "imagePullPolicy": "Never",
                     "prefill": pool, "decode": {**pool, "maxReplicas": 2},
                     "router": {"replicas": 1, "resources": SMALL},
                     "autoscaling": {"enabled": True, "prometheusUrl": prometheus_url,
                                     "percentile": 90, "intervalSeconds": 5,
                                     "profileConfigMap": PROFILE_MAP}}}


def local_spec(namespace: str) -> dict[str, Any]:
    def engine(blocks: int) -> dict[str, Any]:
        return {"replicas": 1, "drainSeconds": 2,
                "engine": {"maxBatchTokens": 512, "maxRunningSeqs": 16, "kvCacheBlocks": blocks}}

    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": SERVICE, "namespace": namespace},
            "spec": {"model": {"name": "tiny", "dtype": "float32", "maxContext": 512},
                     "prefill": engine(PREFILL_BLOCKS), "decode": engine(DECODE_BLOCKS),
                     "router": {"shortPromptThreshold": SHORT_THRESHOLD, "maxRetries": 1}}}


def squat_router_pdb(kubeconfig: str, kube: Kube, namespace: str) -> None:
    """Takes the name of the router's PodDisruptionBudget with a PDB controlled by another
    object, so every reconcile of the service fails on that child (not owned) while the rest
    converges: the operator's error series."""
    apply(kubeconfig, {"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "squatter", "namespace": namespace}})
    owner = kube.get("ConfigMap", namespace, "squatter")
    assert owner is not None
    apply(kubeconfig, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{SERVICE}-router", "namespace": namespace,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                                          "name": "squatter", "uid": owner["metadata"]["uid"],
                                          "controller": True}]},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"squatter": "yes"}}}})


def apply(kubeconfig: str, obj: dict[str, Any]) -> None:
    kubectl(kubeconfig, "apply", "--server-side", "--field-manager=e2e", "-f", "-",
            stdin=yaml.safe_dump(obj))


@pytest.fixture(scope="module")
def world(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    kubeconfig = str(cluster.kubeconfig)
    install_crds(kubeconfig)
    if not cluster.images_preloaded:
        import_standin(build_standin_archive(tmp_path_factory.mktemp("image") / "standin.tar"),
                       containerd_address())
    model_dir = tmp_path_factory.mktemp("model")
    (model_dir / "config.json").write_text('{"model_type": "llama"}\n')
    model_dir.chmod(0o755)
    namespace = f"e2e-dash-{uuid.uuid4().hex[:6]}"
    kubectl(kubeconfig, "create", "namespace", namespace)
    kube = Kube(load_config(kubeconfig))
    with contextlib.ExitStack() as stack:
        stack.callback(kube.close)
        stack.callback(kubectl, kubeconfig, "delete", "namespace", namespace, "--wait=false",
                       check=False)
        squat_router_pdb(kubeconfig, kube, namespace)
        op_port = free_port()
        local = LocalStack(parse_spec(local_spec(namespace)), router_port=0,
                           log_dir=tmp_path_factory.mktemp("stack"), ready_timeout_s=300)
        local.start()
        stack.callback(local.stop)
        targets = [local.url.removeprefix("http://"),
                   *(c.ready_fields["http"] for _, c in local.workers), f"127.0.0.1:{op_port}"]
        prom = PrometheusServer(install(), tmp_path_factory.mktemp("prometheus"), targets)
        stack.callback(prom.stop)
        apply(kubeconfig, slow_profile(namespace))
        apply(kubeconfig, service_manifest(namespace, model_dir, prom.url, prefill_max=1))
        operator = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("op") / "operator.log",
                                   ("--namespace", namespace, "--metrics-port", str(op_port),
                                    "--resync-seconds", "3"))
        operator.start()
        stack.callback(operator.stop)
        stack.callback(delete_service, kubeconfig, kube, namespace)  # while the operator runs
        yield World(kube, kubeconfig, namespace, local, operator, prom)


def delete_service(kubeconfig: str, kube: Kube, namespace: str) -> None:
    """Deletes the SplitService and waits until its finalizers are released (by the operator,
    still running), so the namespace can go."""
    kubectl(kubeconfig, "delete", "splitservice", SERVICE, "-n", namespace, "--wait=false",
            check=False)
    wait_for(lambda: kube.get("SplitService", namespace, SERVICE) is None and not
             kube.list("SplitPool", namespace), 60, "the SplitService and its pools to go")


# ---- Prometheus ---------------------------------------------------------------------------------

def api(prom: PrometheusServer, path: str, **params: str) -> Any:
    url = f"{prom.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
    if body.get("status") != "success":
        raise AssertionError(f"Prometheus refused {params}: {body.get('error')}")
    return body["data"]


def instant(prom: PrometheusServer, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    data = api(prom, "query", **params)
    assert data["resultType"] == "vector", (expr, data["resultType"])
    return list(data["result"])


def present(prom: PrometheusServer, expr: str) -> list[dict[str, Any]] | None:
    result = instant(prom, expr)
    return result if result and all(math.isfinite(float(s["value"][1])) for s in result) \
        else None


def substitute(expr: str, namespace: str, window_s: int) -> str:
    return (expr.replace("$namespace", namespace).replace("$service", SERVICE)
            .replace("$__rate_interval", f"{window_s}s"))


def panel_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard file, panel title, legend, expr) of every target."""
    return [(f, p.title, t.legend, t.expr) for f, d in all_dashboards().items()
            for p in d.panels for t in p.targets]


# ---- the phases ---------------------------------------------------------------------------------

def sel(world: World, **labels: str) -> str:
    base = {"namespace": world.namespace, "service": SERVICE, **labels}
    return "{" + ",".join(f'{k}="{v}"' for k, v in base.items()) + "}"


def primed_series(world: World) -> list[str]:
    """Every counter series the counted round increments, as exact selectors."""
    s = lambda **kw: sel(world, **kw)  # noqa: E731
    return [
        f"splitserve_router_requests_total{s(code='200')}",
        f"splitserve_router_requests_total{s(code='404')}",
        f"splitserve_router_errors_total{s()}",
        f"splitserve_router_local_prefill_total{s()}",
        f"splitserve_prompt_tokens_total{s(role='prefill')}",
        f"splitserve_prompt_tokens_total{s(role='decode')}",
        f"splitserve_generation_tokens_total{s(role='prefill')}",
        f"splitserve_generation_tokens_total{s(role='decode')}",
        f"splitserve_engine_steps_total{s(role='prefill', phase='prefill')}",
        f"splitserve_engine_steps_total{s(role='decode', phase='decode')}",
        f"splitserve_kv_transfer_bytes_total{s(direction='sent')}",
        f"splitserve_kv_transfer_bytes_total{s(direction='received')}",
        f"splitserve_kv_transfer_seconds_count{s()}",
        f"splitserve_kv_transfer_failures_total{s(role='prefill')}",
        f"splitserve_kv_transfer_failures_total{s(role='decode')}",
        f"splitserve_kv_reservation_timeouts_total{s()}",
        f"splitserve_time_to_first_token_seconds_count{s(role='router')}",
    ]


def scraped_after(world: World, series: list[str], t: float) -> bool:
    """Prometheus holds a sample of every series taken after `t`."""
    for expr in series:
        result = instant(world.prom, f"timestamp({expr})")
        if not result or min(float(r["value"][1]) for r in result) <= t:
            return False
    return True


def wait(world: World) -> Callable[[str, Callable[[], Any]], Any]:
    return lambda what, check: wait_for(check, 30, what, every=0.3)


def send_round(world: World, load: Load, seed: int) -> None:
    send(load, world.stack.url, world.grpc("prefill"), world.grpc("decode"), seed, wait(world))


def pool(world: World, role: str) -> dict[str, Any]:
    obj = world.kube.get("SplitPool", world.namespace, f"{SERVICE}-{role}")
    assert obj is not None, f"SplitPool {SERVICE}-{role} missing"
    return obj


def run_autoscaler(world: World) -> None:
    """The operator's autoscaler steps every 5 s and holds the prefill pool at its
    maxReplicas (1) whatever the load; once Prometheus has scraped its decision counters (at 0),
    the user raises maxReplicas to 2 and the operator scales the prefill pool up: the one
    decision the panel must show."""
    decisions = (f"splitserve_autoscaler_decisions_total"
                 f"{sel(world, pool='prefill', direction='up')}")
    since = time.time()
    wait_for(lambda: scraped_after(world, [decisions], since), 60,
             "the operator's autoscaler counters to be scraped")
    assert int(pool(world, "prefill")["spec"]["replicas"]) == 1
    kubectl(world.kubeconfig, "patch", "splitservice", SERVICE, "-n", world.namespace,
            "--type=merge", "-p", '{"spec":{"prefill":{"maxReplicas":2}}}')
    wait_for(lambda: int(pool(world, "prefill")["spec"]["replicas"]) == 2, 60,
             "the operator's autoscaler to scale prefill to 2")


# ---- what each panel must show ----------------------------------------------------------------

Series = list[dict[str, Any]]


def values(result: Series, *labels: str) -> dict[tuple[str, ...], float]:
    """Value by the given labels (by every label when none are given)."""
    def key(metric: dict[str, str]) -> tuple[str, ...]:
        if not labels:
            return tuple(f"{k}={v}" for k, v in sorted(metric.items()))
        return tuple(metric.get(k, "") for k in labels)

    out = {key(s["metric"]): float(s["value"][1]) for s in result}
    assert len(out) == len(result), f"series not told apart by {labels}: {result}"
    return out


def near(got: float, want: float, what: str, slack: float = 0.5) -> None:
    """Within the rate window's extrapolation of `want` (counts: plus half an event)."""
    assert abs(got - want) <= TOLERANCE * want + slack, f"{what}: {got:.3f}, expected ~{want}"


@dataclass
class Expect:
    world: World
    window: int  # seconds the rate window spans: counts = rate * window
    load: Load

    def count(self, result: Series, *labels: str) -> dict[tuple[str, ...], float]:
        return {k: v * self.window for k, v in values(result, *labels).items()}

    def total(self, result: Series) -> float:
        return sum(self.count(result).values())


def ordered_latency(result: Series, legend: str, e: Expect) -> None:
    for v in values(result).values():
        assert 0 < v < 60, f"{legend}: {v}"


def check(title: str, legend: str, result: Series, e: Expect, at: float) -> None:
    """The panel's value against the load; panels not named here need only a finite answer."""
    L, w = e.load, e.world
    sent_tokens = L.disaggregated * (MAX_TOKENS - 1) + L.local * MAX_TOKENS
    if title == "Requests by status code":
        got = e.count(result, "code")
        near(got.get(("200",), 0), L.ok, "200s")
        near(got.get(("404",), 0), L.unknown_model, "404s")
        assert set(got) == {("200",), ("404",)}, got
    elif title == "Errors by reason":
        near(e.total(result), L.unknown_model, "errors")
    elif title == "Error ratio":
        near(values(result)[()], L.unknown_model / L.requests, "error ratio", slack=0.0)
    elif title in ("In-flight requests", "Running sequences", "Queue depth",
                   "Queued prompt tokens", "Reservations held"):
        assert all(v == 0 for v in values(result).values()), (title, result)
    elif title in ("Time to first token", "Time per output token", "Request duration",
                   "Transfer duration", "Reconcile duration"):
        ordered_latency(result, f"{title} {legend}", e)
    elif title.startswith("Requests within"):
        assert 0 <= values(result)[()] <= 1
    elif title == "Workers known to the router":
        assert values(result, "pool") == {("prefill",): 1, ("decode",): 1}
    elif title == "Prefilled on decode":
        near(e.total(result), L.local, "prefilled on decode")
    elif title == "Replicas: desired and ready":
        got = values(result, "role")
        if "desired" in legend:
            assert got == {(r,): float(pool(w, r)["spec"]["replicas"]) for r in
                           ("prefill", "decode")}, got
        else:
            assert all(0 <= v <= 2 for v in got.values()), got
    elif title == "KV cache usage":
        assert all(0 <= v <= 1 for v in values(result).values())
    elif title == "KV cache blocks":
        assert values(result, "role") == {("prefill",): PREFILL_BLOCKS,
                                          ("decode",): DECODE_BLOCKS}
    elif title == "Prompt tokens per second":
        got = e.count(result, "role")
        near(got[("prefill",)], (L.disaggregated + L.refused_pushes) * LONG_PROMPT,
             "prompt tokens prefilled remotely")
        near(got[("decode",)], L.local * SHORT_PROMPT, "prompt tokens prefilled on decode")
    elif title == "Output tokens per second":
        got = e.count(result, "role")
        near(got[("prefill",)], L.disaggregated + L.refused_pushes, "first tokens on prefill")
        near(got[("decode",)], sent_tokens, "tokens decoded")
    elif title == "Engine steps per second":
        got = e.count(result, "role", "phase")
        # every request decodes MAX_TOKENS - 1 tokens after its first, batched or not
        decode_steps = sum(v for (role, phase), v in got.items()
                           if role == "decode" and phase in ("decode", "mixed"))
        assert decode_steps * (1 + TOLERANCE) >= MAX_TOKENS - 1, got
        assert decode_steps <= (sent_tokens + L.local) * (1 + TOLERANCE), got
        assert 0 < got.get(("prefill", "prefill"), 0) <= (L.disaggregated + L.refused_pushes) * (
            1 + TOLERANCE), got
    elif title == "Throughput":
        got = e.count(result, "direction")
        assert got[("sent",)] > 0 and got[("received",)] > 0, got
        near(got[("received",)], got[("sent",)], "bytes received vs sent")
    elif title == "Transfers per second":
        near(e.total(result), L.disaggregated, "transfers")
    elif title == "Bytes per transfer":
        def total(expr: str) -> float:
            return float(instant(w.prom, f"sum(increase({expr}[{e.window}s]))", at)[0]["value"][1])

        sent = total(f"splitserve_kv_transfer_bytes_total{sel(w, direction='sent')}")
        transfers = total(f"splitserve_kv_transfer_seconds_count{sel(w)}")
        near(values(result)[()], sent / transfers, "bytes per transfer", slack=0.0)
        near(transfers, L.disaggregated, "transfers")
    elif title == "Failures by reason":
        got = e.count(result, "role", "reason")
        assert set(got) == {("prefill", "retryable"), ("decode", "reservation_failed")}, got
        near(got[("prefill", "retryable")], L.refused_pushes, "failed pushes")
        near(got[("decode", "reservation_failed")], L.expired, "failed reservations")
    elif title == "Reservation timeouts":
        near(e.count(result, "role")[("decode",)], L.expired, "reservation timeouts")
    elif title == "Desired replicas":
        if "desired" in legend:
            got = values(result, "pool")
            assert got[("prefill",)] == float(pool(w, "prefill")["spec"]["replicas"]) == 2, got
        else:
            assert all(0 <= v <= 2 for v in values(result, "role").values()), result
    elif title == "Scaling decisions":
        got = values(result, "pool", "direction", "reason")
        near(got[("prefill", "up", "ScaleUp")], 1, "prefill scale-ups")
    elif title == "Scaling limited":
        assert set(values(result).values()) <= {0.0, 1.0}
    elif title in ("Observed token rates", "Observed latency", "Capacity per replica"):
        assert all(v > 0 for v in values(result).values()), (title, result)
        if title == "Observed token rates":
            assert values(result, "pool", "input")[("prefill", "promptTokensPerSecond")] > 0
    elif title == "Reconciles":
        got = values(result, "kind", "result")
        assert got[("SplitService", "error")] > 0 and got[("SplitPool", "ok")] > 0, got
    elif title == "Reconcile errors":
        got = values(result, "kind", "reason")
        assert set(got) == {("SplitService", "ApiError")}, got
    elif title == "API writes":
        assert sum(values(result).values()) > 0, "no writes while the autoscaler scaled a pool"


def test_every_panel_query_returns_the_load_that_was_sent(world: World) -> None:
    started = time.monotonic()
    wait_for(lambda: world.prom.targets_up() == 4, 60, "all four targets scraped")
    marks = [("targets up", time.monotonic())]
    send_round(world, PRIME, seed=0)
    primed = primed_series(world)
    wait_for(lambda: all(present(world.prom, s) for s in primed), 60, "the primed counters")
    t_primed = time.time()
    wait_for(lambda: scraped_after(world, primed, t_primed), 30, "a scrape after priming")
    marks.append(("primed", time.monotonic()))
    send_round(world, COUNTED, seed=100)
    marks.append(("counted load", time.monotonic()))
    run_autoscaler(world)
    marks.append(("autoscaler", time.monotonic()))

    queries = panel_queries()
    window = lambda: int(time.time() - t_primed) + 1  # noqa: E731

    missing: list[str] = []

    def everything_in() -> bool:
        # the counted round scraped, the operator's view of the scaled pool, every panel answered
        w = window()
        missing[:] = [f"{b} / {t} [{leg}]" for b, t, leg, q in queries
                      if not present(world.prom, substitute(q, world.namespace, w))]
        if not scraped_after(world, primed, time.time() - 1.5):
            missing.append("a recent scrape of the counters")
        desired = present(world.prom, "splitserve_pool_desired_replicas"
                                      + sel(world, role="prefill"))
        if not desired or float(desired[0]["value"][1]) != 2:
            missing.append(f"the operator's desired prefill replicas at 2 (got {desired})")
        return not missing

    try:
        wait_for(everything_in, 60, "every panel to have data", every=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; still missing: {missing}") from None
    marks.append(("panels have data", time.monotonic()))
    # a rate's extrapolation to the window's edges is up to a scrape interval: keep it small
    at = max(time.time(), t_primed + MIN_WINDOW_S)
    wait_for(lambda: scraped_after(world, primed, at), MIN_WINDOW_S + 30,
             "samples past the end of the rate window")
    marks.append(("window closed", time.monotonic()))
    e = Expect(world, int(at - t_primed) + 1, COUNTED)
    failures = []
    for board, title, legend, expr in queries:
        promql = substitute(expr, world.namespace, e.window)
        try:
            result = instant(world.prom, promql, at)
            assert result, "no series"
            for s in result:
                assert math.isfinite(float(s["value"][1])), f"non-finite value in {s}"
                for label in re.findall(r"\{\{(\w+)\}\}", legend):
                    assert s["metric"].get(label), f"series without {label}: {s['metric']}"
            check(title, legend, result, e, at)
        except AssertionError as exc:
            failures.append(f"{board} / {title} [{legend}]: {exc}\n    {promql}")
    assert not failures, "\n".join(failures)
    variables_list_the_service(world)
    steps = ", ".join(f"{name} +{t - started:.0f}s" for name, t in marks)
    print(f"{len(queries)} panel queries checked over a {e.window}s window; {steps}")


def variables_list_the_service(world: World) -> None:
    for name, board in all_dashboards().items():
        for var in board.variables()[1:]:
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", var["definition"])
            assert match, var["definition"]
            series = match.group(1).replace("$namespace", world.namespace)

            def listed(series: str = series, label: str = match.group(2)) -> bool:
                got = api(world.prom, f"label/{label}/values", **{"match[]": series})
                want = world.namespace if label == "namespace" else SERVICE
                return want in got

            assert listed(), f"{name}: {var['definition']} does not list the service"


def test_promtool_accepts_every_query(tmp_path: Path) -> None:
    promtool = install().with_name("promtool")
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query:{i}", "expr": substitute(q, "ns", 60)}
        for i, (_, _, _, q) in enumerate(panel_queries())]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(panel_queries())} rules found" in out.stdout

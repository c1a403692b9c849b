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
5. The model version changes (revision 1 of the tiny checkpoint: same tokenizer, other weights)
   under load: both pools and the router roll; no request fails, and every answer equals the
   colocated answer of the checkpoint its `system_fingerprint` names, so none mixed versions.
6. The built-in autoscaler is turned on, reading a real Prometheus on this host (at the node's
   address, which the operator pod reaches) that scrapes every pod of the service (its target
   list kept current from the API server through file discovery): at light load both pools
   shrink to one worker, prompt-heavy load raises prefill (never decode) and the new worker
   takes prefills, and when that load stops prefill shrinks again; the departing workers drain
   and no request fails throughout.
7. `kubectl delete splitservice` removes every child; `helm uninstall` leaves only the CRDs.

The tests run in order and share the installation; a failed step fails the steps after it.
Request counts and step durations are printed in the terminal report ([suite] lines).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from chart_lib import crds_exist, helm
from dataplane_lib import (
    ensure_image,
    metric_sum,
    reference_answer,
    reference_engine,
    scrape,
    tiny_model_dir,
)
from openai import OpenAI
from operator_lib import create_namespace, install_crds, kubectl, wait_for
from prometheus.prometheus_server import PrometheusServer, install
from suite_lib import (
    GPUS_NEEDED,
    NAME,
    REPLICAS,
    LoadRunner,
    PodTargets,
    Suite,
    apply_service,
    assert_clean,
    autoscaling_patch,
    children,
    install_operator,
    model_paths,
    node_address,
    node_pressure,
    profile_configmap,
    release_objects,
    report,
    wait_free_gpus,
)

from splitserve.api import metrics as names
from splitserve.engine.loader import weights_digest
from splitserve.router.responses import fingerprint

pytestmark = pytest.mark.cluster

PROMPT = "A split service prefills on one pod and decodes on another one. " * 3
HEAVY_PROMPT = "Long prompts keep the prefill pool busy while decode stays idle. " * 9
LOAD_TOKENS = 12
IGNORE_EOS = {"ignore_eos": True}
AUTOSCALER_ARGS = "{--autoscaler-rate-window=10s,--autoscaler-half-life=10}"


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
def reference_r1() -> Any:
    return reference_engine(tiny_model_dir(1))


@pytest.fixture(scope="module")
def client(suite: Suite) -> OpenAI:
    return OpenAI(base_url=suite.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_1_helm_install_runs_the_operator(suite: Suite, cluster: Any) -> None:
    started = time.monotonic()
    install_operator(suite, cluster, "--set", f"operator.extraArgs={AUTOSCALER_ARGS}")
    suite.timings["install"] = time.monotonic() - started


def test_2_apply_brings_the_service_ready(suite: Suite, cluster: Any,
                                          pytestconfig: pytest.Config) -> None:
    wait_free_gpus(suite.kubeconfig, GPUS_NEEDED, 180)
    image = ensure_image(cluster)
    if image.built:
        report(pytestconfig, f"built {image.name} in {image.seconds:.0f}s")
    started = time.monotonic()
    row = apply_service(suite, image.name, tiny_model_dir())
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

    try:
        wait_for(f"the {role} Deployment to restore its pod", restored, 300, 1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{load.snapshot()}\n{suite.diagnose()}") from exc
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
    answers = {fingerprint(weights_digest(tiny_model_dir())) or "": want}
    with LoadRunner(suite.base_url + "/v1", NAME, PROMPT, LOAD_TOKENS, answers, threads=3,
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
    assert_clean(counts)
    assert counts.completed >= 12 and errors == 0


def test_5_model_roll_under_load_mixes_no_versions(suite: Suite, reference: Any,
                                                   reference_r1: Any,
                                                   pytestconfig: pytest.Config) -> None:
    started = time.monotonic()
    old, new = tiny_model_dir(), tiny_model_dir(1)
    old_fp, new_fp = (fingerprint(weights_digest(old)) or "", fingerprint(weights_digest(new))
                      or "")
    answers = {old_fp: reference_answer(reference, PROMPT, LOAD_TOKENS)[0],
               new_fp: reference_answer(reference_r1, PROMPT, LOAD_TOKENS)[0]}
    assert answers[old_fp] != answers[new_fp]  # else a mixed answer could pass unseen
    generation = suite.service()["metadata"]["generation"]

    def rolled() -> bool:
        for role, count in (("prefill", REPLICAS), ("decode", REPLICAS), ("router", 1)):
            if any(model_paths(p) != {str(new)} for p in suite.pods(role, terminating=True)):
                return False
            if len(suite.ready_pods(role)) != count:
                return False
        return suite.pool_counts() == {"prefill": REPLICAS, "decode": REPLICAS}

    with LoadRunner(suite.base_url + "/v1", NAME, PROMPT, LOAD_TOKENS, answers, threads=3,
                    timeout=30) as load:
        load.wait_completed(3, 120)
        suite.patch({"spec": {"model": {"source": {"hostPath": str(new)}}}})
        try:
            wait_for("both pools and the router rolled to revision 1", rolled, 600, 1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{load.snapshot()}\n{suite.diagnose()}") from exc
        rolled_after = time.monotonic() - started
        served = load.snapshot().by_version.get(new_fp, 0)
        wait_for("requests answered by revision 1 after the roll",
                 lambda: load.snapshot().by_version.get(new_fp, 0) >= served + 5, 120, 0.5)
    counts = load.snapshot()
    status = suite.service()["status"]
    suite.timings["model roll"] = rolled_after
    report(pytestconfig, f"model roll under load: rolled in {rolled_after:.1f}s; {counts}")
    assert_clean(counts)
    assert counts.by_version.get(old_fp, 0) > 0 and counts.by_version.get(new_fp, 0) > 0
    assert status["observedGeneration"] > generation


def test_6_autoscaler_scales_the_right_pool_and_drains(
        suite: Suite, reference_r1: Any, pytestconfig: pytest.Config,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    started = time.monotonic()
    new_fp = fingerprint(weights_digest(tiny_model_dir(1))) or ""
    light_answers = {new_fp: reference_answer(reference_r1, PROMPT, LOAD_TOKENS)[0]}
    heavy_answers = {new_fp: reference_answer(reference_r1, HEAVY_PROMPT, 2)[0]}
    work = tmp_path_factory.mktemp("suite-prometheus")
    url = suite.base_url + "/v1"
    with PodTargets(suite, work / "pods.json") as targets:
        prometheus = PrometheusServer(install(), work, [], jobs=[targets.job()],
                                      host=node_address(suite.kubeconfig))
        try:
            wait_for("Prometheus scraping the router and the four workers",
                     lambda: prometheus.targets_up() >= 2 * REPLICAS + 1, 120, 1.0)
            suite.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(profile_configmap(
                suite.namespace)))
            with LoadRunner(url, NAME, PROMPT, LOAD_TOKENS, light_answers, threads=1, timeout=30,
                            period=1.5) as light:
                suite.patch(autoscaling_patch(prometheus.url))
                lowered = shrink_to_one(suite, ("prefill", "decode"), light)
                phases = [f"light load: both pools 2 -> 1 in {lowered:.1f}s"]
                with LoadRunner(url, NAME, HEAVY_PROMPT, 2, heavy_answers, threads=3, timeout=30,
                                period=0.2) as heavy:
                    raised, took = raise_prefill(suite, heavy)
                    phases.append(f"prompt-heavy load: prefill 1 -> 2 in {raised:.1f}s, the new "
                                  f"worker took prefills after {took:.1f}s; decode stayed at 1")
                lowered = shrink_to_one(suite, ("prefill",), light)
                phases.append(f"load dropped: prefill 2 -> 1 in {lowered:.1f}s")
        finally:
            prometheus.stop()
    suite.timings["autoscaling"] = time.monotonic() - started
    status = suite.service()["status"]
    for line in phases:
        report(pytestconfig, line)
    report(pytestconfig, f"light load {light.snapshot()}; heavy load {heavy.snapshot()}")
    assert_clean(light.snapshot())
    assert_clean(heavy.snapshot())
    decisions = status["lastScalingDecisions"]
    ups = [d for d in decisions if d["pool"] == "prefill" and d["toReplicas"] > d["fromReplicas"]]
    assert ups and ups[-1]["inputs"]["promptTokensPerSecond"] > 0, decisions
    assert not [d for d in decisions if d["pool"] == "decode" and
                d["toReplicas"] > d["fromReplicas"]], decisions


def shrink_to_one(suite: Suite, roles: tuple[str, ...], load: LoadRunner) -> float:
    """Waits until each pool in `roles` runs one worker and its departed pods are gone."""
    started = time.monotonic()

    def shrunk() -> bool:
        return all(suite.replicas(role) == 1 and len(suite.pods(role, terminating=True)) == 1
                   and len(suite.ready_pods(role)) == 1 for role in roles) and \
            all(suite.pool_counts()[role] == 1 for role in roles)

    try:
        wait_for(f"{' and '.join(roles)} lowered to one worker", shrunk, 300, 1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{load.snapshot()}\n{suite.diagnose()}") from exc
    return time.monotonic() - started


def raise_prefill(suite: Suite, load: LoadRunner) -> tuple[float, float]:
    """Waits until prefill runs a second worker that has pushed KV, checking on every poll
    that decode was not raised; returns the seconds to the raise and to the first push."""
    started = time.monotonic()
    first = {p["metadata"]["name"] for p in suite.ready_pods("prefill")}

    def raised() -> bool:
        assert suite.replicas("decode") == 1, "prompt-heavy load raised decode"
        return suite.replicas("prefill") == REPLICAS

    try:
        wait_for("prefill raised to two workers", raised, 300, 1.0)
        up = time.monotonic() - started

        def new_worker_pushes() -> bool:
            assert suite.replicas("decode") == 1, "prompt-heavy load raised decode"
            pods = [p for p in suite.ready_pods("prefill") if p["metadata"]["name"] not in first]
            return bool(pods) and suite.pool_counts()["prefill"] == REPLICAS and all(
                metric_sum(scrape(f"http://{p['status']['podIP']}:8080/metrics"),
                           names.KV_TRANSFER_BYTES.series, direction="sent") > 0 for p in pods)

        wait_for("the new prefill worker to take prefills", new_worker_pushes, 240, 1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{load.snapshot()}\n{suite.diagnose()}") from exc
    return up, time.monotonic() - started


def test_7_delete_and_uninstall_leave_only_the_crds(suite: Suite) -> None:
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

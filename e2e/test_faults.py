"""Faults under load in the real cluster, one after the other, each measured the same way.

The chart's operator (in the cluster, namespace-scoped) runs a SplitService of two prefill and
two decode workers on the real data-plane image and two router replicas. Three client threads
send requests through the router Service without client-side retries while each fault
happens; for each the terminal report gets a [faults] line with the requests completed,
retried by the router, failed (with their errors), hung (no answer within 30 s) and the time
until the cluster was whole again.

- a prefill worker and then a decode worker killed (SIGKILL, no drain): each pool keeps a
  healthy worker, so every request completes with the colocated answer; none fails or hangs;
- a router replica killed: the requests it held, and new connections the Service still sends
  to it until its endpoint is gone, fail with a connection error (nothing can answer them; a
  client retries them), none hangs, and the other replica carries the rest;
- a prefill worker and then a decode worker cut off by a NetworkPolicy (the service's
  quarantine label): the pod stays Running and Ready (the node's probes pass) but nothing
  reaches it and it reaches nothing. The routers notice through gRPC keepalive, retry what they
  had there and stop offering it; every request completes. The label removed, the worker
  rejoins every router's pool;
- the operator's pod deleted, and the kube-apiserver restarted: the data plane does not
  depend on either, so nothing fails; afterwards the operator and the router's discovery work
  again (a deleted worker is replaced and rejoins the router's pool).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chart_lib import helm
from dataplane_lib import (
    containerd_address,
    ensure_image,
    metric_sum,
    reference_answer,
    reference_engine,
    scrape,
    tiny_model_dir,
)
from operator_lib import create_namespace, install_crds, kubectl, wait_for
from suite_lib import (
    GPUS_NEEDED,
    NAME,
    REPLICAS,
    LoadCounts,
    LoadRunner,
    Suite,
    apply_service,
    assert_clean,
    install_operator,
    node_pressure,
    report,
    wait_free_gpus,
)

from splitserve.api import metrics as names
from splitserve.api.names import LABEL_QUARANTINE
from splitserve.engine.loader import weights_digest
from splitserve.router.responses import fingerprint

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Faults come while requests run, and every one of them is counted. " * 3
LOAD_TOKENS = 12
HANG_S = 30.0
ROUTERS = 2
NETPOL_CHAIN = "SPLITSERVE-NETPOL"  # the node's policy daemon (e2e/cluster/lib/netpol.sh)


@dataclass
class Faults:
    suite: Suite
    answers: dict[str, str]

    def load(self) -> LoadRunner:
        return LoadRunner(self.suite.base_url + "/v1", NAME, PROMPT, LOAD_TOKENS, self.answers,
                          threads=3, timeout=HANG_S)

    def retries(self) -> dict[str, float]:
        """Retries counted by each router pod now Ready."""
        return {url: metric_sum(scrape(url), names.ROUTER_RETRIES.series)
                for url in self.suite.metrics_urls("router")}

    def routers_see(self, role: str, workers: int) -> bool:
        texts = self.suite.metrics("router")
        return len(texts) == ROUTERS and all(
            metric_sum(t, names.ROUTER_WORKERS.series, pool=role) == workers for t in texts)

    def whole(self) -> bool:
        """Every pool and the router at full strength, and every router sees every worker."""
        s = self.suite
        if len(s.ready_pods("router")) != ROUTERS:
            return False
        if any(len(s.ready_pods(role)) != REPLICAS or len(s.pods(role, terminating=True))
               != REPLICAS for role in ("prefill", "decode")):
            return False
        for text in s.metrics("router"):
            for role in ("prefill", "decode"):
                if metric_sum(text, names.ROUTER_WORKERS.series, pool=role) != REPLICAS:
                    return False
        return True


@pytest.fixture(scope="module")
def faults(cluster: Any, pytestconfig: pytest.Config) -> Iterator[Faults]:
    if not cluster.local:
        pytest.fail("the fault tests kill containers on the e2e/cluster node")
    kubeconfig = str(cluster.kubeconfig)
    pressure = node_pressure(kubeconfig)
    if pressure:
        pytest.fail(f"the node cannot take the pods: {'; '.join(pressure)}")
    install_crds(kubeconfig)
    namespace = f"e2e-faults-{uuid.uuid4().hex[:6]}"
    create_namespace(kubeconfig, namespace)
    suite = Suite(kubeconfig, namespace, f"ft{uuid.uuid4().hex[:6]}")
    try:
        install_operator(suite, cluster)
        wait_free_gpus(kubeconfig, GPUS_NEEDED, 180)
        image = ensure_image(cluster)
        apply_service(suite, image.name, tiny_model_dir(), routers=ROUTERS)
        model = tiny_model_dir()
        want, _ = reference_answer(reference_engine(model), PROMPT, LOAD_TOKENS)
        state = Faults(suite, {fingerprint(weights_digest(model)) or "": want})
        wait_for("the cluster whole", state.whole, 120, 1.0)
        yield state
    finally:
        suite.kubectl("delete", "splitservice", NAME, "--wait=false", check=False)
        wait_for("the SplitService deleted", lambda: suite.kubectl(
            "get", "splitservice", NAME, check=False).returncode != 0, 120, 1.0)
        helm(kubeconfig, "uninstall", suite.release, "-n", namespace, check=False)
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)


def kill_container(pod: dict[str, Any]) -> None:
    """SIGKILL to the pod's container through the node's containerd: no preStop, no drain."""
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    subprocess.run(["ctr", "--address", containerd_address(), "-n", "k8s.io", "tasks", "kill",
                    "--signal", "SIGKILL", cid], check=True, capture_output=True, text=True)


def under_load(faults: Faults, pytestconfig: pytest.Config, what: str,
               fault: Callable[[], None], heal: Callable[[], None] | None = None
               ) -> tuple[LoadCounts, float]:
    """Runs `fault` while the load runs (and, given `heal`, lets requests flow through the
    damage before healing it); waits until the cluster is whole again and requests flow;
    reports and returns the load's counts and the seconds to recovery (from the fault, or
    from the healing)."""
    retries_before = faults.retries()
    with faults.load() as load:
        load.wait_completed(6, 120)
        started = time.monotonic()
        fault()
        if heal is not None:
            load.wait_completed(load.snapshot().completed + 12, 120)
            started = time.monotonic()
            heal()
        try:
            wait_for(f"the cluster whole again after {what}", lambda: time.monotonic() - started
                     > 1 and faults.whole(), 300, 1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{load.snapshot()}\n{faults.suite.diagnose()}") \
                from exc
        recovered = time.monotonic() - started
        load.wait_completed(load.snapshot().completed + 6, 120)
    counts = load.snapshot()
    # a killed router's own count is lost with it; its successor counts from zero (and may
    # have been given the same address)
    retried = 0.0
    for url, value in faults.retries().items():
        before = retries_before.get(url, 0.0)
        retried += value - before if value >= before else value
    errors = f"; errors: {sorted(set(counts.failed))}" if counts.failed else ""
    report(pytestconfig, prefix="faults", line=(
        f"{what}: completed {counts.completed}, retried {retried:.0f}, failed "
        f"{len(counts.failed)}, hung {counts.hung}, mismatched {counts.mismatched}; whole again "
        f"after {recovered:.1f}s{errors}"))
    return counts, recovered


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_killed_worker_loses_no_request(faults: Faults, role: str,
                                        pytestconfig: pytest.Config) -> None:
    victim = faults.suite.ready_pods(role)[0]
    counts, _ = under_load(faults, pytestconfig, f"{role} worker killed",
                           lambda: kill_container(victim))
    assert_clean(counts)
    assert counts.completed >= 12


def netpol_rules() -> str:
    done = subprocess.run(["iptables", "-w", "-S", NETPOL_CHAIN], capture_output=True,
                          text=True, check=True)
    return done.stdout


def forget_connections(ip: str) -> None:
    """Drops the node's connection-tracking entries to and from `ip`. The policy daemon, like
    most network plugins, lets packets of established connections through, so a new policy
    alone would spare the long-lived gRPC connections; dropping their entries makes the cut
    reach them too, as a failed link would."""
    for flag in ("-d", "-s"):
        # exit status 1 when there was nothing to delete
        done = subprocess.run(["conntrack", "-D", flag, ip], capture_output=True, text=True)
        assert done.returncode in (0, 1), done.stderr


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_cut_off_worker_loses_no_request(faults: Faults, role: str,
                                         pytestconfig: pytest.Config) -> None:
    s = faults.suite
    victim = s.ready_pods(role)[0]
    name, ip = victim["metadata"]["name"], victim["status"]["podIP"]
    noticed: list[float] = []

    def cut() -> None:
        started = time.monotonic()
        s.kubectl("label", "pod", name, f"{LABEL_QUARANTINE}=fault-test")
        # the quarantine policy isolates egress too: the victim gets a chain of its own
        wait_for("the quarantine enforced", lambda: f"-s {ip}/32 " in netpol_rules(), 60, 0.2)
        forget_connections(ip)
        wait_for(f"the routers to stop offering {name}",
                 lambda: faults.routers_see(role, REPLICAS - 1), 60, 0.5)
        noticed.append(time.monotonic() - started)
        # not replaced: the pod is still Ready and not terminating
        assert name in [p["metadata"]["name"] for p in s.ready_pods(role)]

    def heal() -> None:
        s.kubectl("label", "pod", name, f"{LABEL_QUARANTINE}-")

    try:
        counts, _ = under_load(faults, pytestconfig, f"{role} worker cut off", cut, heal)
    finally:
        s.kubectl("label", "pod", name, f"{LABEL_QUARANTINE}-", check=False)
    report(pytestconfig, prefix="faults", line=(
        f"{role} worker cut off: out of every router's pool {noticed[0]:.1f}s after the label"))
    assert_clean(counts)
    assert counts.completed >= 18


def test_killed_router_fails_only_what_it_held(faults: Faults,
                                               pytestconfig: pytest.Config) -> None:
    victim = faults.suite.ready_pods("router")[0]
    counts, _ = under_load(faults, pytestconfig, "router killed",
                           lambda: kill_container(victim))
    assert counts.hung == 0 and counts.mismatched == 0, counts
    # what the killed replica held, and new connections the Service still sent to it until its
    # endpoint was gone, fail as connection errors the client can retry; nothing else fails
    assert all(f.startswith("APIConnectionError") for f in counts.failed), counts.failed


def test_operator_restart_disturbs_no_request(faults: Faults,
                                              pytestconfig: pytest.Config) -> None:
    s = faults.suite
    generation = s.service()["metadata"]["generation"]
    selector = f"app.kubernetes.io/component=operator,app.kubernetes.io/instance={s.release}"
    old = json.loads(s.kubectl("get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    assert len(old) == 1, old

    def restart() -> None:
        s.kubectl("delete", "pod", old[0]["metadata"]["name"], "--wait=false")

    counts, _ = under_load(faults, pytestconfig, "operator pod deleted", restart)
    assert_clean(counts)
    wait_for("a new operator pod Ready", lambda: s.kubectl(
        "rollout", "status", f"deployment/{s.operator}", "--timeout=5s", check=False
    ).returncode == 0, 120, 1.0)
    svc = s.service()
    assert svc["metadata"]["generation"] == generation
    assert any(c["type"] == "Ready" and c["status"] == "True"
               for c in svc["status"]["conditions"]), svc["status"]


def test_apiserver_restart_disturbs_no_request(faults: Faults,
                                               pytestconfig: pytest.Config) -> None:
    def restart() -> None:
        done = subprocess.run([str(ROOT / "e2e" / "cluster" / "restart.sh"), "kube-apiserver"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

    counts, _ = under_load(faults, pytestconfig, "kube-apiserver restarted", restart)
    assert_clean(counts)
    # after the restart the operator and the routers' discovery still follow the cluster
    victim = faults.suite.ready_pods("decode")[0]
    counts, _ = under_load(faults, pytestconfig, "decode worker deleted after the "
                                   "restart", lambda: faults.suite.kubectl(
                                       "delete", "pod", victim["metadata"]["name"],
                                       "--wait=false"))
    assert_clean(counts)

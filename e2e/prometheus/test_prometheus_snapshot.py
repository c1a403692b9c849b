"""The autoscaler's Prometheus inputs against a real Prometheus scraping real worker processes.

Two `splitserve worker` processes on loopback (tiny model): a prefill worker and a decode
worker. Load goes through the disaggregated path (Reserve on decode, Prefill with the KV pushed
to decode, Generate on the reservation) and directly to decode. Prometheus (built from the Go
module proxy by install.sh) scrapes both; the snapshot must show the load and the pools' KV
capacity, and a service nobody serves must read as no data.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from prometheus_server import PrometheusServer, install, wait_for

import splitserve.autoscaler as autoscaler_pkg
from splitserve.api.serving import AutoscalingSpec
from splitserve.autoscaler.capacity import CapacityProfile
from splitserve.autoscaler.policy import PlanInputs, PoolState, plan
from splitserve.autoscaler.prom import PrometheusClient, Scope
from splitserve.autoscaler.service_autoscaler import ServiceAutoscaler
from splitserve.autoscaler.snapshot import MetricsSnapshot
from splitserve.worker import worker_pb2 as pb
from splitserve.worker import worker_pb2_grpc as pb_grpc
from splitserve.worker.process import WorkerProcess

NAMESPACE, SERVICE = "e2e-prom", "itest"
PROFILE = Path(autoscaler_pkg.__file__).parent / "profiles" / "small-cpu.json"
PREFILL_BLOCKS, DECODE_BLOCKS = 300, 200



@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    common = ["--namespace", NAMESPACE, "--service", SERVICE]
    prefill = WorkerProcess("prefill", "tiny", "--num-blocks", str(PREFILL_BLOCKS), *common)
    try:
        decode = WorkerProcess("decode", "tiny", "--num-blocks", str(DECODE_BLOCKS), *common)
    except BaseException:
        prefill.stop()
        raise
    yield prefill, decode
    decode.stop()
    prefill.stop()


@pytest.fixture(scope="module")
def prometheus(workers: tuple[WorkerProcess, WorkerProcess],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(install(), tmp_path_factory.mktemp("prometheus"),
                              [w.http_address for w in workers])
    yield server
    server.stop()


def sampling(n: int) -> pb.SamplingParams:
    return pb.SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)


def disaggregated(prefill: str, decode: str, prompt: list[int], n: int) -> int:
    """One request through the P/D path; returns the number of tokens generated."""
    rid = uuid.uuid4().hex
    with grpc.insecure_channel(prefill) as pc, grpc.insecure_channel(decode) as dc:
        p, d = pb_grpc.WorkerStub(pc), pb_grpc.WorkerStub(dc)
        res = d.Reserve(pb.ReserveRequest(request_id=rid, prompt_token_ids=prompt,
                                          sampling=sampling(n), timeout_ms=30_000), timeout=60)
        p.Prefill(pb.PrefillRequest(request_id=rid, prompt_token_ids=prompt,
                                    sampling=sampling(n), decode_address=decode,
                                    reservation_id=res.reservation_id), timeout=60)
        chunks = d.Generate(pb.GenerateRequest(request_id=rid,
                                               reservation_id=res.reservation_id), timeout=60)
        return sum(len(c.token_ids) for c in chunks)


def colocated(decode: str, prompt: list[int], n: int) -> int:
    with grpc.insecure_channel(decode) as dc:
        chunks = pb_grpc.WorkerStub(dc).Generate(pb.GenerateRequest(
            request_id=uuid.uuid4().hex, prompt_token_ids=prompt, sampling=sampling(n)),
            timeout=60)
        return sum(len(c.token_ids) for c in chunks)


def send_load(prefill: WorkerProcess, decode: WorkerProcess) -> None:
    prompts = [[(7 * i + j) % 200 + 3 for j in range(40 + 8 * i)] for i in range(6)]
    with ThreadPoolExecutor(4) as pool:
        pd = list(pool.map(
            lambda p: disaggregated(prefill.grpc_address, decode.grpc_address, p, 12), prompts))
        local = list(pool.map(lambda p: colocated(decode.grpc_address, p, 8), prompts[:3]))
    assert pd == [12] * len(prompts)
    assert local == [8] * 3


def test_snapshot_from_real_prometheus_scraping_real_workers(
        workers: tuple[WorkerProcess, WorkerProcess], prometheus: PrometheusServer) -> None:
    prefill, decode = workers
    wait_for(lambda: prometheus.targets_up() == 2, 60, "both workers scraped")
    send_load(prefill, decode)
    client = PrometheusClient(prometheus.url)
    scope = Scope(namespace=NAMESPACE, service=SERVICE, percentile=90.0)

    def loaded() -> MetricsSnapshot | None:
        s = client.snapshot(scope, time.time())
        ok = (s.prefill.token_rate or 0) > 0 and (s.decode.token_rate or 0) > 0
        return s if ok else None

    snap: MetricsSnapshot = wait_for(loaded, 90, "token rates in Prometheus", every=0.5)
    assert snap.prefill.kv_blocks_total == PREFILL_BLOCKS
    assert snap.decode.kv_blocks_total == DECODE_BLOCKS
    assert snap.decode.kv_blocks_used is not None and 0 <= snap.decode.kv_blocks_used <= 200
    for value in (snap.prefill.queued_prompt_tokens, snap.prefill.queue_depth,
                  snap.prefill.running, snap.decode.queue_depth, snap.decode.running):
        assert value is not None and value >= 0
    # the decode pool generated every output token; the prefill pool prefilled prompts
    assert snap.decode.token_rate is not None and snap.decode.token_rate > 0
    assert snap.ttft is None or snap.ttft > 0
    assert snap.tpot is None or snap.tpot > 0

    # the policy plans from what Prometheus returned
    result = plan(PlanInputs(
        now=snap.time, snapshot=snap, slo=AutoscalingSpec(), profile=CapacityProfile.from_dict(
            json.loads(PROFILE.read_text())), prefill=PoolState(1, 1), decode=PoolState(1, 1)))
    assert result.prefill.reason != "NoData" and result.decode.reason != "NoData"
    assert result.prefill.inputs["promptTokensPerSecond"] == snap.prefill.token_rate


def test_a_service_without_series_is_no_data(prometheus: PrometheusServer) -> None:
    wait_for(lambda: prometheus.targets_up() == 2, 60, "both workers scraped")
    client = PrometheusClient(prometheus.url)
    snap = client.snapshot(Scope(namespace=NAMESPACE, service="nobody"), time.time())
    assert snap.prefill.token_rate is None and snap.decode.token_rate is None
    assert snap.decode.kv_blocks_total is None and snap.ttft is None
    result = plan(PlanInputs(now=snap.time, snapshot=snap, slo=AutoscalingSpec(),
                             profile=CapacityProfile.from_dict(json.loads(PROFILE.read_text())),
                             prefill=PoolState(3, 3), decode=PoolState(2, 2)))
    assert (result.prefill.reason, result.prefill.desired) == ("NoData", 3)
    assert (result.decode.reason, result.decode.desired) == ("NoData", 2)


def test_install_is_idempotent() -> None:
    first = install()
    again = install()
    assert first == again and first.is_file()
    assert Path(first).parent.name.startswith("prometheus-deb-")


class ScaleRecorder:
    """Stands in for the Kubernetes API server (the cluster test covers the real one): records
    what the applier writes."""

    def __init__(self) -> None:
        self.scales: list[tuple[str, int]] = []
        self.status: dict[str, object] = {}

    def get(self, kind: str, namespace: str, name: str) -> None:
        return None

    def list(self, kind: str, namespace: str, label_selector: str = "",
             field_selector: str = "") -> list[dict[str, object]]:
        return []

    def create(self, obj: dict[str, object], dry_run: bool = False) -> dict[str, object]:
        return obj

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, object],
              subresource: str | None = None) -> dict[str, object]:
        if subresource == "scale":
            self.scales.append((name, patch["spec"]["replicas"]))  # type: ignore[index]
        elif subresource == "status":
            self.status = patch
        return patch


def test_a_prompt_heavy_load_step_raises_prefill_not_decode(
        workers: tuple[WorkerProcess, WorkerProcess], prometheus: PrometheusServer) -> None:
    """Real workers, real Prometheus, the real policy and applier: a burst of long prompts with
    one output token each raises the prefill pool and leaves decode alone. The profile is made
    small (50 prompt tokens/s per prefill replica) so a CPU-sized load is a burst."""
    prefill, decode = workers
    wait_for(lambda: prometheus.targets_up() == 2, 60, "both workers scraped")
    data = json.loads(PROFILE.read_text())
    data["prefill"].update(overheadSeconds=0.01, secondsPerToken=0.02, referenceTokens=16)
    auto = ServiceAutoscaler(CapacityProfile.from_dict(data))
    spec = AutoscalingSpec(enabled=True, prometheus_url=prometheus.url, ttft_target_ms=2000,
                           tpot_target_ms=1000, percentile=90.0, interval_seconds=5)
    service = {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
               "metadata": {"name": SERVICE, "namespace": NAMESPACE, "uid": "u"}}
    pools = {p: {"metadata": {"name": f"{SERVICE}-{p}"},
                 "spec": {"replicas": 1, "minReplicas": 1, "maxReplicas": 8},
                 "status": {"readyReplicas": 1}} for p in ("prefill", "decode")}
    api, client = ScaleRecorder(), PrometheusClient(prometheus.url)
    prompts = [[(11 * i + j) % 200 + 3 for j in range(300)] for i in range(16)]
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(
            lambda p: disaggregated(prefill.grpc_address, decode.grpc_address, p, 1), prompts))
    assert done == [1] * len(prompts)

    def raised() -> bool:
        result = auto.step(client=api, prom=client, service=service, autoscaling=spec,
                           pools=pools, pods={}, now=datetime.now(UTC))
        return result.prefill.desired > 1

    wait_for(raised, 90, "the prefill pool to be raised", every=1.0)
    assert api.scales and all(name == f"{SERVICE}-prefill" for name, _ in api.scales)
    assert api.scales[-1][1] > 1
    decisions = api.status["status"]["lastScalingDecisions"]  # type: ignore[index]
    assert decisions[-1]["pool"] == "prefill"
    assert decisions[-1]["inputs"]["promptTokensPerSecond"] > 0

"""The worker's engine gauges count engine steps by phase from a real tiny engine."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from splitserve.api import metrics as names
from splitserve.engine.config import EngineConfig
from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.sampling_params import SamplingParams
from splitserve.worker.main import EngineGauges
from splitserve.worker.metrics import Identity, WorkerMetrics


def steps(registry: CollectorRegistry, phase: str) -> float:
    value = registry.get_sample_value(names.ENGINE_STEPS.series, {
        "namespace": "ns", "service": "svc", "pool": "decode", "role": "decode",
        "phase": phase})
    return value or 0.0


def run(engine: LLMEngine, gauges: EngineGauges) -> None:
    """The worker loop's order: gauges between steps."""
    while engine.has_unfinished():
        gauges()
        engine.step()
    gauges()
    gauges()  # an idle call counts nothing


def test_steps_are_counted_by_phase(tiny_checkpoint: Path) -> None:
    engine = LLMEngine.from_path(tiny_checkpoint, EngineConfig(dtype="float32", device="cpu",
                                                                num_blocks=64))
    metrics = WorkerMetrics(Identity("ns", "svc", "decode", "decode"))
    gauges = EngineGauges(engine, metrics)
    engine.add_request("a", list(range(3, 23)), SamplingParams(max_tokens=5, ignore_eos=True))
    run(engine, gauges)
    # one prefill step (which samples the first token), then four decode steps
    assert (steps(metrics.registry, "prefill"), steps(metrics.registry, "decode"),
            steps(metrics.registry, "mixed")) == (1, 4, 0)
    engine.add_request("b", list(range(3, 43)), SamplingParams(max_tokens=4, ignore_eos=True))
    gauges()
    engine.step()  # b's prefill
    engine.add_request("c", list(range(50, 70)), SamplingParams(max_tokens=2, ignore_eos=True))
    run(engine, gauges)
    assert steps(metrics.registry, "mixed") >= 1  # c's prefill ran alongside b's decode
    total = sum(steps(metrics.registry, p) for p in ("prefill", "decode", "mixed"))
    assert total == engine.counters.steps  # every step that scheduled work, once

"""The planning function: bursts, stabilization, bounds, ratio, holds, no data, correction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from test_autoscaler_parts import PROFILE

from splitserve.api.serving import AutoscalingSpec, PdRatio
from splitserve.api.status import ScalingDecision
from splitserve.autoscaler.capacity import CapacityProfile
from splitserve.autoscaler.history import History
from splitserve.autoscaler.policy import Plan, PlanInputs, PolicyConfig, PoolState, plan
from splitserve.autoscaler.snapshot import MetricsSnapshot, PoolMetrics

PROF = CapacityProfile.from_dict(PROFILE)
SLO = AutoscalingSpec(ttft_target_ms=2000, tpot_target_ms=50, interval_seconds=30,
                      scale_down_stabilization_seconds=300,
                      pd_ratio=PdRatio(min=0.1, max=10.0))
CFG = PolicyConfig()
# per-replica figures the plan sizes against (modelled capacity x headroom)
PREFILL_PER = PROF.prefill.capacity(2.0) * CFG.headroom  # ≈ 1466 prompt tokens/s
DECODE_PER = PROF.decode.capacity(0.05) * CFG.headroom  # 510 output tokens/s
SEQS_PER = PROF.decode.sequences(0.05) * CFG.headroom  # 25.5 sequences


def snap(t: float, *, prompt: float | None = 100.0, queued: float | None = 0.0,
         out: float | None = 50.0, running: float | None = 2.0, waiting: float | None = 0.0,
         kv: float | None = None, kv_total: float | None = None, ttft: float | None = None,
         tpot: float | None = None) -> MetricsSnapshot:
    return MetricsSnapshot(
        time=t,
        prefill=PoolMetrics(token_rate=prompt, queued_prompt_tokens=queued),
        decode=PoolMetrics(token_rate=out, queue_depth=waiting, running=running,
                           kv_blocks_used=kv, kv_blocks_total=kv_total),
        ttft=ttft, tpot=tpot)


@dataclass
class Driver:
    """Runs the policy every interval and lets the pools follow it (ready at once)."""

    prefill: PoolState = field(default_factory=lambda: PoolState(1, 1))
    decode: PoolState = field(default_factory=lambda: PoolState(1, 1))
    slo: AutoscalingSpec = field(default_factory=lambda: SLO)
    profile: CapacityProfile = PROF
    config: PolicyConfig = CFG
    history: History = field(default_factory=History)
    now: float = 0.0
    follow: bool = True

    def step(self, **metrics: float | None) -> Plan:
        result = plan(PlanInputs(now=self.now, snapshot=snap(self.now, **metrics),
                                 slo=self.slo, profile=self.profile, prefill=self.prefill,
                                 decode=self.decode, history=self.history, config=self.config))
        self.history = result.history
        if self.follow:
            self.prefill = replace(self.prefill, replicas=result.prefill.desired,
                                   ready=result.prefill.desired)
            self.decode = replace(self.decode, replicas=result.decode.desired,
                                  ready=result.decode.desired)
        self.now += self.slo.interval_seconds
        return result

    def run(self, steps: int, **metrics: float | None) -> list[Plan]:
        return [self.step(**metrics) for _ in range(steps)]


def ratio_slo(lo: float, hi: float) -> AutoscalingSpec:
    return SLO.model_copy(update={"pd_ratio": PdRatio(min=lo, max=hi)})


def replicas(plans: list[Plan], pool: str) -> list[int]:
    return [getattr(p, pool).desired for p in plans]


# ---- steady state ---------------------------------------------------------------------------

def test_light_load_stays_at_the_minimum() -> None:
    plans = Driver().run(10)
    assert replicas(plans, "prefill") == [1] * 10
    assert replicas(plans, "decode") == [1] * 10
    assert all(p.prefill.reason == "Hold" and p.prefill.limited is None for p in plans)


def test_steady_load_needs_the_modelled_replicas() -> None:
    plans = Driver().run(12, prompt=4.5 * PREFILL_PER, out=2.5 * DECODE_PER, running=10)
    assert plans[-1].prefill.desired == 5
    assert plans[-1].decode.desired == 3
    assert plans[-1].prefill.reason == "Hold"


# ---- bursts ---------------------------------------------------------------------------------

def test_prefill_heavy_burst_scales_prefill_fast_and_leaves_decode() -> None:
    d = Driver(slo=ratio_slo(0.05, 20.0))
    d.run(4)
    burst = d.run(3, prompt=10_000.0, out=60.0, running=3)
    assert burst[0].prefill.reason == "ScaleUp"
    assert burst[0].prefill.desired == 5  # +4 in one decision (fast, step-limited)
    assert burst[1].prefill.desired >= math.ceil(10_000 / PREFILL_PER)
    assert replicas(burst, "decode") == [1, 1, 1]
    assert "prompt tokens/s" in burst[0].prefill.message


def test_long_output_burst_scales_decode_not_prefill() -> None:
    d = Driver()
    d.run(4)
    burst = d.run(4, prompt=300.0, out=3000.0, running=120, waiting=10)
    assert replicas(burst, "prefill") == [1, 1, 1, 1]
    assert burst[0].decode.reason == "ScaleUp"
    need = math.ceil(max(3000 * 130 / 120 / DECODE_PER, 130 / SEQS_PER))
    assert burst[-1].decode.desired >= need
    assert "sized by" in burst[-1].decode.message


def test_a_large_burst_grows_at_most_threefold_per_decision() -> None:
    d = Driver(prefill=PoolState(10, 10, max_replicas=200))
    first = d.step(prompt=100 * PREFILL_PER)
    assert first.prefill.recommended >= 100
    assert first.prefill.desired == 30
    assert d.step(prompt=100 * PREFILL_PER).prefill.desired == 90
    assert d.step(prompt=100 * PREFILL_PER).prefill.desired >= 100


def test_queued_prompt_tokens_count_as_demand() -> None:
    plain = Driver().step(prompt=1000.0, queued=0.0)
    backlog = Driver().step(prompt=1000.0, queued=6000.0)  # 3000 tokens/s more over 2 s
    assert plain.prefill.desired == 1
    assert backlog.prefill.desired == math.ceil(4000 / PREFILL_PER)
    assert backlog.prefill.inputs["queuedPromptTokens"] == 6000.0


def test_waiting_decode_sequences_count_as_demand() -> None:
    plain = Driver().step(out=400.0, running=10, waiting=0)
    waiting = Driver().step(out=400.0, running=10, waiting=30)
    assert plain.decode.desired == 1
    # 30 waiting sequences would each add the running ones' 40 tokens/s
    assert waiting.decode.desired == math.ceil((400 + 30 * 40) / DECODE_PER)
    assert waiting.decode.inputs["waitingSequences"] == 30


def test_kv_usage_sizes_decode() -> None:
    d = Driver(decode=PoolState(2, 2))
    p = d.step(out=100.0, running=4, kv=7000.0, kv_total=8192.0)
    assert p.decode.desired == math.ceil(7000 / (4096 * 0.8))
    assert "KV blocks" in p.decode.message
    assert p.decode.inputs["kvBlocksPerReplica"] == 4096.0


def test_kv_per_replica_comes_from_the_profile_without_a_total() -> None:
    p = Driver().step(out=10.0, running=1, kv=5000.0, kv_total=None)
    assert p.decode.inputs["kvBlocksPerReplica"] == 4096.0
    assert p.decode.desired == 2


def test_rising_trend_orders_capacity_for_when_pods_will_be_ready() -> None:
    slow = Driver(profile=replace(PROF, startup_seconds=300.0))
    fast = Driver(profile=replace(PROF, startup_seconds=1.0))
    for i in range(5):
        load = 1000.0 + 800.0 * i
        ps, pf = slow.step(prompt=load), fast.step(prompt=load)
    assert ps.prefill.desired > pf.prefill.desired
    assert pf.prefill.desired >= math.ceil(4200 / PREFILL_PER)


# ---- scale-down -----------------------------------------------------------------------------

def test_scale_down_waits_for_the_stabilization_window() -> None:
    d = Driver(prefill=PoolState(7, 7))
    d.run(3, prompt=7 * PREFILL_PER)
    calm = d.run(20, prompt=100.0)
    first_down = next(i for i, p in enumerate(calm) if p.prefill.reason == "ScaleDown")
    assert first_down * SLO.interval_seconds >= SLO.scale_down_stabilization_seconds
    assert calm[0].prefill.desired == 7
    assert calm[-1].prefill.desired == 1


def test_no_scale_down_before_recommendations_cover_the_window() -> None:
    d = Driver(prefill=PoolState(6, 6))
    plans = d.run(12, prompt=100.0)
    counts = replicas(plans, "prefill")
    assert counts[:10] == [6] * 10  # 300 s of history needed
    assert counts[-1] < 6


def test_scale_down_removes_at_most_a_quarter_per_decision() -> None:
    d = Driver(prefill=PoolState(16, 16, max_replicas=16),
               slo=SLO.model_copy(update={"scale_down_stabilization_seconds": 0}),
               config=replace(CFG, half_life=1.0))
    plans = d.run(10, prompt=10.0)
    counts = replicas(plans, "prefill")
    assert counts[:8] == [12, 9, 7, 6, 5, 4, 3, 2]
    assert counts[-1] == 1
    assert all(p.reason == "ScaleDown" for p in (plans[0].prefill, plans[1].prefill))


def test_short_dip_does_not_scale_down() -> None:
    d = Driver(prefill=PoolState(5, 5))
    d.run(3, prompt=4.5 * PREFILL_PER)
    dip = d.run(2, prompt=100.0)
    back = d.run(2, prompt=4.5 * PREFILL_PER)
    assert replicas(dip + back, "prefill") == [5, 5, 5, 5]


def test_scale_up_stabilization_ignores_a_single_spike() -> None:
    d = Driver(slo=SLO.model_copy(update={"scale_up_stabilization_seconds": 60}),
               config=replace(CFG, half_life=1.0))
    d.run(3, prompt=100.0)
    spike = d.step(prompt=8 * PREFILL_PER)
    assert spike.prefill.recommended > 1
    assert spike.prefill.desired == 1
    sustained = d.run(3, prompt=8 * PREFILL_PER)
    assert sustained[-1].prefill.desired > 1


# ---- bounds ---------------------------------------------------------------------------------

def test_max_replicas_caps_and_reports_limited() -> None:
    d = Driver(prefill=PoolState(1, 1, max_replicas=3))
    plans = d.run(3, prompt=20 * PREFILL_PER)
    assert replicas(plans, "prefill")[-1] == 3
    assert plans[-1].prefill.limited == "AtMaxReplicas"
    assert "maxReplicas is 3" in plans[-1].prefill.limited_message


def test_min_replicas_floors_the_pool() -> None:
    d = Driver(prefill=PoolState(3, 3, min_replicas=3), decode=PoolState(2, 2, min_replicas=2))
    plans = d.run(20, prompt=0.0, out=0.0, running=0)
    assert replicas(plans, "prefill")[-1] == 3
    assert replicas(plans, "decode")[-1] == 2


def test_replicas_outside_bounds_are_brought_inside_even_without_data() -> None:
    p = Driver(prefill=PoolState(30, 30, max_replicas=10)).step(prompt=None)
    assert p.prefill.reason == "NoData"
    assert p.prefill.desired == 10


# ---- ratio bounds ---------------------------------------------------------------------------

def test_ratio_max_raises_decode_with_prefill() -> None:
    d = Driver(slo=ratio_slo(0.25, 2.0), prefill=PoolState(8, 8))
    plans = d.run(3, prompt=8 * PREFILL_PER * 0.95)
    assert replicas(plans, "prefill") == [8, 8, 8]
    assert replicas(plans, "decode") == [4, 4, 4]
    assert "ratio kept at most 2" in plans[0].decode.message
    assert plans[0].decode.reason == "ScaleUp"
    assert plans[0].decode.limited is None


def test_ratio_min_raises_prefill_with_decode() -> None:
    d = Driver(slo=ratio_slo(0.5, 4.0), decode=PoolState(6, 6))
    p = d.run(3, out=5.5 * DECODE_PER, running=100)[-1]
    assert p.decode.desired == 6
    assert p.prefill.desired == 3


def test_ratio_lowers_prefill_when_decode_cannot_grow() -> None:
    d = Driver(slo=ratio_slo(0.25, 2.0), prefill=PoolState(8, 8),
               decode=PoolState(2, 2, max_replicas=2))
    p = d.run(3, prompt=8 * PREFILL_PER * 0.95)[-1]
    assert p.decode.desired == 2
    assert p.prefill.desired == 4
    assert p.prefill.limited == "RatioBound"


def test_ratio_does_not_add_to_a_pool_held_by_unschedulable_pods() -> None:
    d = Driver(slo=ratio_slo(0.25, 2.0), prefill=PoolState(6, 6),
               decode=PoolState(2, 1, unschedulable=1, unschedulable_reason="Insufficient gpu"))
    d.follow = False
    p = d.step(prompt=6 * PREFILL_PER * 0.95)
    assert p.decode.desired == 2
    assert p.prefill.desired == 4
    assert p.prefill.limited == "RatioBound"


# ---- holds ----------------------------------------------------------------------------------

def test_unschedulable_pods_stop_adds_and_report_limited() -> None:
    d = Driver(prefill=PoolState(4, 2, unschedulable=2,
                                 unschedulable_reason="0/1 nodes: Insufficient nvidia.com/gpu"))
    d.follow = False
    plans = d.run(10, prompt=30 * PREFILL_PER)
    assert replicas(plans, "prefill") == [4] * 10
    assert all(p.prefill.limited == "PendingPods" for p in plans)
    assert "Insufficient nvidia.com/gpu" in plans[0].prefill.limited_message
    assert plans[0].prefill.recommended > 4
    assert plans[0].prefill.inputs["unschedulable"] == 2.0


def test_unschedulable_pods_do_not_block_scale_down() -> None:
    d = Driver(prefill=PoolState(6, 4, unschedulable=2),
               slo=SLO.model_copy(update={"scale_down_stabilization_seconds": 0}),
               config=replace(CFG, half_life=1.0))
    d.follow = False
    p = d.step(prompt=10.0)
    assert p.prefill.reason == "ScaleDown"
    assert p.prefill.desired == 5  # a quarter of 6, at least one
    assert p.prefill.limited is None


def test_adds_resume_once_pods_schedule() -> None:
    d = Driver(prefill=PoolState(4, 2, unschedulable=2))
    d.follow = False
    assert d.step(prompt=8 * PREFILL_PER).prefill.desired == 4
    d.prefill = PoolState(4, 4)
    assert d.step(prompt=8 * PREFILL_PER).prefill.desired == 8


def test_pods_not_ready_long_after_scale_up_stop_adds() -> None:
    d = Driver()
    d.follow = False
    up = d.step(prompt=4 * PREFILL_PER)
    assert up.prefill.desired == 4
    d.prefill = PoolState(4, 1)
    # within start-up time: still starting, nothing to hold yet
    assert d.step(prompt=4 * PREFILL_PER).prefill.limited is None
    d.now += 3 * PROF.startup_seconds
    late = d.step(prompt=12 * PREFILL_PER)
    assert late.prefill.desired == 4
    assert late.prefill.limited == "PodsNotReady"
    assert "3 pod(s) still not ready" in late.prefill.limited_message


# ---- no data --------------------------------------------------------------------------------

def test_missing_prefill_series_hold_not_scale_to_minimum() -> None:
    d = Driver(prefill=PoolState(5, 5),
               slo=SLO.model_copy(update={"scale_down_stabilization_seconds": 0}))
    plans = d.run(20, prompt=None, queued=None)
    assert replicas(plans, "prefill") == [5] * 20
    assert plans[0].prefill.reason == "NoData"
    assert "no prompt token rate" in plans[0].prefill.message
    assert plans[-1].history.prefill.recommendations == ()


def test_missing_decode_series_hold_while_prefill_scales() -> None:
    d = Driver(decode=PoolState(3, 3))
    p = d.step(prompt=6 * PREFILL_PER, out=None, running=None, waiting=None)
    assert p.decode.reason == "NoData" and p.decode.desired == 3
    assert p.prefill.reason == "ScaleUp"


def test_zero_load_is_data_and_scales_down() -> None:
    d = Driver(prefill=PoolState(4, 4),
               slo=SLO.model_copy(update={"scale_down_stabilization_seconds": 0}),
               config=replace(CFG, half_life=1.0))
    p = d.step(prompt=0.0, queued=0.0)
    assert p.prefill.reason == "ScaleDown"


def test_a_gap_in_data_keeps_the_earlier_history() -> None:
    d = Driver()
    d.run(3, prompt=3 * PREFILL_PER * 0.9)
    d.step(prompt=None)
    assert len(d.history.prefill.demand) == 3


# ---- online profile correction --------------------------------------------------------------

def test_slow_ttft_at_modelled_load_lowers_capacity_and_adds_prefill() -> None:
    load = 4 * PREFILL_PER * 0.95
    plain = Driver(prefill=PoolState(4, 4)).run(3, prompt=load)
    missed = Driver(prefill=PoolState(4, 4)).run(3, prompt=load, ttft=5.0)
    assert plain[-1].prefill.desired == 4
    assert missed[-1].prefill.desired > 4
    assert missed[0].prefill.inputs["correctionFactor"] < 1.0
    assert "capacity corrected" in missed[0].prefill.message
    assert missed[-1].history.prefill.factor < 1.0


def test_slow_tpot_lowers_decode_capacity_only() -> None:
    d = Driver(decode=PoolState(3, 3))
    p = d.run(2, out=3 * DECODE_PER * 0.9, running=60, tpot=0.2)[-1]
    assert p.history.decode.factor < 1.0
    assert p.history.prefill.factor == 1.0
    assert p.decode.desired > 3


def test_no_correction_while_pods_are_starting() -> None:
    d = Driver(prefill=PoolState(4, 2))
    d.follow = False
    p = d.step(prompt=3000.0, ttft=9.0)
    assert p.history.prefill.factor == 1.0


def test_fast_latency_beyond_modelled_load_raises_capacity() -> None:
    d = Driver(prefill=PoolState(2, 2))
    d.follow = False
    p = d.step(prompt=2 * 1.3 * PROF.prefill.capacity(2.0), ttft=0.4)
    assert p.history.prefill.factor > 1.0


def test_correction_persists_through_history() -> None:
    d = Driver(prefill=PoolState(4, 4))
    d.step(prompt=4 * PREFILL_PER, ttft=6.0)
    f = d.history.prefill.factor
    d.step(prompt=4 * PREFILL_PER)
    assert d.history.prefill.factor == f < 1.0


# ---- decisions and history ------------------------------------------------------------------

def test_decisions_carry_inputs_that_fit_the_status_schema() -> None:
    p = Driver().step(prompt=5000.0, queued=100.0, out=900.0, running=30, waiting=2, kv=900.0,
                      kv_total=4096.0, ttft=1.0, tpot=0.03)
    for dec in p.decisions:
        s = ScalingDecision(time="2026-01-01T00:00:00Z", pool=dec.pool,
                            from_replicas=dec.current, to_replicas=dec.desired,
                            reason=dec.message[:1024], inputs=dec.inputs)
        assert s.inputs == dec.inputs
        assert all(math.isfinite(v) for v in dec.inputs.values())
    assert p.prefill.inputs["ttftSeconds"] == 1.0
    assert p.decode.inputs["tpotSeconds"] == 0.03


def test_history_stays_within_the_window() -> None:
    d = Driver(config=replace(CFG, window=120.0))
    d.run(20, prompt=100.0)
    times = [t for t, _ in d.history.prefill.demand]
    assert times and min(times) >= d.now - SLO.interval_seconds - 120.0
    assert len(d.history.prefill.recommendations) <= 5


def test_last_scale_up_is_remembered() -> None:
    d = Driver()
    d.step(prompt=100.0)
    assert d.history.prefill.last_scale_up is None
    d.step(prompt=5 * PREFILL_PER)
    assert d.history.prefill.last_scale_up == SLO.interval_seconds


def test_plan_is_pure() -> None:
    x = PlanInputs(now=10.0, snapshot=snap(10.0, prompt=6000.0), slo=SLO, profile=PROF,
                   prefill=PoolState(1, 1), decode=PoolState(1, 1))
    assert plan(x) == plan(x)
    assert x.history == History()


@pytest.mark.parametrize("kwargs", [
    {"replicas": 1, "ready": 1, "min_replicas": 0},
    {"replicas": 1, "ready": 1, "min_replicas": 5, "max_replicas": 4},
    {"replicas": -1, "ready": 0},
    {"replicas": 1, "ready": 1, "unschedulable": -2},
])
def test_bad_pool_state_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"replicas|unschedulable"):
        PoolState(**kwargs)


# ---- coordination and the arrival estimate --------------------------------------------------

def test_growing_prefill_queue_counts_as_arrivals() -> None:
    d = Driver(prefill=PoolState(4, 4))
    d.follow = False
    d.step(prompt=4 * PREFILL_PER * 0.9, queued=0.0)
    # served the same, but 60 000 more tokens queued in 30 s: 2000 tokens/s more arrive
    p = d.step(prompt=4 * PREFILL_PER * 0.9, queued=60_000.0)
    assert p.prefill.inputs["arrivingTokensPerSecond"] == pytest.approx(
        4 * PREFILL_PER * 0.9 + 2000.0)
    assert p.prefill.desired > 4


def test_shrinking_queue_never_means_negative_arrivals() -> None:
    d = Driver(prefill=PoolState(4, 4))
    d.follow = False
    d.step(prompt=100.0, queued=1_000_000.0)
    p = d.step(prompt=100.0, queued=0.0)
    assert p.prefill.inputs["arrivingTokensPerSecond"] == 0.0


def test_sequences_queued_for_prefill_raise_decode_with_prefill() -> None:
    quiet = Driver().step(out=100.0, running=2)
    x = PlanInputs(
        now=0.0, slo=SLO, profile=PROF, prefill=PoolState(1, 1), decode=PoolState(1, 1),
        snapshot=MetricsSnapshot(
            time=0.0, prefill=PoolMetrics(token_rate=100.0, queued_prompt_tokens=0.0,
                                          queue_depth=60.0, running=4.0),
            decode=PoolMetrics(token_rate=100.0, queue_depth=0.0, running=2.0)))
    burst = plan(x)
    assert quiet.decode.desired == 1
    assert burst.decode.inputs["prefillSequences"] == 64.0
    assert burst.decode.desired == math.ceil(66 / SEQS_PER)
    assert "concurrent sequences" in burst.decode.message


# ---- scale-down looks back on the smoothed load ---------------------------------------------

def test_scale_down_keeps_the_window_peak_of_the_smoothed_load_not_of_spikes() -> None:
    cfg = replace(CFG, half_life=120.0)
    slo = SLO.model_copy(update={"scale_down_stabilization_seconds": 120})
    d = Driver(prefill=PoolState(2, 2, max_replicas=40), slo=slo, config=cfg)
    loads = [2 * PREFILL_PER * 0.9] * 8 + [12 * PREFILL_PER] + [2 * PREFILL_PER * 0.9] * 12
    plans = [d.step(prompt=v) for v in loads]
    spike, after = plans[8].prefill, [p.prefill for p in plans[9:]]
    assert spike.reason == "ScaleUp" and spike.desired == 6  # fast: +4 at once
    assert spike.smoothed < spike.recommended
    # the next decision keeps what the smoothed load of the window asks for, not the spike
    peak_smoothed = max(p.prefill.smoothed for p in plans[:10])
    step_floor = spike.desired - max(1, math.floor(spike.desired * CFG.max_down_fraction))
    assert after[0].desired == max(after[0].recommended, peak_smoothed, step_floor)
    assert after[0].desired < spike.desired
    assert all(a.desired >= 2 for a in after)
    assert after[-1].desired <= after[0].desired


def test_decisions_record_the_smoothed_recommendation_in_history() -> None:
    d = Driver()
    d.run(3, prompt=100.0)
    d.step(prompt=20 * PREFILL_PER)
    recs = [r for _, r in d.history.prefill.recommendations]
    assert recs[-1] < math.ceil(20 * PREFILL_PER / PREFILL_PER)


# ---- correction waits for the pool to settle ------------------------------------------------

def test_no_correction_right_after_a_scale_change() -> None:
    d = Driver(prefill=PoolState(2, 2))
    d.step(prompt=6 * PREFILL_PER)  # scales up
    p = d.step(prompt=6 * PREFILL_PER * 0.95, ttft=30.0)
    assert p.history.prefill.factor == 1.0
    d.now += CFG.settle_seconds
    later = d.step(prompt=d.prefill.replicas * PREFILL_PER * 0.95, ttft=30.0)
    assert later.history.prefill.factor < 1.0


def test_overload_is_not_blamed_on_the_profile() -> None:
    d = Driver(prefill=PoolState(2, 2))
    d.follow = False
    p = d.step(prompt=2 * PROF.prefill.capacity(2.0) * 1.5, ttft=30.0)
    assert p.history.prefill.factor == 1.0


def test_a_corrected_profile_recovers_when_latency_is_fine_again() -> None:
    d = Driver(prefill=PoolState(4, 4))
    d.follow = False
    d.history = d.history.with_pool("prefill", replace(d.history.prefill, factor=0.5))
    modelled = PROF.prefill.capacity(2.0) * 0.5
    for _ in range(6):
        d.step(prompt=4 * modelled * 0.8, ttft=0.5)
    assert 0.5 < d.history.prefill.factor <= 1.0


def test_only_the_prefill_queue_prefill_can_clear_in_time_counts_for_decode() -> None:
    def decode_seqs(queued: float, rate: float) -> float:
        x = PlanInputs(
            now=0.0, slo=SLO, profile=PROF, prefill=PoolState(1, 1), decode=PoolState(1, 1),
            snapshot=MetricsSnapshot(
                time=0.0, prefill=PoolMetrics(token_rate=rate, queued_prompt_tokens=queued,
                                              queue_depth=100.0, running=0.0),
                decode=PoolMetrics(token_rate=10.0, queue_depth=0.0, running=1.0)))
        return plan(x).decode.inputs["prefillSequences"]

    horizon = PROF.startup_seconds + SLO.interval_seconds  # 50 s
    assert decode_seqs(queued=0.0, rate=1000.0) == 100.0
    assert decode_seqs(queued=1000.0 * horizon, rate=1000.0) == 100.0
    assert decode_seqs(queued=4 * 1000.0 * horizon, rate=1000.0) == pytest.approx(25.0)
    assert decode_seqs(queued=5000.0, rate=0.0) == 0.0

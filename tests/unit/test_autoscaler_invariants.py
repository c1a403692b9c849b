"""Properties of `plan()` that hold for any metrics and state (checked with hypothesis)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from test_autoscaler_parts import PROFILE

from splitserve.api.serving import AutoscalingSpec, PdRatio
from splitserve.autoscaler.capacity import CapacityProfile
from splitserve.autoscaler.history import History
from splitserve.autoscaler.policy import Plan, PlanInputs, PolicyConfig, PoolState, plan
from splitserve.autoscaler.snapshot import MetricsSnapshot, PoolMetrics

PROF = CapacityProfile.from_dict(PROFILE)
CFG = PolicyConfig()

maybe = st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False))
latency = st.one_of(st.none(), st.floats(min_value=1e-4, max_value=100, allow_nan=False))


@st.composite
def pool_states(draw: st.DrawFn) -> PoolState:
    lo = draw(st.integers(1, 5))
    hi = draw(st.integers(lo, 40))
    replicas = draw(st.integers(lo, hi))
    return PoolState(replicas=replicas, ready=draw(st.integers(0, replicas)), min_replicas=lo,
                     max_replicas=hi, unschedulable=draw(st.sampled_from([0, 0, 0, 1, 3])))


@st.composite
def snapshots(draw: st.DrawFn) -> MetricsSnapshot:
    return MetricsSnapshot(
        time=0.0,
        prefill=PoolMetrics(token_rate=draw(maybe), queued_prompt_tokens=draw(maybe),
                            queue_depth=draw(maybe), running=draw(maybe)),
        decode=PoolMetrics(token_rate=draw(maybe), queue_depth=draw(maybe),
                           running=draw(maybe), kv_blocks_used=draw(maybe),
                           kv_blocks_total=draw(maybe)),
        ttft=draw(latency), tpot=draw(latency))


@st.composite
def slos(draw: st.DrawFn) -> AutoscalingSpec:
    lo = draw(st.sampled_from([0.0625, 0.25, 0.5, 1.0]))
    hi = draw(st.sampled_from([1.0, 2.0, 4.0, 16.0]))
    return AutoscalingSpec(
        ttft_target_ms=draw(st.integers(100, 20_000)), tpot_target_ms=draw(st.integers(25, 500)),
        interval_seconds=draw(st.sampled_from([5, 15, 30])),
        scale_up_stabilization_seconds=draw(st.sampled_from([0, 0, 60])),
        scale_down_stabilization_seconds=draw(st.sampled_from([0, 60, 300])),
        pd_ratio=PdRatio(min=min(lo, hi), max=max(lo, hi)))


def run(snaps: list[MetricsSnapshot], slo: AutoscalingSpec, p: PoolState, d: PoolState
        ) -> list[tuple[PlanInputs, Plan]]:
    history = History()
    out: list[tuple[PlanInputs, Plan]] = []
    for i, s in enumerate(snaps):
        x = PlanInputs(now=i * slo.interval_seconds, snapshot=s, slo=slo, profile=PROF,
                       prefill=p, decode=d, history=history)
        result = plan(x)
        out.append((x, result))
        history = result.history
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(snapshots(), min_size=1, max_size=6), slos(), pool_states(), pool_states())
def test_desired_replicas_always_within_bounds(snaps: list[MetricsSnapshot],
                                               slo: AutoscalingSpec, p: PoolState,
                                               d: PoolState) -> None:
    for x, result in run(snaps, slo, p, d):
        for dec, state in ((result.prefill, x.prefill), (result.decode, x.decode)):
            assert state.min_replicas <= dec.desired <= state.max_replicas
            assert dec.current == state.replicas
            assert all(math.isfinite(v) for v in dec.inputs.values())
            assert dec.reason in ("ScaleUp", "ScaleDown", "Hold", "NoData")
            assert (dec.reason == "ScaleUp") == (dec.desired > dec.current) or \
                dec.reason == "NoData"


@settings(max_examples=150, deadline=None)
@given(snapshots(), slos(), pool_states(), pool_states())
def test_pending_pods_never_get_company(snap: MetricsSnapshot, slo: AutoscalingSpec,
                                        p: PoolState, d: PoolState) -> None:
    result = plan(PlanInputs(now=0.0, snapshot=snap, slo=slo, profile=PROF, prefill=p,
                             decode=d))
    for dec, state in ((result.prefill, p), (result.decode, d)):
        if state.unschedulable and state.min_replicas <= state.replicas <= state.max_replicas:
            assert dec.desired <= state.replicas


@settings(max_examples=150, deadline=None)
@given(snapshots(), slos(), pool_states(), pool_states())
def test_steps_are_limited(snap: MetricsSnapshot, slo: AutoscalingSpec, p: PoolState,
                           d: PoolState) -> None:
    result = plan(PlanInputs(now=0.0, snapshot=snap, slo=slo, profile=PROF, prefill=p,
                             decode=d))
    for dec, state in ((result.prefill, p), (result.decode, d)):
        if dec.limited == "RatioBound" or dec.desired == state.min_replicas:
            continue
        up = max(CFG.min_up_step, math.ceil(state.replicas * (CFG.max_up_factor - 1)))
        down = max(1, math.floor(state.replicas * CFG.max_down_fraction))
        if "ratio kept" not in dec.message:
            assert state.replicas - down <= dec.desired <= state.replicas + up


@settings(max_examples=100, deadline=None)
@given(slos(), pool_states(), pool_states())
def test_no_data_holds_both_pools(slo: AutoscalingSpec, p: PoolState, d: PoolState) -> None:
    empty = MetricsSnapshot(time=0.0, prefill=PoolMetrics(), decode=PoolMetrics())
    result = plan(PlanInputs(now=0.0, snapshot=empty, slo=slo, profile=PROF, prefill=p,
                             decode=d))
    assert result.history.prefill.recommendations == ()
    assert result.history.decode.recommendations == ()
    lo, hi = slo.pd_ratio.min, slo.pd_ratio.max
    if lo * d.replicas <= p.replicas <= hi * d.replicas:
        assert result.prefill.reason == "NoData" and result.decode.reason == "NoData"
        assert (result.prefill.desired, result.decode.desired) == (p.replicas, d.replicas)
    else:  # only the ratio bounds (configuration, not load) may move a pool without data
        assert "RatioBound" in (result.prefill.limited, result.decode.limited) or \
            "ratio kept" in result.prefill.message + result.decode.message


@settings(max_examples=150, deadline=None)
@given(snapshots(), slos())
def test_ratio_bounds_hold_when_the_pools_can_follow(snap: MetricsSnapshot,
                                                     slo: AutoscalingSpec) -> None:
    free = PoolState(replicas=4, ready=4, min_replicas=1, max_replicas=200)
    result = plan(PlanInputs(now=0.0, snapshot=snap, slo=slo, profile=PROF, prefill=free,
                             decode=free))
    ratio = result.prefill.desired / result.decode.desired
    assert slo.pd_ratio.min - 1e-9 <= ratio or result.prefill.desired == 200 or \
        result.decode.limited == "RatioBound"
    assert ratio <= slo.pd_ratio.max + 1e-9 or result.decode.desired == 200 or \
        result.prefill.limited == "RatioBound"


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0, max_value=1e5), st.floats(min_value=0, max_value=1e5))
def test_more_load_never_means_fewer_replicas(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    slo = AutoscalingSpec()

    def desired(rate: float) -> tuple[int, int]:
        snap = MetricsSnapshot(time=0.0, prefill=PoolMetrics(token_rate=rate),
                               decode=PoolMetrics(token_rate=rate / 10, running=rate / 100))
        free = PoolState(replicas=1, ready=1, min_replicas=1, max_replicas=1000)
        r = plan(PlanInputs(now=0.0, snapshot=snap, slo=slo, profile=PROF, prefill=free,
                            decode=free, config=PolicyConfig(max_up_factor=1000.0)))
        return r.prefill.recommended, r.decode.recommended

    assert desired(lo)[0] <= desired(hi)[0]
    assert desired(lo)[1] <= desired(hi)[1]
